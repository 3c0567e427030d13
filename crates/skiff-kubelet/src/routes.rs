//! host-gw routes (flannel's `host-gw` backend): for every other Node with an IPv4
//! `spec.podCIDR(s)` and an IPv4 `InternalIP`, the host gets the route
//! `<podCIDR> via <InternalIP>`, so pods reach pods of other nodes without
//! encapsulation. The nodes must share a layer-2 network: a Node whose InternalIP is
//! not on a directly connected network is skipped with a warning (once per address).
//!
//! The routes are installed with routing protocol [`RTPROT_SKIFF`] (`ip route ...
//! proto 115`), so after a restart the syncer recognises exactly the routes it owns:
//! it replaces and deletes only those, never a route someone else added. Changes go
//! through `ip route replace` / `ip route del` (iproute2), as kube-router and many
//! CNI setups do.
//!
//! The table is brought to the desired state whenever the Nodes' CIDRs or addresses
//! change, and every 30 s (which repairs routes deleted by hand).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// Routing protocol number of the routes the syncer owns (`ip route ... proto 115`;
/// 115 is ASCII `s`, unused by the kernel and by iproute2's `rt_protos`).
pub const RTPROT_SKIFF: u8 = 115;
const RESYNC_PERIOD: Duration = Duration::from_secs(30);
/// Node events within this window are handled by one sync.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// The routes this node should have: pod CIDR -> the owning node's InternalIP, for
/// every Node other than `self_name` with both (IPv4 only).
pub fn desired(nodes: &[Node], self_name: &str) -> BTreeMap<Ipv4Net, Ipv4Addr> {
    let mut out = BTreeMap::new();
    for node in nodes {
        if node.metadata.name.as_deref() == Some(self_name) {
            continue;
        }
        let Some(ip) = internal_ip(node) else { continue };
        let spec = node.spec.as_ref();
        let cidrs = spec
            .and_then(|s| s.pod_cidrs.clone())
            .filter(|l| !l.is_empty())
            .or_else(|| spec.and_then(|s| s.pod_cidr.clone()).map(|c| vec![c]))
            .unwrap_or_default();
        for c in cidrs.iter().filter_map(|c| c.parse::<Ipv4Net>().ok()) {
            out.insert(c.trunc(), ip);
        }
    }
    out
}

/// The Node's first IPv4 `InternalIP`.
pub fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok())
}

/// The host's IPv4 networks: (address, its network) of every global-scope address.
#[derive(Debug, Clone, Default)]
pub struct Connected {
    addrs: Vec<(Ipv4Addr, Ipv4Net)>,
}

impl Connected {
    /// From `ip -j -4 addr show` output. Errors: malformed JSON.
    pub fn parse(json: &str) -> Result<Self, Error> {
        let links: Vec<Value> = serde_json::from_str(json)?;
        let mut addrs = Vec::new();
        for info in links.iter().filter_map(|l| l["addr_info"].as_array()).flatten() {
            if info["scope"] == "host" {
                continue;
            }
            let (Some(local), Some(len)) = (info["local"].as_str(), info["prefixlen"].as_u64()) else {
                continue;
            };
            if let (Ok(ip), Ok(len)) = (local.parse::<Ipv4Addr>(), u8::try_from(len))
                && let Ok(net) = Ipv4Net::new(ip, len)
            {
                addrs.push((ip, net.trunc()));
            }
        }
        Ok(Self { addrs })
    }

    /// Reads the host's addresses (`ip -j -4 addr show`).
    pub fn read() -> Result<Self, Error> {
        Self::parse(&ip(&["-j", "-4", "addr", "show"])?)
    }

    /// Whether `ip` is another host on a directly connected network.
    pub fn reaches(&self, ip: Ipv4Addr) -> bool {
        self.addrs.iter().all(|(a, _)| *a != ip) && self.addrs.iter().any(|(_, n)| n.contains(&ip))
    }
}

