//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`:
//! the `k8s\0` magic, then a `runtime.Unknown` envelope holding the object's bytes).
//! kubectl's typed clients send these for `kubectl create namespace|service|deployment`;
//! only Namespace, Service, Pod and Deployment are mapped, and only the fields those
//! commands set (field numbers from
//! k8s.io/api and k8s.io/apimachinery `generated.proto`). Responses are always JSON.

use serde_json::{json, Map, Value};

/// The protobuf media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

#[derive(Debug, Clone, Copy)]
enum Ty {
    Str,
    Int,
    /// An int32 pointer field: zero is kept (`replicas: 0`).
    IntKeepZero,
    /// `map<string, Quantity>` (resource requests and limits).
    QtyMap,
    Bool,
    StrMap,
    /// `map<string, bytes>` (Secret data, ConfigMap binaryData): values in base64.
    BytesMap,
    /// `bytes`, as JSON does it: base64.
    Bytes,
    IntOrString,
    Msg(&'static [Field]),
}

#[derive(Debug, Clone, Copy)]
struct Field {
    num: u64,
    name: &'static str,
    ty: Ty,
    repeated: bool,
}

const fn f(num: u64, name: &'static str, ty: Ty) -> Field {
    Field { num, name, ty, repeated: false }
}

const fn r(num: u64, name: &'static str, ty: Ty) -> Field {
    Field { num, name, ty, repeated: true }
}

const OWNER_REF: &[Field] = &[
    f(5, "apiVersion", Ty::Str), f(1, "kind", Ty::Str), f(3, "name", Ty::Str), f(4, "uid", Ty::Str),
    f(6, "controller", Ty::Bool), f(7, "blockOwnerDeletion", Ty::Bool),
];
const OBJECT_META: &[Field] = &[
    f(1, "name", Ty::Str), f(2, "generateName", Ty::Str), f(3, "namespace", Ty::Str), f(5, "uid", Ty::Str),
    f(6, "resourceVersion", Ty::Str), f(7, "generation", Ty::Int), f(11, "labels", Ty::StrMap),
    f(12, "annotations", Ty::StrMap), r(13, "ownerReferences", Ty::Msg(OWNER_REF)), r(14, "finalizers", Ty::Str),
];
const NAMESPACE_SPEC: &[Field] = &[r(1, "finalizers", Ty::Str)];
const NAMESPACE: &[Field] = &[f(1, "metadata", Ty::Msg(OBJECT_META)), f(2, "spec", Ty::Msg(NAMESPACE_SPEC))];
const SERVICE_PORT: &[Field] = &[
    f(1, "name", Ty::Str), f(2, "protocol", Ty::Str), f(6, "appProtocol", Ty::Str), f(3, "port", Ty::Int),
    f(4, "targetPort", Ty::IntOrString), f(5, "nodePort", Ty::Int),
];
const SERVICE_SPEC: &[Field] = &[
    r(1, "ports", Ty::Msg(SERVICE_PORT)), f(2, "selector", Ty::StrMap), f(3, "clusterIP", Ty::Str),
    r(18, "clusterIPs", Ty::Str), f(4, "type", Ty::Str), r(5, "externalIPs", Ty::Str),
    f(7, "sessionAffinity", Ty::Str), f(10, "externalName", Ty::Str), f(11, "externalTrafficPolicy", Ty::Str),
    f(13, "publishNotReadyAddresses", Ty::Bool), r(19, "ipFamilies", Ty::Str), f(17, "ipFamilyPolicy", Ty::Str),
    f(22, "internalTrafficPolicy", Ty::Str),
];
const SERVICE: &[Field] = &[f(1, "metadata", Ty::Msg(OBJECT_META)), f(2, "spec", Ty::Msg(SERVICE_SPEC))];
const LABEL_REQUIREMENT: &[Field] = &[f(1, "key", Ty::Str), f(2, "operator", Ty::Str), r(3, "values", Ty::Str)];
const LABEL_SELECTOR: &[Field] = &[f(1, "matchLabels", Ty::StrMap), r(2, "matchExpressions", Ty::Msg(LABEL_REQUIREMENT))];
const CONTAINER_PORT: &[Field] = &[
    f(1, "name", Ty::Str), f(2, "hostPort", Ty::Int), f(3, "containerPort", Ty::Int), f(4, "protocol", Ty::Str),
];
const ENV_VAR: &[Field] = &[f(1, "name", Ty::Str), f(2, "value", Ty::Str)];
const QUANTITY: &[Field] = &[f(1, "string", Ty::Str)];
const RESOURCES: &[Field] = &[f(1, "limits", Ty::QtyMap), f(2, "requests", Ty::QtyMap)];
const CONTAINER: &[Field] = &[
    f(1, "name", Ty::Str), f(2, "image", Ty::Str), r(3, "command", Ty::Str), r(4, "args", Ty::Str),
    f(5, "workingDir", Ty::Str), r(6, "ports", Ty::Msg(CONTAINER_PORT)), r(7, "env", Ty::Msg(ENV_VAR)),
    f(8, "resources", Ty::Msg(RESOURCES)), f(14, "imagePullPolicy", Ty::Str), f(16, "stdin", Ty::Bool),
    f(18, "tty", Ty::Bool),
];
const POD_SPEC: &[Field] = &[
    r(2, "containers", Ty::Msg(CONTAINER)), r(20, "initContainers", Ty::Msg(CONTAINER)),
    f(3, "restartPolicy", Ty::Str), f(4, "terminationGracePeriodSeconds", Ty::Int), f(6, "dnsPolicy", Ty::Str),
    f(7, "nodeSelector", Ty::StrMap), f(10, "nodeName", Ty::Str), f(11, "hostNetwork", Ty::Bool),
    f(19, "schedulerName", Ty::Str),
];
const POD: &[Field] = &[f(1, "metadata", Ty::Msg(OBJECT_META)), f(2, "spec", Ty::Msg(POD_SPEC))];
const POD_TEMPLATE: &[Field] = &[f(1, "metadata", Ty::Msg(OBJECT_META)), f(2, "spec", Ty::Msg(POD_SPEC))];
const STRATEGY: &[Field] = &[f(1, "type", Ty::Str)];
const DEPLOYMENT_SPEC: &[Field] = &[
    f(1, "replicas", Ty::IntKeepZero), f(2, "selector", Ty::Msg(LABEL_SELECTOR)),
    f(3, "template", Ty::Msg(POD_TEMPLATE)), f(4, "strategy", Ty::Msg(STRATEGY)), f(5, "minReadySeconds", Ty::Int),
    f(6, "revisionHistoryLimit", Ty::IntKeepZero), f(7, "paused", Ty::Bool), f(9, "progressDeadlineSeconds", Ty::Int),
];
const DEPLOYMENT: &[Field] = &[f(1, "metadata", Ty::Msg(OBJECT_META)), f(2, "spec", Ty::Msg(DEPLOYMENT_SPEC))];
const CONFIG_MAP: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)), f(2, "data", Ty::StrMap), f(3, "binaryData", Ty::BytesMap), f(4, "immutable", Ty::Bool),
];
const SECRET: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)), f(2, "data", Ty::BytesMap), f(3, "type", Ty::Str),
    f(4, "stringData", Ty::StrMap), f(5, "immutable", Ty::Bool),
];
const TYPE_META: &[Field] = &[f(1, "apiVersion", Ty::Str), f(2, "kind", Ty::Str)];

