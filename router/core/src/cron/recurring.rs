//! Recurring events (PingSource, and schedules created at run time) and delayed events: what
//! they send, and when. Everything here takes the current time and event ids as arguments.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use crate::config::{FieldPath, IsoDuration, PingSourceSpec};
use crate::cron::{Schedule, parse_zone};
use crate::event::{
    AttrValue, DecodeLimits, EventBatch, EventView, check_chars, decode_structured,
    is_json_media_type,
};

/// The event type of PingSource events.
pub const PING_TYPE: &str = "dev.knative.sources.ping";
/// The extension marking an event fired late, on catch-up, with its scheduled time.
pub const SCHEDULED_TIME_EXTENSION: &str = "scheduledtime";
/// Extension asking the scheduler sink to deliver an event at an RFC 3339 time.
pub const DELIVER_AT: &str = "deliverat";
/// Extension asking the scheduler sink to deliver an event after an ISO-8601 duration.
pub const DELIVER_AFTER: &str = "deliverafter";
/// Control event: create a recurring schedule.
pub const CREATE_TYPE: &str = "dev.triggerfish.schedule.create";
/// Control event: delete a recurring schedule.
pub const DELETE_TYPE: &str = "dev.triggerfish.schedule.delete";

/// The event a recurring schedule sends at each tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventTemplate {
    /// `type`.
    pub ty: String,
    /// `source`.
    pub source: String,
    /// `subject`.
    pub subject: Option<String>,
    /// `datacontenttype`.
    pub content_type: Option<String>,
    /// The data.
    pub data: TemplateData,
    /// Extensions.
    pub extensions: Vec<(String, String)>,
}

/// Data of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateData {
    /// None.
    None,
    /// A JSON value, as text (validated).
    Json(String),
    /// Text.
    Text(String),
    /// Bytes (from `dataBase64`).
    Binary(Vec<u8>),
}

/// A recurring event: a schedule in a zone, and what to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recurring {
    /// The schedule.
    pub schedule: Schedule,
    /// Its time zone.
    pub zone: Tz,
    /// What each tick sends.
    pub template: EventTemplate,
    /// How far back missed ticks are fired on start; `None` skips them.
    pub catch_up: Option<Duration>,
    /// The template's members that do not change between ticks, as JSON, so that a tick
    /// only writes its id and time around them.
    members: String,
}

/// A problem with a schedule's definition, and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// The field.
    pub path: FieldPath,
    /// What is wrong.
    pub message: String,
}

/// The zone a schedule runs in: its own `CRON_TZ=`/`TZ=` prefix, else `timezone`, else UTC.
/// Both at once is refused, as Knative refuses it (it prefixes `timezone` as `CRON_TZ=`, which
/// makes a second prefix). Without a parsed schedule, only `timezone` is checked.
fn zone_of(schedule: Option<&Schedule>, timezone: Option<&str>) -> Result<Tz, String> {
    match (schedule.and_then(Schedule::zone), timezone) {
        (Some(_), Some(_)) => Err(
            "the schedule sets its own zone with CRON_TZ= or TZ=; set the zone in one place"
                .to_owned(),
        ),
        (Some(zone), None) => Ok(zone),
        (None, Some(name)) => parse_zone(name).map_err(|e| e.to_string()),
        (None, None) => Ok(Tz::UTC),
    }
}

