//! Real etcd members for tests: Debian's `/usr/bin/etcd` (package `etcd-server`)
//! started on loopback ports with a temporary data dir, killed when the handle drops
//! (also when a test panics).
//!
//! Ports: each test binary passes its own range inside 23790-23899 to [`Ports`], so
//! test binaries running at the same time never share a port.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// The etcd binary (override with `SKIFF_TEST_ETCD`).
pub fn etcd_binary() -> PathBuf {
    std::env::var_os("SKIFF_TEST_ETCD").map_or_else(|| PathBuf::from("/usr/bin/etcd"), PathBuf::from)
}

/// Hands out loopback ports from `[start, end)` that nothing listens on.
///
/// A port handed out is also locked (an exclusive lock on
/// `$TMPDIR/skiff-test-ports/PORT.lock`, held until the process exits), so test
/// processes running at the same time (one per test under nextest) never pick the
/// same port even before etcd binds it.
pub struct Ports {
    next: AtomicU16,
    start: u16,
    end: u16,
    held: Mutex<Vec<std::fs::File>>,
}

impl Ports {
    /// A range of ports for one test binary.
    pub const fn new(start: u16, end: u16) -> Self {
        Self {
            next: AtomicU16::new(start),
            start,
            end,
            held: Mutex::new(Vec::new()),
        }
    }

    /// The next free port.
    pub fn take(&self) -> u16 {
        let dir = std::env::temp_dir().join("skiff-test-ports");
        std::fs::create_dir_all(&dir).unwrap();
        for _ in self.start..self.end {
            let p = self.next.fetch_add(1, Ordering::SeqCst);
            assert!(p < self.end, "out of test ports in {}..{}", self.start, self.end);
            let lock = std::fs::File::create(dir.join(format!("{p}.lock"))).unwrap();
            if lock.try_lock().is_ok() && TcpListener::bind(("127.0.0.1", p)).is_ok() {
                self.held.lock().unwrap().push(lock);
                return p;
            }
        }
        panic!("out of test ports in {}..{}", self.start, self.end);
    }
}

/// TLS files for a member: serving certificate and key, CA of client certificates.
#[derive(Clone)]
pub struct MemberTls {
    /// Serving certificate (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    /// CA that client certificates must chain to (`--client-cert-auth`).
    pub client_ca: PathBuf,
}

/// What a member needs to (re)start.
#[derive(Clone)]
pub struct MemberSpec {
    /// Member name.
    pub name: String,
    /// Client port.
    pub client_port: u16,
    /// Peer port.
    pub peer_port: u16,
    /// `--initial-cluster`.
    pub initial_cluster: String,
    /// `--initial-cluster-token` (the same for every member of one cluster).
    pub token: String,
    /// Client TLS, if any.
    pub tls: Option<MemberTls>,
}

impl MemberSpec {
    /// The client URL (`http` or `https`).
    pub fn client_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

/// One running etcd member; dropping it kills it (SIGKILL) and removes its data.
pub struct Member {
    /// How it was started.
    pub spec: MemberSpec,
    child: Option<Child>,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Member {
    /// Starts a member with data in `dir` (`--initial-cluster-state new`; on a
    /// restart etcd ignores that and rejoins from its data).
    pub fn start_in(spec: MemberSpec, dir: &Path) -> Self {
        Self {
            child: Some(spawn(&spec, dir)),
            spec,
            dir: dir.to_path_buf(),
            _tmp: None,
        }
    }

    /// Starts a single-member cluster in a new temporary directory.
    pub fn single(ports: &Ports) -> Self {
        Self::single_with_tls(ports, None)
    }

    /// Starts a single-member cluster, with client TLS if given.
    pub fn single_with_tls(ports: &Ports, tls: Option<MemberTls>) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let (client_port, peer_port) = (ports.take(), ports.take());
        let spec = MemberSpec {
            name: "m0".into(),
            client_port,
            peer_port,
            initial_cluster: format!("m0=http://127.0.0.1:{peer_port}"),
            token: format!("skiff-test-{peer_port}"),
            tls,
        };
        let mut m = Self::start_in(spec, tmp.path());
        m._tmp = Some(tmp);
        m.wait_listening();
        m
    }

    /// Waits until the client port accepts connections (panics after 30 s, with the log).
    pub fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.spec.client_port)).is_err() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("etcd exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not listen within 30s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The member's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", self.spec.name))).unwrap_or_default()
    }

    /// SIGKILLs the member (its data stays for a restart).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts a killed member on its data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "member is running");
        self.child = Some(spawn(&self.spec, &self.dir));
        self.wait_listening();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of `n` members sharing one temporary directory.
pub struct Cluster {
    /// The members (dropping the cluster kills them all).
    pub members: Vec<Member>,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` members and waits until each listens.
    pub fn start(ports: &Ports, n: usize) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (ports.take(), ports.take())).collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<Member> = ports
            .iter()
            .enumerate()
            .map(|(i, &(client_port, peer_port))| {
                let spec = MemberSpec {
                    name: format!("m{i}"),
                    client_port,
                    peer_port,
                    initial_cluster: initial_cluster.clone(),
                    token: format!("skiff-test-{}", ports[0].1),
                    tls: None,
                };
                Member::start_in(spec, tmp.path())
            })
            .collect();
        for m in &mut members {
            m.wait_listening();
        }
        Self { members, _tmp: tmp }
    }

    /// `etcd://` endpoints of every member, comma-separated (`--datastore-endpoint`).
    pub fn endpoint_spec(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("etcd://127.0.0.1:{}", m.spec.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn spawn(spec: &MemberSpec, dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{}.log", spec.name)))
        .unwrap();
    let mut cmd = Command::new(etcd_binary());
    cmd.arg("--name")
        .arg(&spec.name)
        .arg("--data-dir")
        .arg(dir.join(format!("{}.etcd", spec.name)))
        .arg("--listen-client-urls")
        .arg(spec.client_url())
        .arg("--advertise-client-urls")
        .arg(spec.client_url())
        .arg("--listen-peer-urls")
        .arg(spec.peer_url())
        .arg("--initial-advertise-peer-urls")
        .arg(spec.peer_url())
        .arg("--initial-cluster")
        .arg(&spec.initial_cluster)
        .arg("--initial-cluster-state")
        .arg("new")
        .arg("--initial-cluster-token")
        .arg(&spec.token)
        .arg("--heartbeat-interval")
        .arg("100")
        .arg("--election-timeout")
        .arg("1000");
    if let Some(tls) = &spec.tls {
        cmd.arg("--cert-file")
            .arg(&tls.cert)
            .arg("--key-file")
            .arg(&tls.key)
            .arg("--client-cert-auth")
            .arg("--trusted-ca-file")
            .arg(&tls.client_ca);
    }
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {} (package etcd-server): {e}", etcd_binary().display()))
}
