//! Unpacking an OCI image layout (image-spec `image-layout.md`) into a tree.
//!
//! `index.json` names a manifest (or a nested index, as `docker save` and
//! skopeo write them); the manifest lists layers, bottom first, each a blob
//! `blobs/<alg>/<hex>` holding a tar (uncompressed, gzip or zstd: GNU tar
//! recognises the compression). Each blob is checked against its digest.
//!
//! Every layer is unpacked by GNU tar into an *empty* scratch directory (so
//! tar's own defences against members that climb out through `..` or a
//! symlink the archive made apply), then merged into the tree by
//! [`merge_layer`], which never follows a symlink: whiteouts `.wh.NAME`
//! delete `NAME` from the layers below, an opaque marker `.wh..wh..opq`
//! empties its directory of what the layers below put there, directories
//! merge, anything else replaces what was there.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

use super::command::{find_program, run_builder};
use super::TemplateError;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// A content descriptor: what a blob is, where, and its digest.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

/// `index.json` or a nested image index.
#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

/// An image manifest: only its layers matter here.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: Option<String>,
    layers: Vec<Descriptor>,
}

/// The architecture of this build in OCI's words.
fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// `blobs/<alg>/<hex>` for a digest `alg:hex`, refusing anything that could
/// be read as a path (image-spec: alg `[a-z0-9]+([+._-][a-z0-9]+)*`, hex
/// `[a-zA-Z0-9=_-]+`).
fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf, TemplateError> {
    let bad = || {
        TemplateError::Other(format!(
            "OCI layout {}: invalid digest {digest:?}",
            layout.display()
        ))
    };
    let (alg, hex) = digest.split_once(':').ok_or_else(bad)?;
    let alg_ok = !alg.is_empty()
        && alg.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'.' | b'_' | b'-')
        })
        && alg.as_bytes()[0].is_ascii_alphanumeric();
    let hex_ok = !hex.is_empty()
        && hex
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
    if !alg_ok || !hex_ok {
        return Err(bad());
    }
    Ok(layout.join("blobs").join(alg).join(hex))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, TemplateError> {
    let text = fs::read(path).map_err(TemplateError::io("reading", path))?;
    serde_json::from_slice(&text)
        .map_err(|e| TemplateError::Other(format!("{}: {e}", path.display())))
}

/// Checks a blob against its digest (sha256 and sha512, with coreutils).
fn verify_digest(path: &Path, digest: &str) -> Result<(), TemplateError> {
    let Some((alg, hex)) = digest.split_once(':') else {
        return Ok(());
    };
    let program = match alg {
        "sha256" => "sha256sum",
        "sha512" => "sha512sum",
        _ => {
            return Err(TemplateError::Other(format!(
                "{}: unsupported digest algorithm {alg:?}",
                path.display()
            )))
        }
    };
    let program = find_program(program).ok_or_else(|| {
        TemplateError::Other(format!(
            "{program} not found: cannot verify {}",
            path.display()
        ))
    })?;
    let out = Command::new(&program)
        .arg("--")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(TemplateError::io("running", &program))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let got = text.split_whitespace().next().unwrap_or("");
    if !out.status.success() || !got.eq_ignore_ascii_case(hex) {
        return Err(TemplateError::Other(format!(
            "{}: digest mismatch (expected {digest}, got {alg}:{got})",
            path.display()
        )));
    }
    Ok(())
}

