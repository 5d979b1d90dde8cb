//! A bounds-checked GGUF reader. llama.cpp trusts the file it parses (a hostile
//! header can make it abort() the host process), so every model is read here first:
//! header, metadata and tensor table, each read checked against the file size and
//! each count checked against the bytes left before anything is allocated. The
//! checks mirror llama.cpp's `gguf_init_from_file_impl` so that a file accepted here
//! is one llama.cpp's parser accepts too, and the messages name the exact problem.

use crate::error::{Error, Result};
use std::collections::HashSet;
use std::fmt;
use std::path::Path;

const MAGIC: &[u8; 4] = b"GGUF";
/// GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;
/// Nested arrays are legal GGUF, but no model needs deep ones; the cap bounds recursion.
const MAX_ARRAY_DEPTH: u32 = 4;
/// GGUF_DEFAULT_ALIGNMENT.
const DEFAULT_ALIGNMENT: u64 = 32;
/// GGML_MAX_NAME: llama.cpp rejects tensor names of this many bytes or more.
const MAX_TENSOR_NAME: usize = 64;
/// A parsed element costs ~32 bytes of `Value` even when it took 1 byte on disk, so a
/// hostile file could inflate 32x; real vocabularies (tokens + scores + types +
/// merges) stay well under a few million elements.
const MAX_TOTAL_ARRAY_ELEMENTS: u64 = 1 << 23;
/// Smallest encoded kv: key length, 1-byte key, value type, 1-byte value.
const MIN_KV_BYTES: u64 = 8 + 1 + 4 + 1;
/// Smallest encoded tensor info: name length, n_dims, one dim, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;
/// Counts are untrusted even after the size check, so capacity hints stop here and
/// anything larger grows by pushing (bounded by what actually parses).
const MAX_PREALLOC: u64 = 4096;
/// Arrays longer than this are summarised in JSON (the vocabulary has ~50k strings).
const JSON_ARRAY_MAX: usize = 64;
/// Arrays up to this length are shown element by element in display strings.
const DISPLAY_ARRAY_MAX: usize = 8;

const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STR: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

fn value_type_name(t: u32) -> &'static str {
    match t {
        T_U8 => "u8",
        T_I8 => "i8",
        T_U16 => "u16",
        T_I16 => "i16",
        T_U32 => "u32",
        T_I32 => "i32",
        T_F32 => "f32",
        T_BOOL => "bool",
        T_STR => "string",
        T_ARRAY => "array",
        T_U64 => "u64",
        T_I64 => "i64",
        T_F64 => "f64",
        _ => "unknown",
    }
}

/// The fewest bytes one value of type `t` can occupy, or None for an unknown type.
fn min_encoded_size(t: u32) -> Option<u64> {
    Some(match t {
        T_U8 | T_I8 | T_BOOL => 1,
        T_U16 | T_I16 => 2,
        T_U32 | T_I32 | T_F32 => 4,
        T_U64 | T_I64 | T_F64 => 8,
        T_STR => 8,
        T_ARRAY => 12,
        _ => return None,
    })
}

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

impl Value {
    /// The GGUF type id of this value.
    pub fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => T_U8,
            Value::I8(_) => T_I8,
            Value::U16(_) => T_U16,
            Value::I16(_) => T_I16,
            Value::U32(_) => T_U32,
            Value::I32(_) => T_I32,
            Value::F32(_) => T_F32,
            Value::Bool(_) => T_BOOL,
            Value::Str(_) => T_STR,
            Value::Array(_) => T_ARRAY,
            Value::U64(_) => T_U64,
            Value::I64(_) => T_I64,
            Value::F64(_) => T_F64,
        }
    }

    /// The GGUF type name ("u32", "string", "array", ...).
    pub fn type_name(&self) -> &'static str {
        value_type_name(self.type_id())
    }

    /// Any integer type holding a non-negative value.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
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

    /// JSON form; arrays longer than 64 elements become a summary object so the
    /// tokenizer vocabulary does not bloat model-info JSON.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        let float = |f: f64| serde_json::Number::from_f64(f).map_or(J::Null, J::Number);
        match self {
            Value::U8(v) => J::from(*v),
            Value::I8(v) => J::from(*v),
            Value::U16(v) => J::from(*v),
            Value::I16(v) => J::from(*v),
            Value::U32(v) => J::from(*v),
            Value::I32(v) => J::from(*v),
            Value::U64(v) => J::from(*v),
            Value::I64(v) => J::from(*v),
            Value::F32(v) => float(f64::from(*v)),
            Value::F64(v) => float(*v),
            Value::Bool(v) => J::Bool(*v),
            Value::Str(s) => J::String(s.clone()),
            Value::Array(a) if a.len() > JSON_ARRAY_MAX => serde_json::json!({
                "type": "array",
                "len": a.len(),
                "elem_type": array_elem_type(a),
            }),
            Value::Array(a) => J::Array(a.iter().map(Value::to_json).collect()),
        }
    }

    /// Scalars as text, strings raw, short arrays listed, long ones summarised
    /// like "[array of 49152 string]".
    pub fn to_display_string(&self) -> String {
        match self {
            Value::U8(v) => v.to_string(),
            Value::I8(v) => v.to_string(),
            Value::U16(v) => v.to_string(),
            Value::I16(v) => v.to_string(),
            Value::U32(v) => v.to_string(),
            Value::I32(v) => v.to_string(),
            Value::U64(v) => v.to_string(),
            Value::I64(v) => v.to_string(),
            Value::F32(v) => v.to_string(),
            Value::F64(v) => v.to_string(),
            Value::Bool(v) => v.to_string(),
            Value::Str(s) => s.clone(),
            Value::Array(a)
                if a.len() <= DISPLAY_ARRAY_MAX
                    && !a.iter().any(|v| matches!(v, Value::Array(_))) =>
            {
                let items: Vec<String> = a
                    .iter()
                    .map(|v| match v {
                        Value::Str(s) => format!("{s:?}"),
                        v => v.to_display_string(),
                    })
                    .collect();
                format!("[{}]", items.join(", "))
            }
            Value::Array(a) => format!("[array of {} {}]", a.len(), array_elem_type(a)),
        }
    }
}

fn array_elem_type(a: &[Value]) -> &'static str {
    a.first().map_or("unknown", Value::type_name)
}

/// One entry of the tensor table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Offset of the data relative to the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes.
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements (dims were checked not to overflow at parse time).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }
}

/// A parsed and validated GGUF file (for split models: the first shard's metadata
/// with every shard's tensors).
#[derive(Debug, Clone, PartialEq)]
pub struct GgufInfo {
    pub version: u32,
    pub alignment: u64,
    /// Absolute file offset where tensor data starts.
    pub data_offset: u64,
    pub file_size: u64,
    pub kv: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    /// Why the tensor data cannot be memory-mapped, when it cannot: a tensor whose
    /// file offset is not a multiple of [`MAP_ALIGNMENT`] (for split models, the
    /// first such tensor of any shard). The loader then reads the file instead.
    pub unmappable: Option<String>,
}

