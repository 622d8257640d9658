//! Container logs as the kubelet serves them (`GET /containerLogs/...`, what
//! `kubectl logs` reaches through the API server): the CRI log files the runtime's
//! monitor writes (`<root-dir>/pods/<uid>/logs/<container>/<restartCount>.log`, lines
//! `<RFC3339Nano> stdout|stderr F|P <text>`, rotated to `<file>.1`, `<file>.2`, ...),
//! turned back into the container's output with kubelet's options: tailLines,
//! sinceSeconds/sinceTime, timestamps, limitBytes, previous and follow.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};

/// Why logs could not be served; the messages are the kubelet's.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// A query parameter is malformed or out of range.
    #[error("{0}")]
    BadOption(String),
    /// `previous=true` and the container has not restarted.
    #[error("previous terminated container {container:?} in pod {pod:?} not found")]
    NoPrevious {
        /// Container name.
        container: String,
        /// Pod name.
        pod: String,
    },
    /// The container has not written a log yet (not started).
    #[error("container {container:?} in pod {pod:?} is waiting to start: {reason}")]
    Waiting {
        /// Container name.
        container: String,
        /// Pod name.
        pod: String,
        /// The waiting reason (ContainerCreating, ...).
        reason: String,
    },
    /// A log file could not be read.
    #[error("failed to read log file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// IO error.
        source: std::io::Error,
    },
}

/// kubelet's `PodLogOptions`, resolved (sinceSeconds turned into a time).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Stream new lines until the container stops.
    pub follow: bool,
    /// Serve the previous run of the container.
    pub previous: bool,
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// Prefix each line with its RFC3339Nano timestamp.
    pub timestamps: bool,
    /// Only lines logged at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Stop after this many bytes of output.
    pub limit_bytes: Option<u64>,
}

fn parse_bool(key: &str, v: &str) -> Result<bool, LogsError> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" | "" => Ok(false),
        _ => Err(LogsError::BadOption(format!("{key}: invalid boolean {v:?}"))),
    }
}

fn parse_min(key: &str, v: &str, min: i64) -> Result<i64, LogsError> {
    let n: i64 = v.parse().map_err(|_| LogsError::BadOption(format!("{key}: invalid integer {v:?}")))?;
    if n < min {
        let what = if min == 0 { "greater than or equal to 0" } else { "greater than 0" };
        return Err(LogsError::BadOption(format!("{key}: Invalid value: {n}: must be {what}")));
    }
    Ok(n)
}

impl LogOptions {
    /// Reads the kubelet's query parameters; `now` anchors `sinceSeconds`.
    pub fn from_query(q: &HashMap<String, String>, now: DateTime<Utc>) -> Result<LogOptions, LogsError> {
        let get = |k: &str| q.get(k).map(String::as_str);
        let mut o = LogOptions {
            follow: get("follow").map(|v| parse_bool("follow", v)).transpose()?.unwrap_or(false),
            previous: get("previous").map(|v| parse_bool("previous", v)).transpose()?.unwrap_or(false),
            timestamps: get("timestamps").map(|v| parse_bool("timestamps", v)).transpose()?.unwrap_or(false),
            ..Default::default()
        };
        if let Some(v) = get("tailLines") {
            o.tail_lines = Some(parse_min("tailLines", v, 0)? as usize);
        }
        if let Some(v) = get("limitBytes") {
            o.limit_bytes = Some(parse_min("limitBytes", v, 1)? as u64);
        }
        match (get("sinceSeconds"), get("sinceTime")) {
            (Some(_), Some(_)) => {
                return Err(LogsError::BadOption("at most one of `sinceTime` or `sinceSeconds` may be specified".into()))
            }
            (Some(v), None) => o.since = Some(now - chrono::Duration::seconds(parse_min("sinceSeconds", v, 1)?)),
            (None, Some(v)) => {
                let t = DateTime::parse_from_rfc3339(v)
                    .map_err(|e| LogsError::BadOption(format!("sinceTime: invalid time {v:?}: {e}")))?;
                o.since = Some(t.with_timezone(&Utc));
            }
            (None, None) => {}
        }
        Ok(o)
    }
}

