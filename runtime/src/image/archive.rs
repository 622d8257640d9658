//! Air-gapped image transport: `image import` of a rootfs directory or tar, an OCI
//! image layout (directory or tar) or a docker-archive tarball (`docker save`);
//! `image export` to an OCI image layout or a docker-archive, as a directory or a
//! `.tar`. Every imported blob is verified like a pulled one.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::json;

use super::manifest::{choose_platform, layers_of, ConfigFile, Manifest};
use super::store::{digest_hex, sha256_digest, ImageStore};
use super::{io, unpack, Error, Image, ImageConfig, ImageRef, Layer, Record, Source, DEFAULT_PATH_ENV};

/// Formats of `image export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/`).
    Oci,
    /// docker-archive (`manifest.json` + config + layer tars), as `docker save` writes.
    DockerArchive,
}

fn ierr(path: &Path, msg: impl Into<String>) -> Error {
    Error::Import { path: path.to_path_buf(), msg: msg.into() }
}

/// Removes a temporary directory when dropped.
struct TmpDir(PathBuf);
impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `image import NAME PATH`: detects what PATH holds and imports it.
pub fn import(store: &ImageStore, name: &str, src: &Path, config: Option<ImageConfig>) -> Result<Image, Error> {
    let res = import_any(store, name, src, config);
    store.release();
    res
}

fn import_any(store: &ImageStore, name: &str, src: &Path, config: Option<ImageConfig>) -> Result<Image, Error> {
    let r = ImageRef::parse(name)?;
    let meta = fs::metadata(src).map_err(io("stat", src))?;
    if meta.is_dir() {
        if src.join("oci-layout").is_file() {
            return import_oci_layout(store, &r, src, src);
        }
        if src.join("manifest.json").is_file() && !src.join("bin").exists() {
            return import_docker_archive(store, &r, src, src);
        }
        return import_rootfs_dir(store, &r, src, config);
    }
    if let Some(kind) = archive_kind(src)? {
        let tmp = TmpDir(store.tmp_path("import")?);
        fs::create_dir_all(&tmp.0).map_err(io("create", &tmp.0))?;
        let f = fs::File::open(src).map_err(io("open", src))?;
        tar::Archive::new(f).unpack(&tmp.0).map_err(|e| ierr(src, e.to_string()))?;
        return match kind {
            "oci" => import_oci_layout(store, &r, &tmp.0, src),
            _ => import_docker_archive(store, &r, &tmp.0, src),
        };
    }
    let f = fs::File::open(src).map_err(io("open", src))?;
    let digest = file_digest(src)?;
    store.put_blob_reader(&digest, f, "imported layer")?;
    finish_rootfs_import(store, &r, &digest, config)
}

/// Whether a plain (uncompressed) tar file is an OCI layout or docker-archive.
fn archive_kind(src: &Path) -> Result<Option<&'static str>, Error> {
    let f = fs::File::open(src).map_err(io("open", src))?;
    let mut ar = tar::Archive::new(f);
    let Ok(entries) = ar.entries() else { return Ok(None) };
    for e in entries.take(64) {
        let Ok(e) = e else { return Ok(None) };
        let p = e.path().map(|p| p.to_string_lossy().trim_start_matches("./").to_string()).unwrap_or_default();
        match p.as_str() {
            "oci-layout" => return Ok(Some("oci")),
            "manifest.json" => return Ok(Some("docker")),
            _ => {}
        }
    }
    Ok(None)
}

fn file_digest(p: &Path) -> Result<String, Error> {
    use sha2::{Digest as _, Sha256};
    let mut f = fs::File::open(p).map_err(io("open", p))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(io("read", p))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", super::store::hex(&h.finalize())))
}

/// A plain rootfs directory becomes one uncompressed layer.
fn import_rootfs_dir(store: &ImageStore, r: &ImageRef, src: &Path, config: Option<ImageConfig>) -> Result<Image, Error> {
    let tarp = store.tmp_path("layer.tar")?;
    let res = (|| {
        let f = fs::File::create(&tarp).map_err(io("create", &tarp))?;
        let mut b = tar::Builder::new(f);
        b.follow_symlinks(false);
        b.append_dir_all(".", src).map_err(|e| ierr(src, e.to_string()))?;
        b.into_inner().map_err(|e| ierr(src, e.to_string()))?;
        let digest = file_digest(&tarp)?;
        let f = fs::File::open(&tarp).map_err(io("open", &tarp))?;
        store.put_blob_reader(&digest, f, "imported layer")?;
        finish_rootfs_import(store, r, &digest, config)
    })();
    let _ = fs::remove_file(&tarp);
    res
}

