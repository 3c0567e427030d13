//! LoadBalancer addresses without a cloud (the role of upstream's cloud service
//! controller, done the way MetalLB's and k3s's in-cluster allocators do it): every
//! Service of `type: LoadBalancer` without `spec.loadBalancerClass` gets one address
//! of the pool (`--service-lb-pool`) in `status.loadBalancer.ingress[0].ip` (with
//! `ipMode: VIP`), and the Service proxy on every node then accepts traffic to it.
//!
//! - A requested `spec.loadBalancerIP` is honoured when it is in the pool and free;
//!   otherwise the Service gets no address and a `Warning AllocationFailed` event.
//! - An address is never handed out twice: the pool is rebuilt from every listed
//!   Service's status before anything is allocated (oldest Service first when two
//!   claim the same address), so a restarted controller or the next leader keeps the
//!   addresses already announced.
//! - Deleting the Service, or changing its type away from LoadBalancer, releases the
//!   address (and clears the status of a Service that changed type).
//! - A full pool: `Warning AllocationFailed` (`Failed to allocate IP for "ns/name": no
//!   available IPs`) and no ingress; the Service gets an address as soon as one is
//!   released.
//! - Services with a `loadBalancerClass` belong to another implementation and are
//!   never touched.
//!
//! IPv4 only. In ranges of /30 and wider the network and broadcast addresses are not
//! handed out; /31 and /32 ranges give all their addresses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use skiff_api::events::EventType;
use tokio_util::sync::CancellationToken;

/// The default `--service-lb-pool`: private, next to the default cluster (10.42/16)
/// and Service (10.43/16) ranges.
pub const DEFAULT_POOL: &str = "10.44.0.0/24";
/// Reason of the Warning event when a Service gets no address (MetalLB's).
pub const ALLOCATION_FAILED: &str = "AllocationFailed";
/// Reason of the Normal event when a Service gets an address (MetalLB's).
pub const IP_ALLOCATED: &str = "IPAllocated";
const COMPONENT: &str = "service-lb-controller";
const RETRY_PERIOD: Duration = Duration::from_secs(5);

/// Why an address could not be parsed, allocated or reserved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// A pool entry is not IPv4 CIDR notation.
    #[error("--service-lb-pool: {0:?} is not an IPv4 CIDR (A.B.C.D/LEN)")]
    Syntax(String),
    /// The pool has no entries.
    #[error("--service-lb-pool is empty")]
    Empty,
    /// Two pool entries overlap.
    #[error("--service-lb-pool: {0} overlaps {1}")]
    Overlap(Ipv4Net, Ipv4Net),
    /// Every address is taken.
    #[error("no available IPs")]
    Full,
    /// A requested address is outside the pool (or a network/broadcast address).
    #[error("requested IP {0} is not in the pool")]
    NotInPool(Ipv4Addr),
    /// A requested address belongs to another Service.
    #[error("requested IP {ip} is already assigned to {owner}")]
    InUse {
        /// The address.
        ip: Ipv4Addr,
        /// `namespace/name` of the Service holding it.
        owner: String,
    },
}

/// The LoadBalancer address pool and who holds which address.
#[derive(Debug, Clone)]
pub struct LbPool {
    ranges: Vec<Ipv4Net>,
    owners: BTreeMap<Ipv4Addr, String>,
}

