//! The node's CNI configuration: the standard `bridge` plugin (bridge `cni0`, gateway,
//! masquerade, hairpin) with `host-local` IPAM on the node's podCIDR, plus `portmap`
//! for hostPorts. containerd's CRI plugin reads it from the conf dir.

use std::path::Path;

use serde_json::json;

use crate::Error;

/// File name of the generated conflist.
pub const CONFLIST: &str = "10-skiff.conflist";

/// Renders the conflist for `pod_cidr` (e.g. `10.42.0.0/24`); IPAM state goes under
/// `ipam_dir`.
pub fn render(pod_cidr: &str, ipam_dir: &Path) -> String {
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
                    "dataDir": ipam_dir.display().to_string(),
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
        ]
    });
    serde_json::to_string_pretty(&v).expect("JSON")
}

/// Writes the conflist into `conf_dir`.
pub fn write(conf_dir: &Path, pod_cidr: &str) -> Result<(), Error> {
    std::fs::create_dir_all(conf_dir).map_err(|e| Error::Io(format!("{}: {e}", conf_dir.display())))?;
    let path = conf_dir.join(CONFLIST);
    std::fs::write(&path, render(pod_cidr, &conf_dir.join("ipam")))
        .map_err(|e| Error::Io(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_with_host_local_on_the_pod_cidr() {
        let v: serde_json::Value = serde_json::from_str(&render("10.42.0.0/24", Path::new("/x/ipam"))).unwrap();
        assert_eq!(v["plugins"][0]["type"], "bridge");
        assert_eq!(v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"], "10.42.0.0/24");
        assert_eq!(v["plugins"][1]["type"], "portmap");
    }
}
