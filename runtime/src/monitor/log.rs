//! The container log in the CRI format the kubelet reads (`kubectl logs`):
//! `<RFC3339Nano> <stream> <F|P> <line>`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Longest line emitted as one entry; longer lines are split with the `P` tag.
pub const MAX_LINE: usize = 16 * 1024;

/// Formats one CRI log entry (the line without its newline).
pub fn cri_line(ts: &str, stream: &str, partial: bool, line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len() + 48);
    out.extend_from_slice(ts.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(line);
    out.push(b'\n');
    out
}

/// Timestamp like containerd: RFC 3339 with nanoseconds, UTC.
pub fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Splits a stream into lines and writes them as CRI entries.
#[derive(Debug)]
pub struct StreamBuf {
    stream: &'static str,
    buf: Vec<u8>,
}

impl StreamBuf {
    /// A buffer for `stdout` or `stderr`.
    pub fn new(stream: &'static str) -> Self {
        Self { stream, buf: Vec::new() }
    }

    /// Adds data; returns the complete entries to write.
    pub fn push(&mut self, data: &[u8], ts: &str) -> Vec<u8> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            out.extend(cri_line(ts, self.stream, false, &line[..line.len() - 1]));
        }
        while self.buf.len() >= MAX_LINE {
            let chunk: Vec<u8> = self.buf.drain(..MAX_LINE).collect();
            out.extend(cri_line(ts, self.stream, true, &chunk));
        }
        out
    }

    /// Flushes an unterminated last line at EOF.
    pub fn finish(&mut self, ts: &str) -> Vec<u8> {
        if self.buf.is_empty() {
            return Vec::new();
        }
        let line = std::mem::take(&mut self.buf);
        cri_line(ts, self.stream, false, &line)
    }
}

/// Opens (creating parents) the log file for appending.
pub fn open_log(path: &Path) -> std::io::Result<File> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// Default size at which the container log is rotated (like the kubelet's
/// `containerLogMaxSize`).
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// Default number of log files kept, the live one included
/// (`containerLogMaxFiles`).
pub const DEFAULT_MAX_FILES: u32 = 5;

/// The CRI log file with size-based rotation: when a write would take the file
/// past `max_size`, `<path>` becomes `<path>.1` (older ones shift up to
/// `<path>.<max_files-1>`, the oldest is dropped) and a new `<path>` is started.
/// Entries are never split across files.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: u32,
}

impl LogWriter {
    /// Opens `path` for appending; `max_size` 0 disables rotation.
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> std::io::Result<Self> {
        let file = open_log(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self { path: path.to_path_buf(), file, size, max_size, max_files: max_files.max(1) })
    }

    /// Writes entries, rotating first if needed; errors are ignored (a full
    /// disk must not kill the monitor).
    pub fn write(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.max_size > 0 && self.size > 0 && self.size + data.len() as u64 > self.max_size {
            self.rotate();
        }
        if self.file.write_all(data).is_ok() {
            self.size += data.len() as u64;
        }
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) {
        if self.max_files <= 1 {
            let _ = self.file.set_len(0);
            self.size = 0;
            return;
        }
        let last = self.max_files - 1;
        let _ = std::fs::remove_file(self.rotated(last));
        for n in (1..last).rev() {
            let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
        }
        let _ = std::fs::rename(&self.path, self.rotated(1));
        if let Ok(f) = open_log(&self.path) {
            self.file = f;
            self.size = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_partials() {
        let mut b = StreamBuf::new("stdout");
        let ts = "2026-01-02T03:04:05.123456789Z";
        assert_eq!(b.push(b"hi\nthere", ts), b"2026-01-02T03:04:05.123456789Z stdout F hi\n".to_vec());
        assert_eq!(b.push(b" you\n", ts), format!("{ts} stdout F there you\n").into_bytes());
        assert!(b.push(b"tail", ts).is_empty());
        assert_eq!(b.finish(ts), format!("{ts} stdout F tail\n").into_bytes());
        let big = vec![b'x'; MAX_LINE + 1];
        let out = String::from_utf8(b.push(&big, ts)).unwrap();
        assert!(out.starts_with(&format!("{ts} stdout P xxx")));
    }

    #[test]
    fn rotation_by_size() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.log");
        let mut w = LogWriter::open(&p, 100, 3).unwrap();
        let line = vec![b'a'; 60];
        for _ in 0..5 {
            w.write(&line);
        }
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert_eq!(size(&p), 60);
        assert_eq!(size(&d.path().join("c.log.1")), 60);
        assert_eq!(size(&d.path().join("c.log.2")), 60);
        assert!(!d.path().join("c.log.3").exists());
    }
}
