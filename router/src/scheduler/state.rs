//! The scheduler's memory store: its state in memory, saved as one JSON file.
//!
//! The file holds the last tick fired by each schedule (for `catchUp`), the schedules created
//! at run time, and the delayed events waiting. It is written atomically (a temporary file,
//! then a rename), off the async runtime. A missing file is an empty state; an unreadable one
//! is logged and set aside (renamed `.corrupt`), never fatal.
//!
//! This is the "memory" store of the scheduler: state survives a clean restart and most
//! crashes (it is at most half a second old), but it is one process's file. The JetStream
//! store keeps it in JetStream KV for a cluster.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use triggerfish_core::cron::recurring::ScheduleRequest;
use triggerfish_core::event::{
    DecodeLimits, EncodeOptions, EventBatch, decode_structured, encode_structured,
};

use crate::store::BrokerKey;

/// Everything the scheduler keeps across restarts.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// Last tick fired, per schedule key.
    #[serde(default)]
    pub last_fired: BTreeMap<String, DateTime<Utc>>,
    /// Run-time schedules.
    #[serde(default)]
    pub schedules: Vec<SavedSchedule>,
    /// Delayed events waiting.
    #[serde(default)]
    pub pending: Vec<SavedEvent>,
}

/// A run-time schedule.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedSchedule {
    /// Its namespace.
    pub namespace: String,
    /// The request that created it.
    pub request: ScheduleRequest,
}

/// A delayed event.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedEvent {
    broker: String,
    ttl: u8,
    due: DateTime<Utc>,
    /// The event in structured JSON.
    event: String,
}

impl SavedEvent {
    /// Saves one delayed event.
    pub fn encode(
        broker: &BrokerKey,
        event: &EventBatch,
        ttl: u8,
        due: DateTime<Utc>,
    ) -> SavedEvent {
        let json = event
            .get(0)
            .map(|v| encode_structured(&v, &EncodeOptions::default()))
            .unwrap_or_default();
        SavedEvent {
            broker: broker.to_string(),
            ttl,
            due,
            event: String::from_utf8_lossy(&json).into_owned(),
        }
    }

    /// Restores it.
    pub fn decode(self) -> Result<(BrokerKey, Arc<EventBatch>, u8, DateTime<Utc>), String> {
        let limits = DecodeLimits {
            max_event_bytes: usize::MAX,
            ..DecodeLimits::default()
        };
        let batch =
            decode_structured(Bytes::from(self.event), &limits).map_err(|e| e.to_string())?;
        Ok((
            Arc::from(self.broker.as_str()),
            Arc::new(batch),
            self.ttl,
            self.due,
        ))
    }
}

/// The state file.
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The file at `path` (created on first save).
    pub fn new(path: PathBuf) -> StateFile {
        StateFile { path }
    }

    /// Reads the state; an absent file is an empty state.
    pub async fn load(&self) -> State {
        let path = self.path.clone();
        let read = tokio::task::spawn_blocking(move || std::fs::read(&path)).await;
        match read {
            Ok(Ok(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(state) => state,
                Err(e) => {
                    let aside = self.path.with_extension("json.corrupt");
                    tracing::error!(path = %self.path.display(), error = %e, moved_to = %aside.display(),
                        "scheduler state unreadable; starting empty");
                    let _ = std::fs::rename(&self.path, aside);
                    State::default()
                }
            },
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Ok(Err(e)) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot read the scheduler state; starting empty");
                State::default()
            }
            Err(_) => State::default(),
        }
    }

    /// Writes the state atomically.
    pub async fn save(&self, state: State) {
        let path = self.path.clone();
        let result = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("json.tmp");
            let json = serde_json::to_vec(&state).map_err(std::io::Error::other)?;
            std::fs::write(&tmp, json)?;
            std::fs::rename(&tmp, &path)
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot save the scheduler state")
            }
            Err(e) => tracing::error!(error = %e, "scheduler state writer failed"),
        }
    }
}
