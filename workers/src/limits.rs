//! What a job may cost: input size, media duration, frame size and wall time, and the
//! deadline every stage checks.
//!
//! Limits are enforced as early as the information exists: the object size before it is
//! fetched, the header's declared duration and frame size before anything is decoded (see
//! [`crate::decode::header`]), then every decoded frame and every second of decoded audio,
//! and the wall-clock deadline at every packet and between model runs. Exceeding one is a
//! `limit_exceeded` failure that names the limit, never a crash or an unbounded allocation.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The limits of one job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest input object, in bytes.
    pub max_input_bytes: u64,
    /// Longest media duration.
    pub max_duration: Duration,
    /// Largest frame, in pixels (width × height).
    pub max_pixels: u64,
    /// Longest wall-clock time for one job, fetch and upload included.
    pub max_wall_time: Duration,
}

impl Default for Limits {
    /// 2 GiB, 4 hours, 8192 × 8192 pixels (67 MP), 1 hour of wall time.
    fn default() -> Self {
        Limits {
            max_input_bytes: 2 << 30,
            max_duration: Duration::from_secs(4 * 3600),
            max_pixels: 8192 * 8192,
            max_wall_time: Duration::from_secs(3600),
        }
    }
}

/// Which limit a job exceeded. Serialised as the config field's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Limit {
    /// `limits.maxInputBytes`.
    #[serde(rename = "maxInputBytes")]
    MaxInputBytes,
    /// `limits.maxDuration`.
    #[serde(rename = "maxDuration")]
    MaxDuration,
    /// `limits.maxPixels`.
    #[serde(rename = "maxPixels")]
    MaxPixels,
    /// `limits.maxWallTime`.
    #[serde(rename = "maxWallTime")]
    MaxWallTime,
}

impl Limit {
    /// The config field's name.
    pub const fn name(self) -> &'static str {
        match self {
            Limit::MaxInputBytes => "maxInputBytes",
            Limit::MaxDuration => "maxDuration",
            Limit::MaxPixels => "maxPixels",
            Limit::MaxWallTime => "maxWallTime",
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a job stopped before its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The job's wall-clock deadline passed.
    Deadline,
    /// The pool is shutting down.
    Cancelled,
}

/// A job's deadline and its pool's cancellation flag. Cheap to clone and to check.
#[derive(Clone, Debug)]
pub struct Deadline {
    at: Instant,
    budget: Duration,
    cancelled: Arc<AtomicBool>,
}

impl Deadline {
    /// A deadline `budget` from now, cancelled when `cancelled` is set.
    pub fn after(budget: Duration, cancelled: Arc<AtomicBool>) -> Deadline {
        let now = Instant::now();
        Deadline {
            at: now
                .checked_add(budget)
                .unwrap_or(now + Duration::from_secs(86_400 * 365)),
            budget,
            cancelled,
        }
    }

    /// A deadline that nothing cancels.
    pub fn unbounded_after(budget: Duration) -> Deadline {
        Deadline::after(budget, Arc::new(AtomicBool::new(false)))
    }

    /// The wall-time budget this deadline was made with.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Whether the job must stop, and why.
    pub fn check(&self) -> Result<(), Stop> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(Stop::Cancelled);
        }
        if Instant::now() >= self.at {
            return Err(Stop::Deadline);
        }
        Ok(())
    }

    /// Time left before the deadline (zero when it has passed).
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Whether [`Self::check`] would fail.
    pub fn expired(&self) -> bool {
        self.check().is_err()
    }
}