/// Runs `ip ARGS` and returns its stdout. Errors: `ip` missing or failing (with its stderr).
fn ip(args: &[&str]) -> Result<String, Error> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| Error::Io(format!("running ip {}: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(Error::Io(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The routes with protocol [`RTPROT_SKIFF`] in the main table, from
/// `ip -j -4 route show proto 115` output.
pub fn parse_owned(json: &str) -> Result<BTreeMap<Ipv4Net, Option<Ipv4Addr>>, Error> {
    let routes: Vec<Value> = if json.trim().is_empty() {
        Vec::new()
    } else {
        serde_json::from_str(json)?
    };
    Ok(routes
        .iter()
        .filter_map(|r| {
            let dst = r["dst"].as_str()?;
            let dst: Ipv4Net = if dst.contains('/') {
                dst.parse().ok()?
            } else {
                Ipv4Net::new(dst.parse().ok()?, 32).ok()?
            };
            Some((dst, r["gateway"].as_str().and_then(|g| g.parse().ok())))
        })
        .collect())
}

/// The routes the syncer owns now.
pub fn owned() -> Result<BTreeMap<Ipv4Net, Option<Ipv4Addr>>, Error> {
    parse_owned(&ip(&["-j", "-4", "route", "show", "proto", &RTPROT_SKIFF.to_string()])?)
}

/// Adds or updates the owned route `dst via gateway`.
pub fn replace(dst: Ipv4Net, gateway: Ipv4Addr) -> Result<(), Error> {
    ip(&[
        "route",
        "replace",
        &dst.to_string(),
        "via",
        &gateway.to_string(),
        "proto",
        &RTPROT_SKIFF.to_string(),
    ])
    .map(drop)
}

/// Deletes the owned route to `dst`.
pub fn delete(dst: Ipv4Net) -> Result<(), Error> {
    ip(&["route", "del", &dst.to_string(), "proto", &RTPROT_SKIFF.to_string()]).map(drop)
}

/// The syncer's memory between passes: addresses already warned about.
#[derive(Debug, Default)]
pub struct Syncer {
    warned: BTreeSet<(String, Ipv4Addr)>,
}

impl Syncer {
    /// One pass: installs the desired routes whose gateway is directly connected and
    /// deletes the owned routes no longer desired. Returns the routes now installed.
    /// Errors: reading the host's addresses or routes; a failing single route is logged
    /// and retried on the next pass.
    pub fn sync(&mut self, nodes: &[Node], self_name: &str) -> Result<BTreeMap<Ipv4Net, Ipv4Addr>, Error> {
        let connected = Connected::read()?;
        let mut want = desired(nodes, self_name);
        let names: BTreeMap<Ipv4Addr, String> = nodes
            .iter()
            .filter_map(|n| Some((internal_ip(n)?, n.metadata.name.clone()?)))
            .collect();
        let mut unreachable = Vec::new();
        want.retain(|cidr, gw| {
            if connected.reaches(*gw) {
                return true;
            }
            let node = names.get(gw).cloned().unwrap_or_default();
            if self.warned.insert((node.clone(), *gw)) {
                unreachable.push(format!("{node} ({cidr} via {gw})"));
            }
            false
        });
        // One line per pass, however many nodes (hollow nodes come by the thousand).
        if !unreachable.is_empty() {
            let shown = unreachable.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
            let more = unreachable.len().saturating_sub(5);
            tracing::warn!(
                nodes = unreachable.len(),
                "no host-gw route to nodes whose InternalIP is not on a directly connected network: {shown}{}",
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            );
        }
        let have = owned()?;
        for (dst, gw) in &want {
            if have.get(dst) != Some(&Some(*gw)) {
                match replace(*dst, *gw) {
                    Ok(()) => tracing::info!(pod_cidr = %dst, via = %gw, "host-gw route added"),
                    Err(e) => tracing::warn!(error = %e, "adding host-gw route failed"),
                }
            }
        }
        for dst in have.keys().filter(|d| !want.contains_key(d)) {
            match delete(*dst) {
                Ok(()) => tracing::info!(pod_cidr = %dst, "host-gw route removed"),
                Err(e) => tracing::warn!(error = %e, "removing host-gw route failed"),
            }
        }
        Ok(want)
    }
}

/// Keeps the host-gw routes of node `self_name` in sync with the Nodes until
/// `shutdown`. The owned routes stay when it stops (pods keep talking across nodes
/// while the kubelet restarts).
pub async fn run(client: kube::Client, self_name: String, shutdown: CancellationToken) {
    let (store, writer) = reflector::store::<Node>();
    let mut events = watcher(Api::<Node>::all(client), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .boxed();
    let mut syncer = Syncer::default();
    let mut last: Option<BTreeMap<Ipv4Net, Ipv4Addr>> = None;
    let mut ticker = tokio::time::interval(RESYNC_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(node = %self_name, "host-gw route syncer started");
    loop {
        let forced = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => true,
            e = events.next() => match e {
                None => return,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "node watch failed; retrying");
                    continue;
                }
                Some(Ok(_)) => {
                    // Let a burst of node updates settle into one pass.
                    tokio::time::sleep(DEBOUNCE).await;
                    while let Some(Some(_)) = futures::FutureExt::now_or_never(events.next()) {}
                    false
                }
            },
        };
        if !synced(&store) {
            continue;
        }
        let nodes: Vec<Node> = store.state().iter().map(|n| (**n).clone()).collect();
        let want = desired(&nodes, &self_name);
        if !forced && last.as_ref() == Some(&want) {
            continue;
        }
        let result = {
            let name = self_name.clone();
            let mut s = std::mem::take(&mut syncer);
            let r = tokio::task::spawn_blocking(move || {
                let r = s.sync(&nodes, &name);
                (s, r)
            })
            .await;
            match r {
                Ok((s, r)) => {
                    syncer = s;
                    r
                }
                Err(e) => Err(Error::Io(format!("route sync task: {e}"))),
            }
        };
        match result {
            Ok(_) => last = Some(want),
            Err(e) => {
                last = None;
                tracing::warn!(error = %e, "syncing host-gw routes failed; retrying in 30 s");
            }
        }
    }
}

/// Whether the reflector store has seen its first full list.
fn synced(store: &reflector::Store<Node>) -> bool {
    futures::FutureExt::now_or_never(store.wait_until_ready()).is_some_and(|r| r.is_ok())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": ip.map(|i| vec![json!({"type": "InternalIP", "address": i}),
                                                     json!({"type": "Hostname", "address": name})]).unwrap_or_default()},
        }))
        .unwrap()
    }

    #[test]
    fn every_other_node_with_a_cidr_and_an_address() {
        let nodes = [
            node("me", Some("10.42.0.0/24"), Some("192.0.2.2")),
            node("b", Some("10.42.1.0/24"), Some("192.0.2.3")),
            node("no-cidr", None, Some("192.0.2.4")),
            node("no-ip", Some("10.42.3.0/24"), None),
            node("v6", Some("fd00::/64"), Some("192.0.2.5")),
        ];
        let want = desired(&nodes, "me");
        assert_eq!(
            want.into_iter().collect::<Vec<_>>(),
            vec![("10.42.1.0/24".parse().unwrap(), "192.0.2.3".parse().unwrap())]
        );
    }

    #[test]
    fn connected_networks_from_ip_addr() {
        let json = r#"[{"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host"}]},
            {"ifname":"eth0","addr_info":[{"family":"inet","local":"192.0.2.2","prefixlen":24,"scope":"global"}]},
            {"ifname":"eth1","addr_info":[]}]"#;
        let c = Connected::parse(json).unwrap();
        assert!(c.reaches("192.0.2.9".parse().unwrap()));
        assert!(!c.reaches("192.0.2.2".parse().unwrap()), "itself");
        assert!(!c.reaches("198.51.100.1".parse().unwrap()), "behind a router");
        assert!(!c.reaches("127.0.0.2".parse().unwrap()), "loopback");
    }

    #[test]
    fn owned_routes_from_ip_route() {
        let json = r#"[{"dst":"10.42.1.0/24","gateway":"192.0.2.3","dev":"eth0","protocol":"115","flags":[]},
            {"dst":"10.9.9.9","gateway":"192.0.2.4","dev":"eth0","protocol":"115","flags":[]}]"#;
        let owned = parse_owned(json).unwrap();
        assert_eq!(owned.len(), 2);
        assert_eq!(
            owned[&"10.42.1.0/24".parse::<Ipv4Net>().unwrap()],
            Some("192.0.2.3".parse().unwrap())
        );
        assert!(owned.contains_key(&"10.9.9.9/32".parse::<Ipv4Net>().unwrap()));
        assert!(parse_owned("").unwrap().is_empty());
    }
}