/// The layers of the layout's image, bottom first, as blob paths.
pub(crate) fn layers(layout: &Path) -> Result<Vec<PathBuf>, TemplateError> {
    let index: Index = read_json(&layout.join("index.json"))?;
    let mut candidates = index.manifests;
    // Nested indexes (at most a few levels) are flattened.
    for _ in 0..4 {
        if !candidates
            .iter()
            .any(|d| INDEX_TYPES.contains(&d.media_type.as_str()))
        {
            break;
        }
        let mut flat = Vec::new();
        for d in candidates {
            if INDEX_TYPES.contains(&d.media_type.as_str()) {
                let path = blob_path(layout, &d.digest)?;
                verify_digest(&path, &d.digest)?;
                let nested: Index = read_json(&path)?;
                flat.extend(nested.manifests);
            } else {
                flat.push(d);
            }
        }
        candidates = flat;
    }
    let manifest = pick_manifest(&candidates).ok_or_else(|| {
        TemplateError::Other(format!(
            "OCI layout {}: no image manifest for linux/{}",
            layout.display(),
            host_architecture()
        ))
    })?;
    let path = blob_path(layout, &manifest.digest)?;
    verify_digest(&path, &manifest.digest)?;
    let manifest: Manifest = read_json(&path)?;
    if let Some(t) = &manifest.media_type {
        if INDEX_TYPES.contains(&t.as_str()) {
            return Err(TemplateError::Other(format!(
                "{}: an index where a manifest was expected",
                path.display()
            )));
        }
    }
    let mut blobs = Vec::new();
    for layer in &manifest.layers {
        let path = blob_path(layout, &layer.digest)?;
        verify_digest(&path, &layer.digest)?;
        blobs.push(path);
    }
    Ok(blobs)
}

/// The one manifest, or the one for linux on this architecture.
fn pick_manifest(candidates: &[Descriptor]) -> Option<&Descriptor> {
    if candidates.len() == 1 {
        return candidates.first();
    }
    candidates.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == host_architecture())
    })
}

/// Unpacks the image of the layout at `layout` into `root` (an existing empty
/// directory); `scratch` (absent, on the same filesystem) receives each layer
/// before it is merged, and is gone afterwards.
pub(crate) fn unpack(layout: &Path, root: &Path, scratch: &Path) -> Result<(), TemplateError> {
    let blobs = layers(layout)?;
    let tar =
        find_program("tar").ok_or_else(|| TemplateError::Other("tar not found in PATH".into()))?;
    for blob in &blobs {
        fs::create_dir(scratch).map_err(TemplateError::io("creating directory", scratch))?;
        let mut cmd = Command::new(&tar);
        cmd.arg("--extract")
            .arg("--file")
            .arg(blob)
            .arg("--directory")
            .arg(scratch)
            .args(["--numeric-owner", "--same-owner", "--preserve-permissions"]);
        let unpacked = run_builder(cmd, "tar").and_then(|()| merge_layer(scratch, root));
        let _ = fs::remove_dir_all(scratch);
        unpacked?;
    }
    Ok(())
}

/// Merges one unpacked layer `layer` into `root`, applying its whiteouts to
/// what the layers below left in `root`. Never follows a symlink in either.
pub(crate) fn merge_layer(layer: &Path, root: &Path) -> Result<(), TemplateError> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(layer).map_err(TemplateError::io("reading directory", layer))? {
        let entry = entry.map_err(TemplateError::io("reading directory", layer))?;
        entries.push(entry.file_name());
    }
    // Whiteouts first: they apply to the layers below only.
    if entries.iter().any(|n| n == OPAQUE) {
        empty_dir(root)?;
    }
    for name in &entries {
        let Some(text) = name.to_str() else { continue };
        if text == OPAQUE {
            continue;
        }
        if let Some(target) = text.strip_prefix(WHITEOUT_PREFIX) {
            if !target.is_empty() && target != "." && target != ".." && !target.contains('/') {
                remove_any(&root.join(target))?;
            }
        }
    }
    for name in &entries {
        if name
            .to_str()
            .is_some_and(|t| t.starts_with(WHITEOUT_PREFIX))
        {
            continue;
        }
        let src = layer.join(name);
        let dst = root.join(name);
        let src_md = fs::symlink_metadata(&src).map_err(TemplateError::io("inspecting", &src))?;
        let dst_md = fs::symlink_metadata(&dst).ok();
        if src_md.is_dir() && dst_md.as_ref().is_some_and(|m| m.is_dir()) {
            merge_layer(&src, &dst)?;
            // The upper layer's directory metadata wins.
            std::os::unix::fs::lchown(&dst, Some(src_md.uid()), Some(src_md.gid()))
                .map_err(TemplateError::io("changing owner of", &dst))?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(src_md.mode() & 0o7777))
                .map_err(TemplateError::io("changing mode of", &dst))?;
        } else {
            if dst_md.is_some() {
                remove_any(&dst)?;
            }
            fs::rename(&src, &dst).map_err(TemplateError::io("moving layer entry to", &dst))?;
        }
    }
    Ok(())
}