/// True for a protobuf Content-Type.
pub fn is_protobuf(content_type: &str) -> bool {
    content_type.trim().starts_with(MEDIA_TYPE)
}

/// Converts a protobuf body to the JSON object it encodes.
pub fn to_json(body: &[u8]) -> Result<Value, String> {
    let envelope = body.strip_prefix(MAGIC).ok_or("missing the k8s protobuf magic prefix")?;
    let mut type_meta = Value::Null;
    let mut raw: &[u8] = &[];
    for (num, wire) in fields(envelope)? {
        match (num, wire) {
            (1, Wire::Bytes(b)) => type_meta = message(b, TYPE_META)?,
            (2, Wire::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let kind = type_meta.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
    let api_version = type_meta.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string();
    let schema = match kind.as_str() {
        "Namespace" => NAMESPACE,
        "Service" => SERVICE,
        "Pod" => POD,
        "Deployment" => DEPLOYMENT,
        "ConfigMap" => CONFIG_MAP,
        "Secret" => SECRET,
        other => return Err(format!("protobuf bodies of kind {other:?} are not supported; send JSON")),
    };
    let mut obj = message(raw, schema)?;
    obj["kind"] = json!(kind);
    obj["apiVersion"] = json!(api_version);
    Ok(obj)
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err("varint too long".into())
}

fn fields(buf: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let wire = match tag & 7 {
            0 => Wire::Varint(varint(buf, &mut pos)?),
            1 => {
                pos += 8;
                Wire::Fixed
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|_| "length overflow")?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len()).ok_or("truncated field")?;
                let bytes = &buf[pos..end];
                pos = end;
                Wire::Bytes(bytes)
            }
            5 => {
                pos += 4;
                Wire::Fixed
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        out.push((tag >> 3, wire));
    }
    if pos > buf.len() {
        return Err("truncated message".into());
    }
    Ok(out)
}

fn message(buf: &[u8], schema: &[Field]) -> Result<Value, String> {
    let mut out = Map::new();
    for (num, wire) in fields(buf)? {
        let Some(field) = schema.iter().find(|fl| fl.num == num) else { continue };
        let Some(value) = scalar(field.ty, wire)? else { continue };
        if let Ty::StrMap | Ty::QtyMap | Ty::BytesMap = field.ty {
            let map = out.entry(field.name).or_insert_with(|| json!({}));
            if let (Some(m), Value::Array(kv)) = (map.as_object_mut(), value) {
                if let [Value::String(k), v] = kv.as_slice() {
                    m.insert(k.clone(), v.clone());
                }
            }
        } else if field.repeated {
            let list = out.entry(field.name).or_insert_with(|| json!([]));
            if let Some(l) = list.as_array_mut() {
                l.push(value);
            }
        } else {
            out.insert(field.name.to_string(), value);
        }
    }
    Ok(Value::Object(out))
}

/// One field's value; None for zero values (Go's omitempty).
fn scalar(ty: Ty, wire: Wire<'_>) -> Result<Option<Value>, String> {
    Ok(match (ty, wire) {
        (Ty::Str, Wire::Bytes(b)) => {
            let s = String::from_utf8(b.to_vec()).map_err(|e| e.to_string())?;
            (!s.is_empty()).then(|| json!(s))
        }
        (Ty::Int, Wire::Varint(v)) => (v != 0).then(|| json!(v as i64)),
        (Ty::IntKeepZero, Wire::Varint(v)) => Some(json!(v as i64)),
        (Ty::QtyMap, Wire::Bytes(b)) => {
            let entry = message(b, &[f(1, "k", Ty::Str), f(2, "v", Ty::Msg(QUANTITY))])?;
            let key = entry.get("k").cloned().unwrap_or(json!(""));
            Some(json!([key, entry.pointer("/v/string").cloned().unwrap_or(json!("0"))]))
        }
        (Ty::Bool, Wire::Varint(v)) => (v != 0).then_some(json!(true)),
        (Ty::Msg(schema), Wire::Bytes(b)) => Some(message(b, schema)?),
        (Ty::StrMap, Wire::Bytes(b)) => {
            let entry = message(b, &[f(1, "k", Ty::Str), f(2, "v", Ty::Str)])?;
            let key = entry.get("k").cloned().unwrap_or(json!(""));
            Some(json!([key, entry.get("v").cloned().unwrap_or(json!(""))]))
        }
        (Ty::Bytes, Wire::Bytes(b)) => {
            use base64::Engine as _;
            (!b.is_empty()).then(|| json!(base64::engine::general_purpose::STANDARD.encode(b)))
        }
        (Ty::BytesMap, Wire::Bytes(b)) => {
            let entry = message(b, &[f(1, "k", Ty::Str), f(2, "v", Ty::Bytes)])?;
            let key = entry.get("k").cloned().unwrap_or(json!(""));
            Some(json!([key, entry.get("v").cloned().unwrap_or(json!(""))]))
        }
        (Ty::IntOrString, Wire::Bytes(b)) => {
            let v = message(b, &[f(1, "type", Ty::Int), f(2, "intVal", Ty::Int), f(3, "strVal", Ty::Str)])?;
            match v.get("type").and_then(Value::as_i64) {
                Some(1) => v.get("strVal").cloned(),
                _ => Some(v.get("intVal").cloned().unwrap_or(json!(0))),
            }
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![((num << 3) | 2) as u8, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn decodes_a_namespace() {
        let mut meta = field(1, b"dev");
        meta.extend(field(11, &[field(1, b"team"), field(2, b"a")].concat()));
        let ns = [field(1, &meta), field(2, b"")].concat();
        let type_meta = [field(1, b"v1"), field(2, b"Namespace")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &ns)].concat();
        let v = to_json(&body).unwrap();
        assert_eq!(v, json!({"kind":"Namespace","apiVersion":"v1","metadata":{"name":"dev","labels":{"team":"a"}},"spec":{}}));
    }

    #[test]
    fn decodes_service_ports_and_rejects_junk() {
        let target = [vec![0x08, 0x00, 0x10, 0x90, 0x3f]].concat(); // type 0, intVal 8080
        let port = [field(1, b"http"), vec![0x18, 80], field(4, &target)].concat();
        let spec = [field(1, &port), field(4, b"ClusterIP")].concat();
        let svc = [field(1, &field(1, b"web")), field(2, &spec)].concat();
        let type_meta = [field(1, b"v1"), field(2, b"Service")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &svc)].concat();
        let v = to_json(&body).unwrap();
        assert_eq!(v["spec"]["ports"], json!([{"name":"http","port":80,"targetPort":8080}]));
        assert!(to_json(b"k8s\0\x0a\xff").is_err());
        assert!(to_json(b"{}").is_err());
    }

    #[test]
    fn decodes_configmap_and_secret_maps() {
        let data = field(2, &[field(1, b"a"), field(2, b"1")].concat());
        let binary = field(3, &[field(1, b"b"), field(2, &[0, 1, 2])].concat());
        let cm = [field(1, &field(1, b"cfg")), data, binary].concat();
        let body = [MAGIC.to_vec(), field(1, &[field(1, b"v1"), field(2, b"ConfigMap")].concat()), field(2, &cm)].concat();
        let v = to_json(&body).unwrap();
        assert_eq!(v["data"], json!({"a":"1"}));
        assert_eq!(v["binaryData"], json!({"b":"AAEC"}));
        let secret = [field(1, &field(1, b"pw")), field(2, &[field(1, b"p"), field(2, b"hunter2")].concat()), field(3, b"Opaque")].concat();
        let body = [MAGIC.to_vec(), field(1, &[field(1, b"v1"), field(2, b"Secret")].concat()), field(2, &secret)].concat();
        let v = to_json(&body).unwrap();
        assert_eq!(v["data"], json!({"p":"aHVudGVyMg=="}));
        assert_eq!(v["type"], "Opaque");
    }
}