impl Recurring {
    /// Builds a `PingSource` `namespace/name` from its spec. Errors name `spec.*` fields.
    pub fn from_ping_source(
        namespace: &str,
        name: &str,
        spec: &PingSourceSpec,
    ) -> Result<Recurring, Vec<Invalid>> {
        let root = FieldPath::root().key("spec");
        let mut errors = Vec::new();
        let schedule = Schedule::parse(&spec.schedule)
            .map_err(|e| {
                errors.push(Invalid {
                    path: root.key("schedule"),
                    message: e.to_string(),
                })
            })
            .ok();
        let zone = zone_of(schedule.as_ref(), spec.timezone.as_deref())
            .map_err(|message| {
                errors.push(Invalid {
                    path: root.key("timezone"),
                    message,
                })
            })
            .ok();
        // The decoder refuses control characters and noncharacters in attribute values; a
        // `contentType` holding one made every tick's event fail to decode, so each tick was
        // lost (a `config_load` fuzz finding, see docs/fuzzing.md).
        if let Some(ct) = &spec.content_type
            && let Err(e) = check_chars("datacontenttype", ct)
        {
            errors.push(Invalid {
                path: root.key("contentType"),
                message: e.to_string(),
            });
        }
        let data = match (&spec.data, &spec.data_base64) {
            (Some(_), Some(_)) => {
                errors.push(Invalid {
                    path: root.key("dataBase64"),
                    message: "data and dataBase64 are mutually exclusive".into(),
                });
                TemplateData::None
            }
            (Some(text), None) => {
                if spec.content_type.as_deref().is_some_and(is_json_media_type) {
                    match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                        Ok(_) => TemplateData::Json(text.clone()),
                        Err(e) => {
                            errors.push(Invalid {
                                path: root.key("data"),
                                message: format!(
                                    "contentType is JSON but data is not valid JSON: {e}"
                                ),
                            });
                            TemplateData::None
                        }
                    }
                } else {
                    TemplateData::Text(text.clone())
                }
            }
            (None, Some(b64)) => match base64::engine::general_purpose::STANDARD.decode(b64) {
                Ok(bytes) => TemplateData::Binary(bytes),
                Err(e) => {
                    errors.push(Invalid {
                        path: root.key("dataBase64"),
                        message: format!("not valid base64: {e}"),
                    });
                    TemplateData::None
                }
            },
            (None, None) => TemplateData::None,
        };
        let extensions = check_extensions(
            spec.ce_overrides.iter().flat_map(|o| o.extensions.iter()),
            &root.key("ceOverrides").key("extensions"),
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        let (Some(schedule), Some(zone)) = (schedule, zone) else {
            return Err(errors);
        };
        let template = EventTemplate {
            ty: PING_TYPE.to_owned(),
            source: format!("/apis/v1/namespaces/{namespace}/pingsources/{name}"),
            subject: None,
            content_type: spec.content_type.clone(),
            data,
            extensions,
        };
        Ok(Recurring::new(
            schedule,
            zone,
            template,
            spec.catch_up.as_ref().map(|c| c.max_age.get()),
        ))
    }

    /// A recurring event.
    pub fn new(
        schedule: Schedule,
        zone: Tz,
        template: EventTemplate,
        catch_up: Option<Duration>,
    ) -> Recurring {
        let members = template.static_members();
        Recurring {
            schedule,
            zone,
            template,
            catch_up,
            members,
        }
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.next_after(after, &self.zone)
    }

    /// The ticks in `(last_fired, now]` no older than the catch-up age, oldest first.
    pub fn missed(&self, last_fired: DateTime<Utc>, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let Some(max_age) = self
            .catch_up
            .and_then(|d| chrono::Duration::from_std(d).ok())
        else {
            return Vec::new();
        };
        let mut from = last_fired.max(now - max_age);
        let mut out = Vec::new();
        while let Some(t) = self.next_after(from) {
            if t > now || out.len() >= 10_000 {
                break;
            }
            out.push(t);
            from = t;
        }
        out
    }

    /// The event for the tick at `tick`, with id `id`. A late tick (catch-up) carries
    /// `scheduledtime`.
    pub fn event(&self, tick: DateTime<Utc>, id: &str, late: bool) -> EventBatch {
        let time = tick.to_rfc3339_opts(SecondsFormat::Secs, true);
        let mut json = String::with_capacity(self.members.len() + 96);
        json.push_str("{\"specversion\":\"1.0\",\"id\":");
        // The id is the caller's (a UUID from the scheduler); escape it anyway.
        json.push_str(&serde_json::Value::String(id.to_owned()).to_string());
        json.push_str(",\"time\":\"");
        json.push_str(&time);
        json.push('"');
        if late {
            json.push_str(",\"scheduledtime\":\"");
            json.push_str(&time);
            json.push('"');
        }
        json.push_str(&self.members);
        json.push('}');
        let limits = DecodeLimits {
            max_event_bytes: usize::MAX,
            ..DecodeLimits::default()
        };
        // Templates are validated when built, so the event always decodes; a failure would
        // be a bug, and yields an empty batch rather than a panic.
        decode_structured(Bytes::from(json), &limits).unwrap_or_else(|_| EventBatch::empty())
    }
}

