//! The committer thread of the SQLite store: takes the queued writes in batches,
//! checks them (compare-and-swap), commits each batch in one fsync'd transaction,
//! then publishes it to the read cache and the watch history and answers the writers.

use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, TransactionBehavior};
use serde_json::Value;

use super::{lock, sql, Accepted, Action, Op, Queue, State, MAX_BATCH};
use crate::store::{object_revision, set_revision, Event, EventType, Revision, StoreError};

/// The thread that owns the connection and commits batches.
pub(super) struct Committer {
    conn: Connection,
    path: String,
    state: Arc<Mutex<State>>,
    queue: Arc<Queue>,
    /// Told how many WAL pages each commit appended (None: no checkpointer, in memory).
    wal_pages: Option<Sender<u64>>,
    /// Held for each transaction; a RESTART checkpoint holds it to run between two.
    gate: Arc<Mutex<()>>,
}

impl Committer {
    /// A committer over `conn` publishing to `state`.
    pub(super) fn new(
        conn: Connection,
        path: String,
        state: Arc<Mutex<State>>,
        queue: Arc<Queue>,
        wal_pages: Option<Sender<u64>>,
        gate: Arc<Mutex<()>>,
    ) -> Self {
        Committer { conn, path, state, queue, wal_pages, gate }
    }

    /// Commits batches until the store is closed and the queue is empty.
    pub(super) fn run(mut self) {
        loop {
            let ops = {
                let mut pending = self.queue.pending.lock().unwrap_or_else(|p| p.into_inner());
                while pending.ops.is_empty() && !pending.closed {
                    pending = self.queue.ready.wait(pending).unwrap_or_else(|p| p.into_inner());
                }
                if pending.ops.is_empty() {
                    return;
                }
                let n = pending.ops.len().min(MAX_BATCH);
                pending.ops.drain(..n).collect::<Vec<_>>()
            };
            self.commit_batch(ops);
        }
    }

    /// Checks, persists, publishes and answers one batch.
    ///
    /// Emits a `trace` event per batch (target `minion_apiserver::sqlite`) with the time
    /// split into queueing, SQL work, the COMMIT (WAL write + fsync) and publishing,
    /// and the wall-clock instant the batch became durable.
    fn commit_batch(&mut self, ops: Vec<Op>) {
        let started = Instant::now();
        let queued = ops.iter().map(|op| started.saturating_duration_since(op.queued)).max().unwrap_or_default();
        let accepted = self.accept(ops);
        if accepted.is_empty() {
            return;
        }
        let (Some(first), Some(last)) = (accepted.first().map(|a| a.rev), accepted.last().map(|a| a.rev)) else { return };
        let pages = wal_pages(&accepted);
        let checked_us = started.elapsed().as_micros() as u64;
        let timing = match self.persist(&accepted, last) {
            Ok(timing) => timing,
            Err(err) => {
                tracing::error!(error = %err, "sqlite commit failed");
                for a in accepted {
                    let _ = a.reply.send(Err(StoreError::Task(format!("commit failed: {err}"))));
                }
                return;
            }
        };
        let committed_unix_ns = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        let publish = Instant::now();
        let ops = accepted.len();
        let mut replies = Vec::with_capacity(accepted.len());
        {
            let mut state = lock(&self.state);
            state.rev = last;
            for a in accepted {
                match a.kind {
                    EventType::Deleted => state.cache.remove(&a.key),
                    _ => state.cache.insert(a.key.clone(), Arc::new(a.object.clone())),
                };
                let event = Event::new(a.rev, a.kind, a.key, a.object.clone(), a.prev);
                if let Some(text) = a.text {
                    // Watchers send the text already written to disk: no second serialization.
                    let _ = event.encoded.set(bytes::Bytes::from(text));
                }
                state.history.push(event);
                replies.push((a.reply, a.object));
            }
        }
        for (reply, object) in replies {
            let _ = reply.send(Ok(object));
        }
        let publish_us = publish.elapsed().as_micros() as u64;
        if let Some(tx) = &self.wal_pages {
            let _ = tx.send(pages);
        }
        tracing::trace!(
            target: "minion_apiserver::sqlite",
            ops,
            first_rev = first,
            last_rev = last,
            queued_us = queued.as_micros() as u64,
            sql_us = checked_us + timing.sql_us,
            commit_us = timing.commit_us,
            publish_us,
            committed_unix_ns,
            "batch committed"
        );
    }

