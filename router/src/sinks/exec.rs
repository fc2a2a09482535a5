//! The `Exec` sink: runs a configured program for each event, the local counterpart of
//! Knative's JobSink.
//!
//! The program is started from an argument vector, never through a shell; `{{attribute}}`
//! placeholders are replaced inside single arguments, so an attribute value can never add or
//! split arguments. The event goes to standard input as structured JSON, its attributes to
//! `CE_*` environment variables. Exit 0 is success; anything else is a retryable failure whose
//! standard error (its last KiB) becomes `knativeerrordata` if the event is dead-lettered. A
//! run past its timeout is killed.
//!
//! Standard output is a reply when it claims to be one: JSON (an object, or an array for a
//! batch) that names `specversion`. Output that claims to be a reply and is not a valid one
//! fails the run as a malformed HTTP reply fails an attempt (502, see
//! [`Attempt::invalid_reply`]). Anything else a program prints (a build log, a JSON document
//! of its own) is no reply, as a plain HTTP response body is none. Both pipes are read to
//! their end, however much the program writes, so that it never dies of a closed pipe; only
//! the first `limits.maxEventBytes` of standard output and the last KiB of standard error are
//! kept.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use triggerfish_core::config::ExecSpec;
use triggerfish_core::delivery::{InternalError, TransportError};
use triggerfish_core::event::{
    DecodeLimits, EncodeOptions, EventView, KnownAttr, decode_batched, decode_structured,
    encode_structured,
};
use triggerfish_core::filter::AttrKey;

use super::{Attempt, Response};

/// Default longest run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Why an `Exec` spec cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// `command` is empty.
    #[error("command must name a program")]
    NoCommand,
    /// A `{{` without its `}}`.
    #[error("argument {index}: unclosed {{{{ placeholder")]
    Unclosed {
        /// The argument's position.
        index: usize,
    },
    /// A placeholder that is not an attribute name.
    #[error(
        "argument {index}: {{{{{name}}}}} is not an attribute name (lower-case letters and digits)"
    )]
    BadName {
        /// The argument's position.
        index: usize,
        /// What was written.
        name: String,
    },
    /// The program cannot be found.
    #[error("program {0:?} not found (give an absolute path, or a name on PATH)")]
    NotFound(String),
}

enum Piece {
    Text(String),
    Attr(AttrKey),
}

/// An argument with placeholders.
struct Template(Vec<Piece>);

impl Template {
    fn parse(index: usize, arg: &str) -> Result<Template, ExecError> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = arg;
        while let Some(start) = rest.find("{{") {
            text.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            if let Some(stripped) = after.strip_prefix("{{") {
                text.push_str("{{");
                rest = stripped;
                continue;
            }
            let end = after.find("}}").ok_or(ExecError::Unclosed { index })?;
            let name = after[..end].trim();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            {
                return Err(ExecError::BadName {
                    index,
                    name: name.to_owned(),
                });
            }
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Attr(AttrKey::new(name)));
            rest = &after[end + 2..];
        }
        text.push_str(rest);
        if !text.is_empty() || pieces.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Template(pieces))
    }

    fn render(&self, view: &EventView<'_>) -> Result<String, String> {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Attr(key) => match key.get(view) {
                    Some(v) => v.with_canonical_str(|s| out.push_str(s)),
                    None => {
                        return Err(format!(
                            "the event has no attribute {:?} for the command line",
                            key.name()
                        ));
                    }
                },
            }
        }
        Ok(out)
    }
}

/// One `Exec` resource, shared by every trigger that uses it.
pub struct ExecSink {
    name: String,
    args: Vec<Template>,
    env: Vec<(String, String)>,
    working_dir: Option<PathBuf>,
    slots: Arc<Semaphore>,
    timeout: Duration,
    reply_limits: DecodeLimits,
}

/// The last bytes of standard error kept for `knativeerrordata`.
const STDERR_TAIL: usize = 1024;

