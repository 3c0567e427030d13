//! CRI v1 client over the runtime's unix socket (gRPC via tonic).

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::Error;

/// Runtime and image service clients sharing one connection. Cheap to clone.
#[derive(Clone)]
pub struct Cri {
    /// RuntimeService (sandboxes, containers, exec).
    pub runtime: RuntimeServiceClient<Channel>,
    /// ImageService (pull, status).
    pub images: ImageServiceClient<Channel>,
}

impl Cri {
    /// Connects to `socket` (a path, optionally prefixed `unix://`).
    pub async fn connect(socket: &str) -> Result<Self, Error> {
        let path = PathBuf::from(socket.trim_start_matches("unix://"));
        let channel = Endpoint::try_from("http://[::]:50051")
            .map_err(|e| Error::Cri(e.to_string()))?
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
            }))
            .await
            .map_err(|e| Error::Cri(format!("connecting to {socket}: {e}")))?;
        let max = 64 << 20;
        Ok(Self {
            runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(max),
            images: ImageServiceClient::new(channel).max_decoding_message_size(max),
        })
    }

    /// `runtime name://version`, e.g. `containerd://1.6.20`.
    pub async fn version(&self) -> Result<String, Error> {
        let v = self
            .runtime
            .clone()
            .version(k8s_cri::v1::VersionRequest { version: "v1".into() })
            .await?
            .into_inner();
        Ok(format!("{}://{}", v.runtime_name, v.runtime_version))
    }

    /// Whether the runtime reports RuntimeReady and NetworkReady.
    pub async fn ready(&self) -> Result<(bool, String), Error> {
        let s = self
            .runtime
            .clone()
            .status(k8s_cri::v1::StatusRequest { verbose: false })
            .await?
            .into_inner();
        let conds = s.status.map(|s| s.conditions).unwrap_or_default();
        let not_ready: Vec<String> = conds
            .iter()
            .filter(|c| !c.status)
            .map(|c| format!("{}: {} {}", c.r#type, c.reason, c.message))
            .collect();
        Ok((not_ready.is_empty() && !conds.is_empty(), not_ready.join("; ")))
    }
}

impl Cri {
    /// Stops a pod sandbox (and with it its containers) and removes it; errors are
    /// ignored because both calls are idempotent and retried by the next sync.
    pub async fn remove_sandbox(&self, id: &str) {
        let id = id.to_string();
        let _ = self
            .runtime
            .clone()
            .stop_pod_sandbox(k8s_cri::v1::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await;
        let _ = self
            .runtime
            .clone()
            .remove_pod_sandbox(k8s_cri::v1::RemovePodSandboxRequest { pod_sandbox_id: id })
            .await;
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        Error::Cri(format!("{}: {}", s.code(), s.message()))
    }
}
