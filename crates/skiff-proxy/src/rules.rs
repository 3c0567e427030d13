//! Ruleset generation: a pure function from the [`ServicePort`]s and the node's
//! [`RuleConfig`] to the text of one `nft -f -` transaction that replaces the table
//! `ip skiff-proxy` as a whole.
//!
//! The layout follows upstream kube-proxy's nftables mode (KEP-3866,
//! `pkg/proxy/nftables`), in our own words:
//!
//! - `nat-prerouting` (hook prerouting, priority -100) and `nat-output` (hook output,
//!   -100) jump to `services`, which dispatches on destination address, protocol and port
//!   through the verdict map `service-ips` (ClusterIPs, externalIPs, load-balancer IPs)
//!   and, for local destination addresses, `service-nodeports`.
//! - Per Service port: `svc-<id>` (ClusterIP traffic), `ext-<id>` (NodePort, externalIP
//!   and load-balancer traffic), `cluster-<id>` / `local-<id>` (random choice among all
//!   usable endpoints / this node's usable endpoints with `numgen random mod N vmap`), and
//!   one `ep-<id>/<ip>/<port>` chain per endpoint that DNATs. `<id>` is
//!   [`ServicePort::id`].
//! - Packets that must be masqueraded get mark [`MASQUERADE_MARK`] (`mark-for-masquerade`);
//!   `nat-postrouting` (hook postrouting, priority 100) masquerades marked packets.
//!   Marked: traffic to a ClusterIP from outside the cluster CIDR, all external traffic
//!   of `externalTrafficPolicy: Cluster` Services, host-originated traffic of `Local`
//!   ones, and hairpin traffic (an endpoint reaching itself through its Service).
//! - Services without usable endpoints are rejected (TCP reset, ICMP port unreachable
//!   otherwise) from the filter chains `filter-input`, `filter-forward` and
//!   `filter-output` (priority -110) through `no-endpoint-services` and
//!   `no-endpoint-nodeports`. A `Local` traffic policy with no endpoint on this node
//!   drops the traffic instead.
//! - `sessionAffinity: ClientIP` keeps one dynamic set per endpoint with the client
//!   addresses recently sent there (element timeout = the affinity timeout).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::cidr::Ipv4Cidr;
use crate::model::{Endpoint, ServicePort};

/// Address family of the table.
pub const FAMILY: &str = "ip";
/// Name of the table this proxy owns; nothing else is touched.
pub const TABLE: &str = "skiff-proxy";
/// Packet mark bit meaning "masquerade in postrouting" (upstream `--masquerade-bit=14`).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// Node-level settings of the ruleset (upstream kube-proxy flag names in parentheses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleConfig {
    /// This node's name (`--hostname-override`); selects endpoints for `Local` policies.
    pub node_name: String,
    /// The pod network (`--cluster-cidr`). Traffic to a ClusterIP from outside it is
    /// masqueraded, and pod traffic to external addresses of `externalTrafficPolicy:
    /// Local` Services may use every endpoint. `None` disables both.
    pub cluster_cidr: Option<Ipv4Cidr>,
    /// Local addresses NodePorts are served on (`--nodeport-addresses`); empty means
    /// every local address.
    pub nodeport_addresses: Vec<Ipv4Cidr>,
    /// Serve NodePorts on `127.0.0.0/8` too (needs `net.ipv4.conf.all.route_localnet=1`,
    /// which the proxy sets; martian packets to 127/8 from other interfaces are dropped).
    pub localhost_nodeports: bool,
    /// Masquerade all Service traffic (`--masquerade-all`). Also needed when bridged
    /// pod-to-pod replies bypass netfilter (no `br_netfilter`).
    pub masquerade_all: bool,
}

/// Names of the verdict maps, which every ruleset declares.
const MAPS: [&str; 4] = [
    "service-ips",
    "service-nodeports",
    "no-endpoint-services",
    "no-endpoint-nodeports",
];

/// The chains every ruleset declares (hooks and shared helpers).
const FIXED_CHAINS: [&str; 12] = [
    "filter-input",
    "filter-forward",
    "filter-output",
    "nat-prerouting",
    "nat-output",
    "nat-postrouting",
    "service-endpoints-check",
    "nodeport-endpoints-check",
    "reject-chain",
    "services",
    "mark-for-masquerade",
    "masquerading",
];

/// A rendered ruleset: the declaration of the whole table, plus the names of the chains
/// and sets it declares so that the next ruleset can be applied as an update of this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    table: String,
    chains: BTreeSet<String>,
    sets: BTreeSet<String>,
}