impl ExecSink {
    /// Builds the sink of an `Exec` spec, checking its templates and that its program exists.
    pub fn new(
        name: String,
        spec: &ExecSpec,
        reply_limits: DecodeLimits,
    ) -> Result<ExecSink, ExecError> {
        let program = spec.command.first().ok_or(ExecError::NoCommand)?;
        if !program_exists(program) {
            return Err(ExecError::NotFound(program.clone()));
        }
        let args = spec
            .command
            .iter()
            .enumerate()
            .map(|(i, a)| Template::parse(i, a))
            .collect::<Result<_, _>>()?;
        Ok(ExecSink {
            name,
            args,
            env: spec
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            working_dir: spec.working_dir.clone(),
            slots: Arc::new(Semaphore::new(
                spec.concurrency.map_or(1, |n| n.get() as usize),
            )),
            timeout: spec.timeout.map_or(DEFAULT_TIMEOUT, |t| t.get()),
            reply_limits,
        })
    }

    /// `namespace/name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the program once for the event.
    pub async fn send(&self, view: &EventView<'_>, opts: &EncodeOptions<'_>) -> Attempt {
        let argv = match self
            .args
            .iter()
            .map(|t| t.render(view))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(exec = %self.name, id = view.id(), error = %e, "cannot build the command line");
                return Attempt::Internal(InternalError::Encode);
            }
        };
        let Ok(_slot) = self.slots.acquire().await else {
            return Attempt::Internal(InternalError::Unavailable);
        };
        let mut command = tokio::process::Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for key in ["PATH", "HOME", "LANG"] {
            if let Some(v) = std::env::var_os(key) {
                command.env(key, v);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        for attr in KnownAttr::ALL {
            if let Some(v) = view.known(attr) {
                command.env(format!("CE_{}", attr.name().to_ascii_uppercase()), v);
            }
        }
        for (name, value) in opts.extensions(view) {
            command.env(
                format!("CE_{}", name.to_ascii_uppercase()),
                value.to_string(),
            );
        }
        if let Some(dir) = &self.working_dir {
            command.current_dir(dir);
        }
        let input = encode_structured(view, opts);
        match tokio::time::timeout(self.timeout, self.run(command, input)).await {
            Ok(attempt) => attempt,
            Err(_) => {
                tracing::warn!(exec = %self.name, id = view.id(), timeout = ?self.timeout, "program killed: it ran past its timeout");
                Attempt::Transport(TransportError::Timeout)
            }
        }
    }

    async fn run(&self, mut command: tokio::process::Command, input: Bytes) -> Attempt {
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(exec = %self.name, error = %e, "cannot start the program");
                return failure(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Bytes::from(format!("cannot start: {e}")),
                );
            }
        };
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Attempt::Internal(InternalError::Unavailable);
        };
        let limit = self.reply_limits.max_event_bytes as u64;
        let write = async move {
            // A program that does not read its input closes the pipe: not our failure.
            let _ = stdin.write_all(&input).await;
            drop(stdin);
        };
        let read_out = read_head(stdout, limit as usize + 1);
        let read_err = read_tail(stderr, STDERR_TAIL);
        let ((), out, err) = tokio::join!(write, read_out, read_err);
        let status = match child.wait().await {
            Ok(s) => s,
            Err(e) => {
                return failure(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Bytes::from(format!("waiting for the program: {e}")),
                );
            }
        };
        if !status.success() {
            tracing::debug!(exec = %self.name, status = %status, "program failed");
            return failure(StatusCode::INTERNAL_SERVER_ERROR, Bytes::from(err));
        }
        let reply = if !claims_event(&out) {
            None
        } else if out.len() as u64 > limit {
            Some(Err(format!(
                "the program printed a reply of more than {limit} bytes"
            )))
        } else {
            let trimmed = Bytes::from(out);
            let first = trimmed.iter().find(|b| !b.is_ascii_whitespace()).copied();
            Some(if first == Some(b'[') {
                decode_batched(trimmed, &self.reply_limits)
                    .map_err(|e| e.to_string())
                    .and_then(|d| match d.rejected.first() {
                        Some(e) => Err(e.to_string()),
                        None => Ok(d.batch),
                    })
            } else {
                decode_structured(trimmed, &self.reply_limits).map_err(|e| e.to_string())
            })
        };
        Attempt::Response(Response {
            status: StatusCode::OK,
            retry_after: None,
            reply: reply.map(Box::new),
            body_excerpt: Bytes::new(),
        })
    }
}

/// Whether a program's standard output claims to be a reply: JSON, an object or an array,
/// that names `specversion` (a quick look, not a parse: the decoder has the last word).
fn claims_event(out: &[u8]) -> bool {
    let first = out.iter().find(|b| !b.is_ascii_whitespace());
    matches!(first, Some(b'{' | b'[')) && memchr::memmem::find(out, b"\"specversion\"").is_some()
}

