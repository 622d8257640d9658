//! minion-runtime: the node's runc-compatible OCI runtime and image store.
//! Flags only; the work is in the library (`minion_runtime::cli`). Invoked under
//! a name ending in `runc` (or with `--runc-mode`) it runs in runc mode for
//! containerd's shim (`minion_runtime::runc_mode`).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use minion_runtime::cli::{self, Globals};
use minion_runtime::image::cli::ImageCmd;
use minion_runtime::{exec, netns};

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
    /// Format of errors on stderr and in --log: one text line or one JSON object.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    /// runc mode, for containerd's runc shim: no monitor (the caller reaps the
    /// init and owns its stdio), exec fifo for start, sealed-memfd re-exec. Also
    /// selected by invoking the binary under a name ending in `runc`.
    #[arg(long, global = true)]
    runc_mode: bool,
    /// runc's systemd cgroup driver flag: accepted, but a systemd-style
    /// (`slice:prefix:name`) cgroupsPath is refused; only cgroupfs is supported.
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Accepted for runc compatibility and ignored (use --log and RUST_LOG).
    #[arg(long, global = true)]
    debug: bool,
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
        /// Unix socket that receives the pty master (SCM_RIGHTS) when
        /// process.terminal is true; required then, refused otherwise.
        #[arg(long)]
        console_socket: Option<PathBuf>,
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
        /// Signal every process in the container's cgroup.
        #[arg(long, short)]
        all: bool,
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
        /// Return once started (the container keeps running; delete it later).
        #[arg(long, short)]
        detach: bool,
        /// Unix socket that receives the pty master (see `create`).
        #[arg(long)]
        console_socket: Option<PathBuf>,
    },
    /// List the processes in the container's cgroup (host pids).
    Ps {
        id: String,
        /// `table` or `json` (a JSON array of pids).
        #[arg(long, short, default_value = "table")]
        format: String,
    },
    /// Run a command inside a running container; exits with its exit code.
    Exec {
        id: String,
        /// Allocate a terminal (needs --console-socket).
        #[arg(long, short)]
        tty: bool,
        /// Unix socket that receives the pty master (SCM_RIGHTS) with a terminal.
        #[arg(long)]
        console_socket: Option<PathBuf>,
        /// Working directory inside the container (default: the container's).
        #[arg(long)]
        cwd: Option<PathBuf>,
        /// Extra environment KEY=VALUE (repeatable).
        #[arg(long, short)]
        env: Vec<String>,
        /// uid[:gid] to run as (default: the container's user).
        #[arg(long, short)]
        user: Option<String>,
        /// An OCI process JSON file to run (args, env, cwd, user, terminal...),
        /// instead of the command and the options above.
        #[arg(long, short, conflicts_with_all = ["args", "tty", "cwd", "env", "user"])]
        process: Option<PathBuf>,
        /// Return once the process runs instead of waiting for its exit.
        #[arg(long, short)]
        detach: bool,
        /// Write the process's host pid to this file.
        #[arg(long)]
        pid_file: Option<PathBuf>,
        /// The command and its arguments.
        #[arg(required_unless_present = "process", trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
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
    /// Any other command (runc's update, pause, resume, events, checkpoint,
    /// restore...): refused with one line naming it.
    #[command(external_subcommand)]
    Unsupported(Vec<String>),
}

/// runc commands minion-runtime does not implement.
const RUNC_ONLY: &[&str] = &["update", "pause", "resume", "events", "checkpoint", "restore", "spec", "features"];

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum NetnsCmd {
    /// Create a network namespace bind-mounted at PATH.
    Add { path: PathBuf },
    /// Unmount and remove the namespace at PATH (missing is fine).
    Del { path: PathBuf },
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `uid` or `uid:gid` (numeric).
fn parse_user(u: &str) -> Result<(u32, u32)> {
    let (a, b) = u.split_once(':').unwrap_or((u, "0"));
    let bad = || anyhow::anyhow!("invalid --user {u:?}: expected uid[:gid]");
    Ok((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?))
}

/// The error and its causes, each once: by the crate's convention an error's
/// message already contains its source's, so a cause whose text is already
/// there is not repeated.
fn error_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg = format!("{msg}: {c}");
        }
    }
    msg
}