/// Removes whatever is at `path` (a directory with its contents), never
/// following a symlink; nothing there is fine.
fn remove_any(path: &Path) -> Result<(), TemplateError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(TemplateError::Io {
            op: "inspecting",
            path: path.to_path_buf(),
            source: e,
        }),
        Ok(md) if md.is_dir() => {
            fs::remove_dir_all(path).map_err(TemplateError::io("removing", path))
        }
        Ok(_) => fs::remove_file(path).map_err(TemplateError::io("removing", path)),
    }
}

/// Removes everything inside `dir`, keeping `dir`.
fn empty_dir(dir: &Path) -> Result<(), TemplateError> {
    for entry in fs::read_dir(dir).map_err(TemplateError::io("reading directory", dir))? {
        let entry = entry.map_err(TemplateError::io("reading directory", dir))?;
        remove_any(&entry.path())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Digests that could be read as paths are refused; good ones map to blobs/ALG/HEX.
    #[test]
    fn digests_are_checked() {
        let l = Path::new("/l");
        assert_eq!(
            blob_path(l, "sha256:ab12").unwrap(),
            Path::new("/l/blobs/sha256/ab12")
        );
        for bad in [
            "sha256",
            "sha256:",
            ":ab",
            "sha256:../x",
            "../sha256:ab",
            "sha256:a/b",
            "SHA256:ab",
            ".x:ab",
        ] {
            assert!(blob_path(l, bad).is_err(), "{bad}");
        }
    }

    /// Whiteouts delete from lower layers, opaque dirs drop lower content but
    /// keep the layer's own, directories merge, files and symlinks replace.
    #[test]
    fn merge_applies_whiteouts() {
        let t = tempfile::tempdir().unwrap();
        let (root, layer) = (t.path().join("root"), t.path().join("layer"));
        for d in ["etc/old", "opq/sub", "keep"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(root.join("etc/gone"), "x").unwrap();
        fs::write(root.join("etc/old/f"), "x").unwrap();
        fs::write(root.join("opq/lower"), "x").unwrap();
        fs::write(root.join("keep/f"), "lower").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        for d in ["etc", "opq", "keep", "link"] {
            fs::create_dir_all(layer.join(d)).unwrap();
        }
        fs::write(layer.join("etc/.wh.gone"), "").unwrap();
        fs::write(layer.join("etc/.wh.old"), "").unwrap();
        fs::write(layer.join("opq/.wh..wh..opq"), "").unwrap();
        fs::write(layer.join("opq/upper"), "u").unwrap();
        fs::write(layer.join("keep/f"), "upper").unwrap();
        fs::write(layer.join("link/passwd"), "not on the host").unwrap();
        merge_layer(&layer, &root).unwrap();
        assert!(!root.join("etc/gone").exists() && !root.join("etc/old").exists());
        assert!(!root.join("etc/.wh.gone").exists());
        assert!(!root.join("opq/sub").exists() && !root.join("opq/lower").exists());
        assert_eq!(fs::read_to_string(root.join("opq/upper")).unwrap(), "u");
        assert!(!root.join("opq/.wh..wh..opq").exists());
        assert_eq!(fs::read_to_string(root.join("keep/f")).unwrap(), "upper");
        // The symlink was replaced by the layer's directory, never followed.
        assert!(fs::symlink_metadata(root.join("link")).unwrap().is_dir());
        assert_eq!(
            fs::read_to_string(root.join("link/passwd")).unwrap(),
            "not on the host"
        );
    }

    /// With several manifests, the one for linux on this architecture is picked.
    #[test]
    fn manifest_by_platform() {
        let d = |arch: &str| Descriptor {
            media_type: String::new(),
            digest: format!("sha256:{arch}"),
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
            }),
        };
        let list = [d("s390x"), d(host_architecture())];
        assert_eq!(
            pick_manifest(&list).unwrap().digest,
            format!("sha256:{}", host_architecture())
        );
        assert!(pick_manifest(&[d("s390x"), d("riscv64")]).is_none());
    }
}
