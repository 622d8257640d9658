//! `minion-lab`: a minion cluster in network namespaces on one Linux host.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};
use minion_lab::cluster::{self, CniChoice, DEFAULT_STATE_ROOT};
use minion_lab::{net, LabError, Topology, UpOptions};

#[derive(Parser)]
#[command(name = "minion-lab", version, about = "Run a minion cluster inside network namespaces on this host")]
struct Cli {
    /// Where labs keep their state (kubeconfig, logs, node directories).
    #[arg(long, global = true, default_value = DEFAULT_STATE_ROOT)]
    state_dir: PathBuf,
    /// Directory of the minion-* binaries (default: this binary's directory).
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CniArg {
    Minion,
    Reference,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a cluster: control plane + nodes, each in its own network namespace.
    Up {
        #[arg(long, default_value = "minion")]
        name: String,
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        /// Static busybox the starter image is made of.
        #[arg(long, default_value = minion_lab::image::BUSYBOX)]
        busybox: PathBuf,
        /// Seconds to wait for the API server and each node to become Ready.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// CNI plugins for pods: `minion` (minion-netd) or `reference` (bridge +
        /// host-local from /usr/lib/cni).
        #[arg(long, value_enum, default_value = "minion")]
        cni: CniArg,
        /// A registry (HOST:PORT) the agents may pull from over plain HTTP; repeatable.
        #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
        insecure_registry: Vec<String>,
    },
    /// Remove a cluster and everything it made.
    Down { name: String },
    /// Run the real kubectl against a lab (from its control-plane namespace).
    Kubectl {
        name: String,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run a command in a node's network namespace (`cp` for the control plane).
    Exec {
        name: String,
        node: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Restart one daemon of a lab, e.g. `node-1/netd` (see `status` for the names).
    Restart { name: String, daemon: String },
    /// Show a lab's namespaces, addresses, kubeconfig and daemons.
    Status { name: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("minion-lab: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bin_dir(cli_value: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(d) = cli_value {
        return Ok(d);
    }
    let exe = std::env::current_exe()?;
    Ok(exe.parent().map(PathBuf::from).unwrap_or_default())
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let bins = bin_dir(cli.bin_dir)?;
    match cli.command {
        Cmd::Up { name, nodes, busybox, timeout, cni, insecure_registry } => {
            let cni = match cni { CniArg::Minion => CniChoice::Minion, CniArg::Reference => CniChoice::Reference };
            let opts = UpOptions { name, nodes, state_root: cli.state_dir, bin_dir: bins, busybox, timeout_secs: timeout, cni, insecure_registries: insecure_registry };
            let t = cluster::up(&opts)?;
            print_summary(&t);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Down { name } => {
            cluster::down(&name, &cli.state_dir, &bins)?;
            println!("lab {name} removed");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Kubectl { name, args } => {
            let (t, _) = cluster::open(&name, &cli.state_dir)?;
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Err(cluster::kubectl_command(&t, &args).exec().into())
        }
        Cmd::Exec { name, node, cmd } => {
            let (t, _) = cluster::open(&name, &cli.state_dir)?;
            let netns = if node == "cp" { t.cp_netns() } else { t.node_index(&node).map(|_| t.node_netns(&node))? };
            let err = Command::new("nsenter").arg(format!("--net={}/{netns}", net::NETNS_DIR)).arg("--").args(&cmd).exec();
            Err(LabError::Command { command: cmd.join(" "), detail: err.to_string() }.into())
        }
        Cmd::Restart { name, daemon } => {
            let d = cluster::restart(&name, &cli.state_dir, &daemon)?;
            println!("{} restarted, pid {}", d.name, d.pid);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { name } => {
            let (t, _) = cluster::open(&name, &cli.state_dir)?;
            print_summary(&t);
            for d in minion_lab::process::load(&t.state_dir.join("daemons.json")) {
                let state = if d.alive() { "running" } else { "NOT RUNNING" };
                println!("  {:<16} pid {:<8} {state:<12} log {}", d.name, d.pid, d.log.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_summary(t: &Topology) {
    println!("lab {} is up", t.name);
    println!("  control plane: netns {}  API {}", t.cp_netns(), t.api_url());
    for (i, node) in t.node_names().iter().enumerate() {
        println!("  {node}: netns {}  ip {}  podCIDR {}", t.node_netns(node), t.node_ip(i + 1), t.pod_cidr(i + 1));
    }
    println!("  kubeconfig: {}", t.kubeconfig().display());
    println!("try: minion-lab kubectl {} -- get nodes -o wide", t.name);
}
