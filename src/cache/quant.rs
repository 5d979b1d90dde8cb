//! Repo manifest: the file list of one commit, GGUF files grouped into quantisation
//! variants (split shards merged, `mmproj` projectors apart), JSON in and out.

use serde_json::{json, Value};

use crate::error::{Error, ErrorKind, Result};

/// Known quantisation labels (upper case). Matching prefers the last occurrence in the
/// name, then the longest label.
const QUANTS: &[&str] = &[
    "Q2_K", "Q2_K_S", "Q2_K_L", "Q2_K_XL", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q3_K_XL", "Q4_0", "Q4_1",
    "Q4_K_S", "Q4_K_M", "Q4_K_L", "Q4_K_XL", "Q5_0", "Q5_1", "Q5_K_S", "Q5_K_M", "Q5_K_L",
    "Q5_K_XL", "Q6_K", "Q6_K_L", "Q6_K_XL", "Q8_0", "Q8_K_XL", "F16", "BF16", "F32", "IQ1_S",
    "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M",
    "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4",
];

fn is_delim(b: u8) -> bool {
    matches!(b, b'.' | b'-' | b'_')
}

/// Quantisation label of a GGUF file name (any directory part ignored), or `"unknown"`.
/// Case-insensitive; the label must be delimited by `.`, `-`, `_` or the name's ends.
pub fn quant_label(file_name: &str) -> String {
    let base = file_name.rsplit('/').next().unwrap_or(file_name);
    let stem = strip_shard(base).0;
    let stem = stem
        .strip_suffix(".gguf")
        .or_else(|| stem.strip_suffix(".GGUF"))
        .unwrap_or(&stem)
        .to_ascii_uppercase();
    let s = stem.as_bytes();
    let mut best: Option<(usize, &str)> = None;
    for q in QUANTS {
        let mut from = 0;
        while let Some(i) = stem[from..].find(q) {
            let at = from + i;
            let end = at + q.len();
            let ok_l = at == 0 || is_delim(s[at - 1]);
            let ok_r = end == s.len() || is_delim(s[end]);
            if ok_l && ok_r {
                let better = match best {
                    None => true,
                    Some((bi, bq)) => at > bi || (at == bi && q.len() > bq.len()),
                };
                if better {
                    best = Some((at, q));
                }
            }
            from = at + 1;
        }
    }
    best.map_or_else(|| "unknown".to_string(), |(_, q)| q.to_string())
}

/// `name-00001-of-00003.gguf` → (`name.gguf`, Some((1, 3))); other names unchanged.
pub fn strip_shard(name: &str) -> (String, Option<(u32, u32)>) {
    let lower = name.to_ascii_lowercase();
    if let Some(stem) = lower.strip_suffix(".gguf") {
        // "-00001-of-00003" is 15 bytes.
        if stem.len() > 15 {
            let tail = &stem.as_bytes()[stem.len() - 15..];
            let digits = |r: std::ops::Range<usize>| tail[r].iter().all(u8::is_ascii_digit);
            if tail[0] == b'-' && digits(1..6) && &tail[6..10] == b"-of-" && digits(10..15) {
                let t = std::str::from_utf8(tail).unwrap_or("");
                let k = t[1..6].parse().unwrap_or(0);
                let n = t[10..15].parse().unwrap_or(0);
                let keep = stem.len() - 15;
                return (
                    format!("{}{}", &name[..keep], &name[keep + 15..]),
                    Some((k, n)),
                );
            }
        }
    }
    (name.to_string(), None)
}

/// One file of a commit, as the hub lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    pub path: String,
    pub size: Option<u64>,
    /// LFS sha256 (lowercase hex): the blob name and the checksum for downloads.
    pub sha256: Option<String>,
    /// Git blob id of a non-LFS file: its blob name (equals the `ETag` the hub sends).
    pub blob_id: Option<String>,
}

impl ManifestFile {
    /// The name of this file's blob under `blobs/`, when known without a request.
    pub fn blob_name(&self) -> Option<&str> {
        self.sha256.as_deref().or(self.blob_id.as_deref())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VariantStatus {
    /// Nothing of it in the cache.
    Available,
    /// Some files (or a `.incomplete` download) are present.
    Partial,
    /// Every file's blob is present and linked in the snapshot.
    Downloaded,
}

impl VariantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VariantStatus::Available => "available",
            VariantStatus::Partial => "partial",
            VariantStatus::Downloaded => "downloaded",
        }
    }
}

/// One downloadable unit: a single GGUF or all shards of a split one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// File path without the shard suffix, e.g. `Q4_K_M/model-Q4_K_M.gguf`.
    pub name: String,
    /// Quantisation label (`Q4_K_M`, …, or `unknown`).
    pub quant: String,
    /// Paths in download order, first shard first.
    pub files: Vec<String>,
    /// Sum of the file sizes that the hub reported.
    pub size: u64,
    pub status: VariantStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub repo_id: String,
    pub revision: String,
    pub commit: String,
    pub files: Vec<ManifestFile>,
    /// GGUF model variants, sorted by name.
    pub variants: Vec<Variant>,
    /// `mmproj` GGUF files (vision projectors), one entry each.
    pub projectors: Vec<Variant>,
    /// Files the hub listed that were left out, with the reason (`..` in the name,
    /// a name longer than file systems allow, …).
    pub refused: Vec<(String, String)>,
    /// Derived from the cached snapshot, not listed by the hub: only the files that
    /// are cached (and missing shards of split variants) are known.
    pub from_snapshot: bool,
}

