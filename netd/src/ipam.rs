//! Pod IP address management, host-local style: the node's pod CIDR is handed out one
//! address per pod (per container id + interface), round-robin, and every allocation is a
//! file `<dataDir>/<network>/<ip>` containing `<containerid>\n<ifname>`, so that
//! `ls /var/lib/cni/networks/minion` shows which pod holds which IP.
//! `last_reserved_ip.0` remembers where the round-robin stopped; a `lock` file with
//! flock(2) serialises concurrent plugin invocations. The `owners/` index finds an
//! owner's address without reading every allocation file ([`index`]).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::config::IpamConf;

#[path = "ipam_index.rs"]
mod index;

use index::OwnerIndex;

/// Name of the file remembering the last handed-out address (host-local's name).
pub const LAST_RESERVED_FILE: &str = "last_reserved_ip.0";
/// Name of the lock file.
pub const LOCK_FILE: &str = "lock";

/// Errors of the allocation store.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// Every address of the range is taken.
    #[error("no IP addresses available in range set: {start}-{end}")]
    Exhausted {
        /// First address of the range.
        start: Ipv4Addr,
        /// Last address of the range.
        end: Ipv4Addr,
    },
    /// A file or directory of the store could not be used.
    #[error("ipam store {path}: {action}: {source}")]
    Io {
        /// What we were doing.
        action: &'static str,
        /// The path touched.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// flock(2) on the lock file failed.
    #[error("ipam store {path}: flock: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        source: nix::errno::Errno,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IpamError {
    let path = path.to_path_buf();
    move |source| IpamError::Io {
        action,
        path,
        source,
    }
}

/// The set of addresses a pod may get: `[start, end]` minus network, broadcast and gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    /// First candidate.
    pub start: Ipv4Addr,
    /// Last candidate.
    pub end: Ipv4Addr,
    /// Never handed out (it is the bridge's address).
    pub gateway: Ipv4Addr,
    /// Never handed out.
    pub network: Ipv4Addr,
    /// Never handed out.
    pub broadcast: Ipv4Addr,
}

impl AddressRange {
    /// The range described by an ipam config.
    pub fn from_conf(conf: &IpamConf) -> Self {
        Self {
            start: conf.range_start,
            end: conf.range_end,
            gateway: conf.gateway,
            network: conf.subnet.network(),
            broadcast: conf.subnet.broadcast(),
        }
    }

    fn contains(&self, a: Ipv4Addr) -> bool {
        (self.start..=self.end).contains(&a)
    }

    fn usable(&self, a: Ipv4Addr) -> bool {
        a != self.gateway && a != self.network && a != self.broadcast
    }

    /// Candidates in round-robin order: the address after `last` first, wrapping
    /// around to `start`, each usable address once. Starts at `start` when `last` is
    /// unknown or outside the range.
    pub fn candidates(&self, last: Option<Ipv4Addr>) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let (s, e) = (u32::from(self.start), u32::from(self.end));
        let begin = match last {
            Some(l) if self.contains(l) && u32::from(l) < e => u32::from(l) + 1,
            _ => s,
        };
        let size = e - s + 1;
        (0..size)
            .map(move |i| Ipv4Addr::from(s + (begin - s + i) % size))
            .filter(move |a| self.usable(*a))
    }
}

/// Who holds an address: the pod sandbox (container id) and its interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_IFNAME.
    pub ifname: String,
}

impl Owner {
    /// An owner from its parts.
    pub fn new(container_id: &str, ifname: &str) -> Self {
        Self {
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
        }
    }

    fn to_file(&self) -> String {
        format!("{}\n{}", self.container_id, self.ifname)
    }

    fn from_file(contents: &str) -> Self {
        let mut lines = contents.lines().map(str::trim);
        let container_id = lines.next().unwrap_or_default().to_string();
        let ifname = lines.next().unwrap_or_default().to_string();
        Self {
            container_id,
            ifname,
        }
    }
}

/// The allocation directory of one network, opened with its lock held.
#[derive(Debug)]
pub struct IpamStore {
    dir: PathBuf,
    index: OwnerIndex,
    _lock: Flock<File>,
}

