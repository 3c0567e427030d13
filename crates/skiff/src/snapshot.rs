//! `skiff snapshot save|restore`, and the scheduled snapshots of `skiff server`.
//!
//! The shape follows k3s's etcd snapshots: on-demand snapshots of a running server,
//! scheduled ones (`--snapshot-schedule`, on by default every 12 hours) kept with a
//! retention count, and a restore that recreates the datastore of a data dir from a
//! file. A snapshot is every key of the store at one revision: with the etcd
//! datastore, etcd's own snapshot (the file `etcdctl snapshot save` writes, which
//! `etcdctl snapshot restore` turns back into an etcd cluster); with the embedded
//! one, Skiff's format (described in [`skiff_store::snapshot`]). `restore` reads
//! either into the embedded engine, keeping every object's resourceVersion, which
//! is also how a cluster moves from etcd to the embedded engine.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use http_body_util::BodyExt;
use skiff_controllers::cron::Schedule;
use skiff_store::snapshot::{Format, read_any_file, save_stream};
use tokio_util::sync::CancellationToken;

/// `skiff snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Save a consistent snapshot of a running server's cluster state to FILE.
    Save(SaveArgs),
    /// Restore a snapshot FILE (Skiff's, or an etcd snapshot such as `etcdctl snapshot
    /// save` writes) into the embedded datastore of a data dir (`DIR/db`, which must
    /// not exist or be empty); then start `skiff server --data-dir DIR`.
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
struct SaveArgs {
    /// Where to write the snapshot (written to a temporary file, then renamed).
    file: PathBuf,
    /// Data dir of the local server, whose admin kubeconfig is used.
    #[arg(long, default_value = "/var/lib/skiff")]
    data_dir: PathBuf,
    /// Kubeconfig of a cluster admin (default: `DATA_DIR/admin.kubeconfig`).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RestoreArgs {
    /// The snapshot file.
    file: PathBuf,
    /// Data dir to restore into; the store is created in `DATA_DIR/db`.
    #[arg(long, default_value = "/var/lib/skiff")]
    data_dir: PathBuf,
    /// Accept an etcd database without the SHA-256 that etcd's snapshots end with
    /// (e.g. a stopped member's `member/snap/db`), as `etcdctl snapshot restore
    /// --skip-hash-check`; its pages are still checked.
    #[arg(long)]
    skip_hash_check: bool,
}

/// Runs `skiff snapshot ...`.
pub async fn run(args: SnapshotArgs) -> anyhow::Result<()> {
    match args.command {
        SnapshotCommand::Save(a) => save(a).await,
        SnapshotCommand::Restore(a) => restore(&a),
    }
}

async fn save(args: SaveArgs) -> anyhow::Result<()> {
    let kubeconfig = args
        .kubeconfig
        .unwrap_or_else(|| args.data_dir.join("admin.kubeconfig"));
    let client = crate::node::client_from(&kubeconfig).await.with_context(|| {
        format!(
            "is a skiff server running with this data dir? pass --kubeconfig otherwise ({})",
            kubeconfig.display()
        )
    })?;
    let req = http::Request::get(skiff_apiserver::server::SNAPSHOT_PATH)
        .body(kube::client::Body::empty())
        .expect("a valid request");
    let resp = client
        .send(req)
        .await
        .context("requesting the snapshot from the server")?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp
            .into_body()
            .collect()
            .await
            .context("reading the server's answer")?
            .to_bytes();
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|s| s["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("the server refused the snapshot ({status}): {message}");
    }
    // Streamed to a temporary file and verified before it is renamed into place: a
    // damaged or interrupted download never replaces a file.
    let chunks = resp.into_body().into_data_stream();
    let saved = save_stream(&args.file, chunks)
        .await
        .context("downloading the snapshot")?;
    eprintln!(
        "saved {} snapshot of revision {} ({} keys, {} bytes) to {}",
        saved.format.name(),
        saved.revision,
        saved.keys,
        saved.bytes,
        args.file.display()
    );
    Ok(())
}

fn restore(args: &RestoreArgs) -> anyhow::Result<()> {
    let read = read_any_file(&args.file, args.skip_hash_check)?;
    let db = args.data_dir.join("db");
    skiff_store::EmbeddedStore::restore(&db, &read.snapshot)?;
    if read.leased_keys > 0 {
        eprintln!(
            "note: {} keys were attached to etcd leases; they are restored without one (the embedded datastore has no leases)",
            read.leased_keys
        );
    }
    let from = match read.format {
        Format::Skiff => "skiff snapshot",
        Format::Etcd => "etcd snapshot",
    };
    eprintln!(
        "restored {} keys at revision {} from the {from} into {}; start the cluster with: skiff server --data-dir {}",
        read.snapshot.items.len(),
        read.snapshot.revision,
        db.display(),
        args.data_dir.display()
    );
    Ok(())
}

