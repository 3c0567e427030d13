//! Supervision of the node's own containerd (as k3s does): a generated config under
//! the kubelet root, a child process restarted with backoff if it dies, stopped on
//! shutdown (container shims keep running, so pods survive a restart of skiff).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// Paths of a supervised containerd.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `ROOT/containerd`.
    pub dir: PathBuf,
    /// The CRI socket.
    pub socket: PathBuf,
    /// Generated config.
    pub config: PathBuf,
}

impl Layout {
    /// The layout under the kubelet root.
    pub fn new(root: &Path) -> Self {
        let dir = root.join("containerd");
        Self {
            socket: dir.join("containerd.sock"),
            config: dir.join("config.toml"),
            dir,
        }
    }
}

/// Renders containerd's (config version 2) TOML: state under `layout.dir`, CRI with
/// the given sandbox image, cgroupfs, overlayfs, CNI from `/usr/lib/cni` and
/// `cni_conf_dir`, and registry hosts under `certs.d`.
///
/// `restrict_oom_score_adj` keeps containerd from lowering OOM scores below its own
/// (needed where the host forbids negative `oom_score_adj`, e.g. in unprivileged
/// sandboxes; see [`can_lower_oom_score`]).
pub fn render_config(layout: &Layout, pause_image: &str, cni_conf_dir: &Path, restrict_oom_score_adj: bool) -> String {
    let d = layout.dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  enable_selinux = false
  restrict_oom_score_adj = {restrict_oom_score_adj}
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{d}/certs.d"
"#,
        sock = layout.socket.display(),
        cni = cni_conf_dir.display(),
    )
}

/// `hosts.toml` sending pulls for `upstream` to `mirror` first (plain HTTP allowed).
pub fn render_hosts(upstream_server: &str, mirror: &str) -> String {
    format!(
        "server = \"{upstream_server}\"\n\n[host.\"{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n"
    )
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Io(format!("{}: {e}", path.display()))
}

/// Writes the config and registry hosts files.
pub fn write_config(
    layout: &Layout,
    pause_image: &str,
    cni_conf_dir: &Path,
    mirror: Option<&str>,
) -> Result<(), Error> {
    std::fs::create_dir_all(&layout.dir).map_err(io(&layout.dir))?;
    let restrict = !can_lower_oom_score();
    if restrict {
        tracing::warn!("this host forbids negative oom_score_adj; containerd will not lower OOM scores");
    }
    std::fs::write(
        &layout.config,
        render_config(layout, pause_image, cni_conf_dir, restrict),
    )
    .map_err(io(&layout.config))?;
    if let Some(mirror) = mirror {
        for (host, server) in [
            ("docker.io", "https://registry-1.docker.io"),
            ("registry.k8s.io", "https://registry.k8s.io"),
        ] {
            let dir = layout.dir.join("certs.d").join(host);
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let file = dir.join("hosts.toml");
            std::fs::write(&file, render_hosts(server, mirror)).map_err(io(&file))?;
        }
    }
    Ok(())
}

/// Whether this process may lower its `oom_score_adj` (CAP_SYS_RESOURCE honoured),
/// which the CRI plugin needs to protect sandboxes (upstream gives them -998).
pub fn can_lower_oom_score() -> bool {
    let path = "/proc/self/oom_score_adj";
    let Ok(current) = std::fs::read_to_string(path) else {
        return false;
    };
    let Ok(current) = current.trim().parse::<i32>() else {
        return false;
    };
    if current <= -1000 {
        return true;
    }
    let ok = std::fs::write(path, (current - 1).to_string()).is_ok();
    let _ = std::fs::write(path, current.to_string());
    ok
}

fn pid_file(layout: &Layout) -> PathBuf {
    layout.dir.join("containerd.pid")
}

/// Stops a containerd left over from a previous run of this root (e.g. after a crash).
fn stop_stale(layout: &Layout) {
    let Ok(pid) = std::fs::read_to_string(pid_file(layout)) else {
        return;
    };
    let Ok(pid) = pid.trim().parse::<i32>() else { return };
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !cmdline.contains("containerd") || !cmdline.contains(&*layout.config.to_string_lossy()) {
        return;
    }
    tracing::info!(pid, "stopping containerd left from a previous run");
    send_signal(pid, libc::SIGTERM);
    for _ in 0..100 {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    send_signal(pid, libc::SIGKILL);
}

#[allow(unsafe_code)]
fn send_signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Starts containerd and keeps it running until `shutdown`; returns once the CRI
/// socket accepts connections (the supervisor continues in the background).
pub async fn supervise(layout: Layout, shutdown: CancellationToken) -> Result<(), Error> {
    stop_stale(&layout);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), Error>>();
    tokio::spawn(async move {
        let mut ready_tx = Some(ready_tx);
        let mut backoff = Duration::from_millis(500);
        loop {
            let _ = std::fs::remove_file(&layout.socket);
            let log_path = layout.dir.join("containerd.log");
            let log = match std::fs::OpenOptions::new().create(true).append(true).open(&log_path) {
                Ok(f) => f,
                Err(e) => {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(Err(Error::Io(format!("{}: {e}", log_path.display()))));
                    }
                    return;
                }
            };
            let child = Command::new("containerd")
                .arg("--config")
                .arg(&layout.config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().map(Stdio::from).unwrap_or_else(|_| Stdio::null()))
                .stderr(Stdio::from(log))
                .kill_on_drop(false)
                .spawn();
            let mut child = match child {
                Ok(c) => c,
                Err(e) => {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(Err(Error::Io(format!(
                            "starting containerd (is it installed? run scripts/setup): {e}"
                        ))));
                    }
                    return;
                }
            };
            let pid = child.id().unwrap_or(0) as i32;
            let _ = std::fs::write(pid_file(&layout), pid.to_string());
            tracing::info!(pid, config = %layout.config.display(), "containerd started");
            // Wait for the socket.
            let mut up = false;
            for _ in 0..200 {
                if tokio::net::UnixStream::connect(&layout.socket).await.is_ok() {
                    up = true;
                    break;
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if up {
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(Ok(()));
                }
                backoff = Duration::from_millis(500);
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    send_signal(pid, libc::SIGTERM);
                    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
                    let _ = std::fs::remove_file(pid_file(&layout));
                    return;
                }
                status = child.wait() => {
                    tracing::warn!(?status, log = %log_path.display(), "containerd exited; restarting");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    });
    ready_rx
        .await
        .map_err(|_| Error::Io("containerd supervisor stopped".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_points_everything_under_the_root() {
        let l = Layout::new(Path::new("/var/lib/skiff/agent"));
        let c = render_config(
            &l,
            "registry.k8s.io/pause:3.10",
            Path::new("/var/lib/skiff/agent/cni"),
            false,
        );
        assert!(c.contains("restrict_oom_score_adj = false"));
        assert!(c.contains("address = \"/var/lib/skiff/agent/containerd/containerd.sock\""));
        assert!(c.contains("sandbox_image = \"registry.k8s.io/pause:3.10\""));
        assert!(c.contains("conf_dir = \"/var/lib/skiff/agent/cni\""));
        assert!(c.contains("SystemdCgroup = false"));
        let h = render_hosts("https://registry-1.docker.io", "http://127.0.0.1:5000");
        assert!(h.contains("[host.\"http://127.0.0.1:5000\"]"));
    }
}
