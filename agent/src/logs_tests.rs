use std::io::Write;

use super::*;

const T0: &str = "2026-01-02T03:04:05.000000001Z";
const T1: &str = "2026-01-02T03:04:06.5Z";
const T2: &str = "2026-01-02T03:04:07.123456789Z";

fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(T2).unwrap().with_timezone(&Utc)
}

fn opts(pairs: &[(&str, &str)]) -> LogOptions {
    LogOptions::from_query(&q(pairs), now()).unwrap()
}

fn sample() -> String {
    format!(
        "{T0} stdout F one\n{T0} stderr P par\n{T1} stdout F two\n{T1} stderr F tial\n{T2} stdout F \n{T2} stdout F three\n"
    )
}

fn write_run(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn read(text: &str, o: &LogOptions) -> String {
    let d = tempfile::tempdir().unwrap();
    let p = write_run(d.path(), "0.log", text);
    let (out, _) = read_run(&[p], o).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn parses_entries() {
    let e = parse_entry(format!("{T0} stderr P a b c").as_bytes()).map(|e| (e.stream.to_string(), e.partial, e.content.to_vec()));
    assert_eq!(e, Some(("stderr".to_string(), true, b"a b c".to_vec())));
    let empty = format!("{T0} stdout F");
    assert_eq!(parse_entry(empty.as_bytes()).unwrap().content, b"");
    assert!(parse_entry(b"garbage").is_none());
    assert!(parse_entry(format!("{T0} stdout X hi").as_bytes()).is_none());
    assert!(parse_entry(b"yesterday stdout F hi").is_none());
}

#[test]
fn joins_partial_lines_per_stream() {
    assert_eq!(read(&sample(), &LogOptions::default()), "one\ntwo\npartial\n\nthree\n");
}

#[test]
fn keeps_an_unfinished_write_for_later() {
    let mut r = LineReader::default();
    let mut out = Vec::new();
    r.feed(format!("{T0} stdout F a\n{T1} stdo").as_bytes(), &mut out);
    assert_eq!(out.len(), 1);
    r.feed(b"ut F b\n", &mut out);
    assert_eq!(out[1].text, b"b\n");
    assert_eq!(out[1].time, DateTime::parse_from_rfc3339(T1).unwrap().with_timezone(&Utc));
}

#[test]
fn tail_lines() {
    assert_eq!(read(&sample(), &opts(&[("tailLines", "2")])), "\nthree\n");
    assert_eq!(read(&sample(), &opts(&[("tailLines", "0")])), "");
    assert_eq!(read(&sample(), &opts(&[("tailLines", "100")])), "one\ntwo\npartial\n\nthree\n");
}

#[test]
fn since_time_and_seconds() {
    assert_eq!(read(&sample(), &opts(&[("sinceTime", T1)])), "two\n\nthree\n");
    // now = T2: 1 second back is 03:04:06.123..., after T1's 06.5 line started at T0.
    assert_eq!(read(&sample(), &opts(&[("sinceSeconds", "1")])), "two\n\nthree\n");
}

#[test]
fn timestamps_prefix_each_line() {
    let out = read(&sample(), &opts(&[("timestamps", "true"), ("tailLines", "3")]));
    assert_eq!(
        out,
        "2026-01-02T03:04:05.000000001Z partial\n2026-01-02T03:04:07.123456789Z \n2026-01-02T03:04:07.123456789Z three\n"
    );
    let out = read(&format!("{T1} stdout F x\n"), &opts(&[("timestamps", "1")]));
    assert_eq!(out, "2026-01-02T03:04:06.500000000Z x\n");
}

#[test]
fn limit_bytes_truncates() {
    assert_eq!(read(&sample(), &opts(&[("limitBytes", "6")])), "one\ntw");
}

#[test]
fn bad_options() {
    for bad in [
        vec![("tailLines", "-1")],
        vec![("limitBytes", "0")],
        vec![("sinceSeconds", "0")],
        vec![("sinceSeconds", "5"), ("sinceTime", T0)],
        vec![("sinceTime", "yesterday")],
        vec![("follow", "maybe")],
    ] {
        assert!(LogOptions::from_query(&q(&bad), now()).is_err(), "{bad:?} accepted");
    }
    let o = opts(&[("follow", "true"), ("previous", "true")]);
    assert!(o.follow && o.previous && !o.timestamps);
}

#[test]
fn runs_and_rotated_files() {
    let d = tempfile::tempdir().unwrap();
    for name in ["0.log", "1.log", "1.log.1", "1.log.2", "2.log", "x.log", "notes"] {
        write_run(d.path(), name, "");
    }
    let runs = runs(d.path());
    assert_eq!(runs, vec![0, 1, 2]);
    assert_eq!(select_run(&runs, false), Some(2));
    assert_eq!(select_run(&runs, true), Some(1));
    assert_eq!(select_run(&[0], true), None);
    assert_eq!(select_run(&[], false), None);
    let names: Vec<String> =
        run_files(d.path(), 1).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["1.log.2", "1.log.1", "1.log"]);
}

#[test]
fn reads_across_rotated_files() {
    let d = tempfile::tempdir().unwrap();
    write_run(d.path(), "0.log.1", &format!("{T0} stdout F old\n{T0} stdout P sp\n"));
    write_run(d.path(), "0.log", &format!("{T1} stdout F lit\n{T1} stdout F new\n"));
    let (out, _) = read_run(&run_files(d.path(), 0), &LogOptions::default()).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "old\nsplit\nnew\n");
}

#[test]
fn follower_reads_new_lines_and_follows_rotation() {
    let d = tempfile::tempdir().unwrap();
    let live = write_run(d.path(), "0.log", &format!("{T0} stdout F first\n"));
    let (out, mut f) = read_run(&run_files(d.path(), 0), &opts(&[("follow", "true")])).unwrap();
    assert_eq!(out, b"first\n");
    assert!(f.poll().unwrap().is_empty());
    let mut file = std::fs::OpenOptions::new().append(true).open(&live).unwrap();
    file.write_all(format!("{T1} stdout F second\n{T1} stdout P hal\n{T1} std").as_bytes()).unwrap();
    assert_eq!(f.poll().unwrap(), b"second\n");
    file.write_all(format!("out F f\n{T1} stdout F last-before-rotation\n").as_bytes()).unwrap();
    std::fs::rename(&live, d.path().join("0.log.1")).unwrap();
    write_run(d.path(), "0.log", &format!("{T2} stdout F after\n"));
    let mut got = f.poll().unwrap();
    got.extend(f.poll().unwrap());
    assert_eq!(String::from_utf8(got).unwrap(), "half\nlast-before-rotation\nafter\n");
}

#[test]
fn follower_respects_limit_bytes() {
    let d = tempfile::tempdir().unwrap();
    let live = write_run(d.path(), "0.log", &format!("{T0} stdout F abc\n"));
    let (out, mut f) = read_run(&run_files(d.path(), 0), &opts(&[("limitBytes", "6")])).unwrap();
    assert_eq!(out, b"abc\n");
    assert!(!f.exhausted());
    let mut file = std::fs::OpenOptions::new().append(true).open(&live).unwrap();
    file.write_all(format!("{T1} stdout F defg\n").as_bytes()).unwrap();
    assert_eq!(f.poll().unwrap(), b"de");
    assert!(f.exhausted());
}