impl Manifest {
    /// Build from a file list; statuses start as `Available` (the cache fills them in).
    pub fn new(repo_id: &str, revision: &str, commit: &str, mut files: Vec<ManifestFile>) -> Self {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut variants: Vec<Variant> = Vec::new();
        let mut projectors = Vec::new();
        for f in &files {
            if !f.path.to_ascii_lowercase().ends_with(".gguf") {
                continue;
            }
            let (name, shard) = strip_shard(&f.path);
            let quant = quant_label(&f.path);
            let size = f.size.unwrap_or(0);
            if f.path.to_ascii_lowercase().contains("mmproj") {
                projectors.push(Variant {
                    name,
                    quant,
                    files: vec![f.path.clone()],
                    size,
                    status: VariantStatus::Available,
                });
                continue;
            }
            match variants
                .iter_mut()
                .find(|v| v.name == name && shard.is_some())
            {
                Some(v) => {
                    v.files.push(f.path.clone());
                    v.size += size;
                }
                None => variants.push(Variant {
                    name,
                    quant,
                    files: vec![f.path.clone()],
                    size,
                    status: VariantStatus::Available,
                }),
            }
        }
        // Zero-padded shard numbers sort lexically, so first shard first.
        for v in &mut variants {
            v.files.sort();
        }
        variants.sort_by(|a, b| a.name.cmp(&b.name));
        Manifest {
            repo_id: repo_id.to_string(),
            revision: revision.to_string(),
            commit: commit.to_string(),
            files,
            variants,
            projectors,
            refused: Vec::new(),
            from_snapshot: false,
        }
    }

    pub fn file(&self, path: &str) -> Option<&ManifestFile> {
        self.files.iter().find(|f| f.path == path)
    }

    /// A variant by quant label (case-insensitive) or by exact variant name.
    pub fn variant(&self, quant: &str) -> Result<&Variant> {
        if let Some(v) = self.variants.iter().find(|v| v.name == quant) {
            return Ok(v);
        }
        let hits: Vec<&Variant> = self
            .variants
            .iter()
            .filter(|v| v.quant.eq_ignore_ascii_case(quant))
            .collect();
        match hits.len() {
            1 => Ok(hits[0]),
            0 => Err(Error::not_found(format!(
                "no {quant} variant in {}@{} (have: {})",
                self.repo_id,
                self.revision,
                self.variants
                    .iter()
                    .map(|v| v.quant.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            _ => Err(Error::invalid_arg(format!(
                "{quant} is ambiguous in {}: name one of {}",
                self.repo_id,
                hits.iter()
                    .map(|v| v.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }

    pub fn to_value(&self) -> Value {
        let variant = |v: &Variant| {
            json!({"name": v.name, "quant": v.quant, "files": v.files, "size": v.size,
                   "status": v.status.as_str()})
        };
        json!({
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
            "files": self.files.iter().map(|f| json!({
                "path": f.path, "size": f.size, "sha256": f.sha256, "blob_id": f.blob_id,
            })).collect::<Vec<_>>(),
            "variants": self.variants.iter().map(variant).collect::<Vec<_>>(),
            "projectors": self.projectors.iter().map(variant).collect::<Vec<_>>(),
            "refused": self.refused.iter().map(|(path, reason)| json!({
                "path": path, "reason": reason,
            })).collect::<Vec<_>>(),
            "source": if self.from_snapshot { "snapshot" } else { "hub" },
        })
    }

    /// Parse what [`Manifest::to_json`] wrote; grouping is recomputed from the files.
    pub fn from_json(text: &str) -> Result<Manifest> {
        let bad = |why: String| Error::new(ErrorKind::Io, format!("saved manifest: {why}"));
        let v: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let s = |k: &str| {
            v[k].as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(format!("missing {k}")))
        };
        let files = v["files"]
            .as_array()
            .ok_or_else(|| bad("missing files".into()))?
            .iter()
            .filter_map(|f| {
                Some(ManifestFile {
                    path: f["path"].as_str()?.to_string(),
                    size: f["size"].as_u64(),
                    sha256: f["sha256"].as_str().map(str::to_string),
                    blob_id: f["blob_id"].as_str().map(str::to_string),
                })
            })
            .collect();
        let mut m = Manifest::new(&s("repo_id")?, &s("revision")?, &s("commit")?, files);
        m.refused = v["refused"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| Some((r["path"].as_str()?.into(), r["reason"].as_str()?.into())))
            .collect();
        m.from_snapshot = v["source"].as_str() == Some("snapshot");
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quant_labels() {
        for (name, q) in [
            ("Llama-3-8B-Q4_K_M.gguf", "Q4_K_M"),
            ("llama-3-8b.q8_0.gguf", "Q8_0"),
            ("model-IQ2_XXS.gguf", "IQ2_XXS"),
            ("model-IQ2_XS.gguf", "IQ2_XS"),
            ("model.BF16.gguf", "BF16"),
            ("model-f16.gguf", "F16"),
            ("Q4_K_S/model-Q4_K_S-00001-of-00002.gguf", "Q4_K_S"),
            ("gpt-oss-20b-MXFP4.gguf", "MXFP4"),
            ("model-tq1_0.gguf", "TQ1_0"),
            ("modelQ4_K_M.gguf", "unknown"),
            ("model.gguf", "unknown"),
            ("model-Q3_K_L.gguf", "Q3_K_L"),
            ("model-IQ4_NL.gguf", "IQ4_NL"),
        ] {
            assert_eq!(quant_label(name), q, "{name}");
        }
    }

    #[test]
    fn shard_names() {
        assert_eq!(
            strip_shard("m-Q8_0-00002-of-00003.gguf"),
            ("m-Q8_0.gguf".to_string(), Some((2, 3)))
        );
        assert_eq!(strip_shard("m-0002-of-0003.gguf").1, None);
        assert_eq!(strip_shard("config.json").1, None);
    }
}
