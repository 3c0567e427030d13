//! Applying a rendered ruleset with the `nft` command line tool, and the host settings
//! the ruleset relies on.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::Error;
use crate::rules::{FAMILY, TABLE};

/// How to run `nft`: the argument vector that precedes nft's own arguments, e.g.
/// `["nft"]` (the default) or `["ip", "netns", "exec", "NAME", "nft"]` to program
/// another network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nft {
    command: Vec<String>,
}

impl Default for Nft {
    fn default() -> Self {
        Nft {
            command: vec!["nft".into()],
        }
    }
}

impl Nft {
    /// Runs nft through `command` (its first element is the program). An empty vector
    /// means plain `nft`.
    pub fn with_command(command: Vec<String>) -> Self {
        if command.is_empty() {
            Nft::default()
        } else {
            Nft { command }
        }
    }

    /// Runs `nft` in the named network namespace (`ip netns exec NAME nft`).
    pub fn in_netns(name: &str) -> Self {
        Nft::with_command(
            ["ip", "netns", "exec", name, "nft"]
                .into_iter()
                .map(String::from)
                .collect(),
        )
    }

    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, Error> {
        let what = format!("{} {}", self.command.join(" "), args.join(" "));
        let mut cmd = Command::new(&self.command[0]);
        cmd.args(&self.command[1..])
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            command: what.clone(),
            source,
        })?;
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            pipe.write_all(text.as_bytes()).await.map_err(|source| Error::Spawn {
                command: what.clone(),
                source,
            })?;
            drop(pipe);
        }
        let out = child.wait_with_output().await.map_err(|source| Error::Spawn {
            command: what.clone(),
            source,
        })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::Nft {
                command: what,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// Applies a transaction of a [`Ruleset`](crate::rules::Ruleset) with
    /// `nft -f -`: all of it or, on error, none of it.
    ///
    /// Errors: [`Error::Spawn`] when nft cannot be run, [`Error::Nft`] (with nft's
    /// diagnostics) when the kernel or nft rejects the ruleset.
    pub async fn apply(&self, transaction: &str) -> Result<(), Error> {
        self.run(&["-f", "-"], Some(transaction)).await.map(drop)
    }

    /// Validates a transaction against the kernel without committing it (`nft -c -f -`).
    /// Same errors as [`apply`](Self::apply).
    pub async fn check(&self, transaction: &str) -> Result<(), Error> {
        self.run(&["-c", "-f", "-"], Some(transaction)).await.map(drop)
    }

    /// Whether the proxy's table currently exists (`nft list table ip skiff-proxy`).
    /// Errors only when nft cannot be run at all.
    pub async fn table_exists(&self) -> Result<bool, Error> {
        match self.run(&["list", "table", FAMILY, TABLE], None).await {
            Ok(_) => Ok(true),
            Err(Error::Nft { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The current contents of the proxy's table, as `nft list table` prints them.
    pub async fn list_table(&self) -> Result<String, Error> {
        self.run(&["list", "table", FAMILY, TABLE], None).await
    }

    /// Removes the proxy's table (and with it every Service rule); a missing table is
    /// not an error.
    pub async fn delete_table(&self) -> Result<(), Error> {
        let script = format!("add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n");
        self.apply(&script).await
    }
}

/// Path of the sysctl that makes bridged IPv4 traffic traverse netfilter
/// (`br_netfilter`); without it, replies between pods on the same bridge skip conntrack.
pub const BRIDGE_NF_CALL_IPTABLES: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

/// Path of the sysctl that lets 127.0.0.0/8 be routed off loopback (localhost NodePorts).
pub const ROUTE_LOCALNET: &str = "/proc/sys/net/ipv4/conf/all/route_localnet";

/// Whether bridged IPv4 traffic passes through netfilter in this network namespace:
/// the [`BRIDGE_NF_CALL_IPTABLES`] sysctl exists and is `1`.
pub fn bridge_netfilter_enabled() -> bool {
    std::fs::read_to_string(BRIDGE_NF_CALL_IPTABLES).is_ok_and(|v| v.trim() == "1")
}

/// Writes `value` to the sysctl file `path` unless it already holds it.
///
/// Errors: [`Error::Sysctl`] naming the file.
pub fn ensure_sysctl(path: &str, value: &str) -> Result<(), Error> {
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(path, value).map_err(|source| Error::Sysctl {
        path: path.to_string(),
        source,
    })
}
