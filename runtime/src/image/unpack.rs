//! Layer unpacking: a layer blob (tar, gzip or zstd) becomes one read-only
//! snapshot directory used as an overlayfs lowerdir. OCI whiteouts become overlay
//! whiteouts: `.wh.NAME` → character device 0:0 named NAME, `.wh..wh..opq` → the
//! `trusted.overlay.opaque=y` xattr on its directory. The uncompressed stream is
//! hashed and must match the image config's diff id before the snapshot is kept.

use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use sha2::{Digest as _, Sha256};

use super::store::{hex, ImageStore};
use super::{io as ioerr, Error};

/// Prefix of OCI whiteout files.
const WH_PREFIX: &str = ".wh.";
/// Name of the opaque-directory marker.
const WH_OPAQUE: &str = ".wh..wh..opq";

/// Reader that hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Compression of a layer blob, detected from its first bytes.
fn decompressor<'a>(mut r: BufReader<fs::File>) -> io::Result<Box<dyn Read + 'a>> {
    let head = r.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(r)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(r)?))
    } else {
        Ok(Box::new(r))
    }
}

/// Unpacks the stored blob `digest` into the snapshot for `diff_id`, unless that
/// snapshot already exists. The uncompressed stream must hash to `diff_id`.
/// Returns the snapshot directory.
pub fn unpack_layer(store: &ImageStore, digest: &str, diff_id: &str) -> Result<PathBuf, Error> {
    if store.has_snapshot(diff_id) {
        return store.snapshot_path(diff_id);
    }
    let (tmp, actual) = unpack_to_tmp(store, digest)?;
    if actual != diff_id {
        let _ = fs::remove_dir_all(&tmp);
        return Err(Error::Digest { what: format!("uncompressed layer {digest}"), expected: diff_id.to_string(), actual });
    }
    store.commit_snapshot(&tmp, diff_id)
}

/// Unpacks a stored blob whose diff id is not known yet (an imported rootfs tar);
/// returns the computed diff id.
pub fn unpack_layer_any(store: &ImageStore, digest: &str) -> Result<String, Error> {
    let (tmp, diff_id) = unpack_to_tmp(store, digest)?;
    if store.has_snapshot(&diff_id) {
        let _ = fs::remove_dir_all(&tmp);
    } else {
        store.commit_snapshot(&tmp, &diff_id)?;
    }
    Ok(diff_id)
}

/// Unpacks a blob into a fresh temporary dir; returns it and the diff id.
fn unpack_to_tmp(store: &ImageStore, digest: &str) -> Result<(PathBuf, String), Error> {
    let blob = store.blob_path(digest)?;
    let tmp = store.tmp_path("snapshot")?;
    fs::create_dir_all(&tmp).map_err(ioerr("create", &tmp))?;
    let lerr = |msg: String| Error::Layer { digest: digest.to_string(), msg };
    let res = (|| {
        let f = fs::File::open(&blob).map_err(ioerr("open blob", &blob))?;
        let dec = decompressor(BufReader::with_capacity(256 * 1024, f)).map_err(|e| lerr(e.to_string()))?;
        let mut hr = HashingReader { inner: dec, hash: Sha256::new() };
        apply_tar(&mut hr, &tmp).map_err(|e| lerr(super::chain(&e)))?;
        io::copy(&mut hr, &mut io::sink()).map_err(|e| lerr(e.to_string()))?;
        Ok(format!("sha256:{}", hex(&hr.hash.finalize())))
    })();
    match res {
        Ok(d) => Ok((tmp, d)),
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Applies one layer tar into an empty directory, converting whiteouts.
pub fn apply_tar(r: impl Read, dest: &Path) -> io::Result<()> {
    let root = nix::unistd::geteuid().is_root();
    let mut ar = tar::Archive::new(r);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(root);
    ar.set_preserve_mtime(true);
    ar.set_unpack_xattrs(root);
    ar.set_overwrite(true);
    for entry in ar.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let rel: PathBuf = path.components().filter(|c| matches!(c, Component::Normal(_))).collect();
        if path.components().any(|c| c == Component::ParentDir) || rel.as_os_str().is_empty() {
            continue;
        }
        let fname = rel.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some(hidden) = fname.strip_prefix(WH_PREFIX) {
            let parent = dest.join(rel.parent().unwrap_or(Path::new("")));
            fs::create_dir_all(&parent)?;
            if fname == WH_OPAQUE {
                xattr::set(&parent, "trusted.overlay.opaque", b"y")?;
            } else {
                let target = parent.join(hidden);
                let _ = fs::remove_file(&target);
                mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).map_err(io::Error::from)?;
            }
            continue;
        }
        entry.unpack_in(dest)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    fn tar_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skip: mknod of whiteouts needs root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let t = tar_with(&[("etc/keep", b"k"), ("etc/.wh.gone", b""), ("var/.wh..wh..opq", b"")]);
        apply_tar(&t[..], d.path()).unwrap();
        assert_eq!(fs::read(d.path().join("etc/keep")).unwrap(), b"k");
        let m = fs::symlink_metadata(d.path().join("etc/gone")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(xattr::get(d.path().join("var"), "trusted.overlay.opaque").unwrap().as_deref(), Some(&b"y"[..]));
        assert!(!d.path().join("etc/.wh.gone").exists());
    }

    #[test]
    fn unpack_verifies_diff_id_and_leaves_nothing_on_mismatch() {
        let d = tempfile::tempdir().unwrap();
        let store = ImageStore::open(d.path()).unwrap();
        let t = tar_with(&[("a", b"1")]);
        let digest = super::super::store::sha256_digest(&t);
        store.put_blob_bytes(&digest, &t, "layer").unwrap();
        let wrong = format!("sha256:{}", "0".repeat(64));
        let e = unpack_layer(&store, &digest, &wrong).unwrap_err().to_string();
        assert!(e.contains("digest mismatch"), "{e}");
        assert!(!store.has_snapshot(&wrong));
        // Only the session's lease is left in tmp/, and nothing once it ends.
        for s in fs::read_dir(d.path().join("tmp")).unwrap() {
            let names: Vec<_> = fs::read_dir(s.unwrap().path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(names, vec!["lease"]);
        }
        store.release();
        assert_eq!(fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
        let snap = unpack_layer(&store, &digest, &digest).unwrap();
        assert_eq!(fs::read(snap.join("a")).unwrap(), b"1");
    }
}
