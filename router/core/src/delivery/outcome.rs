//! What an attempt came back with, and whether that is worth a retry.

use http::StatusCode;

/// The result of one delivery attempt, as the dispatcher saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// The destination answered with a status.
    Response {
        /// The HTTP status.
        status: StatusCode,
        /// The `Retry-After` header's value, if the response had one.
        retry_after: Option<&'a str>,
    },
    /// No complete response: the request failed on the way.
    Transport(TransportError),
    /// The router failed on its side, before or instead of sending.
    Internal(InternalError),
}

impl Outcome<'_> {
    /// A response with `status` and no `Retry-After`.
    pub fn status(status: StatusCode) -> Outcome<'static> {
        Outcome::Response {
            status,
            retry_after: None,
        }
    }
}

/// How a request to a destination failed without a response. All are retried, as Knative
/// retries every request error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The connection could not be made: refused, unreachable, or the name did not resolve.
    #[error("could not connect")]
    Connect,
    /// The attempt took longer than the delivery `timeout`.
    #[error("timed out")]
    Timeout,
    /// The connection was reset or closed before a full response.
    #[error("connection reset")]
    Reset,
    /// The TLS handshake failed.
    #[error("TLS handshake failed")]
    Tls,
    /// The response was not valid HTTP.
    #[error("invalid HTTP response")]
    Protocol,
}

/// A failure on the router's own side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum InternalError {
    /// The event could not be encoded for this destination. Retrying cannot help.
    #[error("could not encode the event for the destination")]
    Encode,
    /// An in-process destination or a local resource is busy or not ready (a full worker
    /// pool queue, say). Retried.
    #[error("in-process destination unavailable")]
    Unavailable,
}

/// Where a failure came from, as pingora's `ErrorSource` tells upstream from internal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorSource {
    /// The destination: it answered with an error status, or could not be reached or did not
    /// answer properly.
    Destination,
    /// The router itself.
    Router,
}

/// What went wrong in a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    /// A status other than 2xx.
    Status(StatusCode),
    /// No complete response.
    Transport(TransportError),
    /// A failure on the router's side.
    Internal(InternalError),
}

impl Cause {
    /// A short name, for metrics: `http_<status>` (`http_503`), `timeout`, `connect`, `reset`,
    /// `tls`, `protocol`, `encode` or `unavailable`.
    pub fn label(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Cause::Status(status) => format!("http_{}", status.as_u16()).into(),
            Cause::Transport(TransportError::Connect) => "connect".into(),
            Cause::Transport(TransportError::Timeout) => "timeout".into(),
            Cause::Transport(TransportError::Reset) => "reset".into(),
            Cause::Transport(TransportError::Tls) => "tls".into(),
            Cause::Transport(TransportError::Protocol) => "protocol".into(),
            Cause::Internal(InternalError::Encode) => "encode".into(),
            Cause::Internal(InternalError::Unavailable) => "unavailable".into(),
        }
    }
}

/// A classified failure: where it came from and whether a retry may help, as pingora's
/// `Error { esource, retry }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Failure {
    /// What went wrong.
    pub cause: Cause,
    /// Whose side it was on.
    pub source: ErrorSource,
    /// Whether another attempt may succeed.
    pub retryable: bool,
}

impl Failure {
    /// The status code for `knativeerrorcode` on a dead-lettered event: the response status,
    /// or 500 when there was no response, as Knative's dispatcher reports it.
    pub fn error_code(&self) -> u16 {
        match self.cause {
            Cause::Status(status) => status.as_u16(),
            Cause::Transport(_) | Cause::Internal(_) => 500,
        }
    }
}

/// The verdict on one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Classification {
    /// A 2xx response: delivered.
    Success,
    /// Anything else.
    Failure(Failure),
}

/// Classifies an outcome as Knative's `SelectiveRetry` does.
///
/// - 2xx: success.
/// - Retried: every transport error, 5xx (and any status above 599), 404 (a pod becoming
///   ready answers 404), 408, 409 and 429.
/// - Not retried: 1xx, 3xx (redirects are not followed) and the other 4xx.
/// - Router-side failures: [`InternalError::Unavailable`] is retried,
///   [`InternalError::Encode`] is not.
pub fn classify(outcome: &Outcome<'_>) -> Classification {
    let failure = match *outcome {
        Outcome::Response { status, .. } => {
            let code = status.as_u16();
            if (200..300).contains(&code) {
                return Classification::Success;
            }
            Failure {
                cause: Cause::Status(status),
                source: ErrorSource::Destination,
                retryable: code >= 500 || matches!(code, 404 | 408 | 409 | 429),
            }
        }
        Outcome::Transport(error) => Failure {
            cause: Cause::Transport(error),
            source: ErrorSource::Destination,
            retryable: true,
        },
        Outcome::Internal(error) => Failure {
            cause: Cause::Internal(error),
            source: ErrorSource::Router,
            retryable: matches!(error, InternalError::Unavailable),
        },
    };
    Classification::Failure(failure)
}