fn finish_rootfs_import(store: &ImageStore, r: &ImageRef, digest: &str, config: Option<ImageConfig>) -> Result<Image, Error> {
    let diff_id = unpack::unpack_layer_any(store, digest)?;
    let mut config = config.unwrap_or_default();
    if config.env.is_empty() {
        config.env.push(DEFAULT_PATH_ENV.to_string());
    }
    let cfg_json = json!({
        "architecture": "amd64", "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let cfg_bytes = serde_json::to_vec(&cfg_json).map_err(|e| Error::Unsupported(e.to_string()))?;
    let cfg_digest = sha256_digest(&cfg_bytes);
    store.put_blob_bytes(&cfg_digest, &cfg_bytes, "image config")?;
    let size = fs::metadata(store.blob_path(digest)?).map(|m| m.len()).unwrap_or(0);
    let media_type = "application/vnd.oci.image.layer.v1.tar".to_string();
    let rec = Record {
        name: r.to_string(),
        manifest_digest: None,
        config_digest: cfg_digest,
        layers: vec![Layer { digest: digest.to_string(), diff_id, media_type, size }],
        config,
        source: Source::Import,
    };
    store.save_record(&rec)
}

/// Copies a blob from an unpacked archive into the store, verifying it.
fn copy_blob(store: &ImageStore, file: &Path, digest: &str, what: &str) -> Result<(), Error> {
    store.hold(&[digest])?;
    if store.has_blob(digest) {
        return Ok(());
    }
    let f = fs::File::open(file).map_err(io("open", file))?;
    store.put_blob_reader(digest, f, what).map(|_| ())
}

fn read_json<T: for<'de> Deserialize<'de>>(p: &Path) -> Result<T, Error> {
    let data = fs::read(p).map_err(io("read", p))?;
    serde_json::from_slice(&data).map_err(|source| Error::Json { path: p.to_path_buf(), source })
}

fn import_oci_layout(store: &ImageStore, r: &ImageRef, dir: &Path, src: &Path) -> Result<Image, Error> {
    let blob = |d: &str| -> Result<PathBuf, Error> { Ok(dir.join("blobs/sha256").join(digest_hex(d)?)) };
    let index: Manifest = read_json(&dir.join("index.json"))?;
    let entries = index.manifests.unwrap_or_default();
    let first = entries.first().ok_or_else(|| ierr(src, "index.json lists no manifest"))?;
    let mut desc = first.clone();
    let mut m: Manifest = read_json(&blob(&desc.digest)?)?;
    if let Some(inner) = &m.manifests {
        desc = choose_platform(inner).ok_or_else(|| ierr(src, "no linux/amd64 manifest in index"))?.clone();
        m = read_json(&blob(&desc.digest)?)?;
    }
    let top = sha256_digest(&fs::read(blob(&first.digest)?).map_err(io("read", src))?);
    if top != first.digest {
        return Err(Error::Digest { what: format!("manifest in {}", src.display()), expected: first.digest.clone(), actual: top });
    }
    import_manifest(store, r, &m, Some(first.digest.clone()), src, &|d: &str| blob(d))
}

/// Shared tail of layout/archive import: config, layers, snapshots, record.
fn import_manifest(
    store: &ImageStore,
    r: &ImageRef,
    m: &Manifest,
    manifest_digest: Option<String>,
    src: &Path,
    blob: &dyn Fn(&str) -> Result<PathBuf, Error>,
) -> Result<Image, Error> {
    let cdesc = m.config.as_ref().ok_or_else(|| ierr(src, "manifest has no config"))?;
    copy_blob(store, &blob(&cdesc.digest)?, &cdesc.digest, "image config")?;
    let cfg: ConfigFile = serde_json::from_slice(&store.read_blob(&cdesc.digest)?).map_err(|e| ierr(src, e.to_string()))?;
    let layers = layers_of(m, &cfg)?;
    for l in &layers {
        store.hold(&[&l.digest, &l.diff_id])?;
        if !store.has_snapshot(&l.diff_id) {
            copy_blob(store, &blob(&l.digest)?, &l.digest, "layer blob")?;
            unpack::unpack_layer(store, &l.digest, &l.diff_id)?;
        }
    }
    let mut config = cfg.config.unwrap_or_default();
    if config.env.is_empty() {
        config.env.push(DEFAULT_PATH_ENV.to_string());
    }
    let rec = Record { name: r.to_string(), manifest_digest, config_digest: cdesc.digest.clone(), layers, config, source: Source::Import };
    store.save_record(&rec)
}

#[derive(Deserialize)]
struct DockerManifest {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn import_docker_archive(store: &ImageStore, r: &ImageRef, dir: &Path, src: &Path) -> Result<Image, Error> {
    let dm: Vec<DockerManifest> = read_json(&dir.join("manifest.json"))?;
    let d = dm.first().ok_or_else(|| ierr(src, "manifest.json is empty"))?;
    let files: Vec<PathBuf> = std::iter::once(&d.config).chain(&d.layers).map(|f| dir.join(f)).collect();
    let mut by_digest = std::collections::BTreeMap::new();
    let mut descs = Vec::new();
    for f in &files {
        let dg = file_digest(f)?;
        let size = fs::metadata(f).map_err(io("stat", f))?.len();
        by_digest.insert(dg.clone(), f.clone());
        descs.push(super::manifest::Descriptor { media_type: String::new(), digest: dg, size, platform: None });
    }
    let config = descs.remove(0);
    let m = Manifest { media_type: String::new(), config: Some(config), layers: descs, manifests: None };
    let lookup = |dg: &str| by_digest.get(dg).cloned().ok_or_else(|| ierr(src, format!("no file for {dg}")));
    import_manifest(store, r, &m, None, src, &lookup)
}

/// OCI media type for a stored layer (docker types map onto their OCI twins).
fn oci_layer_type(l: &Layer) -> &'static str {
    match l.media_type.as_str() {
        "application/vnd.oci.image.layer.v1.tar+zstd" => "application/vnd.oci.image.layer.v1.tar+zstd",
        t if t.ends_with("gzip") => "application/vnd.oci.image.layer.v1.tar+gzip",
        _ => "application/vnd.oci.image.layer.v1.tar",
    }
}

/// `image export NAME PATH --format F`: PATH ending in `.tar` gets a tarball,
/// anything else a directory.
pub fn export(store: &ImageStore, name: &str, dest: &Path, format: Format) -> Result<(), Error> {
    let res = export_to(store, name, dest, format);
    store.release();
    res
}

fn export_to(store: &ImageStore, name: &str, dest: &Path, format: Format) -> Result<(), Error> {
    let rec = store.record(name)?;
    // Held while exported: a concurrent `image rm` does not pull blobs from under us.
    let mut held = vec![rec.config_digest.as_str()];
    held.extend(rec.layers.iter().map(|l| l.digest.as_str()));
    store.hold(&held)?;
    let as_tar = dest.extension().is_some_and(|e| e == "tar");
    let tmp = TmpDir(store.tmp_path("export")?);
    let out = if as_tar { tmp.0.clone() } else { dest.to_path_buf() };
    fs::create_dir_all(&out).map_err(io("create", &out))?;
    match format {
        Format::Oci => write_oci_layout(store, &rec, &out)?,
        Format::DockerArchive => write_docker_archive(store, &rec, &out)?,
    }
    if as_tar {
        let part = dest.with_extension("tar.part");
        let f = fs::File::create(&part).map_err(io("create", &part))?;
        let mut b = tar::Builder::new(f);
        b.append_dir_all(".", &out).map_err(|e| ierr(dest, e.to_string()))?;
        b.into_inner().map_err(|e| ierr(dest, e.to_string()))?;
        fs::rename(&part, dest).map_err(io("rename", &part))?;
    }
    Ok(())
}

fn copy_out(store: &ImageStore, digest: &str, to: &Path) -> Result<(), Error> {
    let from = store.blob_path(digest)?;
    fs::copy(&from, to).map_err(io("copy blob to", to)).map(|_| ())
}

fn write_oci_layout(store: &ImageStore, rec: &Record, out: &Path) -> Result<(), Error> {
    let blobs = out.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(io("create", &blobs))?;
    let cfg_size = fs::metadata(store.blob_path(&rec.config_digest)?).map(|m| m.len()).unwrap_or(0);
    copy_out(store, &rec.config_digest, &blobs.join(digest_hex(&rec.config_digest)?))?;
    let mut layers = Vec::new();
    for l in &rec.layers {
        copy_out(store, &l.digest, &blobs.join(digest_hex(&l.digest)?))?;
        layers.push(json!({"mediaType": oci_layer_type(l), "digest": l.digest, "size": l.size}));
    }
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": rec.config_digest, "size": cfg_size},
        "layers": layers,
    });
    let mbytes = serde_json::to_vec(&manifest).map_err(|e| Error::Unsupported(e.to_string()))?;
    let mdigest = sha256_digest(&mbytes);
    let mpath = blobs.join(digest_hex(&mdigest)?);
    fs::write(&mpath, &mbytes).map_err(io("write", &mpath))?;
    let tag = ImageRef::parse(&rec.name)?.tag.unwrap_or_else(|| "latest".into());
    let index = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdigest, "size": mbytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag, "io.containerd.image.name": rec.name}}],
    });
    let w = |name: &str, v: &serde_json::Value| {
        let p = out.join(name);
        fs::write(&p, v.to_string()).map_err(io("write", &p))
    };
    w("oci-layout", &json!({"imageLayoutVersion": "1.0.0"}))?;
    w("index.json", &index)
}

