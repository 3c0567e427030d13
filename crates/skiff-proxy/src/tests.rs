//! Table-driven tests of the pure path: Service and EndpointSlice objects in, nft text
//! out, asserted on the rules a user expects; plus `nft -c` validation of the output.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use crate::model::{self, Protocol};
use crate::rules::{self, RuleConfig};

fn service(name: &str, spec: Value) -> Service {
    let mut v = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"}, "spec": spec});
    if let Some(status) = v["spec"].as_object_mut().and_then(|s| s.remove("status")) {
        v["status"] = status;
    }
    serde_json::from_value(v).unwrap()
}

/// A slice for `svc`: ports as (name, port, protocol), endpoints as
/// (ip, ready, serving, terminating, node).
fn slice(
    svc: &str,
    suffix: &str,
    ports: &[(&str, i32, &str)],
    eps: &[(&str, bool, bool, bool, &str)],
) -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{svc}-{suffix}"), "namespace": "default",
            "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": ports.iter().map(|(n, p, pr)| json!({"name": n, "port": p, "protocol": pr})).collect::<Vec<_>>(),
        "endpoints": eps.iter().map(|(ip, r, s, t, node)| json!({
            "addresses": [ip],
            "conditions": {"ready": r, "serving": s, "terminating": t},
            "nodeName": node,
        })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn ready(ip: &'static str) -> (&'static str, bool, bool, bool, &'static str) {
    (ip, true, true, false, "node-a")
}

fn cfg() -> RuleConfig {
    RuleConfig {
        node_name: "node-a".into(),
        cluster_cidr: Some("10.42.0.0/16".parse().unwrap()),
        nodeport_addresses: vec![],
        localhost_nodeports: false,
        masquerade_all: false,
    }
}

fn render(services: &[Service], slices: &[EndpointSlice]) -> String {
    rules::render(&model::build(services, slices), &cfg())
        .table()
        .to_string()
}

/// The rules of chain `name` (one per line, trimmed); empty when the chain is absent.
fn chain(text: &str, name: &str) -> Vec<String> {
    let header = format!("\tchain {name} {{");
    let Some(start) = text.lines().position(|l| l == header) else {
        return vec![];
    };
    text.lines()
        .skip(start + 1)
        .take_while(|l| l.trim() != "}")
        .map(|l| l.trim().to_string())
        .collect()
}

/// The elements line of map `name`.
fn map(text: &str, name: &str) -> String {
    let header = format!("\tmap {name} {{");
    let start = text.lines().position(|l| l == header).expect("map present");
    let line = text.lines().nth(start + 2).unwrap_or_default().trim();
    if line.starts_with("elements") {
        line.to_string()
    } else {
        String::new()
    }
}

const WEB: &str = "default/web/tcp/http";

fn web(extra: Value) -> Service {
    let mut spec = json!({"clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"],
        "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        "selector": {"app": "web"}});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    service("web", spec)
}

#[test]
fn clusterip_dnats_to_each_ready_endpoint_with_named_target_port() {
    let text = render(
        &[web(json!({}))],
        &[slice(
            "web",
            "a",
            &[("http", 8080, "TCP")],
            &[
                ready("10.42.0.5"),
                ready("10.42.0.6"),
                ("10.42.0.7", false, false, false, "node-a"),
            ],
        )],
    );
    assert!(
        map(&text, "service-ips").contains(&format!("10.43.0.10 . tcp . 80 : goto svc-{WEB}")),
        "{text}"
    );
    assert_eq!(
        chain(&text, &format!("svc-{WEB}")),
        vec![
            "ip saddr != 10.42.0.0/16 jump mark-for-masquerade".to_string(),
            format!("goto cluster-{WEB}"),
        ]
    );
    assert_eq!(
        chain(&text, &format!("cluster-{WEB}")),
        vec![format!(
            "numgen random mod 2 vmap {{ 0 : goto ep-{WEB}/10.42.0.5/8080, 1 : goto ep-{WEB}/10.42.0.6/8080 }}"
        )]
    );
    assert_eq!(
        chain(&text, &format!("ep-{WEB}/10.42.0.5/8080")),
        vec![
            "ip saddr 10.42.0.5 jump mark-for-masquerade".to_string(),
            "meta l4proto tcp dnat to 10.42.0.5:8080".to_string(),
        ]
    );
    assert!(
        chain(&text, &format!("ep-{WEB}/10.42.0.7/8080")).is_empty(),
        "not-ready endpoint unused"
    );
    assert_eq!(map(&text, "no-endpoint-services"), "");
}

#[test]
fn services_without_usable_endpoints_are_rejected() {
    let cases: Vec<(&str, Vec<EndpointSlice>)> = vec![
        ("no slice", vec![]),
        ("empty slice", vec![slice("web", "a", &[("http", 8080, "TCP")], &[])]),
        (
            "only not-ready endpoints",
            vec![slice(
                "web",
                "a",
                &[("http", 8080, "TCP")],
                &[("10.42.0.5", false, false, false, "node-a")],
            )],
        ),
        (
            "slice port name does not match",
            vec![slice("web", "a", &[("metrics", 9090, "TCP")], &[ready("10.42.0.5")])],
        ),
    ];
    for (case, slices) in cases {
        let text = render(
            &[web(json!({"type": "NodePort", "ports": [
            {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]}))],
            &slices,
        );
        assert_eq!(map(&text, "service-ips"), "", "{case}");
        assert_eq!(map(&text, "service-nodeports"), "", "{case}");
        assert_eq!(
            map(&text, "no-endpoint-services"),
            "elements = { 10.43.0.10 . tcp . 80 : goto reject-chain }",
            "{case}"
        );
        assert_eq!(
            map(&text, "no-endpoint-nodeports"),
            "elements = { tcp . 30080 : goto reject-chain }",
            "{case}"
        );
        assert_eq!(
            chain(&text, "reject-chain"),
            vec!["meta l4proto tcp reject with tcp reset", "reject"],
            "{case}"
        );
    }
}

#[test]
fn terminating_but_serving_endpoints_are_used_only_when_none_is_ready() {
    let serving_terminating = ("10.42.0.9", false, true, true, "node-a");
    let text = render(
        &[web(json!({}))],
        &[slice("web", "a", &[("http", 8080, "TCP")], &[serving_terminating])],
    );
    assert_eq!(
        chain(&text, &format!("cluster-{WEB}")),
        vec![format!("goto ep-{WEB}/10.42.0.9/8080")]
    );
    let text = render(
        &[web(json!({}))],
        &[slice(
            "web",
            "a",
            &[("http", 8080, "TCP")],
            &[serving_terminating, ready("10.42.0.5")],
        )],
    );
    assert_eq!(
        chain(&text, &format!("cluster-{WEB}")),
        vec![format!("goto ep-{WEB}/10.42.0.5/8080")]
    );
}

#[test]
fn headless_and_externalname_services_get_no_rules() {
    let headless = service(
        "headless",
        json!({"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"port": 80}], "selector": {"app": "web"}}),
    );
    let external = service("ext", json!({"type": "ExternalName", "externalName": "example.com"}));
    let slices = [slice("headless", "a", &[("", 80, "TCP")], &[ready("10.42.0.5")])];
    assert!(model::build(&[headless.clone(), external.clone()], &slices).is_empty());
    let text = render(&[headless, external], &slices);
    assert!(!text.contains("svc-"), "{text}");
    assert!(!text.contains("ep-"), "{text}");
    assert_eq!(map(&text, "no-endpoint-services"), "");
}

#[test]
fn nodeport_externalip_and_loadbalancer_go_through_the_external_chain() {
    let svc = web(json!({"type": "LoadBalancer", "externalIPs": ["192.0.2.50"],
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}],
        "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}, {"ip": "198.51.100.8", "ipMode": "Proxy"}]}}}));
    let text = render(
        &[svc],
        &[slice("web", "a", &[("http", 8080, "TCP")], &[ready("10.42.0.5")])],
    );
    let ips = map(&text, "service-ips");
    assert!(
        ips.contains(&format!("192.0.2.50 . tcp . 80 : goto ext-{WEB}")),
        "{ips}"
    );
    assert!(
        ips.contains(&format!("198.51.100.7 . tcp . 80 : goto ext-{WEB}")),
        "{ips}"
    );
    assert!(
        !ips.contains("198.51.100.8"),
        "ipMode Proxy is left to the load balancer: {ips}"
    );
    assert_eq!(
        map(&text, "service-nodeports"),
        format!("elements = {{ tcp . 30080 : goto ext-{WEB} }}")
    );
    assert_eq!(
        chain(&text, &format!("ext-{WEB}")),
        vec!["jump mark-for-masquerade".to_string(), format!("goto cluster-{WEB}")]
    );
    assert_eq!(
        chain(&text, "services"),
        vec![
            "ip daddr . meta l4proto . th dport vmap @service-ips",
            "ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service-nodeports",
        ]
    );
}

#[test]
fn nodeport_addresses_and_localhost() {
    let ports = model::build(
        &[web(
            json!({"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
        )],
        &[slice("web", "a", &[("http", 80, "TCP")], &[ready("10.42.0.5")])],
    );
    let mut c = cfg();
    c.nodeport_addresses = vec!["192.0.2.0/24".parse().unwrap()];
    c.localhost_nodeports = true;
    let text = rules::render(&ports, &c).table().to_string();
    assert_eq!(
        chain(&text, "services")[1],
        "ip daddr { 192.0.2.0/24 } fib daddr type local meta l4proto . th dport vmap @service-nodeports"
    );
    assert!(
        chain(&text, "filter-input")
            .iter()
            .any(|r| r.contains("127.0.0.0/8") && r.ends_with("drop"))
    );
}

#[test]
fn local_traffic_policies_use_only_this_nodes_endpoints() {
    let remote = ("10.42.1.5", true, true, false, "node-b");
    let svc = web(
        json!({"type": "NodePort", "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local",
        "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
    );
    let text = render(
        std::slice::from_ref(&svc),
        &[slice(
            "web",
            "a",
            &[("http", 8080, "TCP")],
            &[ready("10.42.0.5"), remote],
        )],
    );
    assert_eq!(
        chain(&text, &format!("svc-{WEB}")).last().unwrap(),
        &format!("goto local-{WEB}")
    );
    assert_eq!(
        chain(&text, &format!("local-{WEB}")),
        vec![format!("goto ep-{WEB}/10.42.0.5/8080")]
    );
    assert_eq!(
        chain(&text, &format!("ext-{WEB}")),
        vec![
            format!("ip saddr 10.42.0.0/16 goto cluster-{WEB}"),
            "fib saddr type local jump mark-for-masquerade".to_string(),
            format!("fib saddr type local goto cluster-{WEB}"),
            format!("goto local-{WEB}"),
        ],
        "external clients are not masqueraded"
    );
    // Endpoints only on another node: external traffic is dropped, not rejected.
    let text = render(&[svc], &[slice("web", "a", &[("http", 8080, "TCP")], &[remote])]);
    assert_eq!(chain(&text, &format!("local-{WEB}")), vec!["drop"]);
    assert_eq!(map(&text, "no-endpoint-services"), "");
}

#[test]
fn session_affinity_remembers_clients_per_endpoint() {
    let svc = web(json!({"sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}}));
    let text = render(
        &[svc],
        &[slice(
            "web",
            "a",
            &[("http", 8080, "TCP")],
            &[ready("10.42.0.5"), ready("10.42.0.6")],
        )],
    );
    assert!(text.contains(&format!(
        "set aff-{WEB}/10.42.0.5/8080/600 {{\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n\t\ttimeout 600s"
    )));
    let cluster = chain(&text, &format!("cluster-{WEB}"));
    assert_eq!(
        cluster[0],
        format!("ip saddr @aff-{WEB}/10.42.0.5/8080/600 goto ep-{WEB}/10.42.0.5/8080")
    );
    assert!(cluster[2].starts_with("numgen random mod 2 vmap"));
    assert!(
        chain(&text, &format!("ep-{WEB}/10.42.0.6/8080"))
            .contains(&format!("update @aff-{WEB}/10.42.0.6/8080/600 {{ ip saddr }}"))
    );
}

#[test]
fn protocols_and_multiple_ports() {
    let svc = service(
        "dns",
        json!({"clusterIP": "10.43.0.10", "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            {"name": "sig", "port": 9, "protocol": "SCTP"}]}),
    );
    let sl = slice(
        "dns",
        "a",
        &[("dns", 5353, "UDP"), ("dns-tcp", 5353, "TCP"), ("sig", 9999, "SCTP")],
        &[ready("10.42.0.5")],
    );
    let ports = model::build(std::slice::from_ref(&svc), std::slice::from_ref(&sl));
    assert_eq!(
        ports.iter().map(|p| p.protocol).collect::<Vec<_>>(),
        vec![Protocol::Sctp, Protocol::Tcp, Protocol::Udp],
        "sorted by id"
    );
    let text = render(&[svc], &[sl]);
    let ips = map(&text, "service-ips");
    for key in [
        "10.43.0.10 . udp . 53 : goto svc-default/dns/udp/dns",
        "10.43.0.10 . tcp . 53 : goto svc-default/dns/tcp/dns-tcp",
        "10.43.0.10 . sctp . 9 : goto svc-default/dns/sctp/sig",
    ] {
        assert!(ips.contains(key), "{key} in {ips}");
    }
    assert!(
        chain(&text, "ep-default/dns/udp/dns/10.42.0.5/5353")
            .contains(&"meta l4proto udp dnat to 10.42.0.5:5353".to_string())
    );
}

#[test]
fn endpoints_are_merged_across_slices_and_deduplicated() {
    let slices = [
        slice(
            "web",
            "a",
            &[("http", 8080, "TCP")],
            &[("10.42.0.5", false, false, false, "node-a")],
        ),
        slice(
            "web",
            "b",
            &[("http", 8080, "TCP")],
            &[ready("10.42.0.5"), ready("10.42.0.6")],
        ),
    ];
    let ports = model::build(&[web(json!({}))], &slices);
    let eps: Vec<String> = ports[0].cluster_endpoints().iter().map(|e| e.ip.to_string()).collect();
    assert_eq!(eps, ["10.42.0.5", "10.42.0.6"]);
}

#[test]
fn masquerade_all_marks_every_service_connection() {
    let ports = model::build(
        &[web(json!({}))],
        &[slice("web", "a", &[("http", 8080, "TCP")], &[ready("10.42.0.5")])],
    );
    let mut c = cfg();
    c.masquerade_all = true;
    let text = rules::render(&ports, &c).table().to_string();
    assert_eq!(chain(&text, &format!("svc-{WEB}"))[0], "jump mark-for-masquerade");
    assert_eq!(
        chain(&text, "masquerading"),
        vec![
            "meta mark & 0x4000 == 0 return",
            "meta mark set meta mark ^ 0x4000",
            "masquerade fully-random"
        ]
    );
}

/// Every ruleset the tests above produce is accepted by the kernel (`nft -c`, nothing
/// is committed). Needs root and nft, like the rest of the proxy.
#[tokio::test]
async fn rendered_rulesets_pass_nft_check() {
    let svc = web(
        json!({"type": "LoadBalancer", "externalIPs": ["192.0.2.50"], "externalTrafficPolicy": "Local",
        "sessionAffinity": "ClientIP",
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}],
        "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}}}),
    );
    let empty = service(
        "empty",
        json!({"clusterIP": "10.43.0.11", "type": "NodePort",
        "ports": [{"port": 81, "nodePort": 30081, "protocol": "UDP"}]}),
    );
    let dns = service(
        "dns",
        json!({"clusterIP": "10.43.0.12", "ports": [
        {"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "sig", "port": 9, "protocol": "SCTP"}]}),
    );
    let slices = [
        slice(
            "web",
            "a",
            &[("http", 8080, "TCP")],
            &[ready("10.42.0.5"), ("10.42.1.6", true, true, false, "node-b")],
        ),
        slice(
            "dns",
            "a",
            &[("dns", 53, "UDP"), ("sig", 9, "SCTP")],
            &[ready("10.42.0.7")],
        ),
    ];
    let ports = model::build(&[svc, empty, dns], &slices);
    let mut configs = vec![cfg(), RuleConfig::default()];
    let mut c = cfg();
    c.localhost_nodeports = true;
    c.masquerade_all = true;
    c.nodeport_addresses = vec!["192.0.2.0/24".parse().unwrap(), "127.0.0.0/8".parse().unwrap()];
    configs.push(c);
    let nft = crate::Nft::default();
    for c in &configs {
        for p in [&ports[..], &[]] {
            let ruleset = rules::render(p, c);
            let declared: Vec<&str> = ruleset
                .table()
                .lines()
                .filter_map(|l| l.strip_prefix("\tchain ")?.strip_suffix(" {"))
                .collect();
            let text = ruleset.full_transaction();
            for chain in declared {
                assert!(
                    text.contains(&format!("chain {chain} {{"))
                        && rules::render(&[], c)
                            .update_transaction(&ruleset)
                            .contains(&format!("flush chain ip skiff-proxy {chain}\n")),
                    "chain {chain} is tracked for updates"
                );
            }
            if let Err(e) = nft.check(&text).await {
                panic!("nft -c rejected the ruleset: {e}\n{text}");
            }
        }
    }
}
