//! minion-runtime: the node's runc-compatible OCI runtime and image store.
//! Flags only; the work is in the library (`minion_runtime::cli`).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use minion_runtime::cli::{self, Globals};
use minion_runtime::{netns, ImageStore};

#[derive(Parser)]
#[command(name = "minion-runtime", about = "runc-compatible OCI runtime with a per-container monitor and a local image store")]
struct Cli {
    /// State directory (one subdirectory per container).
    #[arg(long, default_value = "/run/minion/runtime", global = true)]
    root: PathBuf,
    /// Image store directory.
    #[arg(long, default_value = "/var/lib/minion/images", global = true)]
    image_root: PathBuf,
    /// cgroupfs root (v1 controllers or the cgroup2 mount).
    #[arg(long, default_value = "/sys/fs/cgroup", global = true)]
    cgroup_root: PathBuf,
    /// Diagnostics log file (also the monitor's stderr).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a container from a bundle; returns when it is created (waiting for start).
    Create {
        id: String,
        #[arg(long, short)]
        bundle: PathBuf,
        #[arg(long)]
        pid_file: Option<PathBuf>,
    },
    /// Start the process of a created container.
    Start { id: String },
    /// Print the state JSON.
    State { id: String },
    /// Send a signal (name or number, default SIGTERM) to the container's init.
    Kill {
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a stopped container (--force kills a running one first).
    Delete {
        #[arg(long, short)]
        force: bool,
        id: String,
    },
    /// Create + start, wait, delete; exits with the container's exit code.
    Run {
        id: String,
        #[arg(long, short)]
        bundle: PathBuf,
    },
    /// Print the states of all containers as a JSON array.
    List,
    /// Pod sandbox network namespaces.
    Netns {
        #[command(subcommand)]
        cmd: NetnsCmd,
    },
    /// The local image store.
    Image {
        #[command(subcommand)]
        cmd: ImageCmd,
    },
}

#[derive(Subcommand)]
enum NetnsCmd {
    /// Create a network namespace bind-mounted at PATH.
    Add { path: PathBuf },
    /// Unmount and remove the namespace at PATH (missing is fine).
    Del { path: PathBuf },
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Import a rootfs directory or a .tar/.tar.gz as NAME.
    Import {
        name: String,
        path: PathBuf,
        /// JSON file with {"Cmd","Entrypoint","Env","WorkingDir"} (or an OCI image config).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// List images as JSON.
    Ls,
    /// Remove an image.
    Rm { name: String },
    /// Print an image as JSON.
    Inspect { name: String },
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn init_tracing(log: Option<&PathBuf>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(if log.is_some() { "info" } else { "warn" }));
    let file = log.and_then(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).ok());
    let b = tracing_subscriber::fmt().with_env_filter(filter);
    match file {
        Some(f) => b.with_ansi(false).with_writer(std::sync::Mutex::new(f)).init(),
        None => b.with_writer(std::io::stderr).init(),
    }
}

fn dispatch(c: Cli) -> Result<i32> {
    let g = Globals { root: c.root, image_root: c.image_root, cgroup_root: c.cgroup_root, log: c.log };
    match c.cmd {
        Cmd::Create { id, bundle, pid_file } => {
            cli::create(&g, &id, &bundle, pid_file.as_deref())?;
        }
        Cmd::Start { id } => cli::start(&g, &id)?,
        Cmd::State { id } => print_json(&cli::load_state(&g, &id)?)?,
        Cmd::Kill { id, signal } => cli::kill(&g, &id, &signal)?,
        Cmd::Delete { force, id } => cli::delete(&g, &id, force)?,
        Cmd::Run { id, bundle } => return Ok(cli::run(&g, &id, &bundle)?),
        Cmd::List => print_json(&cli::list(&g)?)?,
        Cmd::Netns { cmd: NetnsCmd::Add { path } } => netns::add(&path)?,
        Cmd::Netns { cmd: NetnsCmd::Del { path } } => netns::del(&path)?,
        Cmd::Image { cmd } => match cmd {
            ImageCmd::Import { name, path, config } => {
                print_json(&cli::image_import(&g, &name, &path, config.as_deref())?)?
            }
            ImageCmd::Ls => print_json(&ImageStore::open(&g.image_root)?.list()?)?,
            ImageCmd::Rm { name } => ImageStore::open(&g.image_root)?.remove(&name)?,
            ImageCmd::Inspect { name } => print_json(&ImageStore::open(&g.image_root)?.get(&name)?)?,
        },
    }
    Ok(0)
}

fn main() {
    let c = Cli::parse();
    init_tracing(c.log.as_ref());
    match dispatch(c) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("minion-runtime: error: {e:#}");
            std::process::exit(1);
        }
    }
}