    /// Checks each operation against the committed state and the batch so far;
    /// refused ones are answered at once.
    fn accept(&self, ops: Vec<Op>) -> Vec<Accepted> {
        let state = lock(&self.state);
        let mut overlay: HashMap<String, Option<Value>> = HashMap::new();
        let mut rev = state.rev;
        let mut accepted = Vec::with_capacity(ops.len());
        for op in ops {
            let current: Option<Value> = match overlay.get(&op.key) {
                Some(v) => v.clone(),
                None => state.cache.get(&op.key).map(|v| (**v).clone()),
            };
            let outcome = check(&op.key, op.action, current);
            match outcome {
                Ok((kind, mut object, prev)) => {
                    rev += 1;
                    set_revision(&mut object, rev);
                    let stored = (kind != EventType::Deleted).then(|| object.clone());
                    overlay.insert(op.key.clone(), stored);
                    accepted.push(Accepted { key: op.key, kind, object, text: None, prev, rev, reply: op.reply });
                }
                Err(e) => {
                    let _ = op.reply.send(Err(e));
                }
            }
        }
        drop(state);
        for a in &mut accepted {
            if a.kind != EventType::Deleted {
                a.text = Some(a.object.to_string());
            }
        }
        accepted
    }

    /// Writes the batch in one transaction and commits it (fsync); returns how long
    /// the SQL work (with any wait for a RESTART checkpoint) and the COMMIT took.
    fn persist(&mut self, batch: &[Accepted], last: Revision) -> Result<Timing, StoreError> {
        let path = self.path.clone();
        let sql_started = Instant::now();
        let gate = self.gate.clone();
        let _between_checkpoints = gate.lock().unwrap_or_else(|p| p.into_inner());
        // IMMEDIATE: take the write lock first, waiting (busy timeout) while a RESTART
        // checkpoint holds it, rather than failing on the upgrade from a read.
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| sql(&path, e))?;
        {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO objects (key, value, rev) VALUES (?1, ?2, ?3)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value, rev = excluded.rev",
                )
                .map_err(|e| sql(&path, e))?;
            let mut delete = tx.prepare_cached("DELETE FROM objects WHERE key = ?1").map_err(|e| sql(&path, e))?;
            for a in batch {
                match &a.text {
                    Some(text) => upsert.execute(params![a.key, text, a.rev as i64]),
                    None => delete.execute(params![a.key]),
                }
                .map_err(|e| sql(&path, e))?;
            }
            tx.execute(
                "INSERT INTO meta (name, value) VALUES ('revision', ?1)
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                params![last as i64],
            )
            .map_err(|e| sql(&path, e))?;
        }
        let commit = Instant::now();
        let sql_us = commit.duration_since(sql_started).as_micros() as u64;
        tx.commit().map_err(|e| sql(&path, e))?;
        Ok(Timing { sql_us, commit_us: commit.elapsed().as_micros() as u64 })
    }
}

/// How long the parts of one commit took, microseconds.
struct Timing {
    sql_us: u64,
    commit_us: u64,
}

/// About how many WAL frames (pages) a batch appends: each row its leaf page plus
/// the interior and index pages above it (measured: about 4 a row in a table of 10k
/// pods), overflow pages for large objects, and the meta row's page.
fn wal_pages(batch: &[Accepted]) -> u64 {
    let bytes: usize = batch.iter().map(|a| a.key.len() + a.text.as_ref().map_or(0, String::len)).sum();
    (bytes / 4096) as u64 + 4 * batch.len() as u64 + 1
}

/// Applies compare-and-swap rules: returns (event kind, new object, previous object).
fn check(key: &str, action: Action, current: Option<Value>) -> Result<(EventType, Value, Option<Value>), StoreError> {
    let guard = |current: Option<Value>, expected: Option<Revision>| -> Result<Value, StoreError> {
        let current = current.ok_or_else(|| StoreError::NotFound { key: key.into() })?;
        if let Some(expected) = expected {
            let actual = object_revision(&current);
            if actual != expected {
                return Err(StoreError::Conflict { key: key.into(), expected, actual });
            }
        }
        Ok(current)
    };
    match action {
        Action::Create(object) => match current {
            Some(_) => Err(StoreError::AlreadyExists { key: key.into() }),
            None => Ok((EventType::Added, object, None)),
        },
        Action::Update(object, expected) => {
            let prev = guard(current, expected)?;
            Ok((EventType::Modified, object, Some(prev)))
        }
        Action::Delete(expected) => {
            let prev = guard(current, expected)?;
            Ok((EventType::Deleted, prev.clone(), Some(prev)))
        }
    }
}

