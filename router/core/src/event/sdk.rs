//! Conversion to and from the official SDK's `cloudevents::Event`, the interop type at the
//! edges (sources built on SDK bindings, tests that compare our codecs with the SDK's).
//!
//! Converting to the SDK copies everything into owned values, which is the cost the router's
//! own views avoid; use it off the hot path.

use base64::Engine as _;
use bytes::Bytes;
use cloudevents::event::{Data as SdkData, ExtensionValue};
use cloudevents::{Event, EventBuilder, EventBuilderV03, EventBuilderV10};

use super::attr::{AttrValue, SpecVersion};
use super::batch::{Data, EventBatch, EventView};
use super::error::{DecodeError, DecodeErrorKind};
use super::{DecodeLimits, decode_structured, is_json_media_type};

/// Why a view could not become an SDK event (the SDK is stricter in a few places, for example
/// it needs `dataschema` to be an absolute URL).
#[derive(Debug, thiserror::Error)]
#[error("cannot convert event {id:?} to cloudevents-sdk: {reason}")]
pub struct ToSdkError {
    /// The event's id.
    pub id: String,
    /// The SDK's complaint.
    pub reason: String,
}

/// Builds an owned SDK event from a view.
pub fn to_sdk(view: &EventView<'_>) -> Result<Event, ToSdkError> {
    let fail = |reason: String| ToSdkError {
        id: view.id().to_owned(),
        reason,
    };
    let data = sdk_data(view);
    macro_rules! build {
        ($builder:expr) => {{
            let mut b = $builder.id(view.id()).source(view.source()).ty(view.ty());
            if let Some(s) = view.subject() {
                b = b.subject(s);
            }
            if let Some(t) = view.time() {
                b = b.time(t);
            }
            for (name, value) in view.extensions() {
                b = match value {
                    AttrValue::Str(s) => b.extension(name, s),
                    AttrValue::Int(i) => b.extension(name, i64::from(i)),
                    AttrValue::Bool(v) => b.extension(name, v),
                };
            }
            let mut event = b.build().map_err(|e| fail(e.to_string()))?;
            match (view.datacontenttype(), data) {
                (Some(ct), Some(d)) => {
                    event.set_data(ct, d);
                }
                (None, Some(d)) => {
                    event.set_data_unchecked(d);
                }
                (Some(ct), None) => {
                    use cloudevents::event::AttributesWriter as _;
                    event.set_datacontenttype(Some(ct));
                }
                (None, None) => {}
            }
            if let Some(schema) = view.dataschema() {
                use cloudevents::event::AttributesWriter as _;
                let url = schema
                    .parse::<url::Url>()
                    .map_err(|e| fail(format!("dataschema: {e}")))?;
                event.set_dataschema(Some(url));
            }
            Ok(event)
        }};
    }
    match view.spec_version() {
        SpecVersion::V10 => build!(EventBuilderV10::new()),
        SpecVersion::V03 => build!(EventBuilderV03::new()),
    }
}

fn sdk_data(view: &EventView<'_>) -> Option<SdkData> {
    match view.data() {
        Data::None => None,
        Data::Json(bytes) => serde_json::from_slice(bytes).ok().map(SdkData::Json),
        Data::Text(s) => Some(SdkData::String(s.to_owned())),
        Data::Base64(s) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .ok()
            .map(SdkData::Binary),
        Data::Binary(b) => {
            let json = view.datacontenttype().is_some_and(is_json_media_type);
            match json.then(|| serde_json::from_slice(b).ok()).flatten() {
                Some(v) => Some(SdkData::Json(v)),
                None => Some(SdkData::Binary(b.to_vec())),
            }
        }
    }
}

/// Decodes an SDK event into a batch of one, through its structured JSON form.
pub fn from_sdk(event: &Event) -> Result<EventBatch, DecodeError> {
    let json = serde_json::to_vec(event).map_err(|e| {
        DecodeError::body(DecodeErrorKind::InvalidJson {
            offset: 0,
            reason: e.to_string(),
        })
    })?;
    decode_structured(
        Bytes::from(json),
        &DecodeLimits {
            max_event_bytes: usize::MAX,
            ..Default::default()
        },
    )
}

/// The extension value of an SDK event in our terms (integers outside 32 bits do not exist in
/// CloudEvents; they are clamped to `None`).
pub fn extension_value(value: &ExtensionValue) -> Option<AttrValue<'_>> {
    match value {
        ExtensionValue::String(s) => Some(AttrValue::Str(s)),
        ExtensionValue::Boolean(b) => Some(AttrValue::Bool(*b)),
        ExtensionValue::Integer(i) => i32::try_from(*i).ok().map(AttrValue::Int),
    }
}