impl IpamStore {
    /// Creates `dir` if needed and takes the exclusive lock (blocking); builds the
    /// owner index when the store has none yet.
    pub fn open(dir: &Path) -> Result<Self, IpamError> {
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open lock file", &lock_path))?;
        let lock =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, source)| IpamError::Lock {
                path: lock_path.clone(),
                source,
            })?;
        let index = OwnerIndex::open(dir, || list_dir(dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            index,
            _lock: lock,
        })
    }

    /// Every allocation in the store.
    pub fn list(&self) -> Result<Vec<(Ipv4Addr, Owner)>, IpamError> {
        list_dir(&self.dir)
    }

    /// Age of the allocation file of `ip` (None when unknown).
    pub fn age(&self, ip: Ipv4Addr) -> Option<std::time::Duration> {
        let m = fs::metadata(self.dir.join(ip.to_string()))
            .ok()?
            .modified()
            .ok()?;
        m.elapsed().ok()
    }

    /// The address held by `owner`, if any: the one an index entry of its names,
    /// while the allocation file there is that entry's inode. Also returns the
    /// owner's dangling entries.
    fn lookup(&self, owner: &Owner) -> Result<(Option<Ipv4Addr>, Vec<Ipv4Addr>), IpamError> {
        let mut held = None;
        let mut dangling = Vec::new();
        for e in self.index.lookup(owner)? {
            let path = self.dir.join(e.ip.to_string());
            match fs::symlink_metadata(&path) {
                Ok(m) if m.ino() == e.ino && held.is_none() => held = Some(e.ip),
                Ok(_) => dangling.push(e.ip),
                Err(err) if err.kind() == ErrorKind::NotFound => dangling.push(e.ip),
                Err(err) => return Err(io_err("stat allocation", &path)(err)),
            }
        }
        Ok((held, dangling))
    }

    /// The address held by `owner`, if any.
    pub fn find(&self, owner: &Owner) -> Result<Option<Ipv4Addr>, IpamError> {
        Ok(self.lookup(owner)?.0)
    }

    /// The round-robin hint (None when missing or unreadable) and the length of its
    /// file (0 when missing).
    fn last_reserved(&self) -> (Option<Ipv4Addr>, usize) {
        match fs::read(self.dir.join(LAST_RESERVED_FILE)) {
            Ok(b) => (String::from_utf8_lossy(&b).trim().parse().ok(), b.len()),
            Err(_) => (None, 0),
        }
    }

    /// Gives `owner` an address in `range`: the one it already holds, else the next
    /// free one after the last reserved (round-robin). The owner's index entry is
    /// written naming a free address, then hard-linked to the allocation file `<ip>`:
    /// the link fails when the address is taken (no two owners get one address).
    pub fn allocate(&self, range: &AddressRange, owner: &Owner) -> Result<Ipv4Addr, IpamError> {
        let (held, dangling) = self.lookup(owner)?;
        if let Some(ip) = held {
            return Ok(ip);
        }
        for ip in dangling {
            self.index.remove(owner, ip)?;
        }
        let (last, old_len) = self.last_reserved();
        for ip in range.candidates(last) {
            let path = self.dir.join(ip.to_string());
            // Taken (the lock is held, so this holds until the link below).
            if fs::symlink_metadata(&path).is_ok() {
                continue;
            }
            let entry = self.index.write(owner, ip)?;
            match fs::hard_link(&entry, &path) {
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    self.index.remove(owner, ip)?;
                    continue;
                }
                Ok(()) => {
                    let hint = self.dir.join(LAST_RESERVED_FILE);
                    write_hint(&hint, &ip.to_string(), old_len).map_err(io_err("write", &hint))?;
                    return Ok(ip);
                }
                Err(e) => return Err(io_err("create allocation", &path)(e)),
            }
        }
        Err(IpamError::Exhausted {
            start: range.start,
            end: range.end,
        })
    }

    /// Releases the address held by `owner`; returns it (empty when none: DEL is
    /// idempotent). Dangling index entries of `owner` are removed too.
    pub fn release(&self, owner: &Owner) -> Result<Vec<Ipv4Addr>, IpamError> {
        let (held, dangling) = self.lookup(owner)?;
        if let Some(ip) = held {
            self.remove(ip, owner)?;
        }
        for ip in dangling {
            self.index.remove(owner, ip)?;
        }
        Ok(held.into_iter().collect())
    }

    /// Removes the allocation file of `ip`, held by `owner` (missing is fine), then
    /// the owner's index entry naming `ip`.
    pub fn remove(&self, ip: Ipv4Addr, owner: &Owner) -> Result<(), IpamError> {
        let path = self.dir.join(ip.to_string());
        match fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(io_err("remove allocation", &path)(e))
            }
            _ => {}
        }
        self.index.remove(owner, ip)
    }
}

/// Every allocation file in `dir`: files named by an address, with their owners.
fn list_dir(dir: &Path) -> Result<Vec<(Ipv4Addr, Owner)>, IpamError> {
    let entries = fs::read_dir(dir).map_err(io_err("read directory", dir))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("read directory", dir))?;
        let Some(ip) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        let path = entry.path();
        match read_small(&path) {
            Ok(s) => out.push((ip, Owner::from_file(&s))),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("read allocation", &path)(e)),
        }
    }
    out.sort_by_key(|(ip, _)| *ip);
    Ok(out)
}

/// Reads a small file with one open, one read and one close (allocation files and
/// the hint hold a few dozen bytes; `read_to_string` adds a stat and a second read).
fn read_small(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 256];
    let n = f.read(&mut buf)?;
    buf.truncate(n);
    if n == 256 {
        f.read_to_end(&mut buf)?;
    }
    String::from_utf8(buf).map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))
}

/// Writes the round-robin hint (only read under the lock) in place over the old one
/// of `old_len` bytes, shortening the file only when the new text is shorter: no
/// truncate to zero, which on ext4 frees the block and forces writeback at close
/// (auto_da_alloc), about a millisecond per ADD. Not fsynced: a torn hint just moves
/// where the round-robin scan starts.
fn write_hint(path: &Path, text: &str, old_len: usize) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    if text.len() < old_len {
        f.set_len(text.len() as u64)?;
    }
    Ok(())
}

/// Writes `data` to `path` through a temporary file and rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), IpamError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err("write", path)(e)
    })
}

#[cfg(test)]
#[path = "ipam_tests.rs"]
mod tests;
