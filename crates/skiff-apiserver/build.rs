//! Compiles the Kubernetes API's protobuf definitions (the `generated.proto` files
//! that the `k8s-rs-pb` crate ships for v1.33) into a `FileDescriptorSet`, embedded
//! in the apiserver so it can decode `application/vnd.kubernetes.protobuf` request
//! bodies by reflection. Parsing is done by `protobuf-parse` (pure Rust, no protoc).

use std::path::{Path, PathBuf};

/// The API version whose definitions are compiled; matches k8s-openapi's `v1_33`.
const API_DIR: &str = "src/v1_33";

fn registry_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        roots.push(PathBuf::from(home));
    }
    if let Some(home) = std::env::var_os("HOME") {
        roots.push(PathBuf::from(home).join(".cargo"));
    }
    roots
}

/// Finds the unpacked `k8s-rs-pb` sources in Cargo's registry (it is a
/// build-dependency, so Cargo has downloaded and unpacked it).
fn find_protos() -> PathBuf {
    for root in registry_roots() {
        let src = root.join("registry").join("src");
        let Ok(indexes) = std::fs::read_dir(&src) else { continue };
        for index in indexes.flatten() {
            let Ok(crates) = std::fs::read_dir(index.path()) else {
                continue;
            };
            let mut found: Vec<PathBuf> = crates
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("k8s-rs-pb-0.5."))
                })
                .map(|p| p.join(API_DIR))
                .filter(|p| p.is_dir())
                .collect();
            found.sort();
            if let Some(dir) = found.pop() {
                return dir;
            }
        }
    }
    panic!(
        "the k8s-rs-pb sources (Kubernetes .proto files) were not found under $CARGO_HOME/registry/src; run `cargo fetch`"
    );
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read proto dir").flatten() {
        let p = entry.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.file_name().is_some_and(|n| n == "generated.proto") {
            out.push(p);
        }
    }
}

fn main() {
    let include = find_protos();
    let mut inputs = Vec::new();
    for sub in ["api", "apimachinery", "apiextensions_apiserver", "kube_aggregator"] {
        collect(&include.join(sub), &mut inputs);
    }
    // Only GA and the beta versions still served upstream are needed; alpha
    // packages are skipped to keep the descriptor small.
    inputs.retain(|p| !p.to_string_lossy().contains("alpha"));
    inputs.sort();
    let parsed = protobuf_parse::Parser::new()
        .pure()
        .include(&include)
        .inputs(&inputs)
        .parse_and_typecheck()
        .expect("parse the Kubernetes .proto files");
    let mut set = protobuf::descriptor::FileDescriptorSet::new();
    set.file = parsed.file_descriptors;
    let bytes = protobuf::Message::write_to_bytes(&set).expect("encode descriptor set");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("k8s-descriptors.bin");
    std::fs::write(&out, bytes).expect("write descriptor set");
    println!("cargo:rerun-if-changed=build.rs");
}
