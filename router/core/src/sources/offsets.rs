//! Which consumed offsets may be committed: the at-least-once bookkeeping of the Kafka and
//! RocketMQ sources, sans-IO.
//!
//! A consumer reads records of a partition (a RocketMQ queue) in offset order, hands each to
//! the router, and learns later, in any order, that each was accepted. Committing offset `n`
//! tells the broker "resume at `n`", so `n` may be committed only when every record below it
//! that was handed on is finished. Per partition the tracker keeps the unfinished offsets
//! ([`OffsetTracker::begin`], [`OffsetTracker::finish`]) and the highest offset seen; the
//! committable position is the lowest unfinished offset, or the highest seen plus one when
//! none is unfinished. [`OffsetTracker::committable`] returns the positions that moved since
//! the last call.
//!
//! A record that never finishes (its delivery was cut short by shutdown) holds its partition's
//! position below it for good, so a restart reads it again: redelivery, never loss.
//!
//! Rebalances: [`OffsetTracker::assign`] starts tracking a partition, [`OffsetTracker::revoke`]
//! forgets it (after returning its last committable position); records of a partition that is
//! not assigned are refused, since another consumer owns them now. Each assignment has
//! an epoch; a [`Ticket`] from an older epoch finishes nothing, so a record still in flight
//! from before a revocation can never move the position of a later assignment.
//!
//! What this module does not do: talk to a broker, or decide when to commit (the router
//! commits on a timer, on revocation and at shutdown).

use std::collections::BTreeMap;

/// The bookkeeping of every partition a consumer owns. `P` names a partition (topic and
/// partition for Kafka, a message queue for RocketMQ).
#[derive(Clone, Debug)]
pub struct OffsetTracker<P: Ord + Clone> {
    partitions: BTreeMap<P, Track>,
    next_epoch: u64,
}

/// One partition's state.
#[derive(Clone, Debug, Default)]
struct Track {
    epoch: u64,
    /// Unfinished offsets, with how many times each was begun (a record read twice, after a
    /// seek, is two deliveries).
    pending: BTreeMap<i64, u32>,
    /// The highest offset begun, plus one.
    next: Option<i64>,
    /// The last position returned by `committable` or `revoke`.
    committed: Option<i64>,
}

impl Track {
    fn position(&self) -> Option<i64> {
        match self.pending.keys().next() {
            Some(&lowest) => Some(lowest),
            None => self.next,
        }
    }
}

/// Names one begun record, to finish it later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket<P> {
    /// The partition.
    pub partition: P,
    /// The record's offset.
    pub offset: i64,
    epoch: u64,
}

impl<P: Ord + Clone> Default for OffsetTracker<P> {
    fn default() -> Self {
        OffsetTracker {
            partitions: BTreeMap::new(),
            next_epoch: 1,
        }
    }
}

impl<P: Ord + Clone> OffsetTracker<P> {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts tracking `partition` afresh (it was assigned to this consumer). Anything known
    /// about an earlier assignment is forgotten.
    pub fn assign(&mut self, partition: P) {
        let epoch = self.epoch();
        self.partitions.insert(
            partition,
            Track {
                epoch,
                ..Track::default()
            },
        );
    }

    /// Stops tracking `partition` (it was revoked). Returns its committable position if it
    /// moved since it was last returned, for a final commit.
    pub fn revoke(&mut self, partition: &P) -> Option<i64> {
        let track = self.partitions.remove(partition)?;
        track.position().filter(|p| Some(*p) > track.committed)
    }

    /// Records that the record at `offset` of `partition` was handed on. `None` when the
    /// partition is not assigned (it was revoked while the record was on its way): the record
    /// belongs to another consumer now, and must not be handed on.
    pub fn begin(&mut self, partition: P, offset: i64) -> Option<Ticket<P>> {
        let track = self.partitions.get_mut(&partition)?;
        *track.pending.entry(offset).or_insert(0) += 1;
        track.next = Some(track.next.map_or(offset + 1, |n| n.max(offset + 1)));
        Some(Ticket {
            partition,
            offset,
            epoch: track.epoch,
        })
    }

    /// Records that the record of `ticket` is finished (accepted). A ticket of an earlier
    /// assignment, or finished already, changes nothing.
    pub fn finish(&mut self, ticket: &Ticket<P>) {
        let Some(track) = self.partitions.get_mut(&ticket.partition) else {
            return;
        };
        if track.epoch != ticket.epoch {
            return;
        }
        if let Some(count) = track.pending.get_mut(&ticket.offset) {
            *count -= 1;
            if *count == 0 {
                track.pending.remove(&ticket.offset);
            }
        }
    }

