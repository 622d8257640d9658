//! Privileged tests of `minion-runtime image pull` against a real registry
//! (Debian's docker-registry on 127.0.0.1 inside a namespace the test makes):
//! a multi-layer image with a whiteout and an opaque dir, run on overlayfs;
//! a second pull transfers no layer; corrupt blob, registry down and missing
//! tag each fail clearly and leave nothing trusted behind.

mod common;
#[path = "common/image_env.rs"]
mod image_env;

use std::fs;
use std::path::Path;

use common::oci_fixture::{build_image, build_image_with, push, push_as, require_tools, wrap_in_index, Netns, Registry};
use common::require_root;
use image_env::{count, err, ok, ok_status, Env, BIN, WHITEOUT_SCRIPT};
use serde_json::{json, Value};

#[test]
fn pull_run_whiteouts_and_second_pull_transfers_nothing() {
    let Some(env) = Env::new() else { return };
    let store = env.store("images");
    let out = env.pull(&store, "127.0.0.1:5000/test/multi:v1");
    let img = ok(&out);
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(progress.contains("layers 3/3 done"), "{progress}");
    assert_eq!(img["name"], "127.0.0.1:5000/test/multi:v1");
    assert_eq!(img["layers"], 3);
    assert!(img["repoDigest"].as_str().unwrap().starts_with("127.0.0.1:5000/test/multi@sha256:"));
    let rootfs = img["rootfs"].as_str().unwrap().to_string();
    let lowers: Vec<&str> = rootfs.split(':').collect();
    assert_eq!(lowers.len(), 3, "{rootfs}");
    assert!(Path::new(lowers[2]).join("bin/busybox").exists(), "bottom layer last");
    assert_eq!(count(&store.join("blobs/sha256")), 4, "3 layers + config");
    assert_eq!(count(&store.join("tmp")), 0);

    assert_eq!(env.run_in(&store, &rootfs, WHITEOUT_SCRIPT), Some(0), "whiteout/opaque not honoured");
    assert_eq!(env.run_in(&store, &rootfs, "test -e /etc/gone"), Some(1), "the check itself must be able to fail");

    let before = env.reg.blob_gets();
    assert!(before >= 4, "registry log should count blob GETs: {before}\n{}", env.reg.log());
    let again = ok(&env.pull(&store, "127.0.0.1:5000/test/multi:v1"));
    assert_eq!(again["id"], img["id"]);
    assert_eq!(env.reg.blob_gets(), before, "second pull fetched blobs");

    // Same content by digest under another name: still no transfer.
    let by_digest = format!("127.0.0.1:5000/test/multi@{}", img["repoDigest"].as_str().unwrap().split('@').nth(1).unwrap());
    ok(&env.pull(&store, &by_digest));
    assert_eq!(env.reg.blob_gets(), before);

    // export / re-import of a pulled multi-layer image keeps the same layers.
    let oci = env.tmp.path().join("exp.tar");
    ok_status(&env.rt(&store, &["image", "export", "127.0.0.1:5000/test/multi:v1", oci.to_str().unwrap()]));
    let store2 = env.store("images2");
    let imp = ok(&env.rt(&store2, &["image", "import", "re/imported:1", oci.to_str().unwrap()]));
    assert_eq!(imp["id"], img["id"]);
    assert_eq!(imp["layers"], 3);
    let da = env.tmp.path().join("docker.tar");
    ok_status(&env.rt(&store, &["image", "export", "--format", "docker-archive", "127.0.0.1:5000/test/multi:v1", da.to_str().unwrap()]));
    let imp = ok(&env.rt(&store2, &["image", "import", "re/docker:1", da.to_str().unwrap()]));
    assert_eq!(imp["id"], img["id"]);

    ok_status(&env.rt(&store, &["image", "rm", "127.0.0.1:5000/test/multi:v1"]));
    ok_status(&env.rt(&store, &["image", "rm", by_digest.as_str()]));
    assert_eq!(count(&store.join("snapshots")), 0);
    assert_eq!(count(&store.join("blobs/sha256")), 0);
}

#[test]
fn corrupt_blob_missing_tag_and_registry_down_fail_clearly() {
    let Some(env) = Env::new() else { return };
    let store = env.store("images");

    let e = err(&env.pull(&store, "127.0.0.1:5000/test/multi:nope"));
    assert!(e.starts_with("minion-runtime: error: pulling 127.0.0.1:5000/test/multi:nope from 127.0.0.1:5000"), "{e}");
    assert!(e.contains("the registry has no tag \"nope\" in repository test/multi") && e.contains("manifest unknown"), "{e}");

    let e = err(&env.rt(&store, &["image", "pull", "127.0.0.1:5999/test/multi:v1", "--insecure-registry", "127.0.0.1:5999"]));
    assert!(e.contains("registry 127.0.0.1:5999 unreachable"), "{e}");

    // Tamper with the middle layer in the registry's storage (same length).
    let victim = &env.layers[1];
    let f = env.reg.blob_file(victim);
    let mut data = fs::read(&f).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    fs::write(&f, &data).unwrap();
    let e = err(&env.pull(&store, "127.0.0.1:5000/test/multi:v1"));
    assert!(e.contains("digest mismatch") && e.contains(victim.as_str()), "{e}");
    let hex = victim.trim_start_matches("sha256:");
    assert!(!store.join("blobs/sha256").join(hex).exists(), "corrupt blob was kept");
    assert_eq!(count(&store.join("tmp")), 0, "temp files left behind");
    assert_eq!(count(&store.join("images")), 0, "image recorded despite corruption");
    let e = err(&env.rt(&store, &["image", "inspect", "127.0.0.1:5000/test/multi:v1"]));
    assert!(e.contains("not found in store"), "{e}");

    // Truncate it: also refused (the registry sends fewer bytes than the manifest says).
    fs::write(&f, &data[..data.len() / 2]).unwrap();
    let e = err(&env.pull(&store, "127.0.0.1:5000/test/multi:v1"));
    assert!(e.contains(victim.as_str()), "{e}");
    assert!(!store.join("blobs/sha256").join(hex).exists());
    assert_eq!(count(&store.join("tmp")), 0);
}

