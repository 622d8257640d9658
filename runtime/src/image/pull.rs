//! Image pull over the OCI distribution API (what the kubelet asks the CRI's
//! image service for): resolve the tag to a manifest (choosing linux/amd64 from an
//! image index or manifest list), fetch the config and the layers not already
//! stored (several at once), verify every blob's digest, unpack each layer to a
//! snapshot and record the image. Runs on a tokio current-thread runtime owned by
//! this command only; layer unpacking runs on blocking threads.

use std::cell::RefCell;
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use sha2::{Digest as _, Sha256};

use super::manifest::{choose_platform, layers_of, ConfigFile, Descriptor, Manifest};
use super::store::{hex, sha256_digest, ImageStore};
use super::{auth, chain, io, unpack, Error, Image, ImageRef, Layer, Record, Source};

/// Manifest media types we accept, in preference order.
pub const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// How long to wait for a registry to accept a connection (DNS included): an
/// offline node should fail fast and fall back to its local images.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Options of `image pull`.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Registries (`host:port`) spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// Docker config json with credentials.
    pub auth_file: Option<PathBuf>,
    /// Layers downloaded at once.
    pub parallel: usize,
    /// Print progress lines to stderr.
    pub progress: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self { insecure: Vec::new(), auth_file: None, parallel: 3, progress: false }
    }
}

/// A temporary download, removed when dropped (also when a failing sibling
/// layer cancels this download); after a successful rename there is nothing left.
struct TmpFile(PathBuf);

impl Drop for TmpFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Progress counters printed to stderr.
struct Progress {
    enabled: bool,
    image: String,
    layers_total: usize,
    layers_done: usize,
    bytes_total: u64,
    bytes_done: u64,
    last: Instant,
}

impl Progress {
    fn print(&mut self, force: bool) {
        if !self.enabled || (!force && self.last.elapsed() < Duration::from_millis(500)) {
            return;
        }
        self.last = Instant::now();
        let mb = |b: u64| b as f64 / 1_048_576.0;
        let mut e = std::io::stderr().lock();
        let _ = writeln!(
            e,
            "pulling {}: layers {}/{} done, {:.1}/{:.1} MiB",
            self.image,
            self.layers_done,
            self.layers_total,
            mb(self.bytes_done),
            mb(self.bytes_total)
        );
    }
}

/// Pulls `name` into the store and records it.
pub fn pull(store: &ImageStore, name: &str, opts: &PullOptions) -> Result<Image, Error> {
    let r = ImageRef::parse(name)?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Unsupported(format!("cannot start the pull runtime: {e}")))?;
    let puller = Puller::new(store, r, opts)?;
    let inflight = puller.inflight.clone();
    let res = rt.block_on(puller.run());
    // Layer unpacks still running after a sibling failed finish (and clean up
    // after themselves); a resolver thread stuck on an offline node is not waited for.
    let deadline = Instant::now() + Duration::from_secs(300);
    while inflight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    rt.shutdown_background();
    if inflight.load(Ordering::SeqCst) == 0 {
        store.release();
    } else {
        // An unpack still writes into the session: leave it; its lease dies with this
        // process and the next store open sweeps what it left.
        tracing::warn!(image = name, "layer unpacks still running after 300 s; keeping their session");
    }
    res
}

/// Decrements the in-flight unpack count when an unpack ends.
struct InflightGuard(Arc<AtomicUsize>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Puller<'a> {
    store: &'a ImageStore,
    r: ImageRef,
    oref: Reference,
    client: Client,
    auth: RegistryAuth,
    /// Who we pull as, for error messages: `anonymously` or the user and auth file.
    who: String,
    opts: &'a PullOptions,
    progress: RefCell<Progress>,
    /// Layer unpacks running on blocking threads.
    inflight: Arc<AtomicUsize>,
}

