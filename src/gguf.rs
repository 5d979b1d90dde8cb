//! A bounds-checked GGUF reader. llama.cpp trusts the file it parses (a hostile
//! header can make it abort() the host process), so every model is read here first:
//! header, metadata and tensor table, each read checked against the file size and
//! each count checked against the bytes left before anything is allocated.

use crate::error::{Error, Result};
use std::path::Path;

const MAGIC: &[u8; 4] = b"GGUF";
const MAX_DIMS: u32 = 4;
const MAX_ARRAY_DEPTH: u32 = 4;
const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

fn value_type_name(t: u32) -> &'static str {
    match t {
        0 => "u8",
        1 => "i8",
        2 => "u16",
        3 => "i16",
        4 => "u32",
        5 => "i32",
        6 => "f32",
        7 => "bool",
        8 => "string",
        9 => "array",
        10 => "u64",
        11 => "i64",
        12 => "f64",
        _ => "unknown",
    }
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::F32(_) => "f32",
            Value::Bool(_) => "bool",
            Value::Str(_) => "string",
            Value::Array(_) => "array",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F64(_) => "f64",
        }
    }

    /// Any non-negative integer as u64.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// JSON form. Arrays longer than 64 elements (the vocabulary: ~50k strings) are
    /// summarised so a metadata document stays small.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Value::U8(v) => json!(v),
            Value::I8(v) => json!(v),
            Value::U16(v) => json!(v),
            Value::I16(v) => json!(v),
            Value::U32(v) => json!(v),
            Value::I32(v) => json!(v),
            Value::F32(v) => json!(v),
            Value::Bool(v) => json!(v),
            Value::Str(s) => json!(s),
            Value::U64(v) => json!(v),
            Value::I64(v) => json!(v),
            Value::F64(v) => json!(v),
            Value::Array(a) if a.len() > 64 => json!({
                "type": "array",
                "len": a.len(),
                "elem_type": a.first().map_or("unknown", |v| v.type_name()),
            }),
            Value::Array(a) => serde_json::Value::Array(a.iter().map(|v| v.to_json()).collect()),
        }
    }

    /// Text form: scalars as text, strings raw, long arrays summarised.
    pub fn to_display_string(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Array(a) if a.len() > 64 => format!(
                "[array of {} {}]",
                a.len(),
                a.first().map_or("unknown", |v| v.type_name())
            ),
            Value::Array(_) => self.to_json().to_string(),
            Value::F32(v) => v.to_string(),
            Value::F64(v) => v.to_string(),
            other => other.to_json().to_string(),
        }
    }
}

/// One tensor's entry in the table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Offset relative to the data section.
    pub offset: u64,
    /// Bytes of data.
    pub size: u64,
}

/// A parsed, validated GGUF header.
#[derive(Debug, Clone)]
pub struct GgufInfo {
    pub version: u32,
    pub alignment: u64,
    pub data_offset: u64,
    pub file_size: u64,
    pub kv: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
}

/// (name, block size in elements, bytes per block) by ggml type id, as in ggml.c's
/// type_traits. Ids 4, 5 (removed Q4_2/Q4_3) and 31–33, 36–38 are not valid.
const GGML_TYPES: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
];

pub fn ggml_type_name(t: u32) -> Option<&'static str> {
    GGML_TYPES.iter().find(|e| e.0 == t).map(|e| e.1)
}

/// (block size in elements, bytes per block).
pub fn ggml_type_block(t: u32) -> Option<(u64, u64)> {
    GGML_TYPES.iter().find(|e| e.0 == t).map(|e| (e.2, e.3))
}

/// llama_ftype numbering (llama.h) → label.
fn ftype_label(ft: u64) -> Option<&'static str> {
    Some(match ft {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        _ => return None,
    })
}

/// A cursor that fails, with the position and what it was reading, instead of
/// reading past the end.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    name: &'a str,
}