/// Reads `pipe` to its end and keeps its first `keep` bytes.
async fn read_head(mut pipe: impl tokio::io::AsyncRead + Unpin, keep: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 8192];
    while let Ok(n @ 1..) = pipe.read(&mut buf).await {
        let take = n.min(keep - kept.len());
        kept.extend_from_slice(&buf[..take]);
    }
    kept
}

/// Reads `pipe` to its end and keeps its last `keep` bytes.
async fn read_tail(mut pipe: impl tokio::io::AsyncRead + Unpin, keep: usize) -> Vec<u8> {
    let mut kept = std::collections::VecDeque::with_capacity(keep);
    let mut buf = vec![0u8; 8192];
    while let Ok(n @ 1..) = pipe.read(&mut buf).await {
        let data = &buf[n.saturating_sub(keep)..n];
        let overflow = (kept.len() + data.len()).saturating_sub(keep);
        kept.drain(..overflow);
        kept.extend(data);
    }
    kept.into()
}

fn failure(status: StatusCode, excerpt: Bytes) -> Attempt {
    Attempt::Response(Response {
        status,
        retry_after: None,
        reply: None,
        body_excerpt: excerpt,
    })
}

/// Whether `program` is an existing file, or a name found on `PATH`.
fn program_exists(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_claims_a_reply_by_naming_specversion() {
        assert!(claims_event(br#" {"specversion":"1.0","id":"1"}"#));
        assert!(claims_event(b"\n[{\"specversion\":\"1.0\"}]"));
        assert!(
            claims_event(br#"{"specversion": 1}"#),
            "invalid, but a claim"
        );
        assert!(!claims_event(br#"{"build":"ok"}"#));
        assert!(!claims_event(b"building \"specversion\"..."));
        assert!(!claims_event(b""));
        assert!(!claims_event(b"  \n"));
    }

    #[tokio::test]
    async fn pipes_are_read_to_the_end_keeping_their_head_or_tail() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(read_head(&data[..], 10_000).await, data[..10_000]);
        assert_eq!(read_head(&data[..], 60_000).await, data);
        assert_eq!(read_tail(&data[..], 1024).await, data[data.len() - 1024..]);
        assert_eq!(read_tail(&data[..], 60_000).await, data);
        assert_eq!(read_tail(&b"abc"[..], 2).await, b"bc");
        // Every size of read: a reader handing out 1 to 8,192 bytes at a time.
        let mut slow = in_chunks(&data);
        assert_eq!(read_tail(&mut slow, 1000).await, data[data.len() - 1000..]);
    }

    /// A reader over `data` that returns it in reads of growing sizes, 1 to 9,999 bytes.
    fn in_chunks(data: &[u8]) -> impl tokio::io::AsyncRead + Unpin + '_ {
        struct Chunks<'a>(&'a [u8], usize);
        impl tokio::io::AsyncRead for Chunks<'_> {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                self.1 = self.1 % 9_999 + 1;
                let n = self.1.min(self.0.len()).min(buf.remaining());
                buf.put_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                std::task::Poll::Ready(Ok(()))
            }
        }
        Chunks(data, 0)
    }

    #[test]
    fn templates() {
        assert!(Template::parse(0, "plain").is_ok());
        assert!(matches!(
            Template::parse(1, "a{{b"),
            Err(ExecError::Unclosed { index: 1 })
        ));
        assert!(matches!(
            Template::parse(0, "{{Type}}"),
            Err(ExecError::BadName { .. })
        ));
        assert!(matches!(
            Template::parse(0, "{{}}"),
            Err(ExecError::BadName { .. })
        ));
        let b = triggerfish_core::event::decode_structured(
            Bytes::from_static(br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","subject":"a b; rm -rf /","n":3}"#),
            &DecodeLimits::default(),
        )
        .unwrap();
        let v = b.get(0).unwrap();
        let t = Template::parse(0, "img={{subject}}:{{n}} {{{{literal}}").unwrap();
        assert_eq!(t.render(&v).unwrap(), "img=a b; rm -rf /:3 {{literal}}");
        assert!(
            Template::parse(0, "{{missing}}")
                .unwrap()
                .render(&v)
                .is_err()
        );
    }
}