/// One CRI log file entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// When the runtime read it.
    pub time: DateTime<Utc>,
    /// `stdout` or `stderr`.
    pub stream: &'a str,
    /// `P`: the line continues in the next entry of the same stream.
    pub partial: bool,
    /// The text, without newline.
    pub content: &'a [u8],
}

/// Parses `<RFC3339Nano> <stream> <F|P> <text>` (one file line, without newline).
pub fn parse_entry(line: &[u8]) -> Option<Entry<'_>> {
    let mut fields = line.splitn(4, |&b| b == b' ');
    let ts = std::str::from_utf8(fields.next()?).ok()?;
    let stream = std::str::from_utf8(fields.next()?).ok()?;
    let tag = fields.next()?;
    let content = fields.next().unwrap_or(b"");
    let time = DateTime::parse_from_rfc3339(ts).ok()?.with_timezone(&Utc);
    let partial = match tag {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(Entry { time, stream, partial, content })
}

/// A whole log line, partial entries joined, with the time of its first part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Time of the line's first entry.
    pub time: DateTime<Utc>,
    /// The text, newline included.
    pub text: Vec<u8>,
}

/// Splits file bytes into entries and joins `P` entries per stream into lines.
/// Bytes after the last newline are kept for the next `feed` (a write in progress).
#[derive(Debug, Default)]
pub struct LineReader {
    carry: Vec<u8>,
    pending: Vec<(String, LogLine)>,
}

impl LineReader {
    /// Adds file bytes; appends the completed lines to `out`. Malformed lines are skipped.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<LogLine>) {
        self.carry.extend_from_slice(data);
        let Some(end) = self.carry.iter().rposition(|&b| b == b'\n') else { return };
        let complete: Vec<u8> = self.carry.drain(..=end).collect();
        for raw in complete[..complete.len() - 1].split(|&b| b == b'\n') {
            match parse_entry(raw) {
                Some(entry) => self.push(entry, out),
                None => tracing::debug!(line = %String::from_utf8_lossy(raw), "skipping malformed CRI log line"),
            }
        }
    }

    fn push(&mut self, e: Entry<'_>, out: &mut Vec<LogLine>) {
        let at = self.pending.iter().position(|(s, _)| s == e.stream);
        let mut line = match at {
            Some(i) => self.pending.swap_remove(i).1,
            None => LogLine { time: e.time, text: Vec::new() },
        };
        line.text.extend_from_slice(e.content);
        if e.partial {
            self.pending.push((e.stream.to_string(), line));
        } else {
            line.text.push(b'\n');
            out.push(line);
        }
    }
}

/// Renders lines with `since`, `timestamps` and `limitBytes` applied.
#[derive(Debug, Clone)]
pub struct Renderer {
    since: Option<DateTime<Utc>>,
    timestamps: bool,
    remaining: Option<u64>,
}

impl Renderer {
    /// A renderer for these options.
    pub fn new(o: &LogOptions) -> Renderer {
        Renderer { since: o.since, timestamps: o.timestamps, remaining: o.limit_bytes }
    }

    /// False for a line older than `since`.
    pub fn wanted(&self, line: &LogLine) -> bool {
        self.since.is_none_or(|s| line.time >= s)
    }

    /// True once `limitBytes` have been written.
    pub fn exhausted(&self) -> bool {
        self.remaining == Some(0)
    }

    /// Appends the line (if wanted and within the limit) to `out`.
    pub fn render(&mut self, line: &LogLine, out: &mut Vec<u8>) {
        if !self.wanted(line) || self.exhausted() {
            return;
        }
        let mut bytes = Vec::with_capacity(line.text.len() + 32);
        if self.timestamps {
            bytes.extend_from_slice(line.time.to_rfc3339_opts(SecondsFormat::Nanos, true).as_bytes());
            bytes.push(b' ');
        }
        bytes.extend_from_slice(&line.text);
        if let Some(left) = self.remaining.as_mut() {
            let n = bytes.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
            bytes.truncate(n);
            *left -= n as u64;
        }
        out.extend_from_slice(&bytes);
    }
}

/// `<root-dir>/pods/<uid>/logs/<container>`: one container's log files.
pub fn container_log_dir(root_dir: &Path, uid: &str, container: &str) -> PathBuf {
    root_dir.join("pods").join(uid).join("logs").join(container)
}