/// Prints a failure as one line (text) or one JSON object (json), on stderr
/// and, when --log is given, appended to the log file too.
fn report_error(e: &anyhow::Error, format: LogFormat, log: Option<&PathBuf>) {
    let msg = error_line(e);
    let line = match format {
        LogFormat::Text => format!("minion-runtime: error: {msg}"),
        LogFormat::Json => serde_json::json!({
            "level": "error",
            "msg": msg,
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        })
        .to_string(),
    };
    eprintln!("{line}");
    if let Some(p) = log {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(p) {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// Tracing only when asked for (--log or RUST_LOG): building the filter costs
/// more than a whole `state` call otherwise needs.
fn init_tracing(log: Option<&PathBuf>) {
    if log.is_none() && std::env::var_os("RUST_LOG").is_none() {
        return;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(if log.is_some() { "info" } else { "warn" }));
    let file = log.and_then(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).ok());
    let b = tracing_subscriber::fmt().with_env_filter(filter);
    match file {
        Some(f) => b.with_ansi(false).with_writer(std::sync::Mutex::new(f)).init(),
        None => b.with_writer(std::io::stderr).init(),
    }
}

fn dispatch(c: Cli, runc_mode: bool) -> Result<i32> {
    // --debug is accepted for runc compatibility and changes nothing.
    let _ = c.debug;
    if runc_mode && matches!(c.cmd, Cmd::Create { .. } | Cmd::Run { .. } | Cmd::Exec { .. }) {
        // Before anything enters a container (CVE-2019-5736); returns only once
        // this process runs from the sealed copy.
        minion_runtime::sealed_exe::ensure()?;
        minion_runtime::sealed_exe::clear_guard();
    }
    let g = Globals {
        root: c.root,
        image_root: c.image_root,
        cgroup_root: c.cgroup_root,
        log: c.log,
        runc_mode,
        systemd_cgroup: c.systemd_cgroup,
        log_json: c.log_format == LogFormat::Json,
    };
    match c.cmd {
        Cmd::Create { id, bundle, pid_file, console_socket } => {
            cli::create(&g, &id, &bundle, pid_file.as_deref(), console_socket.as_deref())?;
        }
        Cmd::Start { id } => cli::start(&g, &id)?,
        Cmd::State { id } => print_json(&cli::load_state(&g, &id)?)?,
        Cmd::Kill { id, signal, all } => cli::kill(&g, &id, &signal, all)?,
        Cmd::Delete { force, id } => cli::delete(&g, &id, force)?,
        Cmd::Run { id, bundle, detach, console_socket } => {
            return Ok(cli::run(&g, &id, &bundle, detach, console_socket.as_deref())?);
        }
        Cmd::Ps { id, format } => {
            let procs = cli::ps(&g, &id)?;
            match format.as_str() {
                "json" => println!("{}", serde_json::to_string(&procs.iter().map(|p| p.0).collect::<Vec<_>>())?),
                "table" => {
                    println!("PID\tCMD");
                    for (pid, cmd) in procs {
                        println!("{pid}\t{cmd}");
                    }
                }
                f => anyhow::bail!("invalid --format {f:?}: expected table or json"),
            }
        }
        Cmd::Exec { id, tty, console_socket, cwd, env, user, process, detach, pid_file, args } => {
            let user = user.map(|u| parse_user(&u)).transpose()?;
            let opts = exec::ExecOptions { args, env, cwd, user, tty, console_socket, process_file: process, detach, pid_file };
            return Ok(exec::exec(&g, &id, &opts)?);
        }
        Cmd::List => print_json(&cli::list(&g)?)?,
        Cmd::Netns { cmd: NetnsCmd::Add { path } } => netns::add(&path)?,
        Cmd::Netns { cmd: NetnsCmd::Del { path } } => netns::del(&path)?,
        Cmd::Image { cmd } => cli::image(&g, cmd)?,
        Cmd::Unsupported(args) => {
            let name = args.first().map(String::as_str).unwrap_or_default();
            if RUNC_ONLY.contains(&name) {
                anyhow::bail!("command {name:?} is not supported by minion-runtime");
            }
            anyhow::bail!("unknown command {name:?} (see --help)");
        }
    }
    Ok(0)
}

fn main() {
    let c = Cli::parse();
    let runc_mode = c.runc_mode || minion_runtime::runc_mode::selected_by_name(std::env::args_os().next().as_deref());
    // A json --log is read back as a stream of JSON objects (containerd's shim
    // takes the last error from it): only report_error's lines go there.
    init_tracing(c.log.as_ref().filter(|_| c.log_format == LogFormat::Text));
    let (format, log) = (c.log_format, c.log.clone());
    match dispatch(c, runc_mode) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            report_error(&e, format, log.as_ref());
            std::process::exit(1);
        }
    }
}
