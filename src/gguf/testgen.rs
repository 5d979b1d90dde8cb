//! Builders of small GGUF images for tests (here and in integration tests).
use super::Value;

/// Where things landed in a built image, so tests can corrupt exact fields.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// Offset of each kv's key-length field.
    pub kv_at: Vec<usize>,
    /// Offset of each tensor info's name-length field.
    pub tensor_info_at: Vec<usize>,
    /// Start of the data section.
    pub data_offset: usize,
}

#[derive(Clone)]
struct Tensor {
    name: String,
    dims: Vec<u64>,
    ggml_type: u32,
    data: Vec<u8>,
}

/// Writes a valid GGUF (v3 by default) with data padded to the alignment.
#[derive(Clone)]
pub struct Builder {
    version: u32,
    align: u64,
    kv: Vec<(String, Value)>,
    tensors: Vec<Tensor>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    pub fn new() -> Self {
        Builder {
            version: 3,
            align: 32,
            kv: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// A builder holding everything of a parsed file: its version, alignment, kvs
    /// and tensors (data copied from `bytes`, the file the info was parsed from),
    /// for writing a copy of a real model with some kvs changed.
    pub fn from_gguf(info: &super::GgufInfo, bytes: &[u8]) -> Self {
        let base = info.data_offset as usize;
        Builder {
            version: info.version,
            align: info.alignment,
            kv: info.kv.clone(),
            tensors: info
                .tensors
                .iter()
                .map(|t| {
                    let at = base + t.offset as usize;
                    Tensor {
                        name: t.name.clone(),
                        dims: t.dims.clone(),
                        ggml_type: t.ggml_type,
                        data: bytes[at..at + t.size as usize].to_vec(),
                    }
                })
                .collect(),
        }
    }

    pub fn version(mut self, v: u32) -> Self {
        self.version = v;
        self
    }

    /// Add a kv. Array elements must all have the first element's type.
    pub fn kv(mut self, key: &str, v: Value) -> Self {
        self.kv.push((key.to_owned(), v));
        self
    }

    /// Add `general.alignment`; padding follows it when it is a power of two.
    pub fn alignment(mut self, a: u32) -> Self {
        if a.is_power_of_two() {
            self.align = a.into();
        }
        self.kv("general.alignment", Value::U32(a))
    }

    pub fn tensor_f32(self, name: &str, dims: &[u64], values: &[f32]) -> Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor_raw(name, dims, 0, data)
    }

    /// A tensor of any type with the caller's data bytes.
    pub fn tensor_raw(mut self, name: &str, dims: &[u64], ggml_type: u32, data: Vec<u8>) -> Self {
        self.tensors.push(Tensor {
            name: name.to_owned(),
            dims: dims.to_vec(),
            ggml_type,
            data,
        });
        self
    }

    /// Replace a kv's value (or add it): for mutating a valid model.
    pub fn set(mut self, key: &str, v: Value) -> Self {
        match self.kv.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = v,
            None => self.kv.push((key.to_owned(), v)),
        }
        self
    }

    /// Remove a kv (no-op when absent).
    pub fn without(mut self, key: &str) -> Self {
        self.kv.retain(|(k, _)| k != key);
        self
    }

    /// A kv's current value.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Give a tensor another type and data (dims unchanged).
    pub fn retype(mut self, name: &str, ggml_type: u32, data: Vec<u8>) -> Self {
        if let Some(t) = self.tensors.iter_mut().find(|t| t.name == name) {
            t.ggml_type = ggml_type;
            t.data = data;
        }
        self
    }

    /// Change a tensor's dims (data unchanged).
    pub fn reshape(mut self, name: &str, dims: &[u64]) -> Self {
        if let Some(t) = self.tensors.iter_mut().find(|t| t.name == name) {
            t.dims = dims.to_vec();
        }
        self
    }

    /// Remove a tensor (no-op when absent).
    pub fn without_tensor(mut self, name: &str) -> Self {
        self.tensors.retain(|t| t.name != name);
        self
    }

    /// Names, dims and types of the tensors, in order.
    pub fn tensor_list(&self) -> Vec<(String, Vec<u64>, u32)> {
        self.tensors
            .iter()
            .map(|t| (t.name.clone(), t.dims.clone(), t.ggml_type))
            .collect()
    }

    pub fn build(&self) -> Vec<u8> {
        self.build_with_layout().0
    }