impl LbPool {
    /// Parses a comma-separated list of IPv4 CIDRs (`172.31.255.0/28,10.0.0.0/30`).
    ///
    /// Errors: [`PoolError::Syntax`], [`PoolError::Empty`], [`PoolError::Overlap`].
    pub fn parse(spec: &str) -> Result<Self, PoolError> {
        let mut ranges: Vec<Ipv4Net> = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let net: Ipv4Net = part.parse().map_err(|_| PoolError::Syntax(part.to_string()))?;
            let net = net.trunc();
            if let Some(other) = ranges.iter().find(|r| r.contains(&net) || net.contains(*r)) {
                return Err(PoolError::Overlap(net, *other));
            }
            ranges.push(net);
        }
        if ranges.is_empty() {
            return Err(PoolError::Empty);
        }
        Ok(Self {
            ranges,
            owners: BTreeMap::new(),
        })
    }

    /// The pool's ranges, as given.
    pub fn ranges(&self) -> &[Ipv4Net] {
        &self.ranges
    }

    /// Whether `ip` is an address the pool hands out.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.ranges
            .iter()
            .any(|r| r.contains(&ip) && (r.prefix_len() >= 31 || (ip != r.network() && ip != r.broadcast())))
    }

    /// How many addresses the pool hands out.
    pub fn size(&self) -> u64 {
        self.ranges.iter().map(|r| r.hosts().count() as u64).sum()
    }

    /// The `namespace/name` holding `ip`, if any.
    pub fn owner(&self, ip: Ipv4Addr) -> Option<&str> {
        self.owners.get(&ip).map(String::as_str)
    }

    /// Hands the first free address (in pool order) to `owner`. Errors: [`PoolError::Full`].
    pub fn allocate(&mut self, owner: &str) -> Result<Ipv4Addr, PoolError> {
        let ip = self
            .ranges
            .iter()
            .flat_map(|r| r.hosts())
            .find(|ip| !self.owners.contains_key(ip))
            .ok_or(PoolError::Full)?;
        self.owners.insert(ip, owner.to_string());
        Ok(ip)
    }

    /// Gives `ip` to `owner` (a requested or already announced address); holding it
    /// already is fine. Errors: [`PoolError::NotInPool`], [`PoolError::InUse`].
    pub fn reserve(&mut self, ip: Ipv4Addr, owner: &str) -> Result<(), PoolError> {
        if !self.contains(ip) {
            return Err(PoolError::NotInPool(ip));
        }
        match self.owners.get(&ip) {
            Some(o) if o != owner => Err(PoolError::InUse { ip, owner: o.clone() }),
            _ => {
                self.owners.insert(ip, owner.to_string());
                Ok(())
            }
        }
    }

    /// Frees `ip` if `owner` holds it.
    pub fn release(&mut self, ip: Ipv4Addr, owner: &str) {
        if self.owners.get(&ip).is_some_and(|o| o == owner) {
            self.owners.remove(&ip);
        }
    }

    /// How many addresses are held.
    pub fn allocated(&self) -> usize {
        self.owners.len()
    }
}

/// Whether this controller serves the Service: `type: LoadBalancer`, no
/// `loadBalancerClass`, not being deleted.
pub fn is_ours(svc: &Service) -> bool {
    let spec = svc.spec.as_ref();
    spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
        && spec.and_then(|s| s.load_balancer_class.as_deref()).is_none()
        && svc.metadata.deletion_timestamp.is_none()
}

/// The IPv4 addresses in `status.loadBalancer.ingress[].ip`.
pub fn ingress_ips(svc: &Service) -> Vec<Ipv4Addr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

