//! Resources of Triggerfish's own kinds whose meaning lives outside this module: sinks,
//! sources, workers. The loader parses their specs (typed, unknown fields rejected, errors
//! located like every other); the component that runs them checks the rest when it builds
//! them, reporting through [`crate::config::Config::error_at`].

use serde::Deserialize;

use crate::config::duration::IsoDuration;
use crate::config::meta::{ObjectMeta, ResourceId};

/// One resource of a custom kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomResource {
    /// Kind, namespace and name.
    pub id: ResourceId,
    /// `metadata`.
    pub meta: ObjectMeta,
    /// The typed spec.
    pub spec: CustomSpec,
    /// The YAML document it came from, from 0.
    pub document: usize,
}

/// The spec of a custom resource, by kind.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CustomSpec {
    /// `Exec`: a sink that runs a program per event.
    Exec(ExecSpec),
}

/// `spec` of an `Exec` sink (`triggerfish.dev/v1alpha1`): runs a program for each event it
/// receives, the local counterpart of Knative's JobSink.
///
/// The program runs from `command` as an argument vector, never through a shell. The event
/// arrives on standard input as structured JSON, and its attributes in environment variables
/// (`CE_ID`, `CE_TYPE`, `CE_SOURCE`, `CE_SUBJECT`, `CE_TIME`, `CE_DATACONTENTTYPE`, and
/// `CE_<EXTENSION>` upper-cased). Exit status 0 is success; anything else is a failure the
/// trigger's delivery spec may retry. A CloudEvent printed on standard output (structured JSON)
/// is a reply.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExecSpec {
    /// The program and its arguments. `{{name}}` in an argument is replaced by the event's
    /// attribute `name` (a missing attribute fails the delivery without running anything);
    /// `{{{{` is a literal `{{`. The substitution is plain text: it can never split or add
    /// arguments.
    pub command: Vec<String>,
    /// Extra environment variables. The program sees only these, `PATH`, `HOME`, `LANG` and
    /// the `CE_*` variables.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Working directory; defaults to the router's.
    #[serde(default)]
    pub working_dir: Option<std::path::PathBuf>,
    /// How many runs at once, over every trigger using this sink. Defaults to 1.
    #[serde(default)]
    pub concurrency: Option<std::num::NonZeroU32>,
    /// Longest run; the program is killed after it and the attempt counts as a timeout.
    /// Defaults to 5 minutes.
    #[serde(default)]
    pub timeout: Option<IsoDuration>,
}