/// ggml-impl.h `TENSOR_ALIGNMENT`: with mmap, llama.cpp wraps the mapped file in
/// `ggml_backend_cpu_buffer_from_ptr`, which asserts `ptr % TENSOR_ALIGNMENT == 0`.
/// The mapping is page-aligned, so a tensor's absolute file offset is what counts;
/// a `general.alignment` of 1..16 lets tensors land elsewhere.
pub const MAP_ALIGNMENT: u64 = 32;

/// (id, name, block size in elements, bytes per block), from ggml.c `type_traits`
/// and the block structs of ggml-common.h. Ids 4, 5, 31-33 and 36-38 were removed.
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
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
    (42, "Q2_0", 64, 18),
];

fn ggml_type(t: u32) -> Option<&'static (u32, &'static str, u64, u64)> {
    GGML_TYPES.iter().find(|e| e.0 == t)
}

/// Upper-case ggml type name ("F32", "Q4_K", ...), None for unknown ids.
pub fn ggml_type_name(t: u32) -> Option<&'static str> {
    ggml_type(t).map(|e| e.1)
}

/// (elements per block, bytes per block), None for unknown ids.
pub fn ggml_type_block(t: u32) -> Option<(u64, u64)> {
    ggml_type(t).map(|e| (e.2, e.3))
}

/// Label for llama.h's `llama_ftype` (`general.file_type`); removed values are None.
fn ftype_name(ftype: u64) -> Option<&'static str> {
    Some(match ftype {
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
        39 => "NVFP4",
        40 => "Q1_0",
        41 => "Q2_0",
        _ => return None,
    })
}

fn bad(name: &str, msg: impl fmt::Display) -> Error {
    Error::bad_model(format!("{name}: {msg}"))
}

/// Untrusted bytes for a message: escaped and cut short.
fn shown(b: &[u8]) -> String {
    const MAX: usize = 64;
    let cut = b.get(..MAX).unwrap_or(b);
    let mut s = cut.escape_ascii().to_string();
    if b.len() > MAX {
        s.push_str("...");
    }
    s
}

fn prealloc(n: u64) -> usize {
    // Both bounded by MAX_PREALLOC, so the cast cannot truncate.
    n.min(MAX_PREALLOC) as usize
}

/// Round up to a power-of-two alignment; None on overflow.
fn align_up(x: u64, align: u64) -> Option<u64> {
    let mask = align.checked_sub(1)?;
    x.checked_add(mask).map(|v| v & !mask)
}

/// Cursor over the file; every read checks the bytes left first.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    name: &'a str,
}

impl<'a> Reader<'a> {
    fn err(&self, msg: impl fmt::Display) -> Error {
        bad(self.name, msg)
    }

    fn remaining(&self) -> u64 {
        self.b.len().saturating_sub(self.pos) as u64
    }

    /// `what` is only evaluated for the error message.
    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let slice = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .and_then(|end| self.b.get(self.pos..end));
        match slice {
            Some(s) => {
                self.pos += s.len();
                Ok(s)
            }
            None => Err(self.err(format_args!(
                "truncated: {} needs {n} bytes at offset {}, file is {} bytes",
                what(),
                self.pos,
                self.b.len()
            ))),
        }
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        <[u8; N]>::try_from(s).map_err(|_| self.err("internal error: short read"))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A GGUF string: u64 length, then that many bytes.
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let len = self.u64(&|| format!("length of {}", what()))?;
        self.take(len, what)
    }

    /// Reject a count whose smallest possible encoding exceeds the bytes left.
    fn check_count(&self, n: u64, min_each: u64, what: &str) -> Result<()> {
        match n.checked_mul(min_each) {
            Some(need) if need <= self.remaining() => Ok(()),
            _ => Err(self.err(format_args!(
                "{what} {n} is absurd for a {}-byte file",
                self.b.len()
            ))),
        }
    }
}

fn read_value(
    r: &mut Reader<'_>,
    ty: u32,
    key: &str,
    depth: u32,
    budget: &mut u64,
) -> Result<Value> {
    let what = || format!("value of metadata key '{key}'");
    Ok(match ty {
        T_U8 => Value::U8(u8::from_le_bytes(r.array(&what)?)),
        T_I8 => Value::I8(i8::from_le_bytes(r.array(&what)?)),
        T_U16 => Value::U16(u16::from_le_bytes(r.array(&what)?)),
        T_I16 => Value::I16(i16::from_le_bytes(r.array(&what)?)),
        T_U32 => Value::U32(u32::from_le_bytes(r.array(&what)?)),
        T_I32 => Value::I32(i32::from_le_bytes(r.array(&what)?)),
        T_F32 => Value::F32(f32::from_le_bytes(r.array(&what)?)),
        T_U64 => Value::U64(u64::from_le_bytes(r.array(&what)?)),
        T_I64 => Value::I64(i64::from_le_bytes(r.array(&what)?)),
        T_F64 => Value::F64(f64::from_le_bytes(r.array(&what)?)),
        T_BOOL => match r.array::<1>(&what)? {
            [0] => Value::Bool(false),
            [1] => Value::Bool(true),
            [b] => {
                return Err(r.err(format_args!(
                    "metadata key '{key}' has bool value {b} (must be 0 or 1)"
                )))
            }
        },
        T_STR => {
            let s = r.string(&what)?;
            if depth == 0 {
                let s = std::str::from_utf8(s).map_err(|_| {
                    r.err(format_args!(
                        "metadata key '{key}' has a string value that is not valid UTF-8 ('{}')",
                        shown(s)
                    ))
                })?;
                Value::Str(s.to_owned())
            } else {
                // llama.cpp keeps token pieces as raw bytes; a stray invalid byte in
                // one vocabulary entry must not reject a model llama.cpp would load.
                Value::Str(String::from_utf8_lossy(s).into_owned())
            }
        }
        T_ARRAY => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(r.err(format_args!(
                    "metadata key '{key}' nests arrays more than {MAX_ARRAY_DEPTH} deep"
                )));
            }
            let et = r.u32(&|| format!("array element type of metadata key '{key}'"))?;
            let min = min_encoded_size(et).ok_or_else(|| {
                r.err(format_args!(
                    "metadata key '{key}' is an array of unknown value type {et}"
                ))
            })?;
            let n = r.u64(&|| format!("array length of metadata key '{key}'"))?;
            if n.checked_mul(min).is_none_or(|need| need > r.remaining()) {
                return Err(r.err(format_args!(
                    "metadata key '{key}' array count {n} is absurd: {} bytes left at offset {}, file is {} bytes",
                    r.remaining(),
                    r.pos,
                    r.b.len()
                )));
            }
            if n > *budget {
                return Err(r.err(format_args!(
                    "metadata arrays hold more than {MAX_TOTAL_ARRAY_ELEMENTS} elements in total (at key '{key}')"
                )));
            }
            *budget -= n;
            let mut items = Vec::with_capacity(prealloc(n));
            for _ in 0..n {
                items.push(read_value(r, et, key, depth + 1, budget)?);
            }
            Value::Array(items)
        }
        _ => {
            return Err(r.err(format_args!(
                "metadata key '{key}' has unknown value type {ty}"
            )))
        }
    })
}

