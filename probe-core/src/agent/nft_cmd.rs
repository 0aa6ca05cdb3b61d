//! Running the `nft` command, and the trace tables an agent has made with
//! it and not yet deleted (`OwnedTables`): what `nftrace` and a stopping
//! agent share, below both, so that no trace table outlives its agent
//! (`agent::SHUTDOWN`) or a `prepare` its coordinator abandoned.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::time::timeout;

/// The `nft` binary, if installed.
pub fn nft_path() -> Option<PathBuf> {
    find_tool("nft")
}

pub(super) fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs `nft args` with `stdin`; its stderr as the error.
pub async fn nft(nft: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new(nft);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("run nft: {e}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .await
            .map_err(|e| format!("write to nft: {e}"))?;
    }
    let out = timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .map_err(|_| "nft did not finish within 10 s".to_string())?
        .map_err(|e| format!("run nft: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// [`nft`], run once more after a failure: a busy machine's `nft` can fail
/// where the same input succeeds a moment later. The second failure's
/// error.
pub async fn nft_retried(bin: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    match nft(bin, args, stdin).await {
        Ok(out) => Ok(out),
        Err(_) => nft(bin, args, stdin).await,
    }
}

/// The trace tables one agent has made and not deleted yet. A `prepare`
/// dropped half done (its coordinator gone) and an agent stopped by a
/// signal must not leave theirs behind: the first deletes its table from
/// a drop guard, the second deletes every table still listed here before
/// it exits ([`OwnedTables::delete_all`]).
#[derive(Debug, Default)]
pub struct OwnedTables(Mutex<BTreeSet<String>>);

impl OwnedTables {
    pub(super) fn add(&self, name: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
    }

    pub(super) fn forget(&self, name: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// The tables still listed.
    pub fn names(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Deletes every table still listed (one `nft` call for all of them).
    pub async fn delete_all(&self) {
        let names = self.names();
        if names.is_empty() {
            return;
        }
        let Some(bin) = nft_path() else {
            return;
        };
        let script: String = names
            .iter()
            .map(|n| format!("delete table inet {n}\n"))
            .collect();
        // One table already gone fails the whole batch: then one by one.
        if nft(&bin, &["-f", "-"], Some(&script)).await.is_err() {
            for n in &names {
                let _ = nft(&bin, &["delete", "table", "inet", n], None).await;
            }
        }
        for n in &names {
            self.forget(n);
            tracing::info!(table = %n, "trace table deleted as the agent stops");
        }
    }
}

/// Deletes a table `Tracer::start` created when the start is dropped
/// half done (its `prepare` was, because the coordinator went away).
pub(super) struct Unfinished {
    pub(super) owned: Arc<OwnedTables>,
    pub(super) nft: PathBuf,
    /// The table to delete; `None` once the start finished either way.
    pub(super) table: Option<String>,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        let Some(table) = self.table.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime left: the agent's own `delete_all` or the next
            // start's sweep removes it.
            return;
        };
        let (owned, nft_bin) = (self.owned.clone(), self.nft.clone());
        runtime.spawn(async move {
            let _ = nft(&nft_bin, &["delete", "table", "inet", &table], None).await;
            owned.forget(&table);
            tracing::info!(%table, "trace table of an abandoned prepare deleted");
        });
    }
}