impl Ruleset {
    /// The `table ip skiff-proxy { ... }` block with every map, set and chain.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The transaction that installs this ruleset whatever the kernel holds: create the
    /// table if missing, delete it, declare it again. Used for the first sync and after
    /// a failure; it empties the affinity sets.
    pub fn full_transaction(&self) -> String {
        format!(
            "add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n{}",
            self.table
        )
    }

    /// The transaction that turns `previous` (currently installed) into this ruleset
    /// while keeping the contents of affinity sets that both declare: flush every chain
    /// and verdict map of `previous`, delete the chains and sets this ruleset no longer
    /// has, then declare the table (existing objects are kept, rules and map elements
    /// are added anew). Atomic like [`full_transaction`](Self::full_transaction).
    pub fn update_transaction(&self, previous: &Ruleset) -> String {
        let mut out = format!("add table {FAMILY} {TABLE}\n");
        for chain in &previous.chains {
            let _ = writeln!(out, "flush chain {FAMILY} {TABLE} {chain}");
        }
        for map in MAPS {
            let _ = writeln!(out, "flush map {FAMILY} {TABLE} {map}");
        }
        for chain in previous.chains.difference(&self.chains) {
            let _ = writeln!(out, "delete chain {FAMILY} {TABLE} {chain}");
        }
        for set in previous.sets.difference(&self.sets) {
            let _ = writeln!(out, "delete set {FAMILY} {TABLE} {set}");
        }
        out.push_str(&self.table);
        out
    }
}

/// Renders the ruleset for `ports` on a node configured by `cfg`. Pure: the same input
/// gives the same text.
pub fn render(ports: &[ServicePort], cfg: &RuleConfig) -> Ruleset {
    let mut r = Renderer::default();
    for sp in ports {
        r.service_port(sp, cfg);
    }
    r.finish(cfg)
}

#[derive(Default)]
struct Renderer {
    /// Verdict map elements keyed by their key text; the first Service wins a conflict.
    service_ips: BTreeMap<String, String>,
    service_nodeports: BTreeMap<String, String>,
    no_endpoint_services: BTreeMap<String, String>,
    no_endpoint_nodeports: BTreeMap<String, String>,
    /// Affinity sets: (name, timeout seconds).
    sets: Vec<(String, u32)>,
    /// Chains: (name, rules).
    chains: Vec<(String, Vec<String>)>,
}

fn ep_chain(id: &str, e: &Endpoint) -> String {
    format!("ep-{id}/{}/{}", e.ip, e.port)
}

/// The affinity set of endpoint `e`; the timeout is part of the name so that a changed
/// timeout makes a new set instead of conflicting with the existing one.
fn aff_set(id: &str, e: &Endpoint, timeout: u32) -> String {
    format!("aff-{id}/{}/{}/{timeout}", e.ip, e.port)
}