    pub fn build_with_layout(&self) -> (Vec<u8>, Layout) {
        let mut b = Vec::new();
        let mut layout = Layout::default();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        b.extend_from_slice(&(self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            layout.kv_at.push(b.len());
            put_str(&mut b, k.as_bytes());
            b.extend_from_slice(&v.type_id().to_le_bytes());
            encode_value(&mut b, v);
        }
        let pad = |n: usize| n.div_ceil(self.align as usize) * self.align as usize;
        let mut off = 0usize;
        for t in &self.tensors {
            layout.tensor_info_at.push(b.len());
            put_str(&mut b, t.name.as_bytes());
            b.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&t.ggml_type.to_le_bytes());
            b.extend_from_slice(&(off as u64).to_le_bytes());
            off += pad(t.data.len());
        }
        b.resize(pad(b.len()), 0);
        layout.data_offset = b.len();
        // Pad between tensors but not after the last: the file then ends exactly
        // at the last tensor's data, so every truncation must be rejected.
        for (i, t) in self.tensors.iter().enumerate() {
            b.extend_from_slice(&t.data);
            if i + 1 < self.tensors.len() {
                b.resize(pad(b.len()), 0);
            }
        }
        (b, layout)
    }
}

fn put_str(b: &mut Vec<u8>, s: &[u8]) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s);
}

/// Append a value's payload (no type tag), GGUF-encoded.
pub fn encode_value(b: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I8(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => b.push(u8::from(*x)),
        Value::Str(s) => put_str(b, s.as_bytes()),
        Value::Array(a) => {
            let et = a.first().map_or(0, Value::type_id);
            b.extend_from_slice(&et.to_le_bytes());
            b.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for x in a {
                encode_value(b, x);
            }
        }
    }
}

/// The standard small valid model: a few kvs of different types and two F32
/// tensors ("a": 4 elements, "b": 2x3) with the data padded between them.
pub fn minimal_builder() -> Builder {
    Builder::new()
        .kv("general.architecture", Value::Str("llama".into()))
        .kv("general.name", Value::Str("tiny".into()))
        .kv("llama.context_length", Value::U32(128))
        .kv("llama.rope.freq_base", Value::F32(10000.0))
        .kv("general.flag", Value::Bool(true))
        .kv(
            "tokenizer.ggml.tokens",
            Value::Array(vec![Value::Str("a".into()), Value::Str("b".into())]),
        )
        .tensor_f32("a", &[4], &[1.0, 2.0, 3.0, 4.0])
        .tensor_f32("b", &[2, 3], &[0.5; 6])
}

pub fn minimal() -> Vec<u8> {
    minimal_builder().build()
}

/// A GGUF v3 image with the given string kvs and F32 tensors of `dims`.
pub fn build(kvs: &[(&str, &str)], tensors: &[(&str, &[u64])]) -> Vec<u8> {
    let mut b = Builder::new();
    for (k, v) in kvs {
        b = b.kv(k, Value::Str((*v).to_owned()));
    }
    for (name, dims) in tensors {
        let n = dims.iter().product::<u64>() as usize;
        b = b.tensor_raw(name, dims, 0, vec![0x3f; n * 4]);
    }
    b.build()
}

/// GPT-2's byte-level alphabet: the printable character that stands for each byte
/// in a BPE vocabulary ("Ġ" for a space, "Ċ" for a newline).
pub fn gpt2_byte_char(b: u8) -> char {
    let printable = |c: u8| (b'!'..=b'~').contains(&c) || (0xA1..=0xAC).contains(&c) || c >= 0xAE;
    if printable(b) {
        return char::from(b);
    }
    let n = (0..b).filter(|&c| !printable(c)).count() as u32;
    char::from_u32(256 + n).expect("in range")
}

/// A deterministic xorshift64 stream starting from `state` (must not be 0): test
/// data that repeats run after run.
pub fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// The xorshift stream for a small seed (spread, and made non-zero).
pub fn seeded(seed: u64) -> impl FnMut() -> u64 {
    xorshift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
}

/// A few deterministic pseudo-random weights in [-0.5, 0.5).
pub fn weights(n: usize, seed: u64) -> Vec<f32> {
    let mut next = seeded(seed);
    (0..n)
        .map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
        .collect()
}

/// Sizes of [`tiny_llama`].
pub const TINY_EMBD: u64 = 32;
pub const TINY_FF: u64 = 64;
pub const TINY_HEADS: u32 = 2;