impl GgufInfo {
    /// Parse and validate a whole GGUF image; `name` prefixes every error message.
    pub fn parse(bytes: &[u8], name: &str) -> Result<GgufInfo> {
        let file_size = bytes.len() as u64;
        if bytes.is_empty() {
            return Err(bad(name, "file is empty (0 bytes)"));
        }
        let head = bytes.get(..4).unwrap_or(bytes);
        if !MAGIC.starts_with(head) {
            return Err(bad(
                name,
                format_args!(
                    "not a GGUF file (magic is '{}', expected 'GGUF')",
                    head.escape_ascii()
                ),
            ));
        }
        let mut r = Reader {
            b: bytes,
            pos: 0,
            name,
        };
        r.take(4, &|| "magic".into())?;

        let version = r.u32(&|| "version".into())?;
        match version {
            2 | 3 => {}
            1 => {
                return Err(
                    r.err("unsupported GGUF version 1 (GGUFv1 is obsolete; supported: 2, 3)")
                )
            }
            v if matches!(v.swap_bytes(), 2 | 3) => {
                return Err(r.err(format_args!(
                    "unsupported GGUF version {v} (supported: 2, 3); the file looks big-endian"
                )))
            }
            v => {
                return Err(r.err(format_args!(
                    "unsupported GGUF version {v} (supported: 2, 3)"
                )))
            }
        }

        let n_tensors = r.u64(&|| "tensor count".into())?;
        let n_kv = r.u64(&|| "metadata kv count".into())?;
        r.check_count(n_kv, MIN_KV_BYTES, "metadata kv count")?;
        r.check_count(n_tensors, MIN_TENSOR_INFO_BYTES, "tensor count")?;
        let both = n_kv
            .checked_mul(MIN_KV_BYTES)
            .zip(n_tensors.checked_mul(MIN_TENSOR_INFO_BYTES))
            .and_then(|(a, b)| a.checked_add(b));
        if both.is_none_or(|need| need > r.remaining()) {
            return Err(r.err(format_args!(
                "metadata kv count {n_kv} plus tensor count {n_tensors} is absurd for a {file_size}-byte file"
            )));
        }

        let mut kv = Vec::with_capacity(prealloc(n_kv));
        let mut seen_keys = HashSet::new();
        let mut budget = MAX_TOTAL_ARRAY_ELEMENTS;
        for i in 0..n_kv {
            let kb = r.string(&|| format!("metadata key #{i}"))?;
            let key = std::str::from_utf8(kb).map_err(|_| {
                r.err(format_args!(
                    "metadata key #{i} is not valid UTF-8 ('{}')",
                    shown(kb)
                ))
            })?;
            if key.is_empty() {
                return Err(r.err(format_args!("metadata key #{i} is empty")));
            }
            if !seen_keys.insert(key) {
                return Err(r.err(format_args!("duplicate metadata key '{key}'")));
            }
            let ty = r.u32(&|| format!("type of metadata key '{key}'"))?;
            let v = read_value(&mut r, ty, key, 0, &mut budget)?;
            kv.push((key.to_owned(), v));
        }

        let alignment = match kv.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, Value::U32(a))) if a.is_power_of_two() => u64::from(*a),
            Some((_, Value::U32(a))) => {
                return Err(r.err(format_args!(
                    "general.alignment is {a}, but alignment must be a power of two"
                )))
            }
            Some((_, v)) => {
                return Err(r.err(format_args!(
                    "general.alignment must be of type u32, not {}",
                    v.type_name()
                )))
            }
        };

        let mut tensors: Vec<TensorInfo> = Vec::with_capacity(prealloc(n_tensors));
        let mut seen_names = HashSet::new();
        for i in 0..n_tensors {
            let nb = r.string(&|| format!("tensor #{i} name"))?;
            let name = std::str::from_utf8(nb).map_err(|_| {
                r.err(format_args!(
                    "tensor #{i} name is not valid UTF-8 ('{}')",
                    shown(nb)
                ))
            })?;
            if name.len() >= MAX_TENSOR_NAME {
                return Err(r.err(format_args!(
                    "tensor #{i} name '{}' is {} bytes (llama.cpp allows at most {})",
                    shown(nb),
                    name.len(),
                    MAX_TENSOR_NAME - 1
                )));
            }
            if !seen_names.insert(name) {
                return Err(r.err(format_args!("duplicate tensor name '{name}'")));
            }
            let n_dims = r.u32(&|| format!("dimension count of tensor '{name}'"))?;
            if !(1..=MAX_DIMS).contains(&n_dims) {
                return Err(r.err(format_args!(
                    "tensor '{name}' has {n_dims} dimensions (must be 1 to {MAX_DIMS})"
                )));
            }
            let mut dims = Vec::with_capacity(MAX_DIMS as usize);
            for j in 0..n_dims {
                dims.push(r.u64(&|| format!("dimension {j} of tensor '{name}'"))?);
            }
            // ggml stores dims as int64 and llama.cpp rejects element counts past
            // INT64_MAX, so every dim and the running product must stay below it.
            let n_elements = dims
                .iter()
                .try_fold(1u64, |acc, &d| {
                    if d > i64::MAX as u64 {
                        None
                    } else {
                        acc.checked_mul(d)
                    }
                })
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(|| {
                    r.err(format_args!(
                        "tensor '{name}' dims overflow: {dims:?} has more than {} elements",
                        i64::MAX
                    ))
                })?;
            let ty = r.u32(&|| format!("type of tensor '{name}'"))?;
            let &(_, type_name, block, type_size) = ggml_type(ty)
                .ok_or_else(|| r.err(format_args!("unknown ggml type {ty} for tensor '{name}'")))?;
            let ne0 = dims.first().copied().unwrap_or(0);
            if ne0 % block != 0 {
                return Err(r.err(format_args!(
                    "tensor '{name}' of type {type_name} has {ne0} elements per row, not a multiple of its block size {block}"
                )));
            }
            let size = (n_elements / block).checked_mul(type_size).ok_or_else(|| {
                r.err(format_args!(
                    "tensor '{name}' dims overflow: {dims:?} of type {type_name} is more than {} bytes",
                    u64::MAX
                ))
            })?;
            let offset = r.u64(&|| format!("data offset of tensor '{name}'"))?;
            tensors.push(TensorInfo {
                name: name.to_owned(),
                dims,
                ggml_type: ty,
                offset,
                size,
            });
        }

        let header_end = r.pos as u64;
        let data_offset = align_up(header_end, alignment)
            .ok_or_else(|| r.err("data section offset overflows"))?;
        let mut expected = 0u64;
        for t in &tensors {
            let name = &t.name;
            if t.offset % alignment != 0 {
                return Err(r.err(format_args!(
                    "tensor '{name}' offset {} is not a multiple of the alignment {alignment}",
                    t.offset
                )));
            }
            // u128 so the range in the message is exact even for hostile offsets.
            let start = u128::from(data_offset) + u128::from(t.offset);
            let end = start + u128::from(t.size);
            if end > u128::from(file_size) {
                return Err(r.err(format_args!(
                    "tensor '{name}' data [offset, offset+size) = [{start}, {end}) ends past end of file ({file_size} bytes)"
                )));
            }
            // llama.cpp requires the data packed in table order, each padded to the
            // alignment; say so here rather than let it fail later.
            if t.offset != expected {
                return Err(r.err(format_args!(
                    "tensor '{name}' has data offset {}, expected {expected} (tensor data must be packed in table order)",
                    t.offset
                )));
            }
            expected = align_up(t.size, alignment)
                .and_then(|s| t.offset.checked_add(s))
                .ok_or_else(|| r.err(format_args!("tensor '{name}' size overflows")))?;
        }

        let unmappable = tensors
            .iter()
            .find(|t| (u128::from(data_offset) + u128::from(t.offset)) % u128::from(MAP_ALIGNMENT) != 0)
            .map(|t| {
                format!(
                    "{name}: tensor '{}' data starts at file offset {}, not a multiple of {MAP_ALIGNMENT} (general.alignment is {alignment})",
                    t.name,
                    u128::from(data_offset) + u128::from(t.offset)
                )
            });
        Ok(GgufInfo {
            version,
            alignment,
            data_offset,
            file_size,
            kv,
            tensors,
            unmappable,
        })
    }

    /// Map the file read-only and parse it. Only the header pages are touched.
    pub fn open(path: &Path) -> Result<GgufInfo> {
        let name = path.display().to_string();
        // Stat before opening: opening a FIFO would block, a directory is no model.
        let meta = std::fs::metadata(path).map_err(|e| Error::io("open", path, e))?;
        if meta.is_dir() {
            return Err(Error::invalid_arg(format!(
                "{name}: is a directory, not a GGUF file"
            )));
        }
        if !meta.is_file() {
            return Err(Error::invalid_arg(format!("{name}: is not a regular file")));
        }
        if meta.len() == 0 {
            return Err(bad(&name, "file is empty (0 bytes)"));
        }
        let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
        // SAFETY: a read-only private mapping of a regular file. If another process
        // truncates the file while we read, access could fault; llama.cpp maps the
        // same file the same way, and the parse only touches the header.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io("mmap", path, e))?;
        GgufInfo::parse(&map, &name)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture")?.as_str()
    }

    /// `{arch}.{suffix}` as an unsigned integer, e.g. `arch_u64("context_length")`.
    pub fn arch_u64(&self, suffix: &str) -> Option<u64> {
        let arch = self.architecture()?;
        self.get(&format!("{arch}.{suffix}"))?.as_u64()
    }

    /// Sum of tensor data sizes in bytes.
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors
            .iter()
            .fold(0u64, |a, t| a.saturating_add(t.size))
    }

    /// Sum of tensor element counts.
    pub fn n_params(&self) -> u64 {
        self.tensors
            .iter()
            .fold(0u64, |a, t| a.saturating_add(t.n_elements()))
    }

    /// Quantisation label from `general.file_type`, else the tensor type holding the
    /// most bytes.
    pub fn quant_label(&self) -> Option<String> {
        if let Some(l) = self
            .get("general.file_type")
            .and_then(Value::as_u64)
            .and_then(ftype_name)
        {
            return Some(l.to_owned());
        }
        let mut by_type: Vec<(u32, u64)> = Vec::new();
        for t in &self.tensors {
            match by_type.iter_mut().find(|(ty, _)| *ty == t.ggml_type) {
                Some(e) => e.1 = e.1.saturating_add(t.size),
                None => by_type.push((t.ggml_type, t.size)),
            }
        }
        let (ty, _) = by_type
            .iter()
            .max_by_key(|&&(ty, bytes)| (bytes, std::cmp::Reverse(ty)))?;
        ggml_type_name(*ty).map(str::to_owned)
    }

    /// Summary JSON: version, alignment, file size, tensor count and all metadata
    /// (long arrays summarised).
    pub fn to_json(&self) -> serde_json::Value {
        let metadata: serde_json::Map<String, serde_json::Value> = self
            .kv
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        serde_json::json!({
            "version": self.version,
            "alignment": self.alignment,
            "file_size": self.file_size,
            "tensor_count": self.tensors.len(),
            "metadata": metadata,
        })
    }
}

