//! Pods whose image comes from a real OCI registry (issue 5), end to end: Debian's
//! `docker-registry` serves on the lab LAN (in the control-plane namespace), the lab's
//! busybox image is pushed into it with `skopeo`, and a pod on node-1 pulls it. A
//! missing image shows ErrImagePull / ImagePullBackOff with the registry's answer.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use minion_tests::{bin_dir, require_root, run, wait_until, Lab};

const REGISTRY: &str = "172.18.0.1:5000";

/// `docker-registry serve` in the lab's control-plane namespace, killed by pid on drop.
struct Registry(Child);

impl Registry {
    fn start(lab: &Lab) -> Result<Registry> {
        let dir = lab.state_dir().join("registry");
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {REGISTRY}\n",
                dir.join("data").display()
            ),
        )?;
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}-cp", lab.name))
            .args(["--", "docker-registry", "serve"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("registry.log"))?)
            .spawn()
            .context("starting docker-registry")?;
        let registry = Registry(child);
        wait_until("the registry on the lab LAN", Duration::from_secs(20), || {
            lab.exec("cp", &["curl", "-sf", &format!("http://{REGISTRY}/v2/")]).ok()
        })?;
        Ok(registry)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Exports the lab's busybox from node-1's store as an OCI layout and pushes it.
fn push_busybox(lab: &Lab, repo: &str) -> Result<()> {
    let layout = lab.state_dir().join("busybox-oci");
    run(Command::new(bin_dir().join("minion-runtime"))
        .arg("--image-root")
        .arg(lab.state_dir().join("nodes/node-1/images"))
        .args(["image", "export", "busybox"])
        .arg(&layout)
        .args(["--format", "oci"]))?;
    lab.exec(
        "cp",
        &[
            "skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false",
            &format!("oci:{}", layout.display()),
            &format!("docker://{REGISTRY}/{repo}"),
        ],
    )?;
    Ok(())
}

fn pod_yaml(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  \
         containers:\n  - name: main\n    image: {image}\n    command: [\"sleep\", \"3600\"]\n"
    )
}

fn create(lab: &Lab, name: &str, image: &str) -> Result<()> {
    let path = lab.state_dir().join(format!("{name}.yaml"));
    std::fs::write(&path, pod_yaml(name, image))?;
    lab.kubectl(&["create", "-f", &path.display().to_string()])?;
    Ok(())
}

#[test]
fn pod_image_from_a_registry() -> Result<()> {
    if !require_root("pod_image_from_a_registry") {
        return Ok(());
    }
    let lab = Lab::up_with("reg", 1, &["--insecure-registry", REGISTRY])?;
    let _registry = Registry::start(&lab)?;
    push_busybox(&lab, "lab/busybox:1.0")?;

    let image = format!("{REGISTRY}/lab/busybox:1.0");
    create(&lab, "pulled", &image)?;
    let pods = lab.wait_running(&["--field-selector", "metadata.name=pulled"], 1, Duration::from_secs(60))?;
    let pod = lab.json(&["get", "pod", &pods[0].name, "-o", "json"])?;
    let image_id = pod["status"]["containerStatuses"][0]["imageID"].as_str().unwrap_or_default();
    ensure!(image_id.contains("@sha256:"), "imageID is not a repo digest: {image_id:?}");
    let events = lab.kubectl(&["get", "events", "--field-selector", "involvedObject.name=pulled"])?;
    ensure!(events.contains("Successfully pulled image"), "no Pulled event:\n{events}");
    let inspect = run(Command::new(bin_dir().join("minion-runtime"))
        .arg("--image-root")
        .arg(lab.state_dir().join("nodes/node-1/images"))
        .args(["image", "inspect", &image]))?;
    ensure!(inspect.contains("lab/busybox"), "the pulled image is not in node-1's store:\n{inspect}");

    create(&lab, "missing", &format!("{REGISTRY}/lab/nosuch:1"))?;
    let waiting = wait_until("ErrImagePull or ImagePullBackOff", Duration::from_secs(60), || {
        let p = lab.json(&["get", "pod", "missing", "-o", "json"]).ok()?;
        let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        let reason = w["reason"].as_str()?.to_string();
        ["ErrImagePull", "ImagePullBackOff"].contains(&reason.as_str()).then(|| format!("{reason}: {}", w["message"]))
    })?;
    ensure!(waiting.contains("nosuch"), "the waiting message does not name the image: {waiting}");
    Ok(())
}
