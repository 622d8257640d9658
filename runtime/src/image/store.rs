//! The on-disk content store: blobs by digest, layer snapshots by diff id, image
//! records by name. Writes go to the writer's session directory under `tmp/`
//! first and are renamed into place only once complete and verified; content a
//! writer relies on is held by its lease (see [`super::lease`]) so that a
//! concurrent `image rm` or GC keeps it.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use super::lease::{self, Session, StoreLock};
use super::name::{sanitise, ImageRef};
use super::{io, Error, Image, Record};

/// The image store rooted at a directory (`--image-root`). Clones share one
/// session (temporary directory and lease), created on first write and ended by
/// [`ImageStore::release`] or when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    session: Arc<Mutex<Option<Session>>>,
}

/// `sha256:<hex>` → `<hex>`, checking the algorithm and hex form.
pub fn digest_hex(digest: &str) -> Result<&str, Error> {
    match digest.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(hex),
        _ => Err(Error::Unsupported(format!("unsupported or malformed digest {digest:?} (want sha256:<64 hex>)"))),
    }
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root`, removing what writers
    /// that died (a pull killed mid-download or mid-unpack) left in `tmp/`.
    pub fn open(root: &Path) -> Result<Self, Error> {
        for sub in ["blobs/sha256", "snapshots", "images", "tmp"] {
            let d = root.join(sub);
            fs::create_dir_all(&d).map_err(io("create", &d))?;
        }
        let store = Self { root: root.to_path_buf(), session: Arc::default() };
        let _lock = store.lock(true)?;
        lease::sweep(&store.root.join("tmp"))?;
        Ok(store)
    }

    /// Takes the store lock (see [`super::lease`]).
    fn lock(&self, exclusive: bool) -> Result<StoreLock, Error> {
        lease::lock(&self.root.join("lock"), exclusive)
    }

    /// Runs `f` with this process's session, creating it on first use.
    fn with_session<T>(&self, f: impl FnOnce(&Session) -> Result<T, Error>) -> Result<T, Error> {
        let mut guard = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let _lock = self.lock(false)?;
            *guard = Some(Session::create(&self.root.join("tmp"))?);
        }
        match guard.as_ref() {
            Some(s) => f(s),
            None => Err(Error::Unsupported("image store session vanished".into())),
        }
    }

    /// Ends this process's session: its temporary directory goes and what it
    /// held is no longer held (the end of a pull or an import).
    pub fn release(&self) {
        let old = self.session.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(old);
    }

    /// Holds content (blob digests or snapshot diff ids) until the session
    /// ends ([`Self::release`], the last clone dropped, or the process dying):
    /// no prune deletes it meanwhile. Call it before checking whether
    /// the content is there, and rely on what the check then says.
    pub fn hold(&self, digests: &[&str]) -> Result<(), Error> {
        let hexes = digests.iter().map(|d| digest_hex(d)).collect::<Result<Vec<_>, _>>()?;
        self.with_session(|s| {
            let _lock = self.lock(false)?;
            s.hold(&hexes)
        })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a blob.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, Error> {
        Ok(self.root.join("blobs/sha256").join(digest_hex(digest)?))
    }

    /// Path of a layer snapshot (the unpacked layer, an overlay lowerdir).
    pub fn snapshot_path(&self, diff_id: &str) -> Result<PathBuf, Error> {
        Ok(self.root.join("snapshots").join(digest_hex(diff_id)?))
    }

    /// Whether a verified blob is stored.
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).map(|p| p.is_file()).unwrap_or(false)
    }

    /// Whether a layer snapshot is stored.
    pub fn has_snapshot(&self, diff_id: &str) -> bool {
        self.snapshot_path(diff_id).map(|p| p.is_dir()).unwrap_or(false)
    }

    /// A fresh temporary path inside this process's session directory (same
    /// filesystem as the store, for rename).
    pub fn tmp_path(&self, what: &str) -> Result<PathBuf, Error> {
        self.with_session(|s| Ok(s.tmp_path(what)))
    }

    /// Reads a stored blob.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, Error> {
        let p = self.blob_path(digest)?;
        fs::read(&p).map_err(io("read blob", &p))
    }

    /// Stores bytes as the blob `digest`, verifying it.
    pub fn put_blob_bytes(&self, digest: &str, data: &[u8], what: &str) -> Result<PathBuf, Error> {
        self.put_blob_reader(digest, data, what)
    }

    /// Streams a reader into the blob `digest`, verifying the digest before the
    /// blob becomes visible.
    pub fn put_blob_reader(&self, digest: &str, mut r: impl Read, what: &str) -> Result<PathBuf, Error> {
        let dest = self.blob_path(digest)?;
        self.hold(&[digest])?;
        let tmp = self.tmp_path("blob")?;
        let res = (|| {
            let mut f = fs::File::create(&tmp).map_err(io("create", &tmp))?;
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = r.read(&mut buf).map_err(io("read blob source for", &tmp))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                f.write_all(&buf[..n]).map_err(io("write", &tmp))?;
            }
            let actual = format!("sha256:{}", hex(&h.finalize()));
            if actual != digest {
                return Err(Error::Digest { what: what.to_string(), expected: digest.to_string(), actual });
            }
            f.sync_all().map_err(io("fsync", &tmp))?;
            fs::rename(&tmp, &dest).map_err(io("rename", &tmp))
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res.map(|()| dest)
    }

    /// Moves a fully written temporary snapshot dir into place. Losing a race
    /// with another pull of the same layer is fine: the other copy is identical.
    pub fn commit_snapshot(&self, tmp: &Path, diff_id: &str) -> Result<PathBuf, Error> {
        let dest = self.snapshot_path(diff_id)?;
        self.hold(&[diff_id])?;
        if let Err(e) = fs::rename(tmp, &dest) {
            let _ = fs::remove_dir_all(tmp);
            if !dest.is_dir() {
                return Err(Error::Io { op: "rename snapshot", path: dest, source: e });
            }
        }
        Ok(dest)
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.root.join("images").join(format!("{}.json", sanitise(name)))
    }

    /// Writes an image record atomically.
    pub fn save_record(&self, rec: &Record) -> Result<Image, Error> {
        let p = self.record_path(&rec.name);
        let tmp = self.tmp_path("record")?;
        let data = serde_json::to_vec_pretty(rec).map_err(|source| Error::Json { path: p.clone(), source })?;
        fs::write(&tmp, data).map_err(io("write", &tmp))?;
        fs::rename(&tmp, &p).map_err(io("rename", &tmp))?;
        Ok(self.image_of(rec))
    }

    /// Loads the record of an image (name not yet normalised).
    pub fn record(&self, name: &str) -> Result<Record, Error> {
        let name = ImageRef::parse(name)?.to_string();
        let p = self.record_path(&name);
        if !p.is_file() {
            return Err(Error::NotFound { name, dir: self.root.clone() });
        }
        load_record(&p)
    }

    /// The printable view of a record.
    pub fn image_of(&self, rec: &Record) -> Image {
        let rootfs: Vec<String> = rec
            .layers
            .iter()
            .rev()
            .filter_map(|l| self.snapshot_path(&l.diff_id).ok())
            .map(|p| p.display().to_string())
            .collect();
        let repo_digest = rec.manifest_digest.as_ref().and_then(|d| {
            ImageRef::parse(&rec.name).ok().map(|r| format!("{}@{d}", r.repo_name()))
        });
        Image {
            name: rec.name.clone(),
            id: rec.config_digest.clone(),
            repo_digest,
            rootfs: rootfs.join(":"),
            config: rec.config.clone(),
            size: rec.layers.iter().map(|l| l.size).sum(),
            layers: rec.layers.len(),
            source: rec.source,
        }
    }

    /// Looks an image up by (not yet normalised) name. All its snapshots must
    /// be present.
    pub fn get(&self, name: &str) -> Result<Image, Error> {
        let rec = self.record(name)?;
        if let Some(l) = rec.layers.iter().find(|l| !self.has_snapshot(&l.diff_id)) {
            return Err(Error::Layer { digest: l.diff_id.clone(), msg: format!("snapshot of image {} is missing", rec.name) });
        }
        self.touch(&rec.name);
        Ok(self.image_of(&rec))
    }

    /// Marks an image as just used (its record's mtime), for image GC.
    fn touch(&self, name: &str) {
        let p = self.record_path(name);
        if let Ok(f) = fs::File::options().append(true).open(&p) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
    }

    /// Every image with its last use time.
    pub fn last_used(&self) -> Result<Vec<(String, std::time::SystemTime)>, Error> {
        let mut out = Vec::new();
        for r in self.records()? {
            let p = self.record_path(&r.name);
            let t = fs::metadata(&p).and_then(|m| m.modified()).map_err(io("stat", &p))?;
            out.push((r.name, t));
        }
        Ok(out)
    }

    /// All records, sorted by name.
    pub fn records(&self) -> Result<Vec<Record>, Error> {
        let dir = self.root.join("images");
        let mut out = Vec::new();
        for ent in fs::read_dir(&dir).map_err(io("read dir", &dir))? {
            let p = ent.map_err(io("read dir", &dir))?.path();
            if p.extension().is_some_and(|e| e == "json") {
                out.push(load_record(&p)?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// All images, sorted by name.
    pub fn list(&self) -> Result<Vec<Image>, Error> {
        Ok(self.records()?.iter().map(|r| self.image_of(r)).collect())
    }

    /// Removes an image (a missing image is an error), then the blobs and
    /// snapshots no other image uses.
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        let _lock = self.lock(true)?;
        let rec = self.record(name)?;
        let p = self.record_path(&rec.name);
        fs::remove_file(&p).map_err(io("remove", &p))?;
        self.prune_locked()
    }

    /// Deletes blobs and snapshots referenced by no image record and held by no
    /// live lease, and the temporary files of dead writers.
    pub fn prune(&self) -> Result<(), Error> {
        let _lock = self.lock(true)?;
        self.prune_locked()
    }

    /// [`Self::prune`], the exclusive store lock already taken.
    fn prune_locked(&self) -> Result<(), Error> {
        let mut keep = lease::sweep(&self.root.join("tmp"))?;
        for r in self.records()? {
            keep.insert(digest_hex(&r.config_digest)?.to_string());
            if let Some(m) = &r.manifest_digest {
                keep.insert(digest_hex(m)?.to_string());
            }
            for l in &r.layers {
                keep.insert(digest_hex(&l.digest)?.to_string());
                keep.insert(digest_hex(&l.diff_id)?.to_string());
            }
        }
        for sub in ["blobs/sha256", "snapshots"] {
            let dir = self.root.join(sub);
            for ent in fs::read_dir(&dir).map_err(io("read dir", &dir))? {
                let ent = ent.map_err(io("read dir", &dir))?;
                if keep.contains(ent.file_name().to_string_lossy().as_ref()) {
                    continue;
                }
                let p = ent.path();
                let r = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
                r.map_err(io("remove", &p))?;
            }
        }
        Ok(())
    }
}

fn load_record(p: &Path) -> Result<Record, Error> {
    let data = fs::read(p).map_err(io("read", p))?;
    serde_json::from_slice(&data).map_err(|source| Error::Json { path: p.to_path_buf(), source })
}
