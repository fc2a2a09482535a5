//! The `Scheduler` sink: delayed events and run-time schedules.
//!
//! A trigger whose subscriber is `ref: {kind: Scheduler, name: default}` hands events here:
//! - `dev.triggerfish.schedule.create` / `.delete` control events add and remove recurring
//!   schedules (their `data` is the schedule: name, schedule, timezone, event, sink);
//! - any other event must carry `deliverat` (RFC 3339) or `deliverafter` (ISO-8601); it is
//!   published to the trigger's broker again at that time, without those extensions.
//!
//! A malformed request fails without retries (it goes to the dead-letter sink, with the reason
//! as `knativeerrordata`); a full scheduler fails retryably.

use bytes::Bytes;
use chrono::Utc;
use http::StatusCode;
use triggerfish_core::cron::recurring::{
    CREATE_TYPE, DELETE_TYPE, DELIVER_AFTER, DELIVER_AT, DeleteRequest, ScheduleRequest, due_time,
};
use triggerfish_core::delivery::InternalError;
use triggerfish_core::event::{EncodeOptions, EventView, decode_structured, encode_structured};

use super::{Attempt, Request, Response};
use crate::scheduler::{Refused, SchedulerHandle};
use crate::store::TTL_EXTENSION;

/// Handles one event for the scheduler.
pub async fn send(handle: &SchedulerHandle, view: &EventView<'_>, req: &Request) -> Attempt {
    let namespace = req.broker.split('/').next().unwrap_or("default").to_owned();
    let result = match view.ty() {
        CREATE_TYPE => match parse::<ScheduleRequest>(view) {
            Ok(request) => handle.create(namespace, request).await,
            Err(e) => Err(Refused::Invalid(e)),
        },
        DELETE_TYPE => match parse::<DeleteRequest>(view) {
            Ok(request) => handle.delete(namespace, request.name).await,
            Err(e) => Err(Refused::Invalid(e)),
        },
        _ => delay(handle, view, req).await,
    };
    match result {
        Ok(()) => Attempt::accepted(),
        Err(Refused::Invalid(reason)) => {
            tracing::warn!(id = view.id(), reason = %reason, "scheduler refused an event");
            Attempt::Response(Response {
                status: StatusCode::BAD_REQUEST,
                retry_after: None,
                reply: None,
                body_excerpt: Bytes::from(reason),
            })
        }
        Err(Refused::Unavailable(reason)) => {
            tracing::debug!(id = view.id(), reason = %reason, "scheduler unavailable");
            Attempt::Internal(InternalError::Unavailable)
        }
    }
}

async fn delay(
    handle: &SchedulerHandle,
    view: &EventView<'_>,
    req: &Request,
) -> Result<(), Refused> {
    let max = handle.limits.load().max_delay;
    let due = due_time(view, Utc::now(), max).map_err(|e| Refused::Invalid(e.to_string()))?;
    let Some(ttl) = req.ttl.checked_sub(1).filter(|t| *t > 0) else {
        return Err(Refused::Invalid("knativebrokerttl exhausted".into()));
    };
    let opts = EncodeOptions {
        skip: &[DELIVER_AT, DELIVER_AFTER, TTL_EXTENSION],
        add: &[],
    };
    let batch = decode_structured(encode_structured(view, &opts), &req.reply_limits)
        .map_err(|e| Refused::Invalid(e.to_string()))?;
    handle
        .delay(
            std::sync::Arc::clone(&req.broker),
            std::sync::Arc::new(batch),
            ttl,
            due,
        )
        .await
}

fn parse<T: serde::de::DeserializeOwned>(view: &EventView<'_>) -> Result<T, String> {
    let bytes = view.data().to_bytes();
    if bytes.is_empty() {
        return Err(format!("{} needs its schedule as JSON data", view.ty()));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("invalid {} data: {e}", view.ty()))
}
