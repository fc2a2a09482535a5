//! The set of event sequence numbers the sink has received, to tell first deliveries from
//! duplicates.
//!
//! A bitset in chunks of 2^20 bits (128 KiB), each allocated the first time one of its numbers
//! arrives, so memory follows the numbers actually used. Inserting is one atomic `fetch_or`;
//! no lock. The range is fixed at construction: numbers beyond it are reported, not stored.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

const CHUNK_BITS: u64 = 1 << 20;
const WORDS_PER_CHUNK: usize = (CHUNK_BITS / 64) as usize;

/// What inserting a number found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// The first time this number was seen.
    New,
    /// The number had been seen before.
    Duplicate,
    /// The number is beyond the set's range and was not recorded.
    OutOfRange,
}

/// A concurrent set of `u64` below a fixed bound.
#[derive(Debug)]
pub struct SeenSet {
    chunks: Box<[OnceLock<Box<[AtomicU64]>>]>,
}

impl SeenSet {
    /// A set for the numbers `0..capacity` (rounded up to a whole chunk).
    pub fn new(capacity: u64) -> SeenSet {
        let chunks = capacity.div_ceil(CHUNK_BITS).max(1);
        SeenSet {
            chunks: (0..chunks).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The numbers this set can hold: `0..capacity()`.
    pub fn capacity(&self) -> u64 {
        self.chunks.len() as u64 * CHUNK_BITS
    }

    /// Adds `n`, and says whether it was there already.
    pub fn insert(&self, n: u64) -> Insert {
        let Some(chunk) = usize::try_from(n / CHUNK_BITS)
            .ok()
            .and_then(|i| self.chunks.get(i))
        else {
            return Insert::OutOfRange;
        };
        let words = chunk.get_or_init(|| (0..WORDS_PER_CHUNK).map(|_| AtomicU64::new(0)).collect());
        let bit = n % CHUNK_BITS;
        let mask = 1_u64 << (bit % 64);
        // Relaxed: the bit itself is the only thing published.
        let before = words[(bit / 64) as usize].fetch_or(mask, Ordering::Relaxed);
        if before & mask == 0 {
            Insert::New
        } else {
            Insert::Duplicate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_duplicate_out_of_range() {
        let s = SeenSet::new(3 * CHUNK_BITS);
        assert_eq!(s.capacity(), 3 * CHUNK_BITS);
        assert_eq!(s.insert(0), Insert::New);
        assert_eq!(s.insert(0), Insert::Duplicate);
        assert_eq!(s.insert(63), Insert::New);
        assert_eq!(s.insert(64), Insert::New);
        assert_eq!(s.insert(CHUNK_BITS * 2 + 5), Insert::New);
        assert_eq!(s.insert(CHUNK_BITS * 2 + 5), Insert::Duplicate);
        assert_eq!(s.insert(CHUNK_BITS * 3), Insert::OutOfRange);
        assert_eq!(s.insert(u64::MAX), Insert::OutOfRange);
        // Untouched chunks stay unallocated.
        assert!(s.chunks[1].get().is_none());
    }

    #[test]
    fn concurrent_inserts_count_each_number_once() {
        let s = SeenSet::new(10_000);
        let new: u64 = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..10_000).filter(|&n| s.insert(n) == Insert::New).count() as u64
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(new, 10_000);
    }
}
