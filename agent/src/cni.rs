//! Container Network Interface (spec 1.0): the kubelet's network plugin manager. Loads the
//! first network configuration in the conf dir and runs its plugin chain for a pod
//! sandbox (ADD in order with `prevResult`, DEL in reverse). Plugin execution sits behind
//! [`CniExec`] so the chaining is unit-testable.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// A CNI failure, naming the plugin and the network.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// No usable config in the conf dir.
    #[error("no CNI network config (*.conflist, *.conf) in {0}")]
    NoConfig(PathBuf),
    /// Reading a config file failed.
    #[error("failed to read CNI config {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// IO error.
        source: std::io::Error,
    },
    /// A config file is not valid JSON / lacks fields.
    #[error("invalid CNI config {path}: {reason}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The plugin binary could not be run.
    #[error("failed to exec CNI plugin {plugin}: {source}")]
    Exec {
        /// Plugin binary.
        plugin: PathBuf,
        /// IO error.
        source: std::io::Error,
    },
    /// The plugin reported an error (CNI error JSON or stderr).
    #[error("CNI plugin {plugin} failed: {message}")]
    Plugin {
        /// Plugin type.
        plugin: String,
        /// The plugin's `msg` (+ `details`), or its stderr.
        message: String,
    },
    /// The plugin's result is not JSON or has no IP.
    #[error("CNI plugin {plugin} returned a bad result: {reason}")]
    BadResult {
        /// Plugin type.
        plugin: String,
        /// What is wrong.
        reason: String,
    },
}

/// Runs one CNI plugin binary: env + JSON on stdin → stdout. A non-zero exit is
/// `Err(CniError::Plugin)` with the decoded CNI error message.
#[async_trait]
pub trait CniExec: Send + Sync {
    /// Execute `plugin` with `env` and `stdin`.
    async fn exec(&self, plugin: &Path, env: &[(String, String)], stdin: &[u8]) -> Result<Vec<u8>, CniError>;
}

/// [`CniExec`] that really executes the plugin binary.
#[derive(Debug, Default, Clone)]
pub struct ProcessExec;

#[async_trait]
impl CniExec for ProcessExec {
    async fn exec(&self, plugin: &Path, env: &[(String, String)], stdin: &[u8]) -> Result<Vec<u8>, CniError> {
        let exec_err = |source| CniError::Exec { plugin: plugin.to_path_buf(), source };
        let mut child = Command::new(plugin)
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(exec_err)?;
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin).await.map_err(exec_err)?;
        }
        let out = child.wait_with_output().await.map_err(exec_err)?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let name = plugin.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Err(CniError::Plugin { plugin: name, message: error_message(&out.stdout, &out.stderr) })
    }
}

/// Decodes a CNI error (`{"code","msg","details"}` on stdout), else the stderr text.
pub fn error_message(stdout: &[u8], stderr: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(stdout) {
        if let Some(msg) = v.get("msg").and_then(Value::as_str) {
            let code = v.get("code").and_then(Value::as_u64).unwrap_or(0);
            return match v.get("details").and_then(Value::as_str).filter(|d| !d.is_empty()) {
                Some(d) => format!("{msg}: {d} (code {code})"),
                None => format!("{msg} (code {code})"),
            };
        }
    }
    let text = String::from_utf8_lossy(stderr).trim().to_string();
    if text.is_empty() { String::from_utf8_lossy(stdout).trim().to_string() } else { text }
}

/// A network configuration list (a `.conf` is read as a list of one).
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    /// Network name.
    pub name: String,
    /// cniVersion.
    pub cni_version: String,
    /// Plugin configs, in order.
    pub plugins: Vec<Value>,
}

impl NetworkConfigList {
    /// Parses a `.conflist` (or, with `single`, a `.conf`) document.
    pub fn parse(path: &Path, text: &str, single: bool) -> Result<NetworkConfigList, CniError> {
        let invalid = |reason: &str| CniError::Invalid { path: path.to_path_buf(), reason: reason.into() };
        let v: Value = serde_json::from_str(text).map_err(|e| invalid(&e.to_string()))?;
        let name = v.get("name").and_then(Value::as_str).ok_or_else(|| invalid("missing name"))?;
        let version = v.get("cniVersion").and_then(Value::as_str).unwrap_or("1.0.0");
        let plugins = if single {
            vec![v.clone()]
        } else {
            v.get("plugins").and_then(Value::as_array).cloned().ok_or_else(|| invalid("missing plugins"))?
        };
        if plugins.is_empty() || plugins.iter().any(|p| p.get("type").and_then(Value::as_str).is_none()) {
            return Err(invalid("every plugin needs a type"));
        }
        Ok(NetworkConfigList { name: name.into(), cni_version: version.into(), plugins })
    }

