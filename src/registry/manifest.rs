//! Manifest parsing and validation for OCI image manifests/indexes and Docker schema2.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::digest::Digest;
use super::error::RegistryError;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Layer media types whose content is, by design, not stored in registries.
const FOREIGN_LAYERS: [&str; 4] = [
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

/// A content descriptor as it appears in manifests and the referrers response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: String,
    /// Size in bytes.
    pub size: i64,
    /// Artifact type, for referrers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Map<String, Value>>,
    /// Alternative download locations (foreign layers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    /// Platform of an index entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Value>,
}

impl Descriptor {
    fn parsed_digest(&self) -> Result<Digest, RegistryError> {
        self.digest.parse().map_err(|e| {
            RegistryError::ManifestInvalid(format!("descriptor digest {}: {e}", self.digest))
        })
    }

    /// The digest, after checking the declared size is not negative.
    fn checked_digest(&self) -> Result<Digest, RegistryError> {
        let digest = self.parsed_digest()?;
        if self.size < 0 {
            return Err(RegistryError::ManifestInvalid(format!(
                "descriptor {digest} has a negative size ({})",
                self.size
            )));
        }
        Ok(digest)
    }
}

/// Content a manifest needs the repository to hold, with the size its descriptor declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referenced {
    /// Its digest.
    pub digest: Digest,
    /// The size the manifest declares for it.
    pub size: u64,
}

/// Collects each referenced digest once, refusing one declared with two different sizes.
#[derive(Default)]
struct ReferenceSet {
    sizes: HashMap<Digest, u64>,
    list: Vec<Referenced>,
}

impl ReferenceSet {
    fn add(&mut self, descriptor: &Descriptor) -> Result<(), RegistryError> {
        let digest = descriptor.checked_digest()?;
        // checked_digest refused negative sizes.
        let size = descriptor.size as u64;
        match self.sizes.get(&digest) {
            Some(&known) if known != size => Err(RegistryError::ManifestInvalid(format!(
                "descriptor {digest} is listed with sizes {known} and {size}"
            ))),
            Some(_) => Ok(()),
            None => {
                self.sizes.insert(digest.clone(), size);
                self.list.push(Referenced { digest, size });
                Ok(())
            }
        }
    }
}

/// What the registry needs to know of a manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// `artifactType`, or for image manifests without one, the config's media type.
    pub artifact_type: Option<String>,
    /// Top-level annotations.
    pub annotations: Option<Map<String, Value>>,
    /// The subject this manifest refers to, if any.
    pub subject: Option<Digest>,
    /// Blobs that must exist in the repository (config and distributable layers), each once.
    pub blobs: Vec<Referenced>,
    /// Manifests that must exist in the repository (index entries), each once.
    pub manifests: Vec<Referenced>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<Map<String, Value>>,
}

fn strip_params(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// Parses and validates a manifest document pushed with `content_type` (if any).
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, RegistryError> {
    let raw: RawManifest = serde_json::from_slice(bytes)
        .map_err(|e| RegistryError::ManifestInvalid(format!("not a valid manifest: {e}")))?;
    if raw.schema_version != Some(2) {
        return Err(RegistryError::ManifestInvalid(
            "schemaVersion must be 2 (schema 1 manifests are not supported)".into(),
        ));
    }
    let header = content_type.map(strip_params).filter(|t| !t.is_empty());
    let media_type = match (&raw.media_type, header) {
        (Some(body), Some(header)) if body != header => {
            return Err(RegistryError::ManifestInvalid(format!(
                "mediaType {body} does not match Content-Type {header}"
            )))
        }
        (Some(body), _) => body.clone(),
        (None, Some(header)) if [OCI_MANIFEST, OCI_INDEX].contains(&header) => header.to_owned(),
        (None, _) => infer_media_type(&raw)?,
    };
    let mut manifest = Manifest {
        artifact_type: raw.artifact_type.clone(),
        annotations: raw.annotations.clone(),
        subject: raw
            .subject
            .as_ref()
            .map(Descriptor::checked_digest)
            .transpose()?,
        blobs: Vec::new(),
        manifests: Vec::new(),
    };
    match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let config = raw.config.as_ref().ok_or_else(|| {
                RegistryError::ManifestInvalid("image manifest without config".into())
            })?;
            if raw.manifests.is_some() {
                return Err(RegistryError::ManifestInvalid(
                    "image manifest must not have manifests".into(),
                ));
            }
            let mut blobs = ReferenceSet::default();
            blobs.add(config)?;
            for layer in raw.layers.iter().flatten() {
                let foreign = FOREIGN_LAYERS.contains(&layer.media_type.as_str())
                    || layer.urls.as_ref().is_some_and(|u| !u.is_empty());
                if foreign {
                    layer.checked_digest()?;
                } else {
                    blobs.add(layer)?;
                }
            }
            manifest.blobs = blobs.list;
            if manifest.artifact_type.is_none() && media_type == OCI_MANIFEST {
                manifest.artifact_type = Some(config.media_type.clone());
            }
        }
        OCI_INDEX | DOCKER_LIST => {
            let entries = raw
                .manifests
                .as_ref()
                .ok_or_else(|| RegistryError::ManifestInvalid("index without manifests".into()))?;
            if raw.config.is_some() || raw.layers.is_some() {
                return Err(RegistryError::ManifestInvalid(
                    "index must not have config or layers".into(),
                ));
            }
            let mut manifests = ReferenceSet::default();
            for entry in entries {
                manifests.add(entry)?;
            }
            manifest.manifests = manifests.list;
        }
        other => {
            return Err(RegistryError::ManifestInvalid(format!(
                "unsupported manifest media type {other}"
            )))
        }
    }
    Ok(manifest)
}

