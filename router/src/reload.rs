//! Config hot reload: watches the config file and swaps in each valid new version.
//!
//! The watcher observes the file's directory (editors and Kubernetes ConfigMap updates replace
//! files rather than write them in place) and debounces bursts of events. A new config that
//! does not load or build is logged with its precise errors and counted; the active config
//! stays live.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use triggerfish_core::config::Config;

use crate::metrics::ReloadLabels;
use crate::plan::Plan;
use crate::runtime::Router;

/// How long file events must be quiet before a reload.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Watches `path` and reloads `router` when it changes, until the router stops.
pub fn spawn(router: Arc<Router>, path: PathBuf) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let file_name = path.file_name().map(|n| n.to_owned());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Kubernetes swaps a `..data` symlink; any change in the directory may be ours.
        let ours = event.paths.iter().any(|p| {
            p.file_name() == file_name.as_deref() || p.to_string_lossy().contains("..data")
        });
        if ours && !event.kind.is_access() {
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        let _watcher = watcher;
        loop {
            tokio::select! {
                got = rx.recv() => if got.is_none() { return },
                () = router.stop.cancelled() => return,
            }
            // Debounce: wait until events stop arriving.
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            reload(&router, &path).await;
        }
    });
    Ok(())
}

/// Loads, builds and applies the config at `path`; on any error the active config stays.
pub async fn reload(router: &Router, path: &Path) {
    let text = match tokio::fs::read_to_string(path).await {
        Ok(t) => t,
        Err(e) => {
            reject(router, format!("{}: cannot read: {e}", path.display()));
            return;
        }
    };
    if router.status.load().version == triggerfish_core::config::version_of(&text) {
        // The file is the active config again (a bad edit reverted, say): a rejection recorded
        // since no longer describes the file.
        router.clear_rejected();
        return;
    }
    let name = path.display().to_string();
    let plan = Config::load(&text, &name).and_then(Plan::build);
    match plan {
        Ok(plan) => {
            router.apply(plan);
            router
                .metrics
                .reloads
                .get_or_create(&ReloadLabels { outcome: "applied" })
                .inc();
        }
        Err(errors) => reject(router, errors.to_string()),
    }
}

fn reject(router: &Router, message: String) {
    tracing::error!(errors = %message, "config reload rejected; the previous config stays active");
    router
        .metrics
        .reloads
        .get_or_create(&ReloadLabels {
            outcome: "rejected",
        })
        .inc();
    router.reject(message);
}
