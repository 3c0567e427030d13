//! `skiff`: Kubernetes in one binary.
//!
//! `skiff server` runs the control plane (apiserver, scheduler, controller-manager)
//! and, unless `--disable-agent`, a local node agent (kubelet on containerd);
//! `skiff hollow` runs simulated nodes for scale tests.
//! `skiff snapshot save|restore` backs the cluster state up and brings it back.
//! `skiff token create|list|delete` manages bootstrap tokens, and `skiff agent` joins
//! a machine to the cluster with one.

mod agent;
mod bootstrap;
mod node;
mod server;
mod snapshot;
mod token;

use clap::{Parser, Subcommand};

/// Kubernetes, in one binary.
#[derive(Debug, Parser)]
#[command(name = "skiff", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a control-plane node (apiserver, scheduler, controllers) and a local agent.
    Server(Box<server::ServerArgs>),
    /// Join this machine to a cluster as a worker node, with a bootstrap token.
    Agent(Box<agent::AgentArgs>),
    /// Create, list or delete bootstrap tokens for `skiff agent`.
    Token(token::TokenArgs),
    /// Run N simulated nodes (no containers) against a cluster, for scale tests.
    Hollow(Box<skiff_hollow::cli::HollowArgs>),
    /// Save a running cluster's state to a file, or restore one into a data dir.
    Snapshot(snapshot::SnapshotArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    "info,kube_runtime=warn,kube_client=warn,hyper=warn,h2=warn,rustls=warn,tower=warn,hickory_server=warn",
                )
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match cli.command {
        Command::Server(args) => rt.block_on(server::run(*args)),
        Command::Agent(args) => rt.block_on(agent::run(*args)),
        Command::Token(args) => rt.block_on(token::run(args)),
        Command::Hollow(args) => rt.block_on(skiff_hollow::cli::run(*args)).map_err(anyhow::Error::from),
        Command::Snapshot(args) => rt.block_on(snapshot::run(args)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