impl<'a> Reader<'a> {
    fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::bad_model(format!("{}: {msg}", self.name))
    }

    fn left(&self) -> u64 {
        (self.b.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.left() {
            return Err(self.err(format_args!(
                "truncated: {} needs {n} bytes at offset {}, file is {} bytes",
                what(),
                self.pos,
                self.b.len()
            )));
        }
        let s = &self.b[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.u64(&|| format!("the length of {}", what()))?;
        if len > self.left() {
            return Err(self.err(format_args!(
                "{} claims {len} bytes but only {} remain in the file",
                what(),
                self.left()
            )));
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| {
            self.err(format_args!(
                "{} is not valid UTF-8 (byte {})",
                what(),
                e.utf8_error().valid_up_to()
            ))
        })
    }

    fn value(&mut self, t: u32, depth: u32, what: &dyn Fn() -> String) -> Result<Value> {
        Ok(match t {
            0 => Value::U8(self.arr::<1>(what)?[0]),
            1 => Value::I8(self.arr::<1>(what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.arr(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.arr(what)?)),
            4 => Value::U32(u32::from_le_bytes(self.arr(what)?)),
            5 => Value::I32(i32::from_le_bytes(self.arr(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.arr(what)?)),
            7 => match self.arr::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(self.err(format_args!(
                        "{} is a bool with byte value {b} (must be 0 or 1)",
                        what()
                    )))
                }
            },
            8 => Value::Str(self.string(what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(format_args!(
                        "{} nests arrays deeper than {MAX_ARRAY_DEPTH}",
                        what()
                    )));
                }
                let et = self.u32(&|| format!("the element type of {}", what()))?;
                if et > 12 {
                    return Err(self.err(format_args!("{} has unknown element type {et}", what())));
                }
                let n = self.u64(&|| format!("the length of {}", what()))?;
                // Every element takes at least one byte (strings and arrays: 8), so a
                // count larger than the bytes left is a lie; check before allocating.
                let min = match et {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    _ => 8,
                };
                if n.checked_mul(min).is_none_or(|need| need > self.left()) {
                    return Err(self.err(format_args!(
                        "{} claims {n} {} elements but only {} bytes remain",
                        what(),
                        value_type_name(et),
                        self.left()
                    )));
                }
                let mut v = Vec::with_capacity(n as usize);
                for i in 0..n {
                    v.push(self.value(et, depth + 1, &|| format!("{}[{i}]", what()))?);
                }
                Value::Array(v)
            }
            10 => Value::U64(u64::from_le_bytes(self.arr(what)?)),
            11 => Value::I64(i64::from_le_bytes(self.arr(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.arr(what)?)),
            t => return Err(self.err(format_args!("{} has unknown value type {t}", what()))),
        })
    }
}

impl GgufInfo {
    /// Parse and validate a whole GGUF image; `name` appears in error messages.
    pub fn parse(bytes: &[u8], name: &str) -> Result<GgufInfo> {
        let mut r = Reader {
            b: bytes,
            pos: 0,
            name,
        };
        if bytes.is_empty() {
            return Err(r.err("file is empty (0 bytes)"));
        }
        if bytes.len() < 4 || &bytes[..4] != MAGIC {
            let shown: String = bytes[..bytes.len().min(4)]
                .iter()
                .map(|&b| {
                    if b.is_ascii_graphic() {
                        (b as char).to_string()
                    } else {
                        format!("\\x{b:02x}")
                    }
                })
                .collect();
            return Err(r.err(format_args!(
                "not a GGUF file (magic is '{shown}', expected 'GGUF')"
            )));
        }
        r.pos = 4;
        let version = r.u32(&|| "the version".into())?;
        if version != 2 && version != 3 {
            return Err(r.err(format_args!(
                "unsupported GGUF version {version} (supported: 2, 3)"
            )));
        }
        let n_tensors = r.u64(&|| "the tensor count".into())?;
        let n_kv = r.u64(&|| "the metadata count".into())?;
        // A key/value pair takes at least 13 bytes, a tensor entry at least 24.
        if n_kv.checked_mul(13).is_none_or(|n| n > r.left()) {
            return Err(r.err(format_args!(
                "metadata count {n_kv} is absurd for a {}-byte file",
                bytes.len()
            )));
        }
        if n_tensors.checked_mul(24).is_none_or(|n| n > r.left()) {
            return Err(r.err(format_args!(
                "tensor count {n_tensors} is absurd for a {}-byte file",
                bytes.len()
            )));
        }
        let mut kv: Vec<(String, Value)> = Vec::with_capacity(n_kv as usize);
        let mut seen = std::collections::HashSet::new();
        for i in 0..n_kv {
            let key = r.string(&|| format!("metadata key #{i}"))?;
            let t = r.u32(&|| format!("the type of metadata key '{key}'"))?;
            let v = r.value(t, 0, &|| format!("metadata key '{key}'"))?;
            if !seen.insert(key.clone()) {
                return Err(r.err(format_args!("duplicate metadata key '{key}'")));
            }
            kv.push((key, v));
        }
        let alignment = match kv.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, Value::U32(a))) if *a != 0 && a.is_power_of_two() => *a as u64,
            Some((_, v)) => {
                return Err(r.err(format_args!(
                    "general.alignment must be a u32 power of two, got {}",
                    v.to_display_string()
                )))
            }
        };
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut names = std::collections::HashSet::new();
        for i in 0..n_tensors {
            let name = r.string(&|| format!("tensor name #{i}"))?;
            let what = |field: &str| format!("{field} of tensor '{name}'");
            let n_dims = r.u32(&|| what("the dimension count"))?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(r.err(format_args!(
                    "tensor '{name}' has {n_dims} dimensions (must be 1..={MAX_DIMS})"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64(&|| what("a dimension"))?);
            }
            let ggml_type = r.u32(&|| what("the type"))?;
            let offset = r.u64(&|| what("the offset"))?;
            let Some((block, type_size)) = ggml_type_block(ggml_type) else {
                return Err(r.err(format_args!(
                    "unknown ggml type {ggml_type} for tensor '{name}'"
                )));
            };
            let n_elem = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
            let Some(n_elem) = n_elem.filter(|&n| n < (1u64 << 62)) else {
                return Err(r.err(format_args!("tensor '{name}' dims {dims:?} overflow")));
            };
            if dims[0] % block != 0 {
                return Err(r.err(format_args!(
                    "tensor '{name}' first dimension {} is not a multiple of the {} block size {block}",
                    dims[0],
                    ggml_type_name(ggml_type).unwrap_or("?")
                )));
            }
            let size = (n_elem / block)
                .checked_mul(type_size)
                .ok_or_else(|| r.err(format_args!("tensor '{name}' size overflows")))?;
            if offset % alignment != 0 {
                return Err(r.err(format_args!("tensor '{name}' offset {offset} is not a multiple of the alignment {alignment}")));
            }
            if !names.insert(name.clone()) {
                return Err(r.err(format_args!("duplicate tensor name '{name}'")));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
                size,
            });
        }
        let data_offset = (r.pos as u64).div_ceil(alignment) * alignment;
        let file_size = bytes.len() as u64;
        if !tensors.is_empty() && data_offset > file_size {
            return Err(r.err(format_args!(
                "truncated: the tensor data should start at offset {data_offset}, file is {file_size} bytes"
            )));
        }
        for t in &tensors {
            let end = data_offset
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.size));
            if end.is_none_or(|e| e > file_size) {
                return Err(r.err(format_args!(
                    "tensor '{}' data [{}, {}) ends past the end of the file ({file_size} bytes): truncated or corrupt",
                    t.name,
                    data_offset.saturating_add(t.offset),
                    data_offset.saturating_add(t.offset).saturating_add(t.size)
                )));
            }
        }
        Ok(GgufInfo {
            version,
            alignment,
            data_offset,
            file_size,
            kv,
            tensors,
        })
    }

    /// Memory-map and parse a file.
    pub fn open(path: &Path) -> Result<GgufInfo> {
        let shown = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
        let meta = file.metadata().map_err(|e| Error::io("stat", path, e))?;
        if meta.is_dir() {
            return Err(Error::bad_model(format!(
                "{shown}: is a directory, not a GGUF file"
            )));
        }
        if meta.len() == 0 {
            return Err(Error::bad_model(format!(
                "{shown}: file is empty (0 bytes)"
            )));
        }
        // SAFETY: the map is read-only and dropped before returning; a file truncated
        // underneath us could SIGBUS, the same risk llama.cpp's own mmap takes.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io("mmap", path, e))?;
        GgufInfo::parse(&map, &shown)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(Value::as_str)
    }

    /// An architecture-scoped integer, e.g. `arch_u64("context_length")`.
    pub fn arch_u64(&self, suffix: &str) -> Option<u64> {
        let arch = self.architecture()?;
        self.get(&format!("{arch}.{suffix}"))
            .and_then(Value::as_u64)
    }

    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.size).sum()
    }

    pub fn n_params(&self) -> u64 {
        self.tensors
            .iter()
            .map(|t| t.dims.iter().product::<u64>())
            .sum()
    }

    /// Quantisation label from `general.file_type`, else the type holding most bytes.
    pub fn quant_label(&self) -> Option<String> {
        if let Some(l) = self
            .get("general.file_type")
            .and_then(Value::as_u64)
            .and_then(ftype_label)
        {
            return Some(l.to_owned());
        }
        let mut by_type: std::collections::BTreeMap<u32, u64> = Default::default();
        for t in &self.tensors {
            *by_type.entry(t.ggml_type).or_default() += t.size;
        }
        by_type
            .into_iter()
            .max_by_key(|&(_, b)| b)
            .and_then(|(t, _)| ggml_type_name(t))
            .map(str::to_owned)
    }

    pub fn to_json(&self) -> serde_json::Value {
        let meta: serde_json::Map<String, serde_json::Value> = self
            .kv
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        serde_json::json!({
            "version": self.version,
            "alignment": self.alignment,
            "file_size": self.file_size,
            "tensor_count": self.tensors.len(),
            "tensor_bytes": self.tensor_bytes(),
            "metadata": meta,
        })
    }
}