fn key(svc: &Service) -> String {
    format!(
        "{}/{}",
        svc.metadata.namespace.as_deref().unwrap_or_default(),
        svc.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The requested `spec.loadBalancerIP`: `None` when unset, `Some(Err)` when not an IPv4 address.
fn requested(svc: &Service) -> Option<Result<Ipv4Addr, String>> {
    let raw = svc
        .spec
        .as_ref()?
        .load_balancer_ip
        .as_deref()
        .filter(|s| !s.is_empty())?;
    Some(raw.parse().map_err(|_| raw.to_string()))
}

/// The controller's memory: the pool, the address of each Service, Services waiting.
struct Allocator {
    pool: LbPool,
    by_service: BTreeMap<String, Ipv4Addr>,
    pending: BTreeSet<String>,
}

impl Allocator {
    fn release(&mut self, key: &str) {
        if let Some(ip) = self.by_service.remove(key) {
            self.pool.release(ip, key);
            tracing::info!(service = %key, %ip, "released LoadBalancer IP");
        }
    }

    /// Takes over the announced addresses of `services`, oldest first.
    fn rebuild(&mut self, services: &[Service]) {
        let mut ours: Vec<&Service> = services.iter().filter(|s| is_ours(s)).collect();
        ours.sort_by_key(|s| {
            (
                s.metadata.creation_timestamp.as_ref().map(|t| t.0),
                s.metadata.name.clone(),
            )
        });
        for svc in ours {
            let k = key(svc);
            let want = requested(svc).and_then(Result::ok);
            if let Some(ip) = ingress_ips(svc).into_iter().find(|ip| want.is_none_or(|w| w == *ip))
                && self.pool.reserve(ip, &k).is_ok()
            {
                self.by_service.insert(k, ip);
            }
        }
    }
}

enum Outcome {
    Done,
    /// Waits for an address to be released.
    Waiting,
    /// An API call failed; retried on the next tick.
    Failed,
}

async fn record(client: &kube::Client, svc: &Service, ty: EventType, reason: &str, message: &str) {
    let reference = crate::common::reference("v1", "Service", &svc.metadata);
    crate::common::record(client, reference, ty, reason, message, COMPONENT).await;
}

/// Brings one Service's address and status to what the pool says.
async fn reconcile(client: &kube::Client, alloc: &mut Allocator, svc: &Service) -> Outcome {
    let k = key(svc);
    let api: Api<Service> = Api::namespaced(client.clone(), svc.metadata.namespace.as_deref().unwrap_or_default());
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let class = svc.spec.as_ref().and_then(|s| s.load_balancer_class.as_deref());
    if !is_ours(svc) {
        let held = alloc.by_service.get(&k).copied();
        alloc.release(&k);
        // A Service that stopped being a LoadBalancer loses the address it announced.
        if let Some(ip) = held
            && class.is_none()
            && svc.metadata.deletion_timestamp.is_none()
            && ingress_ips(svc).contains(&ip)
        {
            return patch_ingress(&api, name, None).await;
        }
        return Outcome::Done;
    }
    let current = alloc.by_service.get(&k).copied();
    let chosen = match requested(svc) {
        Some(Err(raw)) => Err(format!("invalid spec.loadBalancerIP {raw:?}")),
        Some(Ok(want)) if current == Some(want) => Ok(want),
        Some(Ok(want)) => match alloc.pool.reserve(want, &k) {
            Ok(()) => {
                alloc.release(&k);
                Ok(want)
            }
            Err(e) => Err(e.to_string()),
        },
        None => match current {
            Some(ip) => Ok(ip),
            None => alloc.pool.allocate(&k).map_err(|e| e.to_string()),
        },
    };
    let ip = match chosen {
        Ok(ip) => ip,
        Err(why) => {
            alloc.release(&k);
            tracing::warn!(service = %k, reason = %why, "no LoadBalancer IP");
            if !alloc.pending.contains(&k) {
                record(
                    client,
                    svc,
                    EventType::Warning,
                    ALLOCATION_FAILED,
                    &format!("Failed to allocate IP for {k:?}: {why}"),
                )
                .await;
            }
            if !ingress_ips(svc).is_empty()
                && let Outcome::Failed = patch_ingress(&api, name, None).await
            {
                return Outcome::Failed;
            }
            return Outcome::Waiting;
        }
    };
    let fresh = current != Some(ip);
    alloc.by_service.insert(k.clone(), ip);
    if ingress_ips(svc) == [ip] {
        return Outcome::Done;
    }
    match patch_ingress(&api, name, Some(ip)).await {
        Outcome::Done => {
            if fresh {
                tracing::info!(service = %k, %ip, "assigned LoadBalancer IP");
                record(
                    client,
                    svc,
                    EventType::Normal,
                    IP_ALLOCATED,
                    &format!("Assigned IP [\"{ip}\"]"),
                )
                .await;
            }
            Outcome::Done
        }
        other => other,
    }
}

/// Sets (`Some`) or clears (`None`) `status.loadBalancer.ingress`; a Service gone
/// meanwhile is done.
async fn patch_ingress(api: &Api<Service>, name: &str, ip: Option<Ipv4Addr>) -> Outcome {
    let ingress = match ip {
        Some(ip) => json!([{"ip": ip.to_string(), "ipMode": "VIP"}]),
        None => json!(null),
    };
    let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Outcome::Done,
        Err(e) if crate::common::is_not_found(&e) => Outcome::Done,
        Err(e) => {
            tracing::warn!(service = %name, error = %e, "updating LoadBalancer status failed; will retry");
            Outcome::Failed
        }
    }
}

async fn reconcile_and_track(client: &kube::Client, alloc: &mut Allocator, svc: &Service) {
    let k = key(svc);
    match reconcile(client, alloc, svc).await {
        Outcome::Done => {
            alloc.pending.remove(&k);
        }
        Outcome::Waiting | Outcome::Failed => {
            alloc.pending.insert(k);
        }
    }
}

/// Runs the LoadBalancer IP allocator over `pool` until `shutdown`: watches
/// Services; after each full list takes over the addresses already announced, then
/// serves every Service; Services left waiting are retried when an address is
/// released and every 5 s.
pub async fn run(client: kube::Client, pool: LbPool, shutdown: CancellationToken) {
    let api: Api<Service> = Api::all(client.clone());
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(crate::common::strip_managed_fields)
        .boxed();
    let fresh = || Allocator {
        pool: pool.clone(),
        by_service: BTreeMap::new(),
        pending: BTreeSet::new(),
    };
    let mut alloc = fresh();
    let mut listing: Vec<Service> = Vec::new();
    let mut synced = false;
    let mut ticker = tokio::time::interval(RETRY_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(pool = ?pool.ranges(), addresses = pool.size(), "LoadBalancer IP allocator started");
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = events.next() => e,
            _ = ticker.tick() => {
                if synced {
                    retry_pending(&client, &mut alloc).await;
                }
                continue;
            }
        };
        match event {
            None => return,
            Some(Err(e)) => tracing::warn!(error = %e, "service watch failed; retrying"),
            Some(Ok(watcher::Event::Init)) => listing.clear(),
            Some(Ok(watcher::Event::InitApply(s))) => listing.push(s),
            Some(Ok(watcher::Event::InitDone)) => {
                alloc = fresh();
                alloc.rebuild(&listing);
                synced = true;
                for svc in std::mem::take(&mut listing) {
                    if is_ours(&svc) {
                        reconcile_and_track(&client, &mut alloc, &svc).await;
                    }
                }
            }
            Some(Ok(watcher::Event::Apply(svc))) => {
                let before = alloc.pool.allocated();
                reconcile_and_track(&client, &mut alloc, &svc).await;
                if alloc.pool.allocated() < before {
                    retry_pending(&client, &mut alloc).await;
                }
            }
            Some(Ok(watcher::Event::Delete(svc))) => {
                let k = key(&svc);
                alloc.pending.remove(&k);
                if alloc.by_service.contains_key(&k) {
                    alloc.release(&k);
                    retry_pending(&client, &mut alloc).await;
                }
            }
        }
    }
}