/// bcrypt of "s3cret" (cost 4), for the htpasswd-protected registry.
const HTPASSWD: &str = "minion:$2b$04$FQMU9B8m3Y8uFlpeIZi4tejeYRzTfcUee4pPkRAdFjJ4uL9JI.IrS";

#[test]
fn credentials_from_a_docker_config_json() {
    if !require_root() || !require_tools() {
        return;
    }
    let ns = Netns::new();
    let reg = Registry::start_with(&ns, 5000, Some(HTPASSWD));
    let tmp = tempfile::tempdir().unwrap();
    let img = build_image(&tmp.path().join("layout"), "v1", 0, 0);
    push_as(&ns, &img, &reg, "private/app", Some("minion:s3cret"));
    let store = tmp.path().join("images");
    let rt = |args: &[&str]| ns.cmd(BIN).arg("--image-root").arg(&store).args(args).output().unwrap();
    let reference = "127.0.0.1:5000/private/app:v1";

    let e = err(&rt(&["image", "pull", reference, "--insecure-registry", "127.0.0.1:5000"]));
    assert!(e.contains("pulling 127.0.0.1:5000/private/app:v1 from 127.0.0.1:5000"), "{e}");
    assert!(e.contains("401 Unauthorized") && e.contains("anonymously"), "{e}");

    let wrong = tmp.path().join("wrong.json");
    fs::write(&wrong, r#"{"auths":{"127.0.0.1:5000":{"auth":"bWluaW9uOm5vcGU="}}}"#).unwrap();
    let e = err(&rt(&["image", "pull", reference, "--insecure-registry", "127.0.0.1:5000", "--auth-file", wrong.to_str().unwrap()]));
    assert!(e.contains("401 Unauthorized") && e.contains("\"minion\""), "{e}");

    // "minion:s3cret", as a kubernetes.io/dockerconfigjson Secret holds it.
    let good = tmp.path().join("config.json");
    fs::write(&good, r#"{"auths":{"http://127.0.0.1:5000":{"auth":"bWluaW9uOnMzY3JldA=="}}}"#).unwrap();
    let img = ok(&rt(&["image", "pull", reference, "--insecure-registry", "127.0.0.1:5000", "--auth-file", good.to_str().unwrap()]));
    assert_eq!(img["layers"], 3);
}

#[test]
fn image_index_resolves_to_linux_amd64() {
    let Some(env) = Env::new() else { return };
    let img = build_image(&env.tmp.path().join("multiarch"), "multi", 0, 0);
    wrap_in_index(&img);
    push(&env.ns, &img, &env.reg, "test/multiarch");
    let store = env.store("images");
    let got = ok(&env.pull(&store, "127.0.0.1:5000/test/multiarch:multi"));
    assert_eq!(got["config"]["Cmd"], json!(["sh"]), "the arm64 manifest was chosen: {got}");
    let top = fs::read_to_string(img.layout.join("index.json")).unwrap();
    let index_digest = serde_json::from_str::<Value>(&top).unwrap()["manifests"][0]["digest"].clone();
    assert_eq!(got["repoDigest"], json!(format!("127.0.0.1:5000/test/multiarch@{}", index_digest.as_str().unwrap())));
}

#[test]
fn docker_manifest_list_and_schema2_media_types() {
    let Some(env) = Env::new() else { return };
    // gzip only: Docker's schema 2 has no zstd layers.
    let img = build_image_with(&env.tmp.path().join("docker"), "d1", 0, 0, false);
    wrap_in_index(&img);
    let out = env
        .ns
        .cmd("skopeo")
        .args(["--insecure-policy", "copy", "-q", "--dest-tls-verify=false", "--all", "--format", "v2s2"])
        .arg(format!("oci:{}:d1", img.layout.display()))
        .arg("docker://127.0.0.1:5000/test/docker:d1")
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy --format v2s2: {}", String::from_utf8_lossy(&out.stderr));
    let accept = "Accept: application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
    let top = env.ns.cmd("curl").args(["-sf", "-H", accept, "http://127.0.0.1:5000/v2/test/docker/manifests/d1"]).output().unwrap();
    let top: Value = serde_json::from_slice(&top.stdout).unwrap();
    assert_eq!(top["mediaType"], "application/vnd.docker.distribution.manifest.list.v2+json", "{top}");
    let amd = top["manifests"].as_array().unwrap().iter().find(|m| m["platform"]["architecture"] == "amd64").unwrap().clone();
    assert_eq!(amd["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");

    let store = env.store("images");
    let got = ok(&env.pull(&store, "127.0.0.1:5000/test/docker:d1"));
    assert_eq!(got["config"]["Cmd"], json!(["sh"]), "the arm64 manifest was chosen: {got}");
    assert_eq!(got["layers"], 3);
    assert_eq!(env.run_in(&store, got["rootfs"].as_str().unwrap(), WHITEOUT_SCRIPT), Some(0));
}