fn elements(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k} : {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The match that selects NodePort destinations: a local address, within
/// `--nodeport-addresses` when given, and not loopback unless localhost NodePorts are on.
fn nodeport_match(cfg: &RuleConfig) -> String {
    let mut m = String::new();
    if !cfg.nodeport_addresses.is_empty() {
        let list: Vec<String> = cfg.nodeport_addresses.iter().map(|c| c.to_string()).collect();
        let _ = write!(m, "ip daddr {{ {} }} ", list.join(", "));
    }
    if !cfg.localhost_nodeports {
        m.push_str("ip daddr != 127.0.0.0/8 ");
    }
    m.push_str("fib daddr type local");
    m
}

impl Renderer {
    fn chain(&mut self, name: String, rules: Vec<String>) {
        self.chains.push((name, rules));
    }

    /// Rules that pick one of `eps` (non-empty): affinity first, then a random choice.
    fn dispatch(&self, sp: &ServicePort, eps: &[&Endpoint]) -> Vec<String> {
        let id = sp.id();
        let mut rules = Vec::new();
        if let Some(timeout) = sp.affinity_timeout {
            for e in eps {
                rules.push(format!(
                    "ip saddr @{} goto {}",
                    aff_set(&id, e, timeout),
                    ep_chain(&id, e)
                ));
            }
        }
        match eps {
            [one] => rules.push(format!("goto {}", ep_chain(&id, one))),
            _ => {
                let arms: Vec<String> = eps
                    .iter()
                    .enumerate()
                    .map(|(i, e)| format!("{i} : goto {}", ep_chain(&id, e)))
                    .collect();
                rules.push(format!(
                    "numgen random mod {} vmap {{ {} }}",
                    eps.len(),
                    arms.join(", ")
                ));
            }
        }
        rules
    }

    fn service_port(&mut self, sp: &ServicePort, cfg: &RuleConfig) {
        let id = sp.id();
        let proto = sp.protocol.nft();
        let cluster = sp.cluster_endpoints();
        let external_ips = sp.external_ips.iter().chain(&sp.load_balancer_ips);

        if cluster.is_empty() {
            // No usable endpoint anywhere: reject at every destination of the port.
            let verdict = "goto reject-chain".to_string();
            for ip in sp.cluster_ips.iter().chain(external_ips) {
                self.no_endpoint_services
                    .entry(format!("{ip} . {proto} . {}", sp.port))
                    .or_insert_with(|| verdict.clone());
            }
            if let Some(np) = sp.node_port {
                self.no_endpoint_nodeports
                    .entry(format!("{proto} . {np}"))
                    .or_insert(verdict);
            }
            return;
        }

        let local = sp.local_endpoints(&cfg.node_name);
        let needs_local = sp.internal_local || (sp.external_local && sp.has_external());

        // Endpoint chains (for every endpoint any dispatch may pick).
        let mut used: Vec<&Endpoint> = cluster.clone();
        for e in &local {
            if !used.contains(e) {
                used.push(e);
            }
        }
        for e in &used {
            let mut rules = vec![format!("ip saddr {} jump mark-for-masquerade", e.ip)];
            if let Some(timeout) = sp.affinity_timeout {
                let set = aff_set(&id, e, timeout);
                rules.push(format!("update @{set} {{ ip saddr }}"));
                self.sets.push((set, timeout));
            }
            rules.push(format!("meta l4proto {proto} dnat to {}:{}", e.ip, e.port));
            self.chain(ep_chain(&id, e), rules);
        }
        let cluster_rules = self.dispatch(sp, &cluster);
        self.chain(format!("cluster-{id}"), cluster_rules);
        if needs_local {
            let rules = if local.is_empty() {
                vec!["drop".to_string()]
            } else {
                self.dispatch(sp, &local)
            };
            self.chain(format!("local-{id}"), rules);
        }

        // ClusterIP traffic.
        let mut svc = Vec::new();
        if cfg.masquerade_all {
            svc.push("jump mark-for-masquerade".to_string());
        } else if let Some(cidr) = cfg.cluster_cidr {
            svc.push(format!("ip saddr != {cidr} jump mark-for-masquerade"));
        }
        svc.push(if sp.internal_local {
            format!("goto local-{id}")
        } else {
            format!("goto cluster-{id}")
        });
        self.chain(format!("svc-{id}"), svc);
        for ip in &sp.cluster_ips {
            self.service_ips
                .entry(format!("{ip} . {proto} . {}", sp.port))
                .or_insert_with(|| format!("goto svc-{id}"));
        }

        // External traffic: NodePort, externalIPs, load-balancer IPs.
        if !sp.has_external() {
            return;
        }
        let ext = if sp.external_local {
            let mut rules = Vec::new();
            if !cfg.masquerade_all
                && let Some(cidr) = cfg.cluster_cidr
            {
                // Pods reaching an external address may use any endpoint.
                rules.push(format!("ip saddr {cidr} goto cluster-{id}"));
            }
            if cfg.masquerade_all {
                rules.push("jump mark-for-masquerade".to_string());
            }
            // The node itself may use any endpoint, masqueraded.
            rules.push("fib saddr type local jump mark-for-masquerade".to_string());
            rules.push(format!("fib saddr type local goto cluster-{id}"));
            rules.push(format!("goto local-{id}"));
            rules
        } else {
            vec!["jump mark-for-masquerade".to_string(), format!("goto cluster-{id}")]
        };
        self.chain(format!("ext-{id}"), ext);
        for ip in sp.external_ips.iter().chain(&sp.load_balancer_ips) {
            self.service_ips
                .entry(format!("{ip} . {proto} . {}", sp.port))
                .or_insert_with(|| format!("goto ext-{id}"));
        }
        if let Some(np) = sp.node_port {
            self.service_nodeports
                .entry(format!("{proto} . {np}"))
                .or_insert_with(|| format!("goto ext-{id}"));
        }
    }

    fn finish(self, cfg: &RuleConfig) -> Ruleset {
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(w, "table {FAMILY} {TABLE} {{");
        let _ = writeln!(w, "\tcomment \"Kubernetes Services, managed by skiff-proxy\"");

        let maps = [
            (
                "service-ips",
                "ipv4_addr . inet_proto . inet_service",
                &self.service_ips,
            ),
            (
                "service-nodeports",
                "inet_proto . inet_service",
                &self.service_nodeports,
            ),
            (
                "no-endpoint-services",
                "ipv4_addr . inet_proto . inet_service",
                &self.no_endpoint_services,
            ),
            (
                "no-endpoint-nodeports",
                "inet_proto . inet_service",
                &self.no_endpoint_nodeports,
            ),
        ];
        for (name, key, map) in maps {
            let _ = writeln!(w, "\tmap {name} {{\n\t\ttype {key} : verdict");
            if !map.is_empty() {
                let _ = writeln!(w, "\t\telements = {{ {} }}", elements(map));
            }
            let _ = writeln!(w, "\t}}");
        }
        for (name, timeout) in &self.sets {
            let _ = writeln!(
                w,
                "\tset {name} {{\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n\t\ttimeout {timeout}s\n\t}}"
            );
        }

        let base = |w: &mut String, name: &str, ty: &str, hook: &str, prio: i32, rules: &[String]| {
            let _ = writeln!(
                w,
                "\tchain {name} {{\n\t\ttype {ty} hook {hook} priority {prio}; policy accept;"
            );
            for r in rules {
                let _ = writeln!(w, "\t\t{r}");
            }
            let _ = writeln!(w, "\t}}");
        };
        let np = nodeport_match(cfg);
        let mut input = vec![
            "ct state new jump service-endpoints-check".to_string(),
            "ct state new jump nodeport-endpoints-check".to_string(),
        ];
        if cfg.localhost_nodeports {
            // route_localnet makes 127/8 routable; only loopback and DNATed traffic may use it.
            input.push(
                "iifname != \"lo\" ip daddr 127.0.0.0/8 ip saddr != 127.0.0.0/8 ct status & dnat == 0 drop".into(),
            );
        }
        let check = ["ct state new jump service-endpoints-check".to_string()];
        base(w, "filter-input", "filter", "input", -110, &input);
        base(w, "filter-forward", "filter", "forward", -110, &check);
        base(w, "filter-output", "filter", "output", -110, &check);
        base(
            w,
            "nat-prerouting",
            "nat",
            "prerouting",
            -100,
            &["jump services".into()],
        );
        base(w, "nat-output", "nat", "output", -100, &["jump services".into()]);
        base(
            w,
            "nat-postrouting",
            "nat",
            "postrouting",
            100,
            &["jump masquerading".into()],
        );

        let regular = |w: &mut String, name: &str, rules: &[String]| {
            let _ = writeln!(w, "\tchain {name} {{");
            for r in rules {
                let _ = writeln!(w, "\t\t{r}");
            }
            let _ = writeln!(w, "\t}}");
        };
        regular(
            w,
            "service-endpoints-check",
            &["ip daddr . meta l4proto . th dport vmap @no-endpoint-services".into()],
        );
        regular(
            w,
            "nodeport-endpoints-check",
            &[format!("{np} meta l4proto . th dport vmap @no-endpoint-nodeports")],
        );
        regular(
            w,
            "reject-chain",
            &["meta l4proto tcp reject with tcp reset".into(), "reject".into()],
        );
        regular(
            w,
            "services",
            &[
                "ip daddr . meta l4proto . th dport vmap @service-ips".into(),
                format!("{np} meta l4proto . th dport vmap @service-nodeports"),
            ],
        );
        regular(
            w,
            "mark-for-masquerade",
            &[format!("meta mark set meta mark | {MASQUERADE_MARK:#x}")],
        );
        regular(
            w,
            "masquerading",
            &[
                format!("meta mark & {MASQUERADE_MARK:#x} == 0 return"),
                format!("meta mark set meta mark ^ {MASQUERADE_MARK:#x}"),
                "masquerade fully-random".into(),
            ],
        );
        for (name, rules) in &self.chains {
            regular(w, name, rules);
        }
        let _ = writeln!(w, "}}");
        Ruleset {
            table: out,
            chains: FIXED_CHAINS
                .iter()
                .map(|c| c.to_string())
                .chain(self.chains.into_iter().map(|(name, _)| name))
                .collect(),
            sets: self.sets.into_iter().map(|(name, _)| name).collect(),
        }
    }
}
