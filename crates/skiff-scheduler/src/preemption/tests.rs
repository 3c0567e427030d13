//! Victim selection, node choice and nominations, as upstream's table tests.
use rand::SeedableRng;
use serde_json::Value;

use super::*;
use crate::plugins::{default_plugins, registry};

fn profile() -> Profile {
    Profile::new(&registry(), &default_plugins()).unwrap()
}

/// A pod in `default` requesting `cpu`, with `priority`; `extra` is merged into it.
fn pod(name: &str, cpu: &str, prio: i32, extra: Value) -> Arc<Pod> {
    let mut v = json!({"metadata": {"name": name, "uid": name, "namespace": "default"},
        "spec": {"priority": prio,
                 "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}});
    for (k, x) in extra.as_object().cloned().unwrap_or_default() {
        match k.as_str() {
            "labels" => v["metadata"]["labels"] = x,
            "startTime" => v["status"] = json!({"startTime": x}),
            "preemptionPolicy" => v["spec"]["preemptionPolicy"] = x,
            _ => unreachable!("{k}"),
        }
    }
    Arc::new(serde_json::from_value(v).unwrap())
}

struct World {
    cache: Cache,
    state: Preemption,
}

/// Nodes of `cpu` cores each with their bound pods.
fn world(nodes: &[(&str, &str, Vec<Arc<Pod>>)]) -> World {
    let mut cache = Cache::new();
    let mut state = Preemption::new();
    for (name, cpu, pods) in nodes {
        let n = crate::plugins::testing::node(name, cpu, "8Gi", json!({}));
        cache.set_node(n.node.clone().unwrap());
        for p in pods {
            let mut bound = (**p).clone();
            bound.spec.as_mut().unwrap().node_name = Some(name.to_string());
            let bound = Arc::new(bound);
            cache.observe_pod(&bound);
            state.observe_pod(&bound, false);
        }
    }
    World { cache, state }
}

fn names(pods: &[Arc<Pod>]) -> Vec<&str> {
    pods.iter().map(|p| p.metadata.name.as_deref().unwrap()).collect()
}

fn attempt(w: &World, preemptor: &Arc<Pod>) -> (Outcome, String) {
    let info = PodInfo::new(preemptor.clone());
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let fit = crate::algorithm::schedule_pod_with(&profile(), &w.cache, &w.state.nominator, &info, &mut 0, &mut rng)
        .expect_err("the preemptor fits nowhere");
    let outcome = w.state.post_filter(&profile(), &w.cache, &info, &fit, &mut rng);
    let message = outcome.message(&fit);
    (outcome, message)
}

#[test]
fn victims_and_node_choice_follow_upstream() {
    let none = json!({});
    let t = |s: &str| json!({"startTime": s});
    struct Case {
        name: &'static str,
        nodes: Vec<(&'static str, &'static str, Vec<Arc<Pod>>)>,
        preemptor: Arc<Pod>,
        pdbs: Vec<Value>,
        /// Chosen node and its victims, or the failure message.
        want: Result<(&'static str, Vec<&'static str>), &'static str>,
    }
    let cases = vec![
        Case {
            name: "only lower-priority pods are victims",
            nodes: vec![(
                "n1",
                "2",
                vec![pod("low", "1", 10, none.clone()), pod("high", "1", 20, none.clone())],
            )],
            preemptor: pod("p", "1", 15, none.clone()),
            pdbs: vec![],
            want: Ok(("n1", vec!["low"])),
        },
        Case {
            name: "equal priority is never preempted",
            nodes: vec![("n1", "1", vec![pod("same", "1", 10, none.clone())])],
            preemptor: pod("p", "1", 10, none.clone()),
            pdbs: vec![],
            want: Err(
                "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: \
                       1 No preemption victims found for incoming pod..",
            ),
        },
        Case {
            name: "preemptionPolicy Never never preempts",
            nodes: vec![("n1", "1", vec![pod("low", "1", 0, none.clone())])],
            preemptor: pod("p", "1", 100, json!({"preemptionPolicy": "Never"})),
            pdbs: vec![],
            want: Err("0/1 nodes are available: 1 Insufficient cpu. \
                       preemption: not eligible due to preemptionPolicy=Never.."),
        },
        Case {
            name: "higher-priority pods are reprieved first, leaving the fewest victims",
            nodes: vec![(
                "n1",
                "4",
                vec![
                    pod("p1", "1", 1, none.clone()),
                    pod("p2", "1", 2, none.clone()),
                    pod("p3", "2", 3, none.clone()),
                ],
            )],
            preemptor: pod("p", "2", 10, none.clone()),
            pdbs: vec![],
            want: Ok(("n1", vec!["p2", "p1"])),
        },
        Case {
            name: "the node whose victims a PDB protects is avoided",
            nodes: vec![
                ("a", "1", vec![pod("guarded", "1", 1, json!({"labels": {"app": "db"}}))]),
                ("b", "1", vec![pod("free", "1", 5, json!({"labels": {"app": "web"}}))]),
            ],
            preemptor: pod("p", "1", 10, none.clone()),
            pdbs: vec![json!({"metadata": {"name": "db", "namespace": "default"},
                "spec": {"selector": {"matchLabels": {"app": "db"}}}, "status": {"disruptionsAllowed": 0,
                "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}})],
            want: Ok(("b", vec!["free"])),
        },
        Case {
            name: "the lowest highest-victim priority wins",
            nodes: vec![
                ("a", "1", vec![pod("five", "1", 5, none.clone())]),
                ("b", "1", vec![pod("three", "1", 3, none.clone())]),
            ],
            preemptor: pod("p", "1", 10, none.clone()),
            pdbs: vec![],
            want: Ok(("b", vec!["three"])),
        },
        Case {
            name: "then the fewest victims (smallest priority sum)",
            nodes: vec![
                (
                    "a",
                    "1",
                    vec![pod("a1", "500m", 1, none.clone()), pod("a2", "500m", 1, none.clone())],
                ),
                ("b", "1", vec![pod("b1", "1", 1, none.clone())]),
            ],
            preemptor: pod("p", "1", 10, none.clone()),
            pdbs: vec![],
            want: Ok(("b", vec!["b1"])),
        },
        Case {
            name: "then the victims that started last",
            nodes: vec![
                ("a", "1", vec![pod("old", "1", 1, t("2026-01-01T00:00:00Z"))]),
                ("b", "1", vec![pod("new", "1", 1, t("2026-06-01T00:00:00Z"))]),
            ],
            preemptor: pod("p", "1", 10, none.clone()),
            pdbs: vec![],
            want: Ok(("b", vec!["new"])),
        },
        Case {
            name: "nodes failing for unresolvable reasons are not helped",
            nodes: vec![("n1", "1", vec![pod("low", "1", 0, none.clone())])],
            preemptor: Arc::new({
                let mut p = (*pod("p", "1", 10, none.clone())).clone();
                p.spec.as_mut().unwrap().node_selector = Some([("disk".to_string(), "ssd".to_string())].into());
                p
            }),
            pdbs: vec![],
            want: Err(
                "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. \
                       preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling..",
            ),
        },
    ];
    for c in cases {
        let mut w = world(&c.nodes);
        let (store, mut writer) = kube::runtime::reflector::store::<PodDisruptionBudget>();
        for p in c.pdbs {
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(
                serde_json::from_value(p).unwrap(),
            ));
        }
        w.state = std::mem::take(&mut w.state).with_pdbs(store);
        let (outcome, message) = attempt(&w, &c.preemptor);
        match (&c.want, outcome) {
            (Ok((node, victims)), Outcome::Preempt { candidate, .. }) => {
                assert_eq!(candidate.node, *node, "{}", c.name);
                assert_eq!(names(&candidate.victims.pods), *victims, "{}", c.name);
            }
            (Err(want), Outcome::Fail(_) | Outcome::NoCandidate(_)) => assert_eq!(message, *want, "{}", c.name),
            (want, got) => panic!("{}: want {want:?}, got {got:?}", c.name),
        }
    }
}

#[test]
fn pdb_violations_are_counted_in_budget_order() {
    let guarded = |n: &str| pod(n, "1", 1, json!({"labels": {"app": "db"}}));
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({"metadata": {"name": "db", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "db"}}},
        "status": {"disruptionsAllowed": 1, "currentHealthy": 2, "desiredHealthy": 1, "expectedPods": 2}}))
    .unwrap();
    let (violating, fine) = split_by_pdb_violation(vec![guarded("x"), guarded("y")], &[Arc::new(pdb)]);
    assert_eq!((names(&violating), names(&fine)), (vec!["y"], vec!["x"]));
}

#[test]
fn nominated_pods_hold_room_against_lower_and_equal_priority() {
    let mut w = world(&[("n1", "2", vec![pod("busy", "1", 0, json!({}))])]);
    let nominated = pod("nominated", "1", 10, json!({}));
    w.state.nominate(&nominated, "n1", &[]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let try_pod = |p: Arc<Pod>, rng: &mut rand::rngs::StdRng| {
        crate::algorithm::schedule_pod_with(&profile(), &w.cache, &w.state.nominator, &PodInfo::new(p), &mut 0, rng)
    };
    assert!(try_pod(pod("lower", "1", 5, json!({})), &mut rng).is_err());
    assert!(try_pod(pod("equal", "1", 10, json!({})), &mut rng).is_err());
    assert_eq!(try_pod(pod("higher", "1", 20, json!({})), &mut rng).unwrap(), "n1");
    // The nominated pod itself fits on its node.
    assert_eq!(try_pod(nominated.clone(), &mut rng).unwrap(), "n1");
    // A pod nominated to a node whose victims are still terminating waits.
    let mut victim = (*pod("victim", "1", 0, json!({}))).clone();
    victim.spec.as_mut().unwrap().node_name = Some("n1".into());
    victim.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now(),
    ));
    victim.status = Some(
        serde_json::from_value(json!({"conditions": [{"type": "DisruptionTarget", "status": "True",
        "reason": REASON_PREEMPTION}]}))
        .unwrap(),
    );
    let victim = Arc::new(victim);
    w.cache.observe_pod(&victim);
    w.state.observe_pod(&victim, false);
    let big = pod("big", "2", 10, json!({}));
    w.state.nominate(&big, "n1", &[]);
    let (_, message) = attempt(&w, &big);
    assert!(
        message.ends_with("preemption: not eligible due to a terminating pod on the nominated node.."),
        "{message}"
    );
}