    /// The positions to commit: each partition's lowest unfinished offset, or its highest
    /// seen plus one, where that moved since it was last returned.
    pub fn committable(&mut self) -> Vec<(P, i64)> {
        let mut out = Vec::new();
        for (partition, track) in &mut self.partitions {
            if let Some(position) = track.position()
                && Some(position) > track.committed
            {
                track.committed = Some(position);
                out.push((partition.clone(), position));
            }
        }
        out
    }

    /// Each tracked partition's position now (its lowest unfinished offset, or its highest seen
    /// plus one: what [`OffsetTracker::committable`] would return), without marking anything
    /// committed. For lag: the log's end minus this is what is not finished yet.
    pub fn positions(&self) -> Vec<(P, i64)> {
        self.partitions
            .iter()
            .filter_map(|(partition, track)| Some((partition.clone(), track.position()?)))
            .collect()
    }

    /// Records begun and not finished, over every partition.
    pub fn unfinished(&self) -> usize {
        self.partitions
            .values()
            .map(|t| t.pending.values().map(|&n| n as usize).sum::<usize>())
            .sum()
    }

    /// Whether `partition` is tracked.
    pub fn is_assigned(&self, partition: &P) -> bool {
        self.partitions.contains_key(partition)
    }

    fn epoch(&mut self) -> u64 {
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        epoch
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn commits_only_below_the_lowest_unfinished() {
        let mut t = OffsetTracker::new();
        assert_eq!(t.begin("p", 9), None, "not assigned");
        t.assign("p");
        let a = t.begin("p", 10).unwrap();
        let b = t.begin("p", 11).unwrap();
        let c = t.begin("p", 12).unwrap();
        assert_eq!(t.committable(), vec![("p", 10)]);
        t.finish(&b);
        t.finish(&c);
        assert_eq!(t.committable(), vec![], "10 is still unfinished");
        assert_eq!(t.positions(), vec![("p", 10)]);
        t.finish(&a);
        assert_eq!(t.positions(), vec![("p", 13)]);
        assert_eq!(t.committable(), vec![("p", 13)]);
        assert_eq!(t.committable(), vec![], "nothing moved");
        assert_eq!(t.unfinished(), 0);
    }

    #[test]
    fn stale_tickets_finish_nothing() {
        let mut t = OffsetTracker::new();
        t.assign("p");
        let old = t.begin("p", 5).unwrap();
        assert_eq!(t.revoke(&"p"), Some(5));
        assert_eq!(t.begin("p", 6), None, "revoked");
        t.assign("p");
        let new = t.begin("p", 5).unwrap();
        t.finish(&old);
        assert_eq!(t.committable(), vec![("p", 5)], "the new 5 is unfinished");
        t.finish(&new);
        assert_eq!(t.committable(), vec![("p", 6)]);
        assert_eq!(t.revoke(&"p"), None, "nothing moved since the last commit");
    }

    #[test]
    fn a_record_read_twice_finishes_twice() {
        let mut t = OffsetTracker::new();
        t.assign("p");
        let a = t.begin("p", 1).unwrap();
        let a2 = t.begin("p", 1).unwrap();
        t.finish(&a);
        assert_eq!(t.committable(), vec![("p", 1)]);
        t.finish(&a2);
        assert_eq!(t.committable(), vec![("p", 2)]);
    }

    proptest! {
        /// Whatever the order of finishing, a committed position never passes an unfinished
        /// record, and once everything is finished the position is past the last record.
        #[test]
        fn never_commits_past_an_unfinished_record(
            counts in proptest::collection::vec(1usize..20, 1..4),
            order in proptest::collection::vec(any::<prop::sample::Index>(), 0..80),
        ) {
            let mut t = OffsetTracker::new();
            let mut open = Vec::new();
            for (p, &n) in counts.iter().enumerate() {
                t.assign(p);
                for o in 0..n as i64 {
                    open.push(t.begin(p, 100 + o).unwrap());
                }
            }
            let mut unfinished: BTreeSet<(usize, i64)> =
                open.iter().map(|k| (k.partition, k.offset)).collect();
            let mut last = std::collections::BTreeMap::new();
            for i in order {
                if open.is_empty() {
                    break;
                }
                let ticket = open.swap_remove(i.index(open.len()));
                t.finish(&ticket);
                unfinished.remove(&(ticket.partition, ticket.offset));
                for (p, pos) in t.committable() {
                    last.insert(p, pos);
                    prop_assert!(
                        unfinished.iter().all(|&(q, o)| q != p || o >= pos),
                        "partition {p} committed {pos} with {unfinished:?} unfinished"
                    );
                }
            }
            for ticket in open.drain(..) {
                t.finish(&ticket);
            }
            last.extend(t.committable());
            prop_assert_eq!(t.unfinished(), 0);
            for (p, &n) in counts.iter().enumerate() {
                prop_assert_eq!(last.get(&p).copied(), Some(100 + n as i64));
                prop_assert_eq!(t.revoke(&p), None);
            }
        }
    }
}