/// The runs (restart counts) with a `<n>.log` in `dir`, oldest first.
pub fn runs(dir: &Path) -> Vec<u32> {
    let mut runs: Vec<u32> = std::fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok()).collect()
        })
        .unwrap_or_default();
    runs.sort_unstable();
    runs
}

/// The run to serve: the latest, or with `previous` the one before it.
pub fn select_run(runs: &[u32], previous: bool) -> Option<u32> {
    let skip = usize::from(previous);
    runs.iter().rev().nth(skip).copied()
}

/// The files of run `n`, oldest first: `<n>.log.K` ... `<n>.log.1`, `<n>.log`.
pub fn run_files(dir: &Path, n: u32) -> Vec<PathBuf> {
    let live = dir.join(format!("{n}.log"));
    let mut rotated: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name();
                    let k = name.to_str()?.strip_prefix(&format!("{n}.log."))?.parse().ok()?;
                    Some((k, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    rotated.into_iter().map(|(_, p)| p).chain([live]).collect()
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> LogsError + '_ {
    move |source| LogsError::Read { path: path.to_path_buf(), source }
}

/// Reads a run's existing lines with tail/since/timestamps/limit applied; returns the
/// output and a [`Follower`] positioned at the end of the live file.
pub fn read_run(files: &[PathBuf], opts: &LogOptions) -> Result<(Vec<u8>, Follower), LogsError> {
    let mut reader = LineReader::default();
    let renderer = Renderer::new(opts);
    let mut kept: VecDeque<LogLine> = VecDeque::new();
    let mut live = None;
    for (i, path) in files.iter().enumerate() {
        let mut file = match File::open(path) {
            Ok(f) => f,
            // A rotation raced with us: the file moved on; skip it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && i + 1 < files.len() => continue,
            Err(e) => return Err(read_err(path)(e)),
        };
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(read_err(path))?;
        let mut lines = Vec::new();
        reader.feed(&data, &mut lines);
        for line in lines.into_iter().filter(|l| renderer.wanted(l)) {
            kept.push_back(line);
            if opts.tail_lines.is_some_and(|n| kept.len() > n) {
                kept.pop_front();
            }
        }
        live = Some(file);
    }
    let file = live.ok_or_else(|| read_err(files.last().map_or(Path::new(""), |p| p))(std::io::ErrorKind::NotFound.into()))?;
    let path = files.last().cloned().unwrap_or_default();
    let mut follower = Follower { path, file, reader, renderer };
    let mut out = Vec::new();
    for line in &kept {
        follower.renderer.render(line, &mut out);
    }
    Ok((out, follower))
}

/// Reads what a live log file gains, following it into a new file when the runtime
/// rotates it (`<n>.log` renamed to `<n>.log.1`, a new `<n>.log` started).
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: File,
    reader: LineReader,
    renderer: Renderer,
}

impl Follower {
    /// True once `limitBytes` have been written: nothing more will come.
    pub fn exhausted(&self) -> bool {
        self.renderer.exhausted()
    }

    /// The rendered output of the lines written since the last call (maybe empty).
    pub fn poll(&mut self) -> Result<Vec<u8>, LogsError> {
        let mut out = self.drain()?;
        if out.is_empty() && self.rotated() {
            // The old file gets no more writes after the rename: finish it, switch.
            out = self.drain()?;
            self.file = File::open(&self.path).map_err(read_err(&self.path))?;
            out.extend(self.drain()?);
        }
        Ok(out)
    }

    fn drain(&mut self) -> Result<Vec<u8>, LogsError> {
        let mut data = Vec::new();
        self.file.read_to_end(&mut data).map_err(read_err(&self.path))?;
        let mut lines = Vec::new();
        self.reader.feed(&data, &mut lines);
        let mut out = Vec::new();
        for line in &lines {
            self.renderer.render(line, &mut out);
        }
        Ok(out)
    }

    fn rotated(&self) -> bool {
        let (Ok(now), Ok(ours)) = (std::fs::metadata(&self.path), self.file.metadata()) else { return false };
        now.ino() != ours.ino() || now.dev() != ours.dev()
    }
}

#[cfg(test)]
#[path = "logs_tests.rs"]
mod tests;