fn write_docker_archive(store: &ImageStore, rec: &Record, out: &Path) -> Result<(), Error> {
    let cfg_name = format!("{}.json", digest_hex(&rec.config_digest)?);
    copy_out(store, &rec.config_digest, &out.join(&cfg_name))?;
    let mut layers = Vec::new();
    for l in &rec.layers {
        let n = format!("{}.tar", digest_hex(&l.digest)?);
        copy_out(store, &l.digest, &out.join(&n))?;
        layers.push(n);
    }
    let r = ImageRef::parse(&rec.name)?;
    let tag = format!("{}:{}", r.repo_name(), r.tag.unwrap_or_else(|| "latest".into()));
    let m = json!([{"Config": cfg_name, "RepoTags": [tag], "Layers": layers}]);
    let p = out.join("manifest.json");
    fs::write(&p, m.to_string()).map_err(io("write", &p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("bin")).unwrap();
        fs::write(src.path().join("bin/hello"), "hi").unwrap();
        std::os::unix::fs::symlink("hello", src.path().join("bin/link")).unwrap();
        src
    }

    #[test]
    fn import_dir_and_tar_then_export_and_reimport() {
        let d = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&d.path().join("store")).unwrap();
        let src = rootfs();
        let img = import(&store, "busybox", src.path(), None).unwrap();
        assert_eq!(img.name, "docker.io/library/busybox:latest");
        assert_eq!(img.config.env, vec![DEFAULT_PATH_ENV.to_string()]);
        assert!(!img.rootfs.contains(':'));
        assert!(Path::new(&img.rootfs).join("bin/hello").exists());
        assert!(fs::symlink_metadata(Path::new(&img.rootfs).join("bin/link")).unwrap().file_type().is_symlink());
        for (fmt, path) in [(Format::Oci, "o.tar"), (Format::DockerArchive, "d.tar"), (Format::Oci, "odir")] {
            let p = d.path().join(path);
            export(&store, "busybox", &p, fmt).unwrap();
            let again = import(&store, "x/y:1", &p, None).unwrap();
            assert_eq!(again.rootfs, img.rootfs, "{path}");
            assert_eq!(again.id, img.id, "{path}");
            store.remove("x/y:1").unwrap();
        }
        let tarball = d.path().join("img.tar.gz");
        let st = std::process::Command::new("tar").arg("-czf").arg(&tarball).arg("-C").arg(src.path()).arg(".").status().unwrap();
        assert!(st.success());
        let cfg = ImageConfig { cmd: vec!["sh".into()], working_dir: "/w".into(), ..Default::default() };
        let img2 = import(&store, "foo/bar:1", &tarball, Some(cfg)).unwrap();
        assert_eq!(img2.config.cmd, vec!["sh".to_string()]);
        assert!(Path::new(&img2.rootfs).join("bin/hello").exists());
        assert_eq!(store.list().unwrap().len(), 2);
        store.remove("foo/bar:1").unwrap();
        store.remove("busybox").unwrap();
        let err = store.get("busybox").unwrap_err().to_string();
        assert!(err.contains("image \"docker.io/library/busybox:latest\" not found in store"), "{err}");
        assert_eq!(fs::read_dir(store.root().join("snapshots")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(store.root().join("blobs/sha256")).unwrap().count(), 0);
    }
}