fn check_extensions<'a>(
    pairs: impl Iterator<Item = (&'a String, &'a String)>,
    path: &FieldPath,
    errors: &mut Vec<Invalid>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, value) in pairs {
        match crate::config::CeOverrides::extension_problem(name, value) {
            Some(message) => errors.push(Invalid {
                path: path.key(name.as_str()),
                message,
            }),
            None => out.push((name.clone(), value.clone())),
        }
    }
    out
}

impl EventTemplate {
    /// The members that are the same at every tick, as JSON object members each preceded by
    /// a comma.
    fn static_members(&self) -> String {
        let mut obj = serde_json::Map::new();
        let s = |v: &str| serde_json::Value::String(v.to_owned());
        obj.insert("source".into(), s(&self.source));
        obj.insert("type".into(), s(&self.ty));
        if let Some(subject) = &self.subject {
            obj.insert("subject".into(), s(subject));
        }
        if let Some(ct) = &self.content_type {
            obj.insert("datacontenttype".into(), s(ct));
        }
        for (k, v) in &self.extensions {
            obj.insert(k.clone(), s(v));
        }
        match &self.data {
            TemplateData::None => {}
            TemplateData::Json(text) => {
                obj.insert(
                    "data".into(),
                    serde_json::from_str(text).unwrap_or(serde_json::Value::Null),
                );
            }
            TemplateData::Text(text) => {
                obj.insert("data".into(), s(text));
            }
            TemplateData::Binary(bytes) => {
                obj.insert(
                    "data_base64".into(),
                    s(&base64::engine::general_purpose::STANDARD.encode(bytes)),
                );
            }
        }
        let json = serde_json::Value::Object(obj).to_string();
        // `{...}` to `,...`: the object's members, ready to follow `id` and `time`.
        let inner = &json[1..json.len() - 1];
        if inner.is_empty() {
            String::new()
        } else {
            format!(",{inner}")
        }
    }
}

/// A schedule created at run time by a `dev.triggerfish.schedule.create` event.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// Unique within the trigger's namespace.
    pub name: String,
    /// Cron schedule, as for PingSource.
    #[serde(alias = "cron")]
    pub schedule: String,
    /// IANA zone; UTC when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// The event each tick sends.
    pub event: EventTemplateSpec,
    /// Where the events go (`uri` or `ref`, as a trigger's subscriber).
    pub sink: crate::config::DestinationSpec,
}

/// The event of a schedule request.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventTemplateSpec {
    /// `type`.
    #[serde(rename = "type")]
    pub ty: String,
    /// `source`.
    pub source: String,
    /// `subject`.
    #[serde(default)]
    pub subject: Option<String>,
    /// `datacontenttype`; JSON when unset and `data` is given.
    #[serde(default)]
    pub datacontenttype: Option<String>,
    /// Any JSON value.
    #[serde(default)]
    pub data: Option<serde_json::Value>,
    /// Extensions.
    #[serde(default)]
    pub extensions: std::collections::BTreeMap<String, String>,
}

/// A delete request.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    /// The schedule's name.
    pub name: String,
}

