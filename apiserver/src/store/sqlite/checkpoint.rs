//! The WAL checkpointer of the SQLite store: it keeps the write-ahead log bounded,
//! the job etcd's periodic snapshots (`--snapshot-count`) do for etcd's own WAL.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT that crosses
//! `wal_autocheckpoint` pages: it copies the log into the database file and fsyncs
//! it on the writer's path, adding two or more fsyncs to that one write (and to every
//! watch event waiting on it). The store turns it off on the writer's connection; this
//! thread checkpoints from its own connection instead:
//!
//! - PASSIVE once the committer has appended about [`WalLimits::passive_pages`] pages
//!   since the last checkpoint. It never blocks the writer. When it has copied the
//!   whole log, the writer's next commit starts the log over at its beginning, so the
//!   file stops growing.
//! - RESTART when the log has reached [`WalLimits::restart_frames`] anyway (a write
//!   stream so steady that a passive checkpoint never catches up): it takes the
//!   committer's gate between two transactions, copies the rest and makes the next
//!   commit start over. Writers wait for it, so the log stays bounded.
//!
//! `journal_size_limit` truncates a log that a burst made larger than
//! [`WalLimits::size_limit_bytes`] when it starts over. Durability is unchanged: every
//! commit is still fsync'd to the log before it is acknowledged, and a checkpoint
//! (synchronous=FULL) fsyncs the database file before the log is reused.

use std::path::Path;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use rusqlite::Connection;

use super::sql;
use crate::store::StoreError;

/// When the checkpointer runs and how large the log may get.
#[derive(Debug, Clone, Copy)]
pub(super) struct WalLimits {
    /// Pages appended since the last checkpoint that start a PASSIVE one.
    pub passive_pages: u64,
    /// Frames in the log that make it a RESTART checkpoint.
    pub restart_frames: u64,
    /// `journal_size_limit`: the log is truncated to this when it starts over.
    pub size_limit_bytes: u64,
}

impl Default for WalLimits {
    fn default() -> Self {
        // About 8 MiB of log between checkpoints; a hard bound of 64 MiB.
        WalLimits { passive_pages: 2000, restart_frames: 16_384, size_limit_bytes: 64 << 20 }
    }
}

/// The running checkpointer: the committer sends it the pages each commit appended.
pub(super) struct Handle {
    pub pages: Sender<u64>,
    pub thread: JoinHandle<()>,
}

/// Opens a second connection to `path` and starts the checkpointer thread. It stops
/// when every sender of the returned channel is gone (the committer has exited).
/// `gate` is the committer's: held, no transaction is open.
pub(super) fn spawn(path: &Path, display: &str, limits: WalLimits, gate: Arc<Mutex<()>>) -> Result<Handle, StoreError> {
    let conn = Connection::open(path).map_err(|e| sql(display, e))?;
    // A checkpoint fsyncs the database file before the log can be reused only when
    // synchronous is on; FULL as on the writer.
    conn.pragma_update(None, "synchronous", "FULL").map_err(|e| sql(display, e))?;
    conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(|e| sql(display, e))?;
    conn.pragma_update(None, "journal_size_limit", limits.size_limit_bytes as i64).map_err(|e| sql(display, e))?;
    let (pages, rx) = std::sync::mpsc::channel();
    let display = display.to_string();
    let thread = std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || run(&conn, &display, limits, &rx, &gate))
        .map_err(|source| StoreError::Io { path: "sqlite checkpointer thread".into(), source })?;
    Ok(Handle { pages, thread })
}

/// Checkpoints whenever enough pages were appended, until the committer is gone.
fn run(conn: &Connection, path: &str, limits: WalLimits, rx: &Receiver<u64>, gate: &Mutex<()>) {
    let mut appended = 0u64;
    while let Ok(pages) = rx.recv() {
        appended += pages;
        while let Ok(more) = rx.try_recv() {
            appended += more;
        }
        if appended < limits.passive_pages {
            continue;
        }
        appended = 0;
        match checkpoint(conn, "PASSIVE") {
            Ok((frames, _)) if frames >= limits.restart_frames => {
                let _no_transaction = gate.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(e) = checkpoint(conn, "RESTART") {
                    tracing::warn!(path, error = %e, "sqlite RESTART checkpoint failed; the log keeps growing until the next one");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(path, error = %e, "sqlite checkpoint failed"),
        }
    }
    tracing::debug!(path, "sqlite checkpointer stopped");
}

/// Runs one checkpoint; returns (frames in the log, frames checkpointed).
fn checkpoint(conn: &Connection, mode: &str) -> Result<(u64, u64), rusqlite::Error> {
    let started = Instant::now();
    let (busy, frames, done): (i64, i64, i64) =
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    tracing::trace!(
        target: "minion_apiserver::sqlite",
        mode,
        busy,
        frames,
        checkpointed = done,
        took_us = started.elapsed().as_micros() as u64,
        "wal checkpoint"
    );
    Ok((frames.max(0) as u64, done.max(0) as u64))
}
