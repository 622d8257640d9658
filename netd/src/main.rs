//! minion-netd binary: CNI plugin mode when CNI_COMMAND is set, else a small CLI.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use minion_netd::conflist::{write_conflist, ConflistParams};

/// minion's pod network: a CNI bridge plugin with built-in IPAM.
///
/// PLUGIN MODE: when the environment variable CNI_COMMAND is set (ADD, DEL, CHECK,
/// VERSION, STATUS, GC), minion-netd acts as a CNI plugin (spec 1.0.0; configs with
/// cniVersion 0.4.0, 1.0.0, 1.1.0): it reads CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME,
/// CNI_PATH and the network config JSON on stdin, works in the current network
/// namespace (bridge, veth, ip_forward) and the pod's (CNI_NETNS), and prints the CNI
/// result or error JSON on stdout. Config fields: name, cniVersion, type, bridge (cni0),
/// isGateway (true), hairpinMode (true), mtu, ipam {subnet, gateway, rangeStart, rangeEnd,
/// dataDir (/var/lib/cni/networks)}. Logs go to stderr (RUST_LOG, default warn).
///
/// CLI MODE: the subcommands below.
#[derive(Debug, Parser)]
#[command(name = "minion-netd", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write <conf-dir>/10-minion.conflist (atomically) for this node's pod CIDR.
    WriteConfig {
        /// The node's pod CIDR, e.g. 10.244.1.0/24.
        #[arg(long)]
        pod_cidr: String,
        /// CNI configuration directory, e.g. /etc/cni/net.d.
        #[arg(long)]
        conf_dir: PathBuf,
        /// Bridge device name.
        #[arg(long, default_value = "cni0")]
        bridge: String,
        /// IPAM data directory (allocations under <data-dir>/<name>/).
        #[arg(long, default_value = "/var/lib/cni/networks")]
        data_dir: PathBuf,
        /// Network name.
        #[arg(long, default_value = "minion")]
        name: String,
    },
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn plugin_mode() -> ExitCode {
    let mut stdin = Vec::new();
    let out = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => minion_netd::run_plugin(
            |k| std::env::var(k).ok(),
            &stdin,
            std::path::Path::new("/proc/sys"),
        ),
        Err(e) => minion_netd::stdin_failure(&e),
    };
    print!("{}", out.stdout);
    if out.exit_code == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn main() -> ExitCode {
    init_logs();
    if std::env::var_os("CNI_COMMAND").is_some() {
        return plugin_mode();
    }
    let cli = Cli::parse();
    match cli.command {
        Command::WriteConfig {
            pod_cidr,
            conf_dir,
            bridge,
            data_dir,
            name,
        } => {
            let params = ConflistParams {
                name,
                bridge,
                pod_cidr,
                data_dir,
            };
            match write_conflist(&conf_dir, &params) {
                Ok(path) => {
                    println!("{}", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("minion-netd: error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