/// The vocabulary of [`tiny_llama`]: the 256 byte tokens, a few merges' results and
/// three control tokens (`<|endoftext|>` = BOS/EOS, `<|im_start|>`, `<|im_end|>`).
pub fn tiny_vocab() -> (Vec<String>, Vec<i32>, Vec<String>) {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| gpt2_byte_char(b).to_string()).collect();
    let merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    let mut types = vec![1i32; tokens.len()];
    for special in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] {
        tokens.push(special.into());
        types.push(3);
    }
    (
        tokens,
        types,
        merges.iter().map(|m| m.to_string()).collect(),
    )
}

/// A complete, loadable 1-layer llama model built from scratch (~90 KB, F32
/// weights, a gpt2 byte-level BPE vocabulary, a ChatML template). The baseline the
/// hostile-model corpus mutates.
pub fn tiny_llama() -> Builder {
    let (tokens, types, merges) = tiny_vocab();
    let n_vocab = tokens.len() as u64;
    let eos = (n_vocab - 3) as u32;
    let strs = |v: Vec<String>| Value::Array(v.into_iter().map(Value::Str).collect());
    let (e, f) = (TINY_EMBD, TINY_FF);
    let mut b = Builder::new()
        .kv("general.architecture", Value::Str("llama".into()))
        .kv("general.name", Value::Str("tiny".into()))
        .kv("general.file_type", Value::U32(0))
        .kv("llama.block_count", Value::U32(1))
        .kv("llama.context_length", Value::U32(256))
        .kv("llama.embedding_length", Value::U32(e as u32))
        .kv("llama.feed_forward_length", Value::U32(f as u32))
        .kv("llama.attention.head_count", Value::U32(TINY_HEADS))
        .kv("llama.attention.head_count_kv", Value::U32(TINY_HEADS))
        .kv("llama.rope.dimension_count", Value::U32((e / TINY_HEADS as u64) as u32))
        .kv("llama.rope.freq_base", Value::F32(10000.0))
        .kv("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5))
        .kv("llama.vocab_size", Value::U32(n_vocab as u32))
        .kv("tokenizer.ggml.model", Value::Str("gpt2".into()))
        .kv("tokenizer.ggml.pre", Value::Str("gpt-2".into()))
        .kv("tokenizer.ggml.tokens", strs(tokens))
        .kv(
            "tokenizer.ggml.token_type",
            Value::Array(types.into_iter().map(Value::I32).collect()),
        )
        .kv("tokenizer.ggml.merges", strs(merges))
        .kv("tokenizer.ggml.bos_token_id", Value::U32(eos))
        .kv("tokenizer.ggml.eos_token_id", Value::U32(eos))
        .kv("tokenizer.ggml.add_bos_token", Value::Bool(false))
        .kv(
            "tokenizer.chat_template",
            Value::Str(
                "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}".into(),
            ),
        );
    let mut seed = 1;
    let mut t = |b: Builder, name: &str, dims: &[u64]| {
        seed += 1;
        let n = dims.iter().product::<u64>() as usize;
        if name.contains("norm") {
            b.tensor_f32(name, dims, &vec![1.0; n])
        } else {
            b.tensor_f32(name, dims, &weights(n, seed))
        }
    };
    b = t(b, "token_embd.weight", &[e, n_vocab]);
    b = t(b, "output_norm.weight", &[e]);
    b = t(b, "output.weight", &[e, n_vocab]);
    b = t(b, "blk.0.attn_norm.weight", &[e]);
    b = t(b, "blk.0.attn_q.weight", &[e, e]);
    b = t(b, "blk.0.attn_k.weight", &[e, e]);
    b = t(b, "blk.0.attn_v.weight", &[e, e]);
    b = t(b, "blk.0.attn_output.weight", &[e, e]);
    b = t(b, "blk.0.ffn_norm.weight", &[e]);
    b = t(b, "blk.0.ffn_gate.weight", &[e, f]);
    b = t(b, "blk.0.ffn_down.weight", &[f, e]);
    b = t(b, "blk.0.ffn_up.weight", &[e, f]);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_gguf_writes_the_same_file_back() {
        for b in [tiny_llama(), tiny_llama().alignment(64)] {
            let bytes = b.build();
            let info = super::super::GgufInfo::parse(&bytes, "tiny").unwrap();
            assert_eq!(Builder::from_gguf(&info, &bytes).build(), bytes);
        }
    }
}
