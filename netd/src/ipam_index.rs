//! The owner index of the IPAM store: which address a pod sandbox's interface holds,
//! found from one directory listing of names instead of reading every allocation
//! file (the idempotency check of every CNI ADD, and DEL's lookup).
//!
//! `<store>/owners/<key>.<ip>` is the owner's entry, `<key>` being 32 hex digits of
//! sha256 of container id and interface name (container ids are input: never a path).
//! It is the allocation file itself (`<containerid>\n<ifname>`, as host-local writes
//! it): ADD writes the entry, then link(2)s it to `<store>/<ip>`, which fails when the
//! address is taken, so creating the link is the reservation. One inode per
//! allocation, as before the index (creating an inode on ext4 costs 0.1-0.4 ms on
//! the benchmark machine; a link ~10 µs). DEL unlinks `<ip>`, then the entry.
//!
//! Through a crash at any point, every allocation file of ours is a link of its
//! owner's entry. An entry may dangle (its `<ip>` gone, or another file since), so a
//! lookup checks that `<ip>` is the entry's inode; no entry means no allocation.
//!
//! A store made before the index (no `owners` directory) gets one at open: each
//! allocation file is linked into `owners.new`, renamed to `owners` when complete, so
//! a crash mid-build leaves no partial index.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::DirEntryExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{io_err, IpamError, Owner};

/// Directory of the index, inside the store.
pub const INDEX_DIR: &str = "owners";
/// Where an index is built before it is renamed to [`INDEX_DIR`].
const BUILD_DIR: &str = "owners.new";

/// The owner index of one store (see the module docs).
#[derive(Debug)]
pub struct OwnerIndex {
    dir: PathBuf,
}

/// Entry name of `owner`.
fn key(owner: &Owner) -> String {
    let d = Sha256::new()
        .chain_update(owner.container_id.as_bytes())
        .chain_update([0u8])
        .chain_update(owner.ifname.as_bytes())
        .finalize();
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn unlink(path: &Path) -> Result<(), IpamError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(io_err("remove index entry", path)(e)),
        _ => Ok(()),
    }
}

/// Links the pre-index allocation file of `owner` at `ip` as its entry in `dir` (a
/// second allocation of one owner keeps the first).
fn adopt(dir: &Path, store_dir: &Path, owner: &Owner, ip: Ipv4Addr) -> Result<(), IpamError> {
    let alloc = store_dir.join(ip.to_string());
    let entry = dir.join(entry_name(owner, ip));
    match fs::hard_link(&alloc, &entry) {
        Err(e) if e.kind() != ErrorKind::AlreadyExists => {
            Err(io_err("link index entry", &entry)(e))
        }
        _ => Ok(()),
    }
}

fn entry_name(owner: &Owner, ip: Ipv4Addr) -> String {
    format!("{}.{ip}", key(owner))
}

/// One entry of an owner: the address it names and its inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The address in the entry's name.
    pub ip: Ipv4Addr,
    /// The entry's inode (the allocation file's, while the entry is live).
    pub ino: u64,
}

impl OwnerIndex {
    /// The index of the store at `store_dir` (its lock held by the caller), built from
    /// `allocations` when the store has none yet.
    pub fn open(
        store_dir: &Path,
        allocations: impl FnOnce() -> Result<Vec<(Ipv4Addr, Owner)>, IpamError>,
    ) -> Result<Self, IpamError> {
        let dir = store_dir.join(INDEX_DIR);
        if !dir.is_dir() {
            let build = store_dir.join(BUILD_DIR);
            // A leftover of a build that crashed: start over.
            match fs::remove_dir_all(&build) {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    return Err(io_err("remove index build", &build)(e))
                }
                _ => {}
            }
            fs::create_dir(&build).map_err(io_err("create index build", &build))?;
            for (ip, owner) in allocations()? {
                adopt(&build, store_dir, &owner, ip)?;
            }
            fs::rename(&build, &dir).map_err(io_err("rename index build", &dir))?;
        }
        Ok(Self { dir })
    }

    /// The entries of `owner` (normally none or one; more only after a crash). The
    /// caller checks which one the allocation file is.
    pub fn lookup(&self, owner: &Owner) -> Result<Vec<Entry>, IpamError> {
        let prefix = format!("{}.", key(owner));
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).map_err(io_err("read index", &self.dir))? {
            let e = e.map_err(io_err("read index", &self.dir))?;
            let name = e.file_name();
            let Some(ip) = name
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(|ip| ip.parse().ok())
            else {
                continue;
            };
            out.push(Entry { ip, ino: e.ino() });
        }
        Ok(out)
    }

    /// Writes a fresh entry of `owner` naming `ip` (replacing a dangling one) and
    /// returns its path, to be linked to the allocation file.
    pub fn write(&self, owner: &Owner, ip: Ipv4Addr) -> Result<PathBuf, IpamError> {
        let path = self.dir.join(entry_name(owner, ip));
        let create = || OpenOptions::new().write(true).create_new(true).open(&path);
        let mut f = match create() {
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                unlink(&path)?;
                create()
            }
            r => r,
        }
        .map_err(io_err("create index entry", &path))?;
        f.write_all(owner.to_file().as_bytes())
            .map_err(io_err("write index entry", &path))?;
        Ok(path)
    }

    /// Removes the entry of `owner` naming `ip` (after the allocation file is gone);
    /// missing is fine.
    pub fn remove(&self, owner: &Owner, ip: Ipv4Addr) -> Result<(), IpamError> {
        unlink(&self.dir.join(entry_name(owner, ip)))
    }
}