impl<'a> Puller<'a> {
    fn new(store: &'a ImageStore, r: ImageRef, opts: &'a PullOptions) -> Result<Self, Error> {
        let creds = match &opts.auth_file {
            Some(p) => auth::lookup_file(p, &r.registry)?.map(|c| (c, p)),
            None => None,
        };
        let (auth, who) = match creds {
            Some((c, p)) => {
                let who = format!("user {:?} (credentials from {})", c.username, p.display());
                (RegistryAuth::Basic(c.username, c.password), who)
            }
            None => (RegistryAuth::Anonymous, "anonymously".to_string()),
        };
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(opts.insecure.clone()),
            platform_resolver: Some(Box::new(oci_client::client::linux_amd64_resolver)),
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(Duration::from_secs(60)),
            max_concurrent_download: opts.parallel.max(1),
            ..Default::default()
        };
        let oref = match (&r.tag, &r.digest) {
            (Some(t), Some(d)) => Reference::with_tag_and_digest(r.registry.clone(), r.repository.clone(), t.clone(), d.clone()),
            (_, Some(d)) => Reference::with_digest(r.registry.clone(), r.repository.clone(), d.clone()),
            (t, None) => Reference::with_tag(r.registry.clone(), r.repository.clone(), t.clone().unwrap_or_else(|| "latest".into())),
        };
        let progress = Progress {
            enabled: opts.progress,
            image: r.to_string(),
            layers_total: 0,
            layers_done: 0,
            bytes_total: 0,
            bytes_done: 0,
            last: Instant::now(),
        };
        Ok(Self { store, r, oref, client: Client::new(config), auth, who, opts, progress: RefCell::new(progress), inflight: Arc::default() })
    }

    fn reg_err(&self, e: &OciDistributionError) -> Error {
        if let OciDistributionError::UnauthorizedError { url } = e {
            let why = match self.auth {
                RegistryAuth::Anonymous => format!(
                    "pulled anonymously, and {} wants credentials (an imagePullSecret / --auth-file entry for it)",
                    self.r.registry
                ),
                _ => format!("it refused {} (wrong credentials, or no pull access to {})", self.who, self.r.repository),
            };
            return Error::Registry {
                registry: self.r.registry.clone(),
                image: self.r.to_string(),
                msg: format!("the registry answered 401 Unauthorized for {url}: {why}"),
            };
        }
        if let OciDistributionError::RegistryError { envelope, url } = e {
            use oci_client::errors::OciErrorCode::{ManifestUnknown, NameUnknown};
            let missing = envelope.errors.iter().any(|x| matches!(x.code, ManifestUnknown | NameUnknown));
            if missing {
                let what = match (&self.r.tag, &self.r.digest) {
                    (_, Some(d)) => format!("manifest {d}"),
                    (Some(t), None) => format!("tag {t:?}"),
                    (None, None) => "tag \"latest\"".to_string(),
                };
                return Error::Registry {
                    registry: self.r.registry.clone(),
                    image: self.r.to_string(),
                    msg: format!("the registry has no {what} in repository {} (404 {envelope}, {url})", self.r.repository),
                };
            }
        }
        let msg = chain(e);
        let unreachable = match e {
            OciDistributionError::RequestError(re) => re.is_connect() || re.is_timeout(),
            _ => false,
        } || msg.contains("dns error")
            || msg.contains("Connection refused");
        let (registry, image) = (self.r.registry.clone(), self.r.to_string());
        if unreachable {
            Error::Unreachable { registry, image, msg }
        } else {
            Error::Registry { registry, image, msg }
        }
    }

    /// Logs in: for a registry with token auth (Docker Hub, distribution's
    /// `auth: token`), fetches a bearer token from the registry's realm with the
    /// pull secret's credentials, if any, so that a refusal is reported as what
    /// it is rather than as a later 401.
    async fn authenticate(&self) -> Result<(), Error> {
        match self.client.auth(&self.oref, &self.auth, RegistryOperation::Pull).await {
            Ok(_) => Ok(()),
            Err(OciDistributionError::AuthenticationFailure(reason)) => {
                let reason: String = reason.trim().chars().take(300).collect();
                Err(Error::Registry {
                    registry: self.r.registry.clone(),
                    image: self.r.to_string(),
                    msg: format!("the registry's token service refused to log in {}: {reason}", self.who),
                })
            }
            Err(e) => Err(self.reg_err(&e)),
        }
    }

    /// Fetches a manifest by reference, verifying it against `want` when known.
    async fn manifest(&self, oref: &Reference, want: Option<&str>) -> Result<(Manifest, String), Error> {
        let (raw, _) = self.client.pull_manifest_raw(oref, &self.auth, ACCEPT).await.map_err(|e| self.reg_err(&e))?;
        let digest = sha256_digest(&raw);
        if let Some(w) = want {
            if w != digest {
                return Err(Error::Digest { what: format!("manifest of {}", self.r), expected: w.to_string(), actual: digest });
            }
        }
        let m: Manifest = serde_json::from_slice(&raw).map_err(|e| Error::Registry {
            registry: self.r.registry.clone(),
            image: self.r.to_string(),
            msg: format!("bad manifest {digest}: {e}"),
        })?;
        Ok((m, digest))
    }

    /// Fails fast when the registry cannot be reached at all (an offline node):
    /// one TCP connect, DNS included, bounded by [`CONNECT_TIMEOUT`].
    async fn preflight(&self) -> Result<(), Error> {
        let host = self.oref.resolve_registry().to_string();
        let has_port = host.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok());
        let port = if self.opts.insecure.contains(&host) { 80 } else { 443 };
        let addr = if has_port { host.clone() } else { format!("{host}:{port}") };
        let unreachable = |msg: String| Error::Unreachable { registry: self.r.registry.clone(), image: self.r.to_string(), msg };
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr.as_str())).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(unreachable(format!("connect {addr}: {e}"))),
            Err(_) => Err(unreachable(format!("connect {addr}: no answer within {}s", CONNECT_TIMEOUT.as_secs()))),
        }
    }

    async fn run(self) -> Result<Image, Error> {
        let start = Instant::now();
        self.preflight().await?;
        self.authenticate().await?;
        let (top, top_digest) = self.manifest(&self.oref, self.r.digest.as_deref()).await?;
        let manifest = match &top.manifests {
            Some(entries) => {
                let d = choose_platform(entries).ok_or_else(|| Error::Registry {
                    registry: self.r.registry.clone(),
                    image: self.r.to_string(),
                    msg: "image index has no linux/amd64 manifest".into(),
                })?;
                let pref = Reference::with_digest(self.r.registry.clone(), self.r.repository.clone(), d.digest.clone());
                self.manifest(&pref, Some(&d.digest)).await?.0
            }
            None => top,
        };
        let cdesc = manifest.config.clone().ok_or_else(|| Error::Unsupported(format!("manifest of {} has no config", self.r)))?;
        let cfg_bytes = self.config_blob(&cdesc).await?;
        let cfg: ConfigFile = serde_json::from_slice(&cfg_bytes)
            .map_err(|e| Error::Unsupported(format!("image config {} of {}: {e}", cdesc.digest, self.r)))?;
        let layers = layers_of(&manifest, &cfg)?;
        {
            let mut p = self.progress.borrow_mut();
            p.layers_total = layers.len();
            p.bytes_total = layers.iter().map(|l| l.size).sum();
            p.print(true);
        }
        futures_util::stream::iter(layers.iter().map(|l| self.layer(l)))
            .buffer_unordered(self.opts.parallel.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        let mut config = cfg.config.unwrap_or_default();
        if config.env.is_empty() {
            config.env.push(super::DEFAULT_PATH_ENV.to_string());
        }
        let rec = Record {
            name: self.r.to_string(),
            manifest_digest: Some(top_digest),
            config_digest: cdesc.digest.clone(),
            layers,
            config,
            source: Source::Pull,
        };
        let img = self.store.save_record(&rec)?;
        if self.opts.progress {
            eprintln!("pulled {} ({}) in {:.2}s", img.name, img.id, start.elapsed().as_secs_f64());
        }
        Ok(img)
    }

    async fn config_blob(&self, d: &Descriptor) -> Result<Vec<u8>, Error> {
        self.store.hold(&[&d.digest])?;
        if self.store.has_blob(&d.digest) {
            return self.store.read_blob(&d.digest);
        }
        let mut buf = Vec::new();
        let desc = OciDescriptor { digest: d.digest.clone(), media_type: d.media_type.clone(), size: d.size as i64, ..Default::default() };
        self.client.pull_blob(&self.oref, &desc, &mut buf).await.map_err(|e| match e {
            OciDistributionError::DigestError(_) => Error::Digest {
                what: format!("config of {}", self.r),
                expected: d.digest.clone(),
                actual: sha256_digest(&buf),
            },
            e => self.reg_err(&e),
        })?;
        self.store.put_blob_bytes(&d.digest, &buf, "image config")?;
        Ok(buf)
    }

    /// Makes sure one layer's snapshot exists, downloading its blob if needed.
    async fn layer(&self, l: &Layer) -> Result<(), Error> {
        // Held before looking: a concurrent `image rm` / GC then keeps what we find.
        self.store.hold(&[&l.digest, &l.diff_id])?;
        if !self.store.has_snapshot(&l.diff_id) {
            if !self.store.has_blob(&l.digest) {
                self.download(l).await?;
            } else {
                self.progress.borrow_mut().bytes_done += l.size;
            }
            let (store, digest, diff) = (self.store.clone(), l.digest.clone(), l.diff_id.clone());
            self.inflight.fetch_add(1, Ordering::SeqCst);
            let guard = InflightGuard(self.inflight.clone());
            tokio::task::spawn_blocking(move || {
                // The store clone goes first: when the pull ends, its session
                // directory is gone once no unpack is in flight.
                let _guard = guard;
                let store = store;
                unpack::unpack_layer(&store, &digest, &diff)
            })
                .await
                .map_err(|e| Error::Layer { digest: l.digest.clone(), msg: e.to_string() })??;
        } else {
            self.progress.borrow_mut().bytes_done += l.size;
        }
        let mut p = self.progress.borrow_mut();
        p.layers_done += 1;
        p.print(true);
        Ok(())
    }

    /// Streams a layer blob into the store; only a complete, verified blob is kept.
    async fn download(&self, l: &Layer) -> Result<(), Error> {
        let desc = OciDescriptor { digest: l.digest.clone(), media_type: l.media_type.clone(), size: l.size as i64, ..Default::default() };
        let mut stream = self.client.pull_blob_stream(&self.oref, &desc).await.map_err(|e| self.reg_err(&e))?;
        let guard = TmpFile(self.store.tmp_path("blob")?);
        let tmp = &guard.0;
        let res = async {
            let mut f = fs::File::create(tmp).map_err(io("create", tmp))?;
            let mut h = Sha256::new();
            let mut n: u64 = 0;
            let mut failed = None;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(b) => {
                        h.update(&b);
                        n += b.len() as u64;
                        f.write_all(&b).map_err(io("write", tmp))?;
                        let mut p = self.progress.borrow_mut();
                        p.bytes_done += b.len() as u64;
                        p.print(false);
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            let actual = format!("sha256:{}", hex(&h.finalize()));
            if let Some(e) = failed {
                if n < l.size {
                    return Err(Error::Registry {
                        registry: self.r.registry.clone(),
                        image: self.r.to_string(),
                        msg: format!("download of layer {} broke after {n} of {} bytes: {}", l.digest, l.size, chain(&e)),
                    });
                }
            }
            if actual != l.digest {
                return Err(Error::Digest { what: format!("layer blob of {}", self.r), expected: l.digest.clone(), actual });
            }
            f.sync_all().map_err(io("fsync", tmp))?;
            let dest = self.store.blob_path(&l.digest)?;
            fs::rename(tmp, &dest).map_err(io("rename", tmp))
        }
        .await;
        res
    }
}
