//! Links the minion-netd binary statically (glibc's `libc.a`), position-dependent
//! (`-no-pie`), as far as possible like the reference CNI plugins are small fast
//! starters. The plugin is one short process per pod, and a dynamic start costs it the
//! loader: mapping libc, libm and libgcc_s, resolving their symbols and the page faults
//! of all that, about 0.5 ms of a ~2 ms start on the benchmark machine. A PIE would add
//! ~26k relative relocations on top, applied at every start.
//!
//! `-C target-feature=+crt-static` is a rustc flag a build script cannot set, and a
//! bare `-static` link argument is undone by the `-Wl,-Bdynamic -lgcc_s -lc ...` rustc
//! puts before it (a binary with no interpreter that crashes). So the binary's link gets
//! a search directory, searched before the system's, where `libc.so`, `libm.so`,
//! `libgcc_s.so`, ... are linker scripts naming the static archives (`libgcc_eh.a` for
//! the unwinder). When an archive is missing (no libc6-dev static libraries), the
//! binary is linked dynamically, `-no-pie` only, with a cargo warning.
//!
//! Static glibc still loads NSS modules for name lookups (getaddrinfo of a host name,
//! getpwuid): they need the same glibc at run time, which the machine that built the
//! binary has. The plugin resolves no names; the daemon talks to the API server by IP.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Each library rustc links for std on linux-gnu, and the static archive standing in.
const LIBS: [(&str, &str); 7] = [
    ("gcc_s", "libgcc_eh.a"),
    ("c", "libc.a"),
    ("m", "libm.a"),
    ("pthread", "libpthread.a"),
    ("dl", "libdl.a"),
    ("rt", "librt.a"),
    ("util", "libutil.a"),
];

/// The absolute path of `archive` as the C compiler finds it, if it exists.
fn archive_path(cc: &str, archive: &str) -> Option<PathBuf> {
    let out = Command::new(cc)
        .arg(format!("-print-file-name={archive}"))
        .output()
        .ok()?;
    let p = String::from_utf8(out.stdout).ok()?;
    // An unknown file is printed back as the bare name.
    let p = Path::new(p.trim());
    if !p.is_absolute() {
        return None;
    }
    std::fs::canonicalize(p).ok()
}

/// Writes the linker scripts into `dir`; false when an archive or a write failed.
fn write_static_shims(cc: &str, dir: &Path) -> bool {
    LIBS.iter().all(|(name, archive)| {
        archive_path(cc, archive).is_some_and(|a| {
            let script = format!("INPUT({})\n", a.display());
            std::fs::write(dir.join(format!("lib{name}.so")), script).is_ok()
        })
    })
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    let target = std::env::var("TARGET").unwrap_or_default();
    if !target.contains("-linux-gnu") {
        return;
    }
    println!("cargo:rustc-link-arg-bin=minion-netd=-no-pie");
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    if write_static_shims(&cc, &out) {
        println!("cargo:rustc-link-arg-bin=minion-netd=-static");
        println!("cargo:rustc-link-arg-bin=minion-netd=-L{}", out.display());
    } else {
        println!("cargo:warning=minion-netd: static glibc archives not found, linking dynamically");
    }
}