/// "model-00001-of-00003.gguf" → Some(("model", 1, 3)); anything else None. Only the
/// 5-digit fields llama.cpp writes (`%s-%05d-of-%05d.gguf`) are accepted.
pub fn parse_split_name(file_name: &str) -> Option<(String, u32, u32)> {
    const TAIL: usize = "-00001-of-00003.gguf".len();
    let cut = file_name.len().checked_sub(TAIL).filter(|&c| c > 0)?;
    let prefix = file_name.get(..cut)?;
    let tail = file_name.get(cut..)?;
    let (k, n) = tail
        .strip_prefix('-')?
        .strip_suffix(".gguf")?
        .split_once("-of-")?;
    let field = |s: &str| -> Option<u32> {
        if s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let (k, n) = (field(k)?, field(n)?);
    (k >= 1 && (1..=n).contains(&k)).then(|| (prefix.to_owned(), k, n))
}

/// Check a shard's own `split.count` / `split.no` against its file name.
fn check_split_meta(info: &GgufInfo, path: &Path, k: u32, n: u32) -> Result<()> {
    if let Some(v) = info.get("split.count") {
        if v.as_u64() != Some(u64::from(n)) {
            return Err(bad(
                &path.display().to_string(),
                format_args!(
                    "split.count is {}, but the file name says {n} shards",
                    v.to_display_string()
                ),
            ));
        }
    }
    if let Some(v) = info.get("split.no") {
        // llama.cpp reads it with gguf_get_val_u16, which asserts on any other type.
        if !matches!(v, Value::U16(_)) {
            return Err(bad(
                &path.display().to_string(),
                format_args!("split.no is a {}; expected u16", v.type_name()),
            ));
        }
        if v.as_u64() != Some(u64::from(k - 1)) {
            return Err(bad(
                &path.display().to_string(),
                format_args!(
                    "split.no is {}, but the file name says shard {k} of {n} (split.no {})",
                    v.to_display_string(),
                    k - 1
                ),
            ));
        }
    }
    Ok(())
}

/// Open a model given its path; for a split model (the FIRST shard,
/// `name-00001-of-0000N.gguf`) every sibling shard is opened and validated too, and
/// the result carries all shards' tensors and their summed file size.
pub fn open_model(path: &Path) -> Result<GgufInfo> {
    let split = path
        .file_name()
        .and_then(|f| f.to_str())
        .and_then(parse_split_name);
    let Some((prefix, k, n)) = split else {
        let info = GgufInfo::open(path)?;
        // llama.cpp finds the other shards by file name, so a renamed shard fails.
        if let Some(c) = info.get("split.count").and_then(Value::as_u64) {
            if c > 1 {
                return Err(bad(
                    &path.display().to_string(),
                    format_args!(
                        "metadata says the model is split into {c} files (split.count), but the file name does not end in '-00001-of-{c:05}.gguf'"
                    ),
                ));
            }
        }
        return Ok(info);
    };
    if k != 1 {
        return Err(Error::invalid_arg(format!(
            "{}: is shard {k} of {n}; open the first shard, {prefix}-00001-of-{n:05}.gguf",
            path.display()
        )));
    }
    let mut info = GgufInfo::open(path)?;
    check_split_meta(&info, path, 1, n)?;
    let dir = path.parent().unwrap_or_else(|| Path::new(""));
    let mut names: HashSet<String> = info.tensors.iter().map(|t| t.name.clone()).collect();
    for i in 2..=n {
        let p = dir.join(format!("{prefix}-{i:05}-of-{n:05}.gguf"));
        let shard = GgufInfo::open(&p).map_err(|e| {
            e.context(format_args!(
                "{}: split model shard {i} of {n}",
                path.display()
            ))
        })?;
        check_split_meta(&shard, &p, i, n)?;
        if info.unmappable.is_none() {
            info.unmappable = shard.unmappable.clone();
        }
        for t in shard.tensors {
            if !names.insert(t.name.clone()) {
                return Err(bad(
                    &p.display().to_string(),
                    format_args!("tensor '{}' also appears in an earlier shard", t.name),
                ));
            }
            info.tensors.push(t);
        }
        info.file_size = info.file_size.saturating_add(shard.file_size);
    }
    if let Some(v) = info.get("split.tensors.count") {
        if v.as_u64() != Some(info.tensors.len() as u64) {
            return Err(bad(
                &path.display().to_string(),
                format_args!(
                    "split.tensors.count is {}, but the {n} shards hold {} tensors",
                    v.to_display_string(),
                    info.tensors.len()
                ),
            ));
        }
    }
    Ok(info)
}

/// [`open_model`], then the semantic rules: everything checked before llama.cpp
/// is allowed to see a file (`vocab_only`: the rules for a vocabulary-only load).
pub fn open_checked(path: &Path, vocab_only: bool) -> Result<GgufInfo> {
    let info = open_model(path)?;
    semantic::check(&info, &path.display().to_string(), vocab_only)?;
    Ok(info)
}

/// Builders of small GGUF images for tests (here and in integration tests).
#[doc(hidden)]
pub mod testgen;

/// What llama.cpp would assert on, checked before it sees the file.
pub mod semantic;

#[cfg(test)]
mod tests {
    use super::testgen::{minimal, minimal_builder, Builder};
    use super::*;
    use crate::error::ErrorKind;

    fn bad_msg(bytes: &[u8]) -> String {
        match GgufInfo::parse(bytes, "t.gguf") {
            Ok(_) => panic!("parse accepted a bad file"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::BadModel, "{}", e.message());
                assert!(e.message().starts_with("t.gguf: "), "{}", e.message());
                e.message().to_owned()
            }
        }
    }

    fn assert_bad(bytes: &[u8], needle: &str) {
        let m = bad_msg(bytes);
        assert!(m.contains(needle), "message {m:?} lacks {needle:?}");
    }

    fn put_u32(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn put_u64(b: &mut [u8], at: usize, v: u64) {
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// Offset of the n_dims field of the tensor info whose name length is at `at`.
    fn tensor_field(b: &[u8], at: usize) -> usize {
        let len = u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize;
        at + 8 + len
    }

    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "h-gguf-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn minimal_file_parses_with_correct_values() {
        let (bytes, layout) = minimal_builder().build_with_layout();
        let g = GgufInfo::parse(&bytes, "t.gguf").unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.alignment, 32);
        assert_eq!(g.data_offset as usize, layout.data_offset);
        assert_eq!(g.data_offset % 32, 0);
        assert_eq!(g.file_size, bytes.len() as u64);
        assert_eq!(g.kv.len(), 6);
        assert_eq!(g.architecture(), Some("llama"));
        assert_eq!(g.arch_u64("context_length"), Some(128));
        assert_eq!(g.arch_u64("missing"), None);
        assert_eq!(g.get("general.name").and_then(Value::as_str), Some("tiny"));
        assert_eq!(g.get("llama.rope.freq_base"), Some(&Value::F32(10000.0)));
        assert_eq!(g.get("general.flag"), Some(&Value::Bool(true)));
        assert_eq!(g.tensors.len(), 2);
        let (a, b) = (&g.tensors[0], &g.tensors[1]);
        assert_eq!(
            (a.name.as_str(), a.dims.clone(), a.offset, a.size),
            ("a", vec![4], 0, 16)
        );
        assert_eq!(
            (b.name.as_str(), b.dims.clone(), b.offset, b.size),
            ("b", vec![2, 3], 32, 24)
        );
        assert_eq!(g.n_params(), 10);
        assert_eq!(g.tensor_bytes(), 40);
        assert_eq!(g.quant_label().as_deref(), Some("F32"));
        // The data really is where the table says.
        let start = (g.data_offset + b.offset) as usize;
        assert_eq!(&bytes[start..start + 4], &0.5f32.to_le_bytes());
        let j = g.to_json();
        assert_eq!(j["version"], 3);
        assert_eq!(j["tensor_count"], 2);
        assert_eq!(j["file_size"], bytes.len() as u64);
        assert_eq!(j["metadata"]["general.architecture"], "llama");
        assert_eq!(
            j["metadata"]["tokenizer.ggml.tokens"],
            serde_json::json!(["a", "b"])
        );
        // testgen::build (the older helper) still makes valid files.
        let g = GgufInfo::parse(&testgen::build(&[("k", "v")], &[("x", &[8, 2])]), "x").unwrap();
        assert_eq!(g.n_params(), 16);
    }

    #[test]
    fn version_2_and_all_value_types_round_trip() {
        let vals = vec![
            ("u8", Value::U8(200)),
            ("i8", Value::I8(-3)),
            ("u16", Value::U16(60000)),
            ("i16", Value::I16(-300)),
            ("u32", Value::U32(7)),
            ("i32", Value::I32(-7)),
            ("f32", Value::F32(1.5)),
            ("bool", Value::Bool(false)),
            ("str", Value::Str("héllo".into())),
            ("u64", Value::U64(u64::MAX)),
            ("i64", Value::I64(i64::MIN)),
            ("f64", Value::F64(-2.25)),
            ("empty", Value::Array(vec![])),
            (
                "nested",
                Value::Array(vec![
                    Value::Array(vec![Value::I32(1), Value::I32(2)]),
                    Value::Array(vec![Value::I32(3)]),
                ]),
            ),
        ];
        let mut b = Builder::new().version(2);
        for (k, v) in &vals {
            b = b.kv(k, v.clone());
        }
        let g = GgufInfo::parse(&b.build(), "t").unwrap();
        assert_eq!(g.version, 2);
        assert!(g.tensors.is_empty());
        for (k, v) in &vals {
            assert_eq!(g.get(k), Some(v), "{k}");
        }
        assert_eq!(g.quant_label(), None);
    }

    #[test]
    fn value_helpers() {
        assert_eq!(Value::I32(-1).as_u64(), None);
        assert_eq!(Value::I64(5).as_u64(), Some(5));
        assert_eq!(Value::U16(9).as_u64(), Some(9));
        assert_eq!(Value::F32(1.0).as_u64(), None);
        assert_eq!(Value::Bool(true).as_u64(), None);
        assert_eq!(Value::Str("x".into()).as_str(), Some("x"));
        assert_eq!(Value::U8(1).as_str(), None);
        let vocab = Value::Array((0..49152).map(|i| Value::Str(i.to_string())).collect());
        assert_eq!(vocab.to_display_string(), "[array of 49152 string]");
        assert_eq!(
            vocab.to_json(),
            serde_json::json!({"type": "array", "len": 49152, "elem_type": "string"})
        );
        let short = Value::Array(vec![Value::U32(1), Value::U32(2)]);
        assert_eq!(short.to_display_string(), "[1, 2]");
        assert_eq!(short.to_json(), serde_json::json!([1, 2]));
        assert_eq!(Value::F32(f32::NAN).to_json(), serde_json::Value::Null);
        assert_eq!(
            Value::Str("raw \"s\"".into()).to_display_string(),
            "raw \"s\""
        );
        assert_eq!(Value::F64(0.5).to_display_string(), "0.5");
    }

    #[test]
    fn ggml_type_table() {
        assert_eq!(ggml_type_block(0), Some((1, 4)));
        assert_eq!(ggml_type_block(3), Some((32, 20)));
        assert_eq!(ggml_type_block(14), Some((256, 210)));
        assert_eq!(ggml_type_block(39), Some((32, 17)));
        assert_eq!(ggml_type_name(30), Some("BF16"));
        for bad in [4, 5, 31, 32, 33, 36, 37, 38, 43, 99, u32::MAX] {
            assert_eq!(ggml_type_block(bad), None, "{bad}");
            assert_eq!(ggml_type_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn real_model_parses() {
        let path = Path::new("/root/.cache/tabagent/models/SmolLM2-135M-Instruct.Q4_1.gguf");
        if !path.exists() {
            eprintln!("skipping: {} not present", path.display());
            return;
        }
        let g = GgufInfo::open(path).unwrap();
        assert_eq!(g.architecture(), Some("llama"));
        assert_eq!(g.arch_u64("context_length"), Some(8192));
        assert_eq!(g.arch_u64("embedding_length"), Some(576));
        assert_eq!(g.arch_u64("block_count"), Some(30));
        assert_eq!(g.quant_label().as_deref(), Some("Q4_1"));
        let p = g.n_params();
        assert!((134_000_000..=135_999_999).contains(&p), "n_params {p}");
        for t in &g.tensors {
            assert!(
                g.data_offset + t.offset + t.size <= g.file_size,
                "{}",
                t.name
            );
        }
        assert!(g.tensor_bytes() < g.file_size);
        let j = g.to_json();
        assert_eq!(
            j["metadata"]["tokenizer.ggml.tokens"]["elem_type"],
            "string"
        );
        assert!(j.to_string().len() < 200_000, "JSON is bloated");
        // open_model on a non-split name is the same as open.
        assert_eq!(open_model(path).unwrap(), g);
    }

    #[test]
    fn every_truncation_is_bad_model() {
        let bytes = minimal();
        for len in 0..bytes.len() {
            let m = bad_msg(&bytes[..len]);
            if len == 0 {
                assert!(m.contains("file is empty (0 bytes)"), "{m}");
            }
        }
        assert!(GgufInfo::parse(&bytes, "t").is_ok());
    }

    #[test]
    fn truncation_message_names_item_offset_and_size() {
        let (bytes, layout) = Builder::new()
            .kv("general.architecture", Value::Str("llama".into()))
            .build_with_layout();
        // Cut inside the key's bytes (its length field is complete; the kv count
        // still fits, so the per-read check is what fires).
        let at = layout.kv_at[0];
        let m = bad_msg(&bytes[..at + 18]);
        assert!(
            m.contains(&format!(
                "truncated: metadata key #0 needs 20 bytes at offset {}, file is {} bytes",
                at + 8,
                at + 18
            )),
            "{m}"
        );
    }

    #[test]
    fn bad_magic() {
        assert_bad(
            b"PK\x03\x04rest of a zip",
            "not a GGUF file (magic is 'PK\\x03\\x04', expected 'GGUF')",
        );
        assert_bad(b"P", "not a GGUF file");
        assert_bad(b"GG", "truncated: magic");
        let mut b = minimal();
        b[3] = b'G';
        assert_bad(&b, "not a GGUF file");
    }

    #[test]
    fn bad_versions() {
        for (v, needle) in [
            (1, "unsupported GGUF version 1"),
            (99, "unsupported GGUF version 99 (supported: 2, 3)"),
            (0, "unsupported GGUF version 0"),
            (3u32.swap_bytes(), "big-endian"),
        ] {
            let mut b = minimal();
            put_u32(&mut b, 4, v);
            assert_bad(&b, needle);
        }
    }

    #[test]
    fn absurd_counts() {
        let mut b = minimal();
        put_u64(&mut b, 8, i64::MAX as u64);
        assert_bad(
            &b,
            &format!(
                "tensor count 9223372036854775807 is absurd for a {}-byte file",
                b.len()
            ),
        );
        let mut b = minimal();
        put_u64(&mut b, 16, u64::MAX);
        assert_bad(&b, "metadata kv count 18446744073709551615 is absurd");
        let mut b = minimal();
        put_u64(&mut b, 16, 1 << 40);
        assert_bad(&b, "is absurd");
        // Each count alone fits, both together do not.
        let mut b = minimal();
        let room = (b.len() as u64 - 24) / MIN_TENSOR_INFO_BYTES;
        put_u64(&mut b, 8, room);
        put_u64(&mut b, 16, room);
        assert_bad(&b, "is absurd");
    }

    #[test]
    fn absurd_string_and_array_lengths() {
        let (bytes, layout) = minimal_builder().build_with_layout();
        // Key length.
        let mut b = bytes.clone();
        put_u64(&mut b, layout.kv_at[1], u64::MAX);
        assert_bad(
            &b,
            "truncated: metadata key #1 needs 18446744073709551615 bytes",
        );
        // String value length ("general.name" value).
        let mut b = bytes.clone();
        let at = layout.kv_at[1] + 8 + "general.name".len() + 4;
        put_u64(&mut b, at, 1 << 62);
        assert_bad(&b, "value of metadata key 'general.name'");
        // Array count 2^60 is rejected against the file size, not allocated.
        let mut b = bytes.clone();
        let at = layout.kv_at[5] + 8 + "tokenizer.ggml.tokens".len() + 4 + 4;
        put_u64(&mut b, at, 1 << 60);
        assert_bad(&b, "array count 1152921504606846976 is absurd");
        // Tensor name length.
        let mut b = bytes;
        put_u64(&mut b, layout.tensor_info_at[0], u64::MAX - 3);
        assert_bad(&b, "truncated: tensor #0 name");
    }

    #[test]
    fn bad_array_element_type_and_depth() {
        let (bytes, layout) = minimal_builder().build_with_layout();
        let mut b = bytes;
        let at = layout.kv_at[5] + 8 + "tokenizer.ggml.tokens".len() + 4;
        put_u32(&mut b, at, 13);
        assert_bad(&b, "array of unknown value type 13");
        let mut v = Value::Array(vec![Value::U8(1)]);
        for _ in 0..MAX_ARRAY_DEPTH {
            v = Value::Array(vec![v]);
        }
        assert_bad(
            &Builder::new().kv("deep", v).build(),
            "nests arrays more than 4 deep",
        );
        // Unknown scalar value type.
        let (mut b, layout) = minimal_builder().build_with_layout();
        put_u32(
            &mut b,
            layout.kv_at[2] + 8 + "llama.context_length".len(),
            13,
        );
        assert_bad(
            &b,
            "metadata key 'llama.context_length' has unknown value type 13",
        );
    }

    #[test]
    fn array_element_budget() {
        // 2^23 + 1 one-byte elements fit the file but exceed the element budget.
        let n = MAX_TOTAL_ARRAY_ELEMENTS + 1;
        let mut b = Builder::new()
            .kv("big", Value::Array(vec![Value::U8(0)]))
            .build();
        let at = 24 + 8 + 3 + 4 + 4;
        put_u64(&mut b, at, n);
        b.resize(b.len() + n as usize, 0);
        assert_bad(&b, "elements in total");
    }

    #[test]
    fn bad_bool_byte() {
        let (mut b, layout) = minimal_builder().build_with_layout();
        let at = layout.kv_at[4] + 8 + "general.flag".len() + 4;
        assert_eq!(b[at], 1);
        b[at] = 2;
        assert_bad(
            &b,
            "metadata key 'general.flag' has bool value 2 (must be 0 or 1)",
        );
    }

    #[test]
    fn invalid_utf8() {
        let (bytes, layout) = minimal_builder().build_with_layout();
        let mut b = bytes.clone();
        b[layout.kv_at[0] + 8] = 0xff;
        assert_bad(
            &b,
            "metadata key #0 is not valid UTF-8 ('\\xffeneral.architecture')",
        );
        let mut b = bytes.clone();
        b[layout.kv_at[1] + 8 + "general.name".len() + 4 + 8] = 0xc3;
        assert_bad(
            &b,
            "metadata key 'general.name' has a string value that is not valid UTF-8",
        );
        let mut b = bytes.clone();
        b[layout.tensor_info_at[1] + 8] = 0x80;
        assert_bad(&b, "tensor #1 name is not valid UTF-8");
        // Inside a token array invalid bytes are tolerated, as llama.cpp does.
        let mut b = bytes;
        let at = layout.kv_at[5] + 8 + "tokenizer.ggml.tokens".len() + 4 + 4 + 8 + 8;
        assert_eq!(b[at], b'a');
        b[at] = 0xff;
        let g = GgufInfo::parse(&b, "t").unwrap();
        let toks = g.get("tokenizer.ggml.tokens").unwrap();
        assert_eq!(
            toks,
            &Value::Array(vec![Value::Str("\u{fffd}".into()), Value::Str("b".into())])
        );
    }

    #[test]
    fn bad_keys_and_names() {
        let b = Builder::new()
            .kv("k", Value::U8(1))
            .kv("k", Value::U8(2))
            .build();
        assert_bad(&b, "duplicate metadata key 'k'");
        assert_bad(
            &Builder::new().kv("", Value::U8(1)).build(),
            "metadata key #0 is empty",
        );
        let b = Builder::new()
            .tensor_f32("w", &[1], &[1.0])
            .tensor_f32("w", &[1], &[1.0])
            .build();
        assert_bad(&b, "duplicate tensor name 'w'");
        let long = "x".repeat(64);
        assert_bad(
            &Builder::new().tensor_f32(&long, &[1], &[1.0]).build(),
            "is 64 bytes",
        );
        let ok = "x".repeat(63);
        assert!(
            GgufInfo::parse(&Builder::new().tensor_f32(&ok, &[1], &[1.0]).build(), "t").is_ok()
        );
    }

    #[test]
    fn bad_dims() {
        for n in [0u32, 5, u32::MAX] {
            let (mut b, layout) = minimal_builder().build_with_layout();
            let at = tensor_field(&b, layout.tensor_info_at[0]);
            put_u32(&mut b, at, n);
            assert_bad(
                &b,
                &format!("tensor 'a' has {n} dimensions (must be 1 to 4)"),
            );
        }
        let b = Builder::new()
            .tensor_raw("x", &[1 << 32, 1 << 32], 0, vec![])
            .build();
        assert_bad(&b, "tensor 'x' dims overflow");
        let b = Builder::new()
            .tensor_raw("x", &[1 << 63], 0, vec![])
            .build();
        assert_bad(&b, "tensor 'x' dims overflow");
        // A zero dim must not hide an out-of-range one.
        let b = Builder::new()
            .tensor_raw("x", &[0, u64::MAX], 0, vec![])
            .build();
        assert_bad(&b, "tensor 'x' dims overflow");
        // Element count fits i64 but the byte size does not fit u64.
        let b = Builder::new()
            .tensor_raw("x", &[1 << 62], 0, vec![])
            .build();
        assert_bad(&b, "tensor 'x' dims overflow");
        // A zero-element tensor is fine.
        let g = GgufInfo::parse(
            &Builder::new().tensor_raw("z", &[0, 5], 0, vec![]).build(),
            "t",
        )
        .unwrap();
        assert_eq!(g.tensors[0].size, 0);
    }

    #[test]
    fn bad_types_and_blocks() {
        for ty in [99u32, 4, 31, 36] {
            let (mut b, layout) = minimal_builder().build_with_layout();
            let at = tensor_field(&b, layout.tensor_info_at[0]) + 4 + 8;
            put_u32(&mut b, at, ty);
            assert_bad(&b, &format!("unknown ggml type {ty} for tensor 'a'"));
        }
        let b = Builder::new()
            .tensor_raw("q", &[31, 2], 2, vec![0; 36])
            .build();
        assert_bad(
            &b,
            "tensor 'q' of type Q4_0 has 31 elements per row, not a multiple of its block size 32",
        );
        let g = GgufInfo::parse(
            &Builder::new()
                .tensor_raw("q", &[64, 2], 2, vec![0; 72])
                .build(),
            "t",
        )
        .unwrap();
        assert_eq!(g.tensors[0].size, 72);
        assert_eq!(g.n_params(), 128);
        assert_eq!(g.quant_label().as_deref(), Some("Q4_0"));
        // Same data, one byte short.
        assert_bad(
            &Builder::new()
                .tensor_raw("q", &[64, 2], 2, vec![0; 71])
                .build(),
            "ends past end of file",
        );
    }

    #[test]
    fn bad_offsets() {
        let (bytes, layout) = minimal_builder().build_with_layout();
        let off_at = |b: &[u8], i: usize, nd: usize| {
            tensor_field(b, layout.tensor_info_at[i]) + 4 + 8 * nd + 4
        };
        let mut b = bytes.clone();
        put_u64(&mut b, off_at(&bytes, 1, 2), 33);
        assert_bad(
            &b,
            "tensor 'b' offset 33 is not a multiple of the alignment 32",
        );
        let mut b = bytes.clone();
        put_u64(&mut b, off_at(&bytes, 1, 2), 1 << 40);
        assert_bad(&b, "tensor 'b' data [offset, offset+size) = [");
        assert_bad(&b, "ends past end of file");
        let mut b = bytes.clone();
        put_u64(&mut b, off_at(&bytes, 1, 2), u64::MAX - 31);
        assert_bad(&b, "ends past end of file");
        // In range and aligned, but not where llama.cpp expects it.
        let mut b = bytes.clone();
        put_u64(&mut b, off_at(&bytes, 1, 2), 0);
        assert_bad(&b, "tensor 'b' has data offset 0, expected 32");
        let a_off = off_at(&bytes, 0, 1);
        let mut b = bytes;
        put_u64(&mut b, a_off, 32);
        assert_bad(&b, "tensor 'a' has data offset 32, expected 0");
    }

    #[test]
    fn alignment_values() {
        let b = minimal_builder().alignment(64).build();
        let g = GgufInfo::parse(&b, "t").unwrap();
        assert_eq!(g.alignment, 64);
        assert_eq!(g.data_offset % 64, 0);
        assert_eq!(g.tensors[1].offset, 64);
        for a in [0u32, 3, 48] {
            let b = minimal_builder().alignment(a).build();
            assert_bad(
                &b,
                &format!("general.alignment is {a}, but alignment must be a power of two"),
            );
        }
        let b = minimal_builder()
            .kv("general.alignment", Value::U64(32))
            .build();
        assert_bad(&b, "general.alignment must be of type u32, not u64");
    }

    #[test]
    fn fuzz_byte_flips_never_panic() {
        let base = minimal();
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut ok, mut bad) = (0, 0);
        for _ in 0..20_000 {
            let mut b = base.clone();
            let flips = 1 + next() % 4;
            for _ in 0..flips {
                let at = (next() % b.len() as u64) as usize;
                b[at] = match next() % 4 {
                    0 => 0xff,
                    1 => 0,
                    _ => next() as u8,
                };
            }
            if next() % 8 == 0 {
                b.truncate((next() % b.len() as u64) as usize);
            }
            match GgufInfo::parse(&b, "f") {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::BadModel, "{}", e.message());
                    bad += 1;
                }
            }
        }
        // Flipping data bytes keeps the file valid, so both outcomes must occur.
        assert!(ok > 0 && bad > 0, "ok {ok} bad {bad}");
    }

    #[test]
    fn split_names() {
        assert_eq!(
            parse_split_name("model-00001-of-00003.gguf"),
            Some(("model".into(), 1, 3))
        );
        assert_eq!(
            parse_split_name("a-b-c-00003-of-00003.gguf"),
            Some(("a-b-c".into(), 3, 3))
        );
        for bad in [
            "model.gguf",
            "-00001-of-00003.gguf",
            "model-0001-of-00003.gguf",
            "model-000001-of-00003.gguf",
            "model-00001-of-0003.gguf",
            "model-00001-of-00003.GGUF",
            "model-00000-of-00003.gguf",
            "model-00004-of-00003.gguf",
            "model-00001-of-00000.gguf",
            "model-0000a-of-00003.gguf",
            "model-00001_of-00003.gguf",
            "model-+0001-of-00003.gguf",
            "é-00001-of-00003.ggu",
            "ééééééééééééééééééééé",
            "",
        ] {
            assert_eq!(parse_split_name(bad), None, "{bad}");
        }
    }

    fn write_shards(dir: &Path, n: u32, count_kv: bool) {
        for i in 1..=n {
            let mut b = Builder::new();
            if i == 1 {
                b = b.kv("general.architecture", Value::Str("llama".into()));
            }
            if count_kv {
                b = b
                    .kv("split.no", Value::U16((i - 1) as u16))
                    .kv("split.count", Value::U16(n as u16))
                    .kv("split.tensors.count", Value::I32(2 * n as i32));
            }
            b = b
                .tensor_f32(&format!("t{i}.a"), &[2], &[1.0, 2.0])
                .tensor_f32(&format!("t{i}.b"), &[3], &[1.0, 2.0, 3.0]);
            std::fs::write(dir.join(format!("m-{i:05}-of-{n:05}.gguf")), b.build()).unwrap();
        }
    }

    #[test]
    fn open_model_split() {
        let d = TempDir::new("split");
        write_shards(&d.0, 3, true);
        let first = d.0.join("m-00001-of-00003.gguf");
        let g = open_model(&first).unwrap();
        assert_eq!(g.tensors.len(), 6);
        assert_eq!(g.tensors[5].name, "t3.b");
        let sizes: u64 = (1..=3)
            .map(|i| {
                std::fs::metadata(d.0.join(format!("m-{i:05}-of-00003.gguf")))
                    .unwrap()
                    .len()
            })
            .sum();
        assert_eq!(g.file_size, sizes);
        assert_eq!(g.architecture(), Some("llama"));
        assert_eq!(g.n_params(), 15);

        // Not the first shard.
        let e = open_model(&d.0.join("m-00002-of-00003.gguf")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArg, "{}", e.message());

        // A missing shard is named.
        std::fs::remove_file(d.0.join("m-00002-of-00003.gguf")).unwrap();
        let e = open_model(&first).unwrap_err();
        assert!(matches!(
            e.kind(),
            ErrorKind::NotFound | ErrorKind::BadModel
        ));
        assert!(
            e.message().contains("m-00002-of-00003.gguf"),
            "{}",
            e.message()
        );
        assert!(e.message().contains("shard 2 of 3"), "{}", e.message());

        // A corrupt shard is bad model naming that shard.
        std::fs::write(d.0.join("m-00002-of-00003.gguf"), b"GGUF\x03\0\0\0").unwrap();
        let e = open_model(&first).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadModel);
        assert!(
            e.message().contains("m-00002-of-00003.gguf: truncated"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn open_model_split_metadata_mismatch() {
        let d = TempDir::new("split-meta");
        write_shards(&d.0, 2, true);
        // Same files under a 3-shard name: split.count disagrees.
        for i in 1..=2 {
            std::fs::rename(
                d.0.join(format!("m-{i:05}-of-00002.gguf")),
                d.0.join(format!("m-{i:05}-of-00003.gguf")),
            )
            .unwrap();
        }
        let e = open_model(&d.0.join("m-00001-of-00003.gguf")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadModel);
        assert!(e.message().contains("split.count is 2"), "{}", e.message());
        // A shard renamed to a plain name is refused with a clear message.
        std::fs::rename(d.0.join("m-00001-of-00003.gguf"), d.0.join("plain.gguf")).unwrap();
        let e = open_model(&d.0.join("plain.gguf")).unwrap_err();
        assert!(
            e.message().contains("split into 2 files"),
            "{}",
            e.message()
        );
        // No split metadata at all: only the names matter; one-shard split is fine.
        let d2 = TempDir::new("split-plain");
        write_shards(&d2.0, 1, false);
        let g = open_model(&d2.0.join("m-00001-of-00001.gguf")).unwrap();
        assert_eq!(g.tensors.len(), 2);
    }

    #[test]
    fn open_errors() {
        let d = TempDir::new("open");
        let e = GgufInfo::open(&d.0.join("nope.gguf")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.message().contains("nope.gguf"));
        let e = GgufInfo::open(&d.0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArg);
        assert!(e.message().contains("is a directory"));
        let empty = d.0.join("empty.gguf");
        std::fs::write(&empty, b"").unwrap();
        let e = GgufInfo::open(&empty).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadModel);
        assert!(
            e.message().ends_with("empty.gguf: file is empty (0 bytes)"),
            "{}",
            e.message()
        );
        let good = d.0.join("good.gguf");
        std::fs::write(&good, minimal()).unwrap();
        assert_eq!(GgufInfo::open(&good).unwrap().tensors.len(), 2);
    }
}