/// Scheduled snapshots: where, when, and how many to keep.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// The cron schedule (5 fields, in the server's local time zone).
    pub schedule: Schedule,
    /// Directory the snapshot files are written to (created if missing).
    pub dir: PathBuf,
    /// Number of scheduled snapshots kept; older ones are deleted after each new one.
    pub retention: usize,
    /// Node name, part of each file name.
    pub node_name: String,
}

/// Name prefix of this node's scheduled snapshot files; the rest is the Unix time
/// in seconds (as k3s names its `etcd-snapshot-<node>-<time>` files).
fn file_prefix(node_name: &str) -> String {
    format!("skiff-snapshot-{node_name}-")
}

/// Takes one scheduled snapshot of `store` into `cfg.dir`, named for `unix_time`
/// (etcd's own snapshot with the etcd datastore, see [`skiff_store::snapshot::save`]),
/// then deletes the oldest of this node's scheduled snapshots beyond the retention.
/// Returns the file written.
pub async fn take_scheduled(
    store: &dyn skiff_store::Store,
    cfg: &ScheduleConfig,
    unix_time: i64,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(&cfg.dir).with_context(|| format!("creating {}", cfg.dir.display()))?;
    let path = cfg.dir.join(format!("{}{unix_time}", file_prefix(&cfg.node_name)));
    skiff_store::snapshot::save(store, &path).await?;
    prune(&cfg.dir, &cfg.node_name, cfg.retention)?;
    Ok(path)
}

/// Deletes this node's scheduled snapshots in `dir` except the `keep` newest (by the
/// time in their names). Files not named like scheduled snapshots are left alone.
fn prune(dir: &Path, node_name: &str, keep: usize) -> anyhow::Result<()> {
    let prefix = file_prefix(node_name);
    let mut found: Vec<(i64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(t) = name.strip_prefix(&prefix).and_then(|t| t.parse::<i64>().ok()) {
            found.push((t, entry.path()));
        }
    }
    found.sort();
    let excess = found.len().saturating_sub(keep);
    for (_, path) in found.into_iter().take(excess) {
        std::fs::remove_file(&path).with_context(|| format!("removing old snapshot {}", path.display()))?;
        tracing::info!(file = %path.display(), "removed snapshot beyond --snapshot-retention");
    }
    Ok(())
}

/// Takes a snapshot at every activation of the schedule until `shutdown`. A failed
/// snapshot is logged and retried at the next activation; it never stops the server.
pub async fn run_schedule(store: Arc<dyn skiff_store::Store>, cfg: ScheduleConfig, shutdown: CancellationToken) {
    let tz = jiff::tz::TimeZone::system();
    loop {
        let now = jiff::Timestamp::now();
        let Some(next) = cfg.schedule.next_after(now, &tz) else {
            tracing::warn!("--snapshot-schedule never fires; scheduled snapshots are off");
            return;
        };
        let wait = Duration::from_millis((next.as_millisecond() - now.as_millisecond()).max(0) as u64);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match take_scheduled(store.as_ref(), &cfg, next.as_second()).await {
            Ok(path) => tracing::info!(file = %path.display(), "scheduled snapshot saved"),
            Err(e) => tracing::error!(error = format!("{e:#}"), "scheduled snapshot failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_store::Store;

    #[tokio::test]
    async fn scheduled_snapshots_keep_the_newest_per_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = skiff_store::EmbeddedStore::open(&dir.path().join("db")).unwrap();
        let cfg = ScheduleConfig {
            schedule: Schedule::parse("0 */12 * * *").unwrap(),
            dir: dir.path().join("snapshots"),
            retention: 3,
            node_name: "node-a".into(),
        };
        std::fs::create_dir_all(&cfg.dir).unwrap();
        std::fs::write(cfg.dir.join("my-own-backup"), b"kept").unwrap();
        for t in 1..=5 {
            store
                .create(&format!("/registry/namespaces/ns{t}"), vec![])
                .await
                .unwrap();
            let path = take_scheduled(&store, &cfg, 1_700_000_000 + t).await.unwrap();
            assert_eq!(read_any_file(&path, false).unwrap().snapshot.items.len(), t as usize);
        }
        let mut names: Vec<String> = std::fs::read_dir(&cfg.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "my-own-backup",
                "skiff-snapshot-node-a-1700000003",
                "skiff-snapshot-node-a-1700000004",
                "skiff-snapshot-node-a-1700000005"
            ]
        );
    }
}
