//! Image manifests, indexes (manifest lists) and configs as the OCI image spec and
//! Docker's v2 schema 2 write them: the parts a node needs to pull and run an image.

use serde::Deserialize;

use super::{Error, ImageConfig, Layer};

/// A descriptor in a manifest or index.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// `platform` of an index entry.
#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
}

/// An image manifest, or an index / manifest list.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    #[serde(default, rename = "mediaType")]
    pub media_type: String,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub manifests: Option<Vec<Descriptor>>,
}

/// The parts of an OCI/Docker image config we use.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigFile {
    #[serde(default)]
    pub config: Option<ImageConfig>,
    pub rootfs: RootFs,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// Picks linux/amd64 from an index.
pub fn choose_platform(entries: &[Descriptor]) -> Option<&Descriptor> {
    entries
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == "amd64"))
}

/// Whether a layer media type is a (possibly compressed) tar we can unpack.
pub fn is_layer_type(mt: &str) -> bool {
    matches!(
        mt,
        "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
    ) || mt.is_empty()
}

/// Checks a manifest's layers against its config and builds the layer list.
pub fn layers_of(m: &Manifest, cfg: &ConfigFile) -> Result<Vec<Layer>, Error> {
    if m.layers.len() != cfg.rootfs.diff_ids.len() {
        return Err(Error::Unsupported(format!(
            "manifest has {} layers but config has {} diff_ids",
            m.layers.len(),
            cfg.rootfs.diff_ids.len()
        )));
    }
    let mut out = Vec::new();
    for (d, diff) in m.layers.iter().zip(&cfg.rootfs.diff_ids) {
        if !is_layer_type(&d.media_type) {
            return Err(Error::Unsupported(format!("layer {} has unsupported media type {}", d.digest, d.media_type)));
        }
        super::store::digest_hex(&d.digest)?;
        super::store::digest_hex(diff)?;
        out.push(Layer { digest: d.digest.clone(), diff_id: diff.clone(), media_type: d.media_type.clone(), size: d.size });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chooses_linux_amd64_from_index() {
        let j = br#"{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
          {"digest":"sha256:a","platform":{"os":"linux","architecture":"arm64"}},
          {"digest":"sha256:b","platform":{"os":"linux","architecture":"amd64"}}]}"#;
        let m: Manifest = serde_json::from_slice(j).unwrap();
        assert_eq!(choose_platform(m.manifests.as_ref().unwrap()).unwrap().digest, "sha256:b");
    }

    #[test]
    fn layers_must_match_diff_ids() {
        let h = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let m = Manifest {
            media_type: String::new(),
            config: None,
            layers: vec![Descriptor { media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(), digest: h('a'), size: 3, platform: None }],
            manifests: None,
        };
        let cfg = ConfigFile { config: None, rootfs: RootFs { diff_ids: vec![h('b')] } };
        assert_eq!(layers_of(&m, &cfg).unwrap()[0].diff_id, h('b'));
        let cfg2 = ConfigFile::default();
        assert!(layers_of(&m, &cfg2).is_err());
        let mut m2 = m.clone();
        m2.layers[0].media_type = "application/vnd.cncf.helm.chart.content.v1.tar+gzip".into();
        assert!(layers_of(&m2, &cfg).is_err());
    }
}
