//! `minion-runtime image …`: the node's image service (what `crictl images`,
//! `crictl pull` and `crictl rmi` reach through the CRI).

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::archive::{self, Format};
use super::pull::{self, PullOptions};
use super::{Error, ImageConfig, ImageStore};

/// The `image` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Pull REF from its registry (anonymous or with --auth-file credentials).
    Pull {
        /// Image reference (`busybox`, `localhost:5000/x:y`, `reg/app@sha256:…`).
        reference: String,
        /// Registry HOST:PORT to reach over plain HTTP (repeatable).
        #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
        insecure: Vec<String>,
        /// Docker config json holding registry credentials (an imagePullSecret).
        #[arg(long)]
        auth_file: Option<PathBuf>,
        /// Layers downloaded at once.
        #[arg(long, default_value_t = 3)]
        parallel: usize,
        /// Do not print progress to stderr.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Import a rootfs directory or .tar/.tar.gz, an OCI image layout (dir or
    /// .tar) or a docker-archive .tar as NAME.
    Import {
        name: String,
        path: PathBuf,
        /// JSON file with {"Cmd","Entrypoint","Env","WorkingDir"} (or an OCI image
        /// config); only for rootfs imports.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Export NAME to PATH (a directory, or a tarball when PATH ends in .tar).
    Export {
        name: String,
        path: PathBuf,
        #[arg(long, value_enum, default_value = "oci")]
        format: Format,
    },
    /// List images as JSON.
    Ls,
    /// Remove an image and the layers no other image uses.
    Rm { name: String },
    /// Print an image as JSON (`rootfs` is the overlay lowerdir list, top first).
    Inspect { name: String },
    /// Remove least recently used images while the image filesystem is above
    /// --high-percent, down to --low-percent (the kubelet's image GC).
    Gc {
        #[arg(long, default_value_t = 85.0)]
        high_percent: f64,
        #[arg(long, default_value_t = 80.0)]
        low_percent: f64,
        /// Images in use, never removed (repeatable).
        #[arg(long)]
        keep: Vec<String>,
    },
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<(), Error> {
    let s = serde_json::to_string_pretty(v).map_err(|e| Error::Unsupported(e.to_string()))?;
    println!("{s}");
    Ok(())
}

/// Runs one `image` subcommand against the store at `image_root`.
pub fn run(image_root: &Path, cmd: ImageCmd) -> Result<(), Error> {
    let store = ImageStore::open(image_root)?;
    match cmd {
        ImageCmd::Pull { reference, insecure, auth_file, parallel, quiet } => {
            let opts = PullOptions { insecure, auth_file, parallel, progress: !quiet };
            print_json(&pull::pull(&store, &reference, &opts)?)
        }
        ImageCmd::Import { name, path, config } => {
            let cfg = config.map(|p| read_config(&p)).transpose()?;
            print_json(&archive::import(&store, &name, &path, cfg)?)
        }
        ImageCmd::Export { name, path, format } => archive::export(&store, &name, &path, format),
        ImageCmd::Ls => print_json(&store.list()?),
        ImageCmd::Rm { name } => store.remove(&name),
        ImageCmd::Inspect { name } => print_json(&store.get(&name)?),
        ImageCmd::Gc { high_percent, low_percent, keep } => {
            let root = image_root.to_path_buf();
            let usage = move || super::gc::fs_usage_percent(&root);
            print_json(&super::gc::collect(&store, &keep, high_percent, low_percent, &usage)?)
        }
    }
}

/// Reads either the image config object (`{"Cmd":..}`) or a whole OCI image
/// config (`{"config":{..}}`).
pub fn read_config(p: &Path) -> Result<ImageConfig, Error> {
    let data = std::fs::read(p).map_err(super::io("read", p))?;
    let v: serde_json::Value = serde_json::from_slice(&data).map_err(|source| Error::Json { path: p.into(), source })?;
    let inner = v.get("config").cloned().unwrap_or(v);
    serde_json::from_value(inner).map_err(|source| Error::Json { path: p.into(), source })
}