fn infer_media_type(raw: &RawManifest) -> Result<String, RegistryError> {
    match (&raw.config, &raw.manifests) {
        (Some(_), None) => Ok(OCI_MANIFEST.into()),
        (None, Some(_)) => Ok(OCI_INDEX.into()),
        _ => Err(RegistryError::ManifestInvalid(
            "cannot tell the manifest type: no mediaType".into(),
        )),
    }
}

/// The media type to serve a stored manifest with.
pub fn stored_media_type(bytes: &[u8]) -> String {
    serde_json::from_slice::<RawManifest>(bytes)
        .ok()
        .and_then(|raw| match raw.media_type.clone() {
            Some(t) => Some(t),
            None => infer_media_type(&raw).ok(),
        })
        .unwrap_or_else(|| OCI_MANIFEST.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    #[test]
    fn image_manifest() {
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{EMPTY}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{EMPTY}","size":2}},{{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar","digest":"{EMPTY}","size":2}}]}}"#
        );
        let m = parse(doc.as_bytes(), Some(OCI_MANIFEST)).expect("valid");
        // The config and the layer are the same content: listed once.
        assert_eq!(m.blobs.len(), 1);
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.empty.v1+json")
        );
        assert!(matches!(
            parse(doc.as_bytes(), Some(DOCKER_MANIFEST)),
            Err(RegistryError::ManifestInvalid(_))
        ));
    }

    #[test]
    fn rejects_garbage() {
        for doc in [
            "",
            "{}",
            "[]",
            r#"{"schemaVersion":1}"#,
            r#"{"schemaVersion":2}"#,
        ] {
            assert!(parse(doc.as_bytes(), None).is_err(), "{doc}");
        }
        let bad_digest = r#"{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"sha256:xyz","size":2},"layers":[]}"#;
        assert!(parse(bad_digest.as_bytes(), None).is_err());
    }

    #[test]
    fn sizes_must_be_sound() {
        let layer = |size: i64| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{EMPTY}","size":{size}}}"#
            )
        };
        let doc = |layers: &[String]| {
            format!(
                r#"{{"schemaVersion":2,"config":{{"mediaType":"a/b","digest":"{EMPTY}","size":2}},"layers":[{}]}}"#,
                layers.join(",")
            )
        };
        let invalid = |text: String| match parse(text.as_bytes(), None) {
            Err(RegistryError::ManifestInvalid(message)) => message,
            other => panic!("{text}: {other:?}"),
        };
        assert!(invalid(doc(&[layer(-1)])).contains("negative"));
        assert!(invalid(doc(&[layer(2), layer(3)])).contains("sizes 2 and 3"));
        let many = vec![layer(2); 1000];
        let m = parse(doc(&many).as_bytes(), None).expect("valid");
        assert_eq!(
            m.blobs,
            [Referenced {
                digest: EMPTY.parse().expect("digest"),
                size: 2
            }]
        );
        let foreign = r#"{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar","digest":"DIGEST","size":-5}"#
            .replace("DIGEST", EMPTY);
        assert!(invalid(doc(&[foreign])).contains("negative"));
    }
}
