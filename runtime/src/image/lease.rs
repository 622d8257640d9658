//! Leases, as containerd has them for its content store: a pull (or import) in
//! progress holds the blobs and layer snapshots it is about to rely on, so that
//! `image rm` or the kubelet's image GC running at the same time never deletes
//! them; and its temporary files live in a session directory that dies with it.
//!
//! Every process that writes to the store gets a session directory
//! `tmp/<pid>-<nanos>-<n>/` for its temporary files, holding a `lease` file that
//! the process keeps flock(2)ed exclusively for its whole life; the lease lists
//! the digests (hex) it holds, one a line. A lease that someone else can lock
//! belongs to a dead process (one killed in the middle of a download or an
//! unpack): its directory is removed, never read or reused.
//!
//! The store lock (`<root>/lock`, flock) orders this. Deleting content (prune)
//! and sweeping dead sessions take it exclusively; creating a session and adding
//! to a lease take it shared. So a digest added to a lease is either seen by every
//! later prune, or was already deleted before the add returned, and the caller,
//! which checks for the content only after holding it, fetches it again.

use std::collections::BTreeSet;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{io, Error};

static SESSION_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Name of the lease file inside a session directory.
const LEASE: &str = "lease";

/// The store lock, released when dropped (the file is closed).
#[derive(Debug)]
pub struct StoreLock(#[allow(dead_code)] fs::File);

/// Takes the store lock at `path`, shared or exclusive, waiting for it.
pub fn lock(path: &Path, exclusive: bool) -> Result<StoreLock, Error> {
    let f = fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(io("open store lock", path))?;
    let res = if exclusive { f.lock() } else { f.lock_shared() };
    res.map_err(io("flock", path))?;
    Ok(StoreLock(f))
}

/// One process's session: its temporary directory and its lease.
#[derive(Debug)]
pub struct Session {
    dir: PathBuf,
    lease: fs::File,
    counter: AtomicU64,
}

impl Session {
    /// Creates a session under `tmp_root`. The caller holds the store lock
    /// (shared), so no sweep sees the directory before its lease is locked.
    pub fn create(tmp_root: &Path) -> Result<Self, Error> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let n = SESSION_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = tmp_root.join(format!("{}-{nanos}-{n}", std::process::id()));
        fs::create_dir(&dir).map_err(io("create session dir", &dir))?;
        let p = dir.join(LEASE);
        let lease = fs::OpenOptions::new().create_new(true).append(true).open(&p).map_err(io("create lease", &p))?;
        lease.lock().map_err(io("flock", &p))?;
        Ok(Self { dir, lease, counter: AtomicU64::new(0) })
    }

    /// A fresh path inside the session directory.
    pub fn tmp_path(&self, what: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{what}-{n}"))
    }

    /// Adds digest hexes to the lease. The caller holds the store lock (shared).
    pub fn hold(&self, hexes: &[&str]) -> Result<(), Error> {
        let mut line = String::new();
        for h in hexes {
            line.push_str(h);
            line.push('\n');
        }
        let p = self.dir.join(LEASE);
        (&self.lease).write_all(line.as_bytes()).map_err(io("write lease", &p))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Still locked while the directory goes; the lock dies with the file.
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Under the exclusive store lock: removes every session directory (and any
/// other entry of `tmp_root`) whose owner is gone, and returns the digest hexes
/// the live sessions hold.
pub fn sweep(tmp_root: &Path) -> Result<BTreeSet<String>, Error> {
    let mut held = BTreeSet::new();
    for ent in fs::read_dir(tmp_root).map_err(io("read dir", tmp_root))? {
        let p = ent.map_err(io("read dir", tmp_root))?.path();
        if let Some(hexes) = live_lease(&p)? {
            held.extend(hexes);
            continue;
        }
        tracing::info!(path = %p.display(), "removing temporary files of a dead image pull");
        let r = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::Io { op: "remove stale temporary", path: p, source: e }),
        }
    }
    Ok(held)
}

/// The digests held by the session at `dir`, or None when it is not a live
/// session (no lease, or a lease nobody holds locked).
fn live_lease(dir: &Path) -> Result<Option<Vec<String>>, Error> {
    let p = dir.join(LEASE);
    let f = match fs::File::open(&p) {
        Ok(f) => f,
        // Not a session dir, or a session that just ended.
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => return Ok(None),
        Err(e) => return Err(Error::Io { op: "open lease", path: p, source: e }),
    };
    match f.try_lock() {
        // We got it: the owner is dead.
        Ok(()) => Ok(None),
        Err(fs::TryLockError::WouldBlock) => {
            let data = fs::read_to_string(&p).map_err(io("read lease", &p))?;
            Ok(Some(data.lines().filter(|l| !l.is_empty()).map(str::to_string).collect()))
        }
        Err(fs::TryLockError::Error(e)) => Err(Error::Io { op: "flock", path: p, source: e }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_sessions_are_kept_and_dead_ones_swept() {
        let d = tempfile::tempdir().unwrap();
        let s = Session::create(d.path()).unwrap();
        s.hold(&["aa", "bb"]).unwrap();
        fs::write(s.tmp_path("blob"), b"partial").unwrap();
        // A dead session (its lease unlocked) and a stray file of an old layout.
        let dead = d.path().join("1-2-3");
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join(LEASE), "cc\n").unwrap();
        fs::create_dir(dead.join("snapshot-0")).unwrap();
        fs::write(d.path().join("blob-99-0"), b"x").unwrap();
        let held = sweep(d.path()).unwrap();
        assert_eq!(held, BTreeSet::from(["aa".to_string(), "bb".to_string()]));
        assert!(!dead.exists());
        assert!(!d.path().join("blob-99-0").exists());
        assert!(s.dir.exists());
        let dir = s.dir.clone();
        drop(s);
        assert!(!dir.exists());
        assert!(sweep(d.path()).unwrap().is_empty());
    }
}
