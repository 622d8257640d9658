//! Image garbage collection, as the kubelet's image GC manager does it: when the
//! image filesystem's usage reaches the high threshold (default 85%), remove the
//! least recently used images that no container uses, until usage is at or below
//! the low threshold (default 80%). "Used" is when a container was last made from
//! the image (`image inspect`) or when it was pulled/imported.

use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;

use super::name::normalize_image_name;
use super::{Error, ImageStore};

/// Usage of a filesystem, in percent of its size.
pub fn fs_usage_percent(path: &Path) -> Result<f64, Error> {
    let st = nix::sys::statvfs::statvfs(path)
        .map_err(|e| Error::Io { op: "statvfs", path: path.to_path_buf(), source: std::io::Error::from(e) })?;
    let total = st.blocks() as f64;
    if total == 0.0 {
        return Ok(0.0);
    }
    Ok(100.0 * (total - st.blocks_available() as f64) / total)
}

/// What one GC run did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GcReport {
    #[serde(rename = "usagePercentBefore")]
    pub before: f64,
    #[serde(rename = "usagePercentAfter")]
    pub after: f64,
    pub removed: Vec<String>,
}

/// Images in the order they would be collected: oldest use first, kept ones left out.
pub fn candidates(mut images: Vec<(String, SystemTime)>, keep: &[String]) -> Vec<String> {
    let keep: Vec<String> = keep.iter().filter_map(|k| normalize_image_name(k).ok()).collect();
    images.retain(|(n, _)| !keep.contains(n));
    images.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    images.into_iter().map(|(n, _)| n).collect()
}

/// Runs GC with `usage` measuring the image filesystem (injected for tests).
pub fn collect(
    store: &ImageStore,
    keep: &[String],
    high: f64,
    low: f64,
    usage: &dyn Fn() -> Result<f64, Error>,
) -> Result<GcReport, Error> {
    let before = usage()?;
    let mut report = GcReport { before, after: before, removed: Vec::new() };
    if before < high {
        return Ok(report);
    }
    let order = candidates(store.last_used()?, keep);
    for name in order {
        if report.after <= low {
            break;
        }
        store.remove(&name)?;
        tracing::info!(image = %name, "image garbage collected");
        report.removed.push(name);
        report.after = usage()?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::time::Duration;

    #[test]
    fn oldest_unused_first() {
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let imgs = vec![
            ("docker.io/library/a:latest".to_string(), t(30)),
            ("docker.io/library/b:latest".to_string(), t(10)),
            ("docker.io/library/c:latest".to_string(), t(20)),
        ];
        assert_eq!(candidates(imgs, &["b".into()]), vec!["docker.io/library/c:latest", "docker.io/library/a:latest"]);
    }

    #[test]
    fn removes_until_low_threshold() {
        let d = tempfile::tempdir().unwrap();
        let store = ImageStore::open(d.path()).unwrap();
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("f"), "x").unwrap();
        for n in ["a", "b", "c"] {
            super::super::archive::import(&store, n, src.path(), None).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let level = Cell::new(90.0);
        let usage = || {
            let v = level.get();
            level.set(v - 12.0);
            Ok(v)
        };
        let r = collect(&store, &["a".into()], 85.0, 80.0, &usage).unwrap();
        assert_eq!(r.removed, vec!["docker.io/library/b:latest"], "{r:?}");
        assert_eq!(store.list().unwrap().len(), 2);
        let calm = || Ok(50.0);
        assert!(collect(&store, &[], 85.0, 80.0, &calm).unwrap().removed.is_empty());
    }
}