/// "model-00001-of-00003.gguf" → ("model", 1, 3).
pub fn parse_split_name(file_name: &str) -> Option<(String, u32, u32)> {
    let stem = file_name.strip_suffix(".gguf")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, no) = rest.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(no) || !digits(count) || prefix.is_empty() {
        return None;
    }
    let (no, count): (u32, u32) = (no.parse().ok()?, count.parse().ok()?);
    (no >= 1 && no <= count).then(|| (prefix.to_owned(), no, count))
}

/// Validate a model given its path; for a split model (the first shard's path), all
/// shards are checked and their tensors and sizes combined.
pub fn open_model(path: &Path) -> Result<GgufInfo> {
    let file_name = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
    let Some((prefix, no, count)) = parse_split_name(file_name) else {
        return GgufInfo::open(path);
    };
    if no != 1 {
        return Err(Error::invalid_arg(format!(
            "{}: this is shard {no} of {count}; load the first shard ({prefix}-00001-of-{count:05}.gguf)",
            path.display()
        )));
    }
    let mut first = GgufInfo::open(path)?;
    if let Some(n) = first.get("split.count").and_then(Value::as_u64) {
        if n != count as u64 {
            return Err(Error::bad_model(format!(
                "{}: split.count is {n} but the file name says {count} shards",
                path.display()
            )));
        }
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    for k in 2..=count {
        let p = dir.join(format!("{prefix}-{k:05}-of-{count:05}.gguf"));
        if !p.exists() {
            return Err(Error::not_found(format!(
                "{}: shard {k} of {count} is missing ({})",
                path.display(),
                p.display()
            )));
        }
        let shard = GgufInfo::open(&p)?;
        first.file_size += shard.file_size;
        first.tensors.extend(shard.tensors);
    }
    Ok(first)
}

/// Builders of small GGUF images for tests (here and in integration tests).
#[doc(hidden)]
pub mod testgen {
    /// A GGUF v3 image with the given string kvs and F32 tensors of `dims`.
    pub fn build(kvs: &[(&str, &str)], tensors: &[(&str, &[u64])]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        b.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
        let s = |b: &mut Vec<u8>, s: &str| {
            b.extend_from_slice(&(s.len() as u64).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        };
        for (k, v) in kvs {
            s(&mut b, k);
            b.extend_from_slice(&8u32.to_le_bytes());
            s(&mut b, v);
        }
        let mut off = 0u64;
        let mut sizes = Vec::new();
        for (name, dims) in tensors {
            s(&mut b, name);
            b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in *dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&off.to_le_bytes());
            let size = dims.iter().product::<u64>() * 4;
            sizes.push(size);
            off += size.div_ceil(32) * 32;
        }
        while b.len() % 32 != 0 {
            b.push(0);
        }
        for size in sizes {
            let start = b.len();
            b.resize(start + (size.div_ceil(32) * 32) as usize, 0x3f);
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn small() -> Vec<u8> {
        testgen::build(
            &[("general.architecture", "llama"), ("general.name", "tiny")],
            &[("a", &[8, 2]), ("b", &[4])],
        )
    }

    fn bad(bytes: &[u8]) -> String {
        let e = GgufInfo::parse(bytes, "t.gguf").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadModel, "{}", e.message());
        assert!(e.message().starts_with("t.gguf: "), "{}", e.message());
        e.message().to_owned()
    }

    #[test]
    fn small_file_parses() {
        let g = GgufInfo::parse(&small(), "t").unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.architecture(), Some("llama"));
        assert_eq!(g.tensors.len(), 2);
        assert_eq!(g.tensors[0].size, 64);
        assert_eq!(g.tensors[1].offset, 64);
        assert_eq!(g.n_params(), 20);
        assert_eq!(g.quant_label().as_deref(), Some("F32"));
        assert_eq!(g.to_json()["metadata"]["general.name"], "tiny");
    }

    #[test]
    fn every_truncation_is_bad_model() {
        let b = small();
        // Padding after the last tensor's data is optional; everything before it is not.
        let g = GgufInfo::parse(&b, "t").unwrap();
        let end = g.data_offset + g.tensors.iter().map(|t| t.offset + t.size).max().unwrap();
        for n in 0..end as usize {
            bad(&b[..n]);
        }
        GgufInfo::parse(&b[..end as usize], "t").unwrap();
    }

    #[test]
    fn header_faults_are_named() {
        assert!(bad(b"PK\x03\x04rest").contains("not a GGUF file"));
        assert!(bad(b"").contains("empty"));
        let mut b = small();
        b[4] = 1;
        assert!(bad(&b).contains("version 1"));
        b[4] = 99;
        assert!(bad(&b).contains("version 99"));
        let mut b = small();
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(bad(&b).contains("tensor count"));
        let mut b = small();
        b[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(bad(&b).contains("metadata count"));
        // First key length absurd.
        let mut b = small();
        b[24..32].copy_from_slice(&(1u64 << 50).to_le_bytes());
        assert!(bad(&b).contains("metadata key #0"));
    }

    fn kv_image(t: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        b.push(b'k');
        b.extend_from_slice(&t.to_le_bytes());
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn metadata_faults_are_named() {
        assert!(bad(&kv_image(7, &[2])).contains("bool"));
        assert!(bad(&kv_image(42, &[0; 8])).contains("unknown value type 42"));
        let mut arr = 8u32.to_le_bytes().to_vec();
        arr.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(bad(&kv_image(9, &arr)).contains("claims"));
        let mut s = 3u64.to_le_bytes().to_vec();
        s.extend_from_slice(&[b'a', 0xff, b'b']);
        assert!(bad(&kv_image(8, &s)).contains("UTF-8"));
        // Nested arrays beyond the depth limit.
        let mut deep = Vec::new();
        for _ in 0..6 {
            deep.extend_from_slice(&9u32.to_le_bytes());
            deep.extend_from_slice(&1u64.to_le_bytes());
        }
        deep.extend_from_slice(&[0; 16]);
        assert!(bad(&kv_image(9, &deep)).contains("deeper"));
        let ok = GgufInfo::parse(&kv_image(4, &7u32.to_le_bytes()), "t").unwrap();
        assert_eq!(ok.get("k").and_then(Value::as_u64), Some(7));
    }

    /// Offset of the first tensor entry's fields in `small()`.
    fn tensor_field_offsets(b: &[u8]) -> (usize, usize, usize) {
        // header 24 + two kvs
        let mut p = 24;
        for _ in 0..2 {
            let kl = u64::from_le_bytes(b[p..p + 8].try_into().unwrap()) as usize;
            p += 8 + kl + 4;
            let vl = u64::from_le_bytes(b[p..p + 8].try_into().unwrap()) as usize;
            p += 8 + vl;
        }
        let nl = u64::from_le_bytes(b[p..p + 8].try_into().unwrap()) as usize;
        let ndims_at = p + 8 + nl;
        let type_at = ndims_at + 4 + 2 * 8;
        (ndims_at, type_at, type_at + 4)
    }

    #[test]
    fn tensor_faults_are_named() {
        let (nd, ty, off) = tensor_field_offsets(&small());
        let mut b = small();
        b[nd] = 0;
        assert!(bad(&b).contains("0 dimensions"));
        let mut b = small();
        b[nd] = 5;
        assert!(bad(&b).contains("5 dimensions"));
        let mut b = small();
        b[ty] = 99;
        assert!(bad(&b).contains("unknown ggml type 99"));
        let mut b = small();
        b[ty] = 4;
        assert!(bad(&b).contains("unknown ggml type 4"));
        let mut b = small();
        b[off] = 3;
        assert!(bad(&b).contains("alignment"));
        let mut b = small();
        b[off..off + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(bad(&b).contains("past the end"));
        let mut b = small();
        b[nd + 4..nd + 12].copy_from_slice(&(1u64 << 40).to_le_bytes());
        b[nd + 12..nd + 20].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(bad(&b).contains("overflow"));
        // Q4_0 needs ne[0] to be a multiple of 32.
        let mut b = small();
        b[ty] = 2;
        assert!(bad(&b).contains("multiple of"));
    }

    #[test]
    fn byte_flips_never_panic() {
        let base = small();
        let mut x: u64 = 0x9E3779B97F4A7C15;
        for _ in 0..20000 {
            let mut b = base.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x % b.len() as u64) as usize;
                b[i] ^= (x >> 32) as u8 | 1;
            }
            if let Err(e) = GgufInfo::parse(&b, "f") {
                assert_eq!(e.kind(), ErrorKind::BadModel);
            }
        }
    }

    #[test]
    fn split_names() {
        assert_eq!(
            parse_split_name("m-00001-of-00003.gguf"),
            Some(("m".into(), 1, 3))
        );
        assert_eq!(
            parse_split_name("a-b-00002-of-00002.gguf"),
            Some(("a-b".into(), 2, 2))
        );
        assert_eq!(parse_split_name("m-1-of-3.gguf"), None);
        assert_eq!(parse_split_name("m-00004-of-00003.gguf"), None);
        assert_eq!(parse_split_name("m.gguf"), None);
    }

    #[test]
    fn split_models_are_checked_shard_by_shard() {
        let dir = std::env::temp_dir().join(format!("ta-gguf-split-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for k in 1..=3 {
            let name = format!("t{k}");
            let img = testgen::build(
                &[("general.architecture", "llama")],
                &[(name.as_str(), &[8])],
            );
            std::fs::write(dir.join(format!("m-{k:05}-of-00003.gguf")), img).unwrap();
        }
        let g = open_model(&dir.join("m-00001-of-00003.gguf")).unwrap();
        assert_eq!(g.tensors.len(), 3);
        std::fs::remove_file(dir.join("m-00003-of-00003.gguf")).unwrap();
        let e = open_model(&dir.join("m-00001-of-00003.gguf")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(
            e.message().contains("m-00003-of-00003.gguf"),
            "{}",
            e.message()
        );
        let e = open_model(&dir.join("m-00002-of-00003.gguf")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArg);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_and_empty_files() {
        let e = GgufInfo::open(Path::new("/nonexistent/x.gguf")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let p = std::env::temp_dir().join(format!("ta-empty-{}.gguf", std::process::id()));
        std::fs::write(&p, b"").unwrap();
        let e = GgufInfo::open(&p).unwrap_err();
        assert!(e.message().contains("empty"));
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn real_model_parses() {
        let p = std::env::var_os("TABAGENT_TEST_MODEL")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                    .join(".cache/tabagent/models/SmolLM2-135M-Instruct.Q4_1.gguf")
            });
        if !p.exists() {
            eprintln!("skipping: {} not present", p.display());
            return;
        }
        let g = GgufInfo::open(&p).unwrap();
        assert_eq!(g.architecture(), Some("llama"));
        assert_eq!(g.arch_u64("context_length"), Some(8192));
        assert_eq!(g.arch_u64("embedding_length"), Some(576));
        assert_eq!(g.arch_u64("block_count"), Some(30));
        assert_eq!(g.quant_label().as_deref(), Some("Q4_1"));
        assert!(
            (130_000_000..140_000_000).contains(&g.n_params()),
            "{}",
            g.n_params()
        );
        assert!(g.data_offset + g.tensor_bytes() <= g.file_size);
        assert!(g
            .get("tokenizer.ggml.tokens")
            .unwrap()
            .to_display_string()
            .contains("49152"));
    }
}