    /// Loads the first `*.conflist` / `*.conf` / `*.json` in `dir`, sorted by name.
    pub fn load(dir: &Path) -> Result<NetworkConfigList, CniError> {
        let read_err = |source| CniError::Read { path: dir.to_path_buf(), source };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(read_err)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("conflist" | "conf" | "json")))
            .collect();
        files.sort();
        let path = files.first().ok_or_else(|| CniError::NoConfig(dir.to_path_buf()))?;
        let text = std::fs::read_to_string(path).map_err(|source| CniError::Read { path: path.clone(), source })?;
        let single = path.extension().and_then(|e| e.to_str()) != Some("conflist");
        NetworkConfigList::parse(path, &text, single)
    }

    fn plugin_config(&self, plugin: &Value, prev: Option<&Value>) -> Value {
        let mut conf = plugin.clone();
        if let Some(obj) = conf.as_object_mut() {
            obj.insert("name".into(), json!(self.name));
            obj.insert("cniVersion".into(), json!(self.cni_version));
            if let Some(prev) = prev {
                obj.insert("prevResult".into(), prev.clone());
            }
        }
        conf
    }
}

/// Where and for whom a plugin chain runs.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// CNI_CONTAINERID (the pod uid).
    pub container_id: String,
    /// CNI_NETNS.
    pub netns: PathBuf,
    /// CNI_IFNAME.
    pub ifname: String,
    /// CNI_PATH / where plugin binaries are.
    pub bin_dir: PathBuf,
    /// CNI_ARGS (`K8S_POD_NAMESPACE=..;K8S_POD_NAME=..`).
    pub args: String,
}

impl Attachment {
    fn env(&self, command: &str) -> Vec<(String, String)> {
        vec![
            ("CNI_COMMAND".into(), command.into()),
            ("CNI_CONTAINERID".into(), self.container_id.clone()),
            ("CNI_NETNS".into(), self.netns.to_string_lossy().into_owned()),
            ("CNI_IFNAME".into(), self.ifname.clone()),
            ("CNI_PATH".into(), self.bin_dir.to_string_lossy().into_owned()),
            ("CNI_ARGS".into(), self.args.clone()),
        ]
    }
}

fn plugin_type(plugin: &Value) -> String {
    plugin.get("type").and_then(Value::as_str).unwrap_or("").to_string()
}

/// CNI ADD through the chain; returns the final result.
pub async fn add(exec: &dyn CniExec, net: &NetworkConfigList, at: &Attachment) -> Result<Value, CniError> {
    let mut prev: Option<Value> = None;
    let env = at.env("ADD");
    for plugin in &net.plugins {
        let ty = plugin_type(plugin);
        let conf = net.plugin_config(plugin, prev.as_ref());
        let out = exec.exec(&at.bin_dir.join(&ty), &env, conf.to_string().as_bytes()).await?;
        let result: Value = serde_json::from_slice(&out)
            .map_err(|e| CniError::BadResult { plugin: ty.clone(), reason: e.to_string() })?;
        prev = Some(result);
    }
    prev.ok_or_else(|| CniError::BadResult { plugin: net.name.clone(), reason: "empty chain".into() })
}

/// CNI DEL through the chain in reverse; every plugin runs, errors are collected.
pub async fn del(exec: &dyn CniExec, net: &NetworkConfigList, at: &Attachment, prev: Option<&Value>) -> Vec<CniError> {
    let env = at.env("DEL");
    let mut errors = Vec::new();
    for plugin in net.plugins.iter().rev() {
        let ty = plugin_type(plugin);
        let conf = net.plugin_config(plugin, prev);
        if let Err(e) = exec.exec(&at.bin_dir.join(&ty), &env, conf.to_string().as_bytes()).await {
            errors.push(e);
        }
    }
    errors
}

