//! The node's CNI configuration: the standard `bridge` plugin (bridge `cni0`, gateway,
//! masquerade, hairpin) with `host-local` IPAM on the node's podCIDR, plus `portmap`
//! for hostPorts. containerd's CRI plugin reads it from the conf dir.
//!
//! The bridge is one per host, so the IPAM state is too: `host-local` keeps its
//! reservations in its default host-wide directory (`/var/lib/cni/networks/skiff`), not
//! in the node's data dir. Otherwise a second data dir on the same host (a new cluster,
//! or a test) would hand out addresses that pods of the first one still hold on `cni0`,
//! and traffic to the duplicate IP would reach whichever pod answers ARP first.

use std::path::Path;

use serde_json::json;

use crate::Error;

/// File name of the generated conflist.
pub const CONFLIST: &str = "10-skiff.conflist";

/// Renders the conflist for `pod_cidr` (e.g. `10.42.0.0/24`).
pub fn render(pod_cidr: &str) -> String {
    let v = json!({
        "cniVersion": "1.0.0",
        "name": "skiff",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
        ]
    });
    serde_json::to_string_pretty(&v).expect("JSON")
}

/// Creates `conf_dir` and removes the conflist from it (if present).
pub fn remove(conf_dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(conf_dir).map_err(|e| Error::Io(format!("{}: {e}", conf_dir.display())))?;
    let path = conf_dir.join(CONFLIST);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io(format!("{}: {e}", path.display()))),
    }
}

/// Writes the conflist into `conf_dir` (atomically: containerd watches the directory
/// and must never read a half-written file).
pub fn write(conf_dir: &Path, pod_cidr: &str) -> Result<(), Error> {
    std::fs::create_dir_all(conf_dir).map_err(|e| Error::Io(format!("{}: {e}", conf_dir.display())))?;
    let path = conf_dir.join(CONFLIST);
    // Not ending in .conflist, so containerd ignores it until the rename.
    let tmp = conf_dir.join(format!(".{CONFLIST}.tmp"));
    std::fs::write(&tmp, render(pod_cidr)).map_err(|e| Error::Io(format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_with_host_local_on_the_pod_cidr() {
        let v: serde_json::Value = serde_json::from_str(&render("10.42.0.0/24")).unwrap();
        assert_eq!(v["plugins"][0]["type"], "bridge");
        assert_eq!(v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"], "10.42.0.0/24");
        assert_eq!(v["plugins"][1]["type"], "portmap");
        // Host-wide IPAM state, shared by every data dir on the host, like the bridge.
        assert!(v["plugins"][0]["ipam"].get("dataDir").is_none());
    }

    #[test]
    fn written_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("cni");
        remove(&conf).unwrap();
        assert!(conf.is_dir());
        write(&conf, "10.42.7.0/24").unwrap();
        let text = std::fs::read_to_string(conf.join(CONFLIST)).unwrap();
        assert!(text.contains("10.42.7.0/24"));
        assert_eq!(std::fs::read_dir(&conf).unwrap().count(), 1, "no temporary file left");
        remove(&conf).unwrap();
        assert!(!conf.join(CONFLIST).exists());
    }
}