async fn retry_pending(client: &kube::Client, alloc: &mut Allocator) {
    for k in alloc.pending.clone() {
        let (ns, name) = k.split_once('/').unwrap_or_default();
        match Api::<Service>::namespaced(client.clone(), ns).get_opt(name).await {
            Ok(Some(svc)) => reconcile_and_track(client, alloc, &svc).await,
            Ok(None) => {
                alloc.pending.remove(&k);
                alloc.release(&k);
            }
            Err(e) => tracing::warn!(service = %k, error = %e, "reading service failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn pool_parses_lists_and_rejects_bad_entries() {
        let pool = LbPool::parse("172.31.255.0/28, 10.0.0.0/30").unwrap();
        assert_eq!(pool.size(), 14 + 2);
        assert!(pool.contains(ip("172.31.255.1")) && pool.contains(ip("10.0.0.2")));
        assert!(!pool.contains(ip("172.31.255.0")) && !pool.contains(ip("172.31.255.15")));
        assert!(!pool.contains(ip("10.0.0.3")) && !pool.contains(ip("10.0.0.4")));
        assert_eq!(LbPool::parse("10.0.0.7/32").unwrap().size(), 1);
        assert_eq!(LbPool::parse("10.0.0.6/31").unwrap().size(), 2);
        assert_eq!(LbPool::parse(" , ").unwrap_err(), PoolError::Empty);
        assert!(matches!(LbPool::parse("10.0.0.0/24,nope"), Err(PoolError::Syntax(s)) if s == "nope"));
        assert!(matches!(LbPool::parse("fd00::/120"), Err(PoolError::Syntax(_))));
        assert!(matches!(
            LbPool::parse("10.0.0.0/24,10.0.0.128/25"),
            Err(PoolError::Overlap(..))
        ));
        assert_eq!(LbPool::parse(DEFAULT_POOL).unwrap().size(), 254);
    }

    #[test]
    fn addresses_are_handed_out_once_across_ranges() {
        let mut pool = LbPool::parse("10.0.0.0/30,10.0.1.5/32").unwrap();
        assert_eq!(pool.allocate("ns/a").unwrap(), ip("10.0.0.1"));
        assert_eq!(pool.allocate("ns/b").unwrap(), ip("10.0.0.2"));
        assert_eq!(pool.allocate("ns/c").unwrap(), ip("10.0.1.5"));
        assert_eq!(pool.allocate("ns/d"), Err(PoolError::Full));
        // Only the holder releases.
        pool.release(ip("10.0.0.2"), "ns/a");
        assert_eq!(pool.owner(ip("10.0.0.2")), Some("ns/b"));
        pool.release(ip("10.0.0.2"), "ns/b");
        assert_eq!(pool.allocated(), 2);
        assert_eq!(pool.allocate("ns/d").unwrap(), ip("10.0.0.2"));
    }

    #[test]
    fn requested_addresses_must_be_free_and_in_the_pool() {
        let mut pool = LbPool::parse("172.31.255.0/28").unwrap();
        pool.reserve(ip("172.31.255.9"), "ns/a").unwrap();
        pool.reserve(ip("172.31.255.9"), "ns/a").unwrap();
        assert_eq!(
            pool.reserve(ip("172.31.255.9"), "ns/b"),
            Err(PoolError::InUse {
                ip: ip("172.31.255.9"),
                owner: "ns/a".into()
            })
        );
        assert_eq!(
            pool.reserve(ip("172.31.255.15"), "ns/b"),
            Err(PoolError::NotInPool(ip("172.31.255.15")))
        );
        assert_eq!(
            pool.reserve(ip("192.168.1.1"), "ns/b"),
            Err(PoolError::NotInPool(ip("192.168.1.1")))
        );
        // Allocation skips the reserved address.
        for _ in 0..13 {
            assert_ne!(pool.allocate("ns/x").unwrap(), ip("172.31.255.9"));
        }
        assert_eq!(pool.allocate("ns/y"), Err(PoolError::Full));
    }

    fn svc(name: &str, created: &str, class: Option<&str>, status_ip: Option<&str>) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": class, "ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": status_ip.map(|i| vec![json!({"ip": i})]).unwrap_or_default()}},
        }))
        .unwrap()
    }

    #[test]
    fn rebuild_keeps_announced_addresses_oldest_first() {
        let mut alloc = Allocator {
            pool: LbPool::parse("10.44.0.0/24").unwrap(),
            by_service: BTreeMap::new(),
            pending: BTreeSet::new(),
        };
        alloc.rebuild(&[
            svc("young", "2026-01-02T00:00:00Z", None, Some("10.44.0.7")),
            svc("old", "2026-01-01T00:00:00Z", None, Some("10.44.0.7")),
            svc(
                "classy",
                "2026-01-01T00:00:00Z",
                Some("example.com/lb"),
                Some("10.44.0.8"),
            ),
            svc("outside", "2026-01-01T00:00:00Z", None, Some("192.168.0.1")),
        ]);
        assert_eq!(alloc.by_service.get("default/old"), Some(&ip("10.44.0.7")));
        assert_eq!(alloc.by_service.len(), 1);
        assert!(alloc.pool.owner(ip("10.44.0.8")).is_none());
        assert!(!is_ours(&svc("classy", "2026-01-01T00:00:00Z", Some("x"), None)));
    }
}
