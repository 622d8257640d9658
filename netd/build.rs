//! Links the minion-netd binary as a position-dependent executable (`-no-pie`), as the
//! reference CNI plugins (Go) are. The plugin is one short process per pod: a PIE of
//! this size carries ~26k relative relocations that the dynamic loader applies at
//! every start, touching (copy-on-write) every page of .data.rel.ro and .got first.
//! Linked at a fixed address, those are resolved at link time.

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.contains("-linux-gnu") {
        println!("cargo:rustc-link-arg-bin=minion-netd=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