/// The pod IPs (without prefix length) of a CNI result (1.0 `ips`, or 0.2 `ip4`/`ip6`).
pub fn result_ips(result: &Value) -> Vec<String> {
    let strip = |s: &str| s.split('/').next().unwrap_or(s).to_string();
    if let Some(ips) = result.get("ips").and_then(Value::as_array) {
        return ips.iter().filter_map(|ip| ip.get("address").and_then(Value::as_str)).map(strip).collect();
    }
    ["ip4", "ip6"]
        .iter()
        .filter_map(|k| result.get(k).and_then(|v| v.get("ip")).and_then(Value::as_str))
        .map(strip)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    type Call = (PathBuf, Vec<(String, String)>, Value);

    struct FakeExec {
        calls: Mutex<Vec<Call>>,
        fail: Option<&'static str>,
    }

    #[async_trait]
    impl CniExec for FakeExec {
        async fn exec(&self, plugin: &Path, env: &[(String, String)], stdin: &[u8]) -> Result<Vec<u8>, CniError> {
            let conf: Value = serde_json::from_slice(stdin).unwrap();
            self.calls.lock().unwrap().push((plugin.to_path_buf(), env.to_vec(), conf.clone()));
            let ty = conf["type"].as_str().unwrap().to_string();
            if Some(ty.as_str()) == self.fail {
                return Err(CniError::Plugin {
                    plugin: ty,
                    message: error_message(br#"{"code":11,"msg":"no free IP","details":"range full"}"#, b""),
                });
            }
            let mut result = conf.get("prevResult").cloned().unwrap_or(json!({
                "cniVersion": "1.0.0", "ips": [{"address": "10.244.1.7/24", "gateway": "10.244.1.1"}]
            }));
            result[format!("seen_{ty}")] = json!(true);
            Ok(result.to_string().into_bytes())
        }
    }

    fn fake(fail: Option<&'static str>) -> FakeExec {
        FakeExec { calls: Mutex::new(Vec::new()), fail }
    }

    fn attachment() -> Attachment {
        Attachment {
            container_id: "uid-1".into(),
            netns: "/run/netns/minion-uid-1".into(),
            ifname: "eth0".into(),
            bin_dir: "/opt/cni/bin".into(),
            args: String::new(),
        }
    }

    fn chain() -> NetworkConfigList {
        let text = r#"{"cniVersion":"1.0.0","name":"minion","plugins":[
            {"type":"minion-netd","bridge":"cni0"},{"type":"portmap"}]}"#;
        NetworkConfigList::parse(Path::new("x.conflist"), text, false).unwrap()
    }

    #[tokio::test]
    async fn add_chains_prev_result_and_injects_name() {
        let exec = fake(None);
        let result = add(&exec, &chain(), &attachment()).await.unwrap();
        assert_eq!(result_ips(&result), vec!["10.244.1.7"]);
        assert_eq!(result["seen_portmap"], json!(true));
        let calls = exec.calls.lock().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].0, PathBuf::from("/opt/cni/bin/minion-netd"));
        assert_eq!(calls[0].2["name"], "minion");
        assert_eq!(calls[0].2["cniVersion"], "1.0.0");
        assert!(calls[0].2.get("prevResult").is_none());
        assert_eq!(calls[1].2["prevResult"]["seen_minion-netd"], json!(true));
        assert!(calls[0].1.contains(&("CNI_COMMAND".into(), "ADD".into())));
        assert!(calls[0].1.contains(&("CNI_IFNAME".into(), "eth0".into())));
        assert!(calls[0].1.contains(&("CNI_CONTAINERID".into(), "uid-1".into())));
    }

    #[tokio::test]
    async fn add_error_names_plugin_and_message() {
        let exec = fake(Some("minion-netd"));
        let err = add(&exec, &chain(), &attachment()).await.unwrap_err().to_string();
        assert!(err.contains("minion-netd"), "{err}");
        assert!(err.contains("no free IP: range full"), "{err}");
    }

    #[tokio::test]
    async fn del_runs_in_reverse_and_tolerates_errors() {
        let exec = fake(Some("portmap"));
        let errors = del(&exec, &chain(), &attachment(), None).await;
        assert_eq!(errors.len(), 1);
        let calls = exec.calls.lock().unwrap();
        assert_eq!(calls[0].2["type"], "portmap");
        assert_eq!(calls[1].2["type"], "minion-netd");
        assert!(calls[1].1.contains(&("CNI_COMMAND".into(), "DEL".into())));
    }

    #[test]
    fn parses_results_and_configs() {
        assert_eq!(result_ips(&json!({"ip4": {"ip": "10.1.0.2/16"}})), vec!["10.1.0.2"]);
        let single = NetworkConfigList::parse(Path::new("a.conf"), r#"{"name":"n","type":"bridge"}"#, true).unwrap();
        assert_eq!(single.plugins.len(), 1);
        assert!(NetworkConfigList::parse(Path::new("b"), r#"{"name":"n","plugins":[{}]}"#, false).is_err());
    }

    #[test]
    fn load_picks_first_sorted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("20-b.conflist"), r#"{"name":"b","plugins":[{"type":"x"}]}"#).unwrap();
        std::fs::write(dir.path().join("10-a.conf"), r#"{"name":"a","type":"bridge"}"#).unwrap();
        assert_eq!(NetworkConfigList::load(dir.path()).unwrap().name, "a");
    }
}