impl ScheduleRequest {
    /// Validates the request into a recurring schedule (without catch-up).
    pub fn recurring(&self) -> Result<Recurring, String> {
        let schedule = Schedule::parse(&self.schedule).map_err(|e| format!("schedule: {e}"))?;
        let zone = zone_of(Some(&schedule), self.timezone.as_deref())
            .map_err(|e| format!("timezone: {e}"))?;
        if !is_valid_schedule_name(&self.name) {
            return Err(format!(
                "name {:?}: use lower-case letters, digits and '-', at most 63",
                self.name
            ));
        }
        let mut errors = Vec::new();
        let extensions = check_extensions(
            self.event.extensions.iter(),
            &FieldPath::root().key("extensions"),
            &mut errors,
        );
        if let Some(e) = errors.first() {
            return Err(e.message.clone());
        }
        if self.event.ty.is_empty() || self.event.source.is_empty() {
            return Err("event.type and event.source must not be empty".into());
        }
        let (content_type, data) = match &self.event.data {
            None => (self.event.datacontenttype.clone(), TemplateData::None),
            Some(serde_json::Value::String(text))
                if self
                    .event
                    .datacontenttype
                    .as_deref()
                    .is_some_and(|c| !is_json_media_type(c)) =>
            {
                (
                    self.event.datacontenttype.clone(),
                    TemplateData::Text(text.clone()),
                )
            }
            Some(v) => (
                Some(
                    self.event
                        .datacontenttype
                        .clone()
                        .unwrap_or_else(|| "application/json".into()),
                ),
                TemplateData::Json(v.to_string()),
            ),
        };
        let template = EventTemplate {
            ty: self.event.ty.clone(),
            source: self.event.source.clone(),
            subject: self.event.subject.clone(),
            content_type,
            data,
            extensions,
        };
        let recurring = Recurring::new(schedule, zone, template, None);
        // The template must produce a valid event.
        if recurring
            .event(DateTime::<Utc>::UNIX_EPOCH, "check", false)
            .is_empty()
        {
            return Err("event: the template does not make a valid CloudEvent (check source and attribute values)".into());
        }
        Ok(recurring)
    }
}

/// Whether `name` is a valid schedule name (a DNS label, as Kubernetes names).
pub fn is_valid_schedule_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Why an event cannot be delayed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DelayError {
    /// Neither extension is set.
    #[error("the event has neither deliverat nor deliverafter")]
    Missing,
    /// Both are set.
    #[error("deliverat and deliverafter are mutually exclusive")]
    Both,
    /// `deliverat` is not RFC 3339.
    #[error("deliverat {0:?} is not an RFC 3339 timestamp")]
    BadTime(String),
    /// `deliverafter` is not an ISO-8601 duration.
    #[error("deliverafter {0:?} is not an ISO-8601 duration: {1}")]
    BadDuration(String, String),
    /// Further away than the scheduler allows.
    #[error("the delay of {delay:?} is over the scheduler's maxDelay of {max:?}")]
    TooFar {
        /// The requested delay.
        delay: Duration,
        /// The limit.
        max: Duration,
    },
}

