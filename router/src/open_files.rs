//! The process's open-file limit: raised to its hard limit at start, as Go's runtime and
//! nginx's `worker_rlimit_nofile` do, and the default connection cap of the HTTP listeners
//! derived from it.
//!
//! Every connection, delivery socket and open file takes a descriptor. A flood of client
//! connections that used them all would make deliveries fail with `EMFILE`; the listeners'
//! caps (`Server.spec.limits.maxConnections`) keep some back. This module does not count
//! descriptors in use; the listeners count their own connections
//! ([`crate::http_server::ConnectionLimit`]).

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Each HTTP listener's connection cap when `limits.maxConnections` is unset, unless a quarter
/// of the open-file limit is lower.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Raises the soft open-file limit to the hard one and returns the limit in force (`None`
/// when it cannot be read). Never lowers it.
pub fn raise_limit() -> Option<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft >= hard {
        return Some(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => Some(hard),
        Err(e) => {
            tracing::debug!(soft, hard, error = %e, "could not raise the open-file limit");
            Some(soft)
        }
    }
}

/// Each HTTP listener's connection cap: the configured one, else
/// [`DEFAULT_MAX_CONNECTIONS`] or a quarter of `open_files` if that is lower (at least 64).
/// A configured cap that the open-file limit cannot hold is kept, with a warning.
pub fn connection_cap(configured: Option<u32>, open_files: Option<u64>) -> usize {
    let quarter = open_files.map(|n| usize::try_from(n / 4).unwrap_or(usize::MAX));
    match configured {
        Some(n) => {
            let n = n as usize;
            if let Some(limit) = open_files.filter(|&l| n as u64 >= l) {
                tracing::warn!(
                    max_connections = n,
                    open_file_limit = limit,
                    "limits.maxConnections is not below the open-file limit: a flood of connections can leave none for deliveries; raise `ulimit -n` or lower it"
                );
            }
            n
        }
        None => quarter.map_or(DEFAULT_MAX_CONNECTIONS, |q| {
            q.clamp(64, DEFAULT_MAX_CONNECTIONS)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_leaves_descriptors_for_the_rest() {
        assert_eq!(connection_cap(None, None), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(
            connection_cap(None, Some(1_048_576)),
            DEFAULT_MAX_CONNECTIONS
        );
        assert_eq!(connection_cap(None, Some(1024)), 256);
        assert_eq!(connection_cap(None, Some(100)), 64);
        assert_eq!(connection_cap(Some(5), Some(1024)), 5);
        assert_eq!(connection_cap(Some(50_000), Some(1024)), 50_000);
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let now = raise_limit().unwrap();
        assert!(now >= soft);
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap().0, now);
    }
}
