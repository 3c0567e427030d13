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
    let mut docs = String::new();
    for input in &inputs {
        let text = std::fs::read_to_string(input).expect("read a .proto file");
        scan_docs(&text, &mut docs);
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("k8s-field-docs.tsv");
    std::fs::write(&out, docs).expect("write field docs");
    println!("cargo:rerun-if-changed=build.rs");
}

/// Escapes a value for one TSV cell.
fn cell(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\t', "\\t").replace('\n', "\\n")
}

/// Extracts the doc comments of messages and fields, which upstream's generator
/// wrote from the Go doc comments, markers included (`+optional`,
/// `+patchMergeKey=name`, `+listType=map`, ...). Writes one TSV line per message
/// (`M`, full name, description) and per field (`F`, message, field, description,
/// `;`-separated markers), for the OpenAPI schemas.
fn scan_docs(text: &str, out: &mut String) {
    let mut package = String::new();
    let mut stack: Vec<String> = Vec::new();
    let mut comment: Vec<String> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(c) = line.strip_prefix("//") {
            comment.push(c.strip_prefix(' ').unwrap_or(c).to_string());
            continue;
        }
        let (desc, markers) = split_comment(&comment);
        comment.clear();
        if let Some(p) = line.strip_prefix("package ") {
            package = p.trim_end_matches(';').trim().to_string();
        } else if let Some(m) = line.strip_prefix("message ") {
            let name = m.trim_end_matches('{').trim().to_string();
            stack.push(name);
            out.push_str(&format!("M\t{package}.{}\t{}\n", stack.join("."), cell(&desc)));
        } else if line.starts_with("enum ") || line.starts_with("oneof ") {
            stack.push(String::new());
        } else if line == "}" {
            stack.pop();
        } else if let Some(decl) = line.strip_suffix(';')
            && let Some((lhs, _number)) = decl.split_once('=')
            && !stack.is_empty()
            && !stack.last().is_some_and(String::is_empty)
        {
            let Some(field) = lhs.split_whitespace().last() else {
                continue;
            };
            out.push_str(&format!(
                "F\t{package}.{}\t{field}\t{}\t{}\n",
                stack.join("."),
                cell(&desc),
                cell(&markers.join(";"))
            ));
        }
    }
}

/// Splits comment lines into the description (lines joined with spaces,
/// paragraphs with a blank line) and the `+marker` lines.
fn split_comment(lines: &[String]) -> (String, Vec<String>) {
    let mut paragraphs: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut markers = Vec::new();
    for l in lines {
        let l = l.trim_end();
        if let Some(m) = l.strip_prefix('+') {
            markers.push(m.trim().to_string());
        } else if l.trim().is_empty() {
            if !current.is_empty() {
                paragraphs.push(std::mem::take(&mut current));
            }
        } else {
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(l.trim());
        }
    }
    if !current.is_empty() {
        paragraphs.push(current);
    }
    (paragraphs.join("\n\n"), markers)
}