/// When a delayed event is due: `deliverat`, or `now + deliverafter`. A `deliverat` in the
/// past is due at once.
pub fn due_time(
    view: &EventView<'_>,
    now: DateTime<Utc>,
    max: Duration,
) -> Result<DateTime<Utc>, DelayError> {
    let text = |v: AttrValue<'_>| v.with_canonical_str(str::to_owned);
    let due = match (view.extension(DELIVER_AT), view.extension(DELIVER_AFTER)) {
        (None, None) => return Err(DelayError::Missing),
        (Some(_), Some(_)) => return Err(DelayError::Both),
        (Some(at), None) => {
            let at = text(at);
            DateTime::parse_from_rfc3339(&at)
                .map_err(|_| DelayError::BadTime(at.clone()))?
                .with_timezone(&Utc)
                .max(now)
        }
        (None, Some(after)) => {
            let after = text(after);
            let d = IsoDuration::parse(&after)
                .map_err(|e| DelayError::BadDuration(after.clone(), e.to_string()))?
                .get();
            now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
        }
    };
    let delay = (due - now).to_std().unwrap_or_default();
    if delay > max {
        return Err(DelayError::TooFar { delay, max });
    }
    Ok(due)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CatchUpSpec, CeOverrides, DestinationSpec};

    fn spec(schedule: &str) -> PingSourceSpec {
        PingSourceSpec {
            schedule: schedule.into(),
            timezone: None,
            content_type: None,
            data: None,
            data_base64: None,
            sink: DestinationSpec::default(),
            ce_overrides: None,
            catch_up: None,
            delivery: None,
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn ping_event_shape() {
        let mut s = spec("*/1 * * * *");
        s.content_type = Some("application/json".into());
        s.data = Some(r#"{"message":"hello"}"#.into());
        s.ce_overrides = Some(CeOverrides {
            extensions: [("team".to_owned(), "blue".to_owned())].into(),
        });
        let r = Recurring::from_ping_source("default", "heartbeat", &s).unwrap();
        let b = r.event(utc("2026-01-01T10:00:00Z"), "5b3e", false);
        let e = b.get(0).unwrap();
        assert_eq!(e.ty(), "dev.knative.sources.ping");
        assert_eq!(
            e.source(),
            "/apis/v1/namespaces/default/pingsources/heartbeat"
        );
        assert_eq!(e.id(), "5b3e");
        assert_eq!(e.time(), Some("2026-01-01T10:00:00Z"));
        assert_eq!(e.extension("team"), Some(AttrValue::Str("blue")));
        assert_eq!(e.data().to_bytes().as_ref(), br#"{"message":"hello"}"#);
        assert!(e.extension(SCHEDULED_TIME_EXTENSION).is_none());
        let late = r.event(utc("2026-01-01T10:00:00Z"), "x", true);
        assert_eq!(
            late.get(0).unwrap().extension("scheduledtime"),
            Some(AttrValue::Str("2026-01-01T10:00:00Z"))
        );
    }

    #[test]
    fn ping_source_validation() {
        let errs = |s: &PingSourceSpec| Recurring::from_ping_source("d", "p", s).unwrap_err();
        assert_eq!(errs(&spec("@reboot"))[0].path.to_string(), "spec.schedule");
        assert_eq!(
            errs(&spec("@every 500ms"))[0].path.to_string(),
            "spec.schedule"
        );
        let mut s = spec("* * * * *");
        s.timezone = Some("Nowhere/Land".into());
        assert_eq!(errs(&s)[0].path.to_string(), "spec.timezone");
        // A zone in the schedule (robfig/cron's prefix, which Knative accepts) is used; with
        // `timezone` as well it is refused, as Knative refuses it.
        let r =
            Recurring::from_ping_source("d", "p", &spec("CRON_TZ=Asia/Tokyo 0 9 * * *")).unwrap();
        assert_eq!(r.zone, Tz::Asia__Tokyo);
        assert_eq!(
            r.next_after(utc("2026-01-01T00:30:00Z")),
            Some(utc("2026-01-02T00:00:00Z"))
        );
        let mut s = spec("TZ=Asia/Tokyo 0 9 * * *");
        s.timezone = Some("Europe/Berlin".into());
        let e = errs(&s);
        assert_eq!(e[0].path.to_string(), "spec.timezone");
        assert!(e[0].message.contains("CRON_TZ="), "{}", e[0].message);
        assert_eq!(
            errs(&spec("CRON_TZ=Nowhere/Land 0 9 * * *"))[0]
                .path
                .to_string(),
            "spec.schedule"
        );
        let mut s = spec("* * * * *");
        s.content_type = Some("application/json".into());
        s.data = Some("{not json".into());
        assert!(errs(&s)[0].message.contains("not valid JSON"));
        let mut s = spec("* * * * *");
        s.data = Some("x".into());
        s.data_base64 = Some("eA==".into());
        assert_eq!(errs(&s)[0].path.to_string(), "spec.dataBase64");
        let mut s = spec("* * * * *");
        s.ce_overrides = Some(CeOverrides {
            extensions: [("Bad_Name".to_owned(), "v".to_owned())].into(),
        });
        assert!(
            errs(&s)[0]
                .path
                .to_string()
                .starts_with("spec.ceOverrides.extensions")
        );
        // Text data with a non-JSON type is fine.
        let mut s = spec("* * * * *");
        s.content_type = Some("text/plain".into());
        s.data = Some("not json".into());
        assert!(Recurring::from_ping_source("d", "p", &s).is_ok());
    }

    /// A control character in `contentType` or an extension value made every tick's event
    /// fail to decode, losing each tick (a `config_load` fuzz finding); both are refused.
    #[test]
    fn ping_source_attribute_values_are_event_strings() {
        let errs = |s: &PingSourceSpec| Recurring::from_ping_source("d", "p", s).unwrap_err();
        let mut s = spec("* * * * *");
        s.content_type = Some("text/\tplain".into());
        let e = &errs(&s)[0];
        assert_eq!(e.path.to_string(), "spec.contentType");
        assert!(e.message.contains("U+0009"), "{}", e.message);
        let mut s = spec("* * * * *");
        s.ce_overrides = Some(CeOverrides {
            extensions: [("team".to_owned(), "bl\u{1}ue".to_owned())].into(),
        });
        assert_eq!(
            errs(&s)[0].path.to_string(),
            "spec.ceOverrides.extensions.team"
        );
        let mut s = spec("* * * * *");
        s.content_type = Some("text/plain; charset=\"é\"".into());
        let r = Recurring::from_ping_source("d", "p", &s).unwrap();
        assert_eq!(r.event(utc("2026-01-01T10:00:00Z"), "x", false).len(), 1);
    }

    #[test]
    fn catch_up_lists_missed_ticks_within_max_age() {
        let mut s = spec("*/10 * * * *");
        s.catch_up = Some(CatchUpSpec {
            max_age: IsoDuration::from_secs(3600),
        });
        let r = Recurring::from_ping_source("d", "p", &s).unwrap();
        let missed = r.missed(utc("2026-01-01T08:00:00Z"), utc("2026-01-01T10:05:00Z"));
        assert_eq!(
            missed.first(),
            Some(&utc("2026-01-01T09:10:00Z")),
            "only the last hour"
        );
        assert_eq!(missed.last(), Some(&utc("2026-01-01T10:00:00Z")));
        assert_eq!(missed.len(), 6);
        let skip = Recurring::from_ping_source("d", "p", &spec("*/10 * * * *")).unwrap();
        assert!(
            skip.missed(utc("2026-01-01T08:00:00Z"), utc("2026-01-01T10:05:00Z"))
                .is_empty()
        );
    }

    #[test]
    fn delays() {
        let now = utc("2026-01-01T00:00:00Z");
        let max = Duration::from_secs(7 * 86400);
        let ev = |ext: &str| {
            decode_structured(
                Bytes::from(format!(
                    r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t"{ext}}}"#
                )),
                &DecodeLimits::default(),
            )
            .unwrap()
        };
        let b = ev(r#","deliverafter":"PT90S""#);
        assert_eq!(
            due_time(&b.get(0).unwrap(), now, max),
            Ok(utc("2026-01-01T00:01:30Z"))
        );
        let b = ev(r#","deliverat":"2026-01-02T00:00:00+01:00""#);
        assert_eq!(
            due_time(&b.get(0).unwrap(), now, max),
            Ok(utc("2026-01-01T23:00:00Z"))
        );
        let b = ev(r#","deliverat":"2025-01-01T00:00:00Z""#);
        assert_eq!(
            due_time(&b.get(0).unwrap(), now, max),
            Ok(now),
            "past: due now"
        );
        let b = ev(r#","deliverafter":"P30D""#);
        assert!(matches!(
            due_time(&b.get(0).unwrap(), now, max),
            Err(DelayError::TooFar { .. })
        ));
        let b = ev(r#","deliverafter":"soon""#);
        assert!(matches!(
            due_time(&b.get(0).unwrap(), now, max),
            Err(DelayError::BadDuration(..))
        ));
        let b = ev("");
        assert_eq!(
            due_time(&b.get(0).unwrap(), now, max),
            Err(DelayError::Missing)
        );
    }

    #[test]
    fn schedule_requests() {
        let req: ScheduleRequest = serde_json::from_str(
            r#"{"name":"nightly","schedule":"0 2 * * *","timezone":"Europe/Berlin","event":{"type":"com.example.report","source":"/reports","data":{"kind":"daily"}},"sink":{"uri":"http://127.0.0.1:9/"}}"#,
        )
        .unwrap();
        let r = req.recurring().unwrap();
        let e = r.event(utc("2026-01-01T01:00:00Z"), "1", false);
        assert_eq!(
            e.get(0).unwrap().datacontenttype(),
            Some("application/json")
        );
        let mut bad = req.clone();
        bad.name = "Not Valid".into();
        assert!(bad.recurring().is_err());
        let mut bad = req.clone();
        bad.schedule = "@every 1ms".into();
        assert!(bad.recurring().is_err());
        let mut bad = req;
        bad.event.source = "not a uri".into();
        assert!(bad.recurring().is_err());
    }
}
