//! The hostile-model corpus: several hundred GGUF files that are broken, hostile
//! or merely odd, built from scratch (a 1-layer tiny llama) and from the test
//! model. Each case runs in a child process (the `tabagent-probe` executable: the
//! in-process load path, validator then llama.cpp, plus a one-token decode) under
//! a timeout and a memory limit, so a crash fails this test instead of killing
//! it. Every case must end in a verdict: loaded, or a clean status whose message
//! names the file. The out-of-process check (`check_model`) runs on every case too.
//!
//! `TABAGENT_CORPUS_DIR=dir` keeps the generated files there (for ASan/valgrind
//! runs of a sample); `TABAGENT_CORPUS_ONLY=class` runs one class;
//! `TABAGENT_CORPUS_FLIPS=N` makes N times as many random-flip cases.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tabagent::engine::check::{check_model, CheckLimits};
use tabagent::engine::ModelParams;
use tabagent::gguf::testgen::{self, Builder};
use tabagent::gguf::Value;

const PROBE: &str = env!("CARGO_BIN_EXE_tabagent-probe");
const TIMEOUT: Duration = Duration::from_secs(60);
const MEMORY_LIMIT: u64 = 4 << 30;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    /// A valid model: must load and decode.
    Loads,
    /// Must end in an error status (the validator or llama.cpp refuses it).
    Refused,
    /// Either, as long as nothing crashes (random damage may be harmless).
    Survives,
}

struct Case {
    class: &'static str,
    name: String,
    expect: Expect,
    data: Data,
}

enum Data {
    Bytes(Vec<u8>),
    /// A copy of the real test model with bytes changed at offsets (written when run).
    RealFlips(Vec<(usize, u8)>),
}

fn case(class: &'static str, name: impl Into<String>, expect: Expect, b: &Builder) -> Case {
    Case {
        class,
        name: name.into(),
        expect,
        data: Data::Bytes(b.build()),
    }
}

fn strs(v: &[&str]) -> Value {
    Value::Array(v.iter().map(|s| Value::Str((*s).into())).collect())
}

fn tokens_of(b: &Builder) -> Vec<String> {
    match b.value("tokenizer.ggml.tokens") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn with_tokens(b: Builder, tokens: Vec<String>) -> Builder {
    b.set(
        "tokenizer.ggml.tokens",
        Value::Array(tokens.into_iter().map(Value::Str).collect()),
    )
}

/// Data of `n` elements of ggml type `t` (zeros: values do not matter here).
fn data_for(t: u32, n: u64) -> Vec<u8> {
    let (blk, bytes) = tabagent::gguf::ggml_type_block(t).expect("known type");
    vec![0u8; (n.div_ceil(blk) * bytes) as usize]
}

fn elements(b: &Builder, name: &str) -> u64 {
    b.tensor_list()
        .into_iter()
        .find(|t| t.0 == name)
        .map(|t| t.1.iter().product())
        .expect("tensor exists")
}

fn retype(b: &Builder, name: &str, t: u32) -> Builder {
    let n = elements(b, name);
    b.clone().retype(name, t, data_for(t, n))
}

const MATMULS: &[&str] = &[
    "blk.0.attn_q.weight",
    "blk.0.attn_k.weight",
    "blk.0.attn_v.weight",
    "blk.0.attn_output.weight",
    "blk.0.ffn_gate.weight",
    "blk.0.ffn_down.weight",
    "blk.0.ffn_up.weight",
    "output.weight",
];
const NORMS: &[&str] = &[
    "output_norm.weight",
    "blk.0.attn_norm.weight",
    "blk.0.ffn_norm.weight",
];

fn valid_cases(out: &mut Vec<Case>) {
    use Expect::Loads;
    let t = testgen::tiny_llama();
    out.push(case("valid", "tiny-f32", Loads, &t));
    let mut q8 = t.clone();
    let mut f16 = t.clone();
    for m in MATMULS {
        q8 = retype(&q8, m, 8);
        f16 = retype(&f16, m, 1);
    }
    out.push(case("valid", "tiny-q8_0", Loads, &q8));
    out.push(case("valid", "tiny-f16", Loads, &f16));
    out.push(case(
        "valid",
        "tied-embeddings",
        Loads,
        &t.clone().without_tensor("output.weight"),
    ));
    out.push(case(
        "valid",
        "no-chat-template",
        Loads,
        &t.clone().without("tokenizer.chat_template"),
    ));
    out.push(case("valid", "gqa", Loads, &{
        let e = testgen::TINY_EMBD;
        t.clone()
            .set("llama.attention.head_count_kv", Value::U32(1))
            .reshape("blk.0.attn_k.weight", &[e, e / 2])
            .retype("blk.0.attn_k.weight", 0, data_for(0, e * e / 2))
            .reshape("blk.0.attn_v.weight", &[e, e / 2])
            .retype("blk.0.attn_v.weight", 0, data_for(0, e * e / 2))
    }));
    out.push(case(
        "valid",
        "add-bos",
        Loads,
        &t.clone()
            .set("tokenizer.ggml.add_bos_token", Value::Bool(true)),
    ));
    out.push(case(
        "valid",
        "alignment-64",
        Loads,
        &t.clone().alignment(64),
    ));
}

fn structure_cases(out: &mut Vec<Case>) {
    use Expect::Refused;
    let t = testgen::tiny_llama();
    let (bytes, layout) = t.build_with_layout();
    let n = bytes.len();
    // Truncations: the header, inside metadata, inside the tensor table, inside data.
    let mut cuts: Vec<usize> = vec![0, 1, 3, 4, 7, 8, 15, 16, 23, 24, 25];
    cuts.extend(layout.kv_at.iter().step_by(3).map(|&a| a + 5));
    cuts.extend(layout.tensor_info_at.iter().map(|&a| a + 9));
    cuts.extend([
        layout.data_offset,
        layout.data_offset + 1,
        n / 2,
        n - 4,
        n - 1,
    ]);
    for c in cuts {
        out.push(Case {
            class: "structure",
            name: format!("truncated-at-{c}"),
            expect: Refused,
            data: Data::Bytes(bytes[..c.min(n - 1)].to_vec()),
        });
    }
    let poke = |name: String, at: usize, v: &[u8]| {
        let mut b = bytes.clone();
        b[at..at + v.len()].copy_from_slice(v);
        Case {
            class: "structure",
            name,
            expect: Refused,
            data: Data::Bytes(b),
        }
    };
    out.push(poke("bad-magic".into(), 0, b"GGUX"));
    out.push(poke("version-0".into(), 4, &0u32.to_le_bytes()));
    out.push(poke("version-99".into(), 4, &99u32.to_le_bytes()));
    for (i, v) in [u64::MAX, 1 << 40, 1000].iter().enumerate() {
        out.push(poke(format!("tensor-count-{i}"), 8, &v.to_le_bytes()));
        out.push(poke(format!("kv-count-{i}"), 16, &v.to_le_bytes()));
    }
    for (i, &at) in layout.kv_at.iter().enumerate().step_by(4) {
        out.push(poke(
            format!("kv{i}-key-length-huge"),
            at,
            &u64::MAX.to_le_bytes(),
        ));
        out.push(poke(format!("kv{i}-key-length-0"), at, &0u64.to_le_bytes()));
        let klen = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
        out.push(poke(
            format!("kv{i}-type-99"),
            at + 8 + klen,
            &99u32.to_le_bytes(),
        ));
    }
    for (i, &at) in layout.tensor_info_at.iter().enumerate() {
        let nlen = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
        let nd = at + 8 + nlen;
        let n_dims = u32::from_le_bytes(bytes[nd..nd + 4].try_into().unwrap()) as usize;
        let dims_at = nd + 4;
        let type_at = dims_at + 8 * n_dims;
        let off_at = type_at + 4;
        if i % 2 == 0 {
            out.push(poke(format!("t{i}-n-dims-9"), nd, &9u32.to_le_bytes()));
            out.push(poke(format!("t{i}-dim-0"), dims_at, &0u64.to_le_bytes()));
            out.push(poke(
                format!("t{i}-dim-huge"),
                dims_at,
                &(1u64 << 62).to_le_bytes(),
            ));
        }
        out.push(poke(format!("t{i}-type-99"), type_at, &99u32.to_le_bytes()));
        out.push(poke(
            format!("t{i}-type-removed-4"),
            type_at,
            &4u32.to_le_bytes(),
        ));
        out.push(poke(
            format!("t{i}-offset-huge"),
            off_at,
            &(1u64 << 40).to_le_bytes(),
        ));
        out.push(poke(
            format!("t{i}-offset-misaligned"),
            off_at,
            &3u64.to_le_bytes(),
        ));
    }
    // Alignment below what ggml's CPU buffer needs (32): read instead of mapped,
    // so these load; odd values are refused.
    for a in [1u32, 2, 4, 8, 16] {
        out.push(case(
            "structure",
            format!("alignment-{a}"),
            Expect::Loads,
            &t.clone().alignment(a),
        ));
    }
    for a in [0u32, 3, 48, u32::MAX] {
        out.push(case(
            "structure",
            format!("alignment-{a}"),
            Refused,
            &t.clone().alignment(a),
        ));
    }
    out.push(case(
        "structure",
        "duplicate-key",
        Refused,
        &t.clone().kv("llama.block_count", Value::U32(1)),
    ));
    out.push(case(
        "structure",
        "duplicate-tensor",
        Refused,
        &t.clone()
            .tensor_f32("output_norm.weight", &[testgen::TINY_EMBD], &[1.0; 32]),
    ));
    out.push(case("structure", "no-tensors", Refused, &{
        let mut b = t.clone();
        for (name, _, _) in t.tensor_list() {
            b = b.without_tensor(&name);
        }
        b
    }));
}

fn hparam_cases(out: &mut Vec<Case>) {
    use Expect::Refused;
    let t = testgen::tiny_llama();
    let mut push = |name: &str, b: Builder| out.push(case("hparams", name, Refused, &b));
    for (n, v) in [
        ("block-count-0", Value::U32(0)),
        ("block-count-513", Value::U32(513)),
        ("block-count-max", Value::U32(u32::MAX)),
        ("block-count-2-one-layer-of-tensors", Value::U32(2)),
        ("block-count-string", Value::Str("1".into())),
        ("block-count-f32", Value::F32(1.0)),
        ("block-count-array", Value::Array(vec![Value::U32(1)])),
        ("block-count-i64-negative", Value::I64(-1)),
    ] {
        push(n, t.clone().set("llama.block_count", v));
    }
    push("no-block-count", t.clone().without("llama.block_count"));
    push(
        "nextn-above-layers",
        t.clone().set("llama.nextn_predict_layers", Value::U32(2)),
    );
    push(
        "experts-2000",
        t.clone().set("llama.expert_count", Value::U32(2000)),
    );
    push(
        "experts-max",
        t.clone().set("llama.expert_count", Value::U32(u32::MAX)),
    );
    push(
        "experts-used-without-experts",
        t.clone().set("llama.expert_used_count", Value::U32(1)),
    );
    push(
        "experts-used-above-count",
        t.clone()
            .set("llama.expert_count", Value::U32(4))
            .set("llama.expert_used_count", Value::U32(8)),
    );
    push(
        "expert-groups-without-experts",
        t.clone().set("llama.expert_group_count", Value::U32(2)),
    );
    push(
        "expert-groups-used-above-groups",
        t.clone()
            .set("llama.expert_count", Value::U32(4))
            .set("llama.expert_used_count", Value::U32(2))
            .set("llama.expert_group_count", Value::U32(2))
            .set("llama.expert_group_used_count", Value::U32(3)),
    );
    for s in ["foo", "", "YARN", "linear\0"] {
        push(
            &format!("rope-scaling-{s:?}"),
            t.clone()
                .set("llama.rope.scaling.type", Value::Str(s.into())),
        );
    }
    push(
        "rope-scaling-type-number",
        t.clone().set("llama.rope.scaling.type", Value::U32(1)),
    );
    for (n, k, v) in [
        ("head-count-0", "llama.attention.head_count", Value::U32(0)),
        ("head-count-3", "llama.attention.head_count", Value::U32(3)),
        (
            "head-count-huge",
            "llama.attention.head_count",
            Value::U32(u32::MAX),
        ),
        (
            "head-count-kv-0",
            "llama.attention.head_count_kv",
            Value::U32(0),
        ),
        (
            "head-count-kv-3",
            "llama.attention.head_count_kv",
            Value::U32(3),
        ),
        (
            "head-count-kv-above-heads",
            "llama.attention.head_count_kv",
            Value::U32(4),
        ),
        (
            "head-count-array-too-long",
            "llama.attention.head_count",
            Value::Array(vec![Value::U32(2); 600]),
        ),
        (
            "head-count-array-wrong-length",
            "llama.attention.head_count",
            Value::Array(vec![Value::U32(2); 3]),
        ),
        (
            "head-count-array-of-strings",
            "llama.attention.head_count",
            strs(&["2"]),
        ),
        ("embedding-0", "llama.embedding_length", Value::U32(0)),
        ("embedding-31", "llama.embedding_length", Value::U32(31)),
        (
            "embedding-huge",
            "llama.embedding_length",
            Value::U32(u32::MAX),
        ),
        ("ff-0", "llama.feed_forward_length", Value::U32(0)),
        ("ff-huge", "llama.feed_forward_length", Value::U32(1 << 30)),
        ("key-length-0", "llama.attention.key_length", Value::U32(0)),
        (
            "value-length-0",
            "llama.attention.value_length",
            Value::U32(0),
        ),
        ("key-length-7", "llama.attention.key_length", Value::U32(7)),
        ("rope-dims-0", "llama.rope.dimension_count", Value::U32(0)),
        (
            "rope-dims-1000",
            "llama.rope.dimension_count",
            Value::U32(1000),
        ),
        (
            "rope-dims-odd",
            "llama.rope.dimension_count",
            Value::U32(15),
        ),
        (
            "eps-nan",
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(f32::NAN),
        ),
        (
            "eps-negative",
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(-1e-5),
        ),
        (
            "eps-inf",
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(f32::INFINITY),
        ),
        (
            "eps-string",
            "llama.attention.layer_norm_rms_epsilon",
            Value::Str("1e-5".into()),
        ),
        (
            "eps-f64",
            "llama.attention.layer_norm_rms_epsilon",
            Value::F64(1e-5),
        ),
        ("context-0", "llama.context_length", Value::U32(0)),
        (
            "freq-base-nan",
            "llama.rope.freq_base",
            Value::F32(f32::NAN),
        ),
        ("freq-base-0", "llama.rope.freq_base", Value::F32(0.0)),
        (
            "freq-base-negative",
            "llama.rope.freq_base",
            Value::F32(-10000.0),
        ),
        (
            "rope-scale-nan",
            "llama.rope.scaling.factor",
            Value::F32(f32::NAN),
        ),
        (
            "rope-scale-negative",
            "llama.rope.scaling.factor",
            Value::F32(-2.0),
        ),
        (
            "vocab-size-1e8",
            "llama.vocab_size",
            Value::U32(100_000_000),
        ),
        ("vocab-size-max", "llama.vocab_size", Value::U32(u32::MAX)),
        (
            "architecture-unknown",
            "general.architecture",
            Value::Str("foo".into()),
        ),
        (
            "architecture-empty",
            "general.architecture",
            Value::Str("".into()),
        ),
        ("architecture-number", "general.architecture", Value::U32(1)),
    ] {
        push(n, t.clone().set(k, v));
    }
    push("no-architecture", t.clone().without("general.architecture"));
    push("no-embedding", t.clone().without("llama.embedding_length"));
    push("no-heads", t.clone().without("llama.attention.head_count"));
    push(
        "no-eps",
        t.clone().without("llama.attention.layer_norm_rms_epsilon"),
    );
    push("no-context", t.clone().without("llama.context_length"));
    out.push(case(
        "hparams",
        "none-vocab-small",
        Refused,
        &t.clone()
            .set("tokenizer.ggml.model", Value::Str("none".into()))
            .without("tokenizer.ggml.tokens")
            .without("tokenizer.ggml.token_type")
            .without("tokenizer.ggml.merges")
            .without("tokenizer.ggml.bos_token_id")
            .without("tokenizer.ggml.eos_token_id"),
    ));
    let mut push = |name: &str, b: Builder| out.push(case("hparams", name, Refused, &b));
    // "none" vocabularies with absurd sizes: llama.cpp allocates ~40 bytes a token.
    for (i, n) in [100_000_000u64, 1_000_000_000, 4_000_000_000]
        .into_iter()
        .enumerate()
    {
        push(
            &format!("none-vocab-size-{i}"),
            t.clone()
                .set("tokenizer.ggml.model", Value::Str("none".into()))
                .without("tokenizer.ggml.tokens")
                .without("tokenizer.ggml.token_type")
                .without("tokenizer.ggml.merges")
                .without("tokenizer.ggml.bos_token_id")
                .without("tokenizer.ggml.eos_token_id")
                .set("llama.vocab_size", Value::U64(n)),
        );
    }
}

fn vocab_cases(out: &mut Vec<Case>) {
    use Expect::Refused;
    let t = testgen::tiny_llama();
    let toks = tokens_of(&t);
    let n = toks.len();
    let mut push = |name: &str, b: Builder| out.push(case("vocab", name, Refused, &b));
    let mut dup = toks.clone();
    dup[260] = dup[261].clone();
    push("duplicate-token", with_tokens(t.clone(), dup));
    let mut dup2 = toks.clone();
    dup2[65] = dup2[66].clone();
    push("duplicate-byte-token", with_tokens(t.clone(), dup2));
    let mut nul = toks.clone();
    nul[260] = format!("{}\0x", toks[65]);
    push("nul-after-existing-token", with_tokens(t.clone(), nul));
    // Harmless to llama.cpp (RWKV vocabularies have a "\0" token; an empty text is
    // stored as "[EMPTY_n]"): must only survive.
    let mut nul2 = toks.clone();
    nul2[260] = "\0".into();
    out.push(case(
        "vocab",
        "nul-token",
        Expect::Survives,
        &with_tokens(t.clone(), nul2),
    ));
    let mut empty_tok = toks.clone();
    empty_tok[260] = String::new();
    out.push(case(
        "vocab",
        "empty-token-text",
        Expect::Survives,
        &with_tokens(t.clone(), empty_tok),
    ));
    let mut push = |name: &str, b: Builder| out.push(case("vocab", name, Refused, &b));
    push("empty-vocab", with_tokens(t.clone(), Vec::new()));
    push("one-token-vocab", with_tokens(t.clone(), vec!["a".into()]));
    push(
        "tokens-not-strings",
        t.clone().set(
            "tokenizer.ggml.tokens",
            Value::Array(vec![Value::U32(1); n]),
        ),
    );
    push(
        "tokens-not-array",
        t.clone()
            .set("tokenizer.ggml.tokens", Value::Str("abc".into())),
    );
    push("no-tokens", t.clone().without("tokenizer.ggml.tokens"));
    push(
        "token-types-short",
        t.clone().set(
            "tokenizer.ggml.token_type",
            Value::Array(vec![Value::I32(1); n - 1]),
        ),
    );
    push(
        "token-types-long",
        t.clone().set(
            "tokenizer.ggml.token_type",
            Value::Array(vec![Value::I32(1); n + 5]),
        ),
    );
    push(
        "token-types-strings",
        t.clone().set(
            "tokenizer.ggml.token_type",
            Value::Array(vec![Value::Str("1".into()); n]),
        ),
    );
    push(
        "scores-short",
        t.clone().set(
            "tokenizer.ggml.scores",
            Value::Array(vec![Value::F32(0.0); 3]),
        ),
    );
    push(
        "scores-strings",
        t.clone().set(
            "tokenizer.ggml.scores",
            Value::Array(vec![Value::Str("0".into()); n]),
        ),
    );
    for m in ["none", "foo", "", "GPT2"] {
        push(
            &format!("model-{m:?}"),
            t.clone().set("tokenizer.ggml.model", Value::Str(m.into())),
        );
    }
    push(
        "model-number",
        t.clone().set("tokenizer.ggml.model", Value::U32(2)),
    );
    push(
        "pre-unknown",
        t.clone()
            .set("tokenizer.ggml.pre", Value::Str("no-such-pre".into())),
    );
    for key in [
        "bos",
        "eos",
        "eot",
        "eom",
        "unknown",
        "seperator",
        "padding",
        "mask",
        "fim_pre",
        "fim_suf",
        "fim_mid",
        "fim_pad",
        "fim_rep",
        "fim_sep",
    ] {
        push(
            &format!("{key}-id-out-of-range"),
            t.clone().set(
                &format!("tokenizer.ggml.{key}_token_id"),
                Value::U32(n as u32 + 7),
            ),
        );
    }
    push(
        "bos-id-max",
        t.clone()
            .set("tokenizer.ggml.bos_token_id", Value::U32(u32::MAX)),
    );
    push(
        "eos-id-negative",
        t.clone().set("tokenizer.ggml.eos_token_id", Value::I32(-5)),
    );
    push(
        "bos-id-string",
        t.clone()
            .set("tokenizer.ggml.bos_token_id", Value::Str("0".into())),
    );
    push(
        "add-bos-without-bos",
        t.clone()
            .set("tokenizer.ggml.add_bos_token", Value::Bool(true))
            .set("tokenizer.ggml.bos_token_id", Value::I32(-1)),
    );
    push(
        "add-eos-without-eos",
        t.clone()
            .set("tokenizer.ggml.add_eos_token", Value::Bool(true))
            .set("tokenizer.ggml.eos_token_id", Value::I32(-1)),
    );
    push(
        "add-bos-not-bool",
        t.clone().set("tokenizer.ggml.add_bos_token", Value::U32(1)),
    );
    push(
        "merge-without-space",
        t.clone().set("tokenizer.ggml.merges", strs(&["Ġt"])),
    );
    push(
        "merge-empty",
        t.clone().set("tokenizer.ggml.merges", strs(&[""])),
    );
    push(
        "merges-not-strings",
        t.clone()
            .set("tokenizer.ggml.merges", Value::Array(vec![Value::U32(0)])),
    );
    // No newline token in a BPE vocabulary: "model vocab missing newline token".
    let mut no_nl = toks.clone();
    no_nl[10] = "XX-not-newline".into();
    out.push(case(
        "vocab",
        "bpe-without-newline",
        Expect::Survives,
        &with_tokens(t.clone(), no_nl),
    ));

    // SPM ("llama") vocabularies: byte tokens <0xNN> are needed for byte fallback.
    let spm_tokens = |with_bytes: &dyn Fn(u8) -> bool| {
        let mut v: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        v.extend(
            (0..=255u8)
                .filter(|b| with_bytes(*b))
                .map(|b| format!("<0x{b:02X}>")),
        );
        v.extend(["▁", "▁the", "he", "a", "b", "c", "▁a", "Hello", "▁world"].map(String::from));
        v
    };
    let spm = |tokens: Vec<String>| {
        let n = tokens.len();
        let types: Vec<Value> = tokens
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Value::I32(if i < 3 {
                    if i == 0 {
                        2
                    } else {
                        3
                    }
                } else if s.starts_with("<0x") {
                    6
                } else {
                    1
                })
            })
            .collect();
        t.clone()
            .set("tokenizer.ggml.model", Value::Str("llama".into()))
            .without("tokenizer.ggml.pre")
            .without("tokenizer.ggml.merges")
            .set("tokenizer.ggml.bos_token_id", Value::U32(1))
            .set("tokenizer.ggml.eos_token_id", Value::U32(2))
            .set("tokenizer.ggml.unknown_token_id", Value::U32(0))
            .set("llama.vocab_size", Value::U32(n as u32))
            .set(
                "tokenizer.ggml.tokens",
                Value::Array(tokens.into_iter().map(Value::Str).collect()),
            )
            .set("tokenizer.ggml.token_type", Value::Array(types))
            .set(
                "tokenizer.ggml.scores",
                Value::Array((0..n).map(|i| Value::F32(-(i as f32))).collect()),
            )
    };
    let resize_embd = |b: Builder| {
        let n = tokens_of(&b).len() as u64;
        let e = testgen::TINY_EMBD;
        b.reshape("token_embd.weight", &[e, n])
            .retype("token_embd.weight", 0, data_for(0, e * n))
            .reshape("output.weight", &[e, n])
            .retype("output.weight", 0, data_for(0, e * n))
    };
    out.push(case(
        "vocab",
        "spm-valid",
        Expect::Loads,
        &resize_embd(spm(spm_tokens(&|_| true))),
    ));
    let mut push = |name: &str, b: Builder| out.push(case("vocab", name, Refused, &b));
    push(
        "spm-no-byte-tokens",
        resize_embd(spm(spm_tokens(&|_| false))),
    );
    push(
        "spm-no-newline-byte",
        resize_embd(spm(spm_tokens(&|b| b != b'\n'))),
    );
    push(
        "spm-half-byte-tokens",
        resize_embd(spm(spm_tokens(&|b| b < 128))),
    );
    // UGM (t5) with a precompiled charsmap shorter than its own header says.
    let ugm = |charsmap: Vec<u8>| {
        spm(spm_tokens(&|_| true))
            .set("tokenizer.ggml.model", Value::Str("t5".into()))
            .set(
                "tokenizer.ggml.precompiled_charsmap",
                Value::Array(charsmap.into_iter().map(Value::U8).collect()),
            )
    };
    push(
        "ugm-charsmap-header-only",
        resize_embd(ugm(1000u32.to_le_bytes().to_vec())),
    );
    push(
        "ugm-charsmap-short",
        resize_embd(ugm({
            let mut c = 64u32.to_le_bytes().to_vec();
            c.extend([0u8; 16]);
            c
        })),
    );
    push("ugm-charsmap-2-bytes", resize_embd(ugm(vec![1, 2])));
    push(
        "ugm-charsmap-huge-size",
        resize_embd(ugm(u32::MAX.to_le_bytes().to_vec())),
    );
    // Vocab size metadata that disagrees with the token list: llama.cpp sizes the
    // vocabulary from the list, so this one only has to survive.
    out.push(case(
        "vocab",
        "vocab-size-mismatch",
        Expect::Survives,
        &t.clone()
            .set("llama.vocab_size", Value::U32(n as u32 + 100)),
    ));
}

fn tensor_cases(out: &mut Vec<Case>) {
    use Expect::Refused;
    let t = testgen::tiny_llama();
    for &norm in NORMS {
        for ty in [2u32, 8, 1, 26, 24] {
            out.push(case(
                "tensors",
                format!("{norm}-type-{ty}"),
                Refused,
                &retype(&t, norm, ty),
            ));
        }
    }
    for ty in [26u32, 24, 25, 27, 28] {
        out.push(case(
            "tensors",
            format!("token_embd-type-{ty}"),
            Refused,
            &retype(&t, "token_embd.weight", ty),
        ));
    }
    for &m in MATMULS {
        for ty in [24u32, 26, 27, 28, 25] {
            out.push(case(
                "tensors",
                format!("{m}-type-{ty}"),
                Refused,
                &retype(&t, m, ty),
            ));
        }
    }
    let e = testgen::TINY_EMBD;
    for &m in MATMULS.iter().chain(NORMS) {
        out.push(case(
            "tensors",
            format!("missing-{m}"),
            if m == "output.weight" {
                Expect::Loads
            } else {
                Refused
            },
            &t.clone().without_tensor(m),
        ));
    }
    out.push(case(
        "tensors",
        "missing-token_embd",
        Refused,
        &t.clone().without_tensor("token_embd.weight"),
    ));
    out.push(case(
        "tensors",
        "attn_q-transposed",
        Refused,
        &t.clone().reshape("blk.0.attn_q.weight", &[e / 2, e * 2]),
    ));
    out.push(case(
        "tensors",
        "ffn_up-wrong-shape",
        Refused,
        &t.clone().reshape("blk.0.ffn_up.weight", &[e * 2, 32]),
    ));
    out.push(case(
        "tensors",
        "norm-wrong-length",
        Refused,
        &t.clone().reshape("output_norm.weight", &[16, 2]),
    ));
    out.push(case(
        "tensors",
        "token_embd-3d",
        Refused,
        &t.clone().reshape(
            "token_embd.weight",
            &[e, 1, elements(&t, "token_embd.weight") / e],
        ),
    ));
    out.push(case(
        "tensors",
        "extra-unknown-tensor",
        Refused,
        &t.clone()
            .tensor_f32("blk.0.mystery.weight", &[4], &[0.0; 4]),
    ));
    out.push(case(
        "tensors",
        "layer-1-tensor-in-1-layer-model",
        Refused,
        &t.clone()
            .tensor_f32("blk.1.attn_norm.weight", &[e], &[1.0; 32]),
    ));
}

/// Type confusion and extreme values: every key of the tiny model, and optional
/// keys llama.cpp reads, set to each of a set of hostile values. Some are
/// harmless; none may crash.
fn key_cases(out: &mut Vec<Case>) {
    let t = testgen::tiny_llama();
    let hostile = || {
        vec![
            ("u8-0", Value::U8(0)),
            ("i8-neg", Value::I8(-1)),
            ("u16-max", Value::U16(u16::MAX)),
            ("u32-0", Value::U32(0)),
            ("u32-max", Value::U32(u32::MAX)),
            ("i32-neg", Value::I32(i32::MIN)),
            ("u64-max", Value::U64(u64::MAX)),
            ("f32-nan", Value::F32(f32::NAN)),
            ("f32-neg-inf", Value::F32(f32::NEG_INFINITY)),
            ("f64", Value::F64(1e300)),
            ("bool", Value::Bool(true)),
            ("str", Value::Str("\u{0}x".into())),
            ("empty-array", Value::Array(vec![])),
            ("u32-array", Value::Array(vec![Value::U32(u32::MAX); 3])),
        ]
    };
    let mut keys: Vec<String> = vec![
        "llama.attention.key_length",
        "llama.attention.value_length",
        "llama.expert_count",
        "llama.expert_used_count",
        "llama.rope.scaling.factor",
        "llama.rope.scaling.original_context_length",
        "llama.attention.sliding_window",
        "llama.rope.dimension_sections",
        "llama.pooling_type",
        "llama.attention.causal",
        "llama.logit_scale",
        "tokenizer.ggml.add_space_prefix",
        "tokenizer.ggml.remove_extra_whitespaces",
        "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.scores",
        "general.alignment",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    if let Some((bytes, _)) = Some(t.build_with_layout()) {
        let info = tabagent::gguf::GgufInfo::parse(&bytes, "t").unwrap();
        keys.extend(info.kv.iter().map(|(k, _)| k.clone()));
    }
    for key in keys {
        for (label, v) in hostile() {
            out.push(case(
                "keys",
                format!("{key}-{label}"),
                Expect::Survives,
                &t.clone().set(&key, v),
            ));
        }
    }
}

/// Random damage to the header and metadata (where a flip changes meaning, not
/// just weights), of the tiny model and of the tiny model carrying the real
/// model's 49k-token vocabulary.
fn flip_cases(out: &mut Vec<Case>, real: Option<&tabagent::gguf::GgufInfo>) {
    let mut bases = vec![("tiny", testgen::tiny_llama())];
    if let Some(real) = real {
        let mut b = testgen::tiny_llama();
        for key in [
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.token_type",
            "tokenizer.ggml.merges",
            "tokenizer.ggml.pre",
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.padding_token_id",
            "tokenizer.ggml.unknown_token_id",
        ] {
            b = match real.get(key) {
                Some(v) => b.set(key, v.clone()),
                None => b.without(key),
            };
        }
        let n = tokens_of(&b).len() as u64;
        let e = testgen::TINY_EMBD;
        b = b
            .set("llama.vocab_size", Value::U32(n as u32))
            .reshape("token_embd.weight", &[e, n])
            .retype("token_embd.weight", 8, data_for(8, e * n))
            .without_tensor("output.weight");
        out.push(case("valid", "tiny-with-real-vocab", Expect::Loads, &b));
        bases.push(("realvocab", b));
    }
    let mut next = testgen::xorshift(0x2545_F491_4F6C_DD1D);
    for (label, base) in bases {
        let (bytes, layout) = base.build_with_layout();
        let meta = layout.data_offset;
        // TABAGENT_CORPUS_FLIPS=N multiplies the flip cases for a longer fuzz run.
        let scale: usize = std::env::var("TABAGENT_CORPUS_FLIPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let count = scale * if label == "tiny" { 100 } else { 40 };
        for i in 0..count {
            let mut b = bytes.clone();
            let flips = 1 + (next() % 3) as usize;
            for _ in 0..flips {
                // Half the flips land in the first 2 KiB (counts, hparams, types).
                let span = if next().is_multiple_of(2) {
                    meta.min(2048)
                } else {
                    meta
                };
                let at = (next() % span as u64) as usize;
                b[at] ^= 1 << (next() % 8);
            }
            out.push(Case {
                class: "flips",
                name: format!("{label}-flip-{i}"),
                expect: Expect::Survives,
                data: Data::Bytes(b),
            });
        }
    }
    if let Some(real) = real {
        // Flips of the real file itself (copied when the case runs).
        for i in 0..12 {
            let mut f = Vec::new();
            for _ in 0..1 + next() % 2 {
                let at = (next() % real.data_offset.min(1 << 16)) as usize;
                f.push((at, 1u8 << (next() % 8)));
            }
            out.push(Case {
                class: "flips",
                name: format!("real-flip-{i}"),
                expect: Expect::Survives,
                data: Data::RealFlips(f),
            });
        }
    }
}

#[derive(Debug)]
enum Outcome {
    Loaded,
    Clean(i64, String),
    Crashed(String),
}

/// The in-process path, in a child: the library's own probe runner (the one
/// `check_model` uses), so this test and the check read children the same way.
fn run_probe(path: &Path) -> Outcome {
    run_probe_with(path, &ModelParams::default())
}

fn run_probe_with(path: &Path, params: &ModelParams) -> Outcome {
    use tabagent::engine::check::{parse_verdict, run_probe, ProbeEnd};
    let run =
        run_probe(Path::new(PROBE), path, params, TIMEOUT, MEMORY_LIMIT).expect("spawn the probe");
    let tail: String = run
        .stderr
        .lines()
        .rev()
        .take(3)
        .collect::<Vec<_>>()
        .join(" | ");
    match run.end {
        ProbeEnd::TimedOut => return Outcome::Crashed(format!("hung for {TIMEOUT:?}; {tail}")),
        ProbeEnd::Signal(sig) => return Outcome::Crashed(format!("signal {sig}; {tail}")),
        ProbeEnd::Exited(code) if code != Some(0) => {
            return Outcome::Crashed(format!("exit {code:?}; {tail}"))
        }
        ProbeEnd::Exited(_) => {}
    }
    if run.stderr.contains("Sanitizer") || run.stderr.contains("panicked") {
        return Outcome::Crashed(format!("sanitizer/panic report: {tail}"));
    }
    match parse_verdict(&run.stdout) {
        None => Outcome::Crashed(format!("no verdict; {tail}")),
        Some(Ok(())) => Outcome::Loaded,
        Some(Err(e)) => Outcome::Clean(i64::from(e.kind().code()), e.message().to_owned()),
    }
}

fn write_case(c: &Case, dir: &Path, real: Option<&Path>) -> PathBuf {
    let p = dir.join(format!("{}-{}.gguf", c.class, sanitize(&c.name)));
    match &c.data {
        Data::Bytes(b) => std::fs::write(&p, b).unwrap(),
        Data::RealFlips(f) => {
            let mut b = std::fs::read(real.expect("real model")).unwrap();
            for &(at, mask) in f {
                b[at] ^= mask;
            }
            std::fs::write(&p, b).unwrap();
        }
    }
    p
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[derive(Default)]
struct Row {
    cases: u32,
    clean: u32,
    loaded: u32,
    crashed: u32,
}

#[test]
fn hostile_corpus_never_takes_the_process_down() {
    let real_path = std::env::var_os("TABAGENT_TEST_MODEL")
        .map(PathBuf::from)
        .filter(|p| p.is_file());
    let real = real_path
        .as_deref()
        .map(|p| tabagent::gguf::GgufInfo::open(p).expect("the test model parses"));
    let mut cases = Vec::new();
    valid_cases(&mut cases);
    structure_cases(&mut cases);
    hparam_cases(&mut cases);
    vocab_cases(&mut cases);
    tensor_cases(&mut cases);
    key_cases(&mut cases);
    flip_cases(&mut cases, real.as_ref());
    if let Ok(only) = std::env::var("TABAGENT_CORPUS_ONLY") {
        cases.retain(|c| c.class == only);
    }
    let keep = std::env::var_os("TABAGENT_CORPUS_DIR").map(PathBuf::from);
    let dir = keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("tabagent-corpus-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).unwrap();

    let mut table: BTreeMap<&str, Row> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut check_ms = Vec::new();
    let limits = CheckLimits {
        probe: Some(PathBuf::from(PROBE)),
        timeout_ms: TIMEOUT.as_millis() as u64,
        memory_bytes: MEMORY_LIMIT,
    };
    for c in &cases {
        let path = write_case(c, &dir, real_path.as_deref());
        let shown = path.display().to_string();
        let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
        let outcome = run_probe(&path);
        let row = table.entry(c.class).or_default();
        row.cases += 1;
        let id = format!("{}/{}", c.class, c.name);
        match &outcome {
            Outcome::Loaded => {
                row.loaded += 1;
                if c.expect == Expect::Refused {
                    failures.push(format!("{id}: loaded, but it must be refused"));
                }
            }
            Outcome::Clean(code, msg) => {
                row.clean += 1;
                if c.expect == Expect::Loads {
                    failures.push(format!("{id}: refused ({code}: {msg}), but it is valid"));
                }
                if !msg.contains(&file_name) {
                    failures.push(format!("{id}: the message does not name the file: {msg}"));
                }
            }
            Outcome::Crashed(why) => {
                row.crashed += 1;
                failures.push(format!("{id}: CRASHED: {why}"));
            }
        }
        // The vocabulary-only path (what tokenizer-only callers use) must survive too.
        let vocab_only = ModelParams {
            vocab_only: true,
            ..Default::default()
        };
        if let Outcome::Crashed(why) = run_probe_with(&path, &vocab_only) {
            failures.push(format!("{id}: CRASHED vocab-only: {why}"));
        }
        // The out-of-process check reaches the same verdict and returns.
        let t0 = Instant::now();
        let checked = check_model(&path, &ModelParams::default(), &limits);
        check_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        match (&outcome, &checked) {
            (Outcome::Loaded, Err(e)) => {
                failures.push(format!("{id}: loads, but check_model said {e:?}"))
            }
            (Outcome::Clean(..), Ok(_)) => {
                failures.push(format!("{id}: refused, but check_model passed it"))
            }
            (Outcome::Crashed(_), Ok(_)) => {
                failures.push(format!("{id}: crashed, but check_model passed it"))
            }
            (_, Err(e)) if !e.message().contains(&shown) && !e.message().contains(&file_name) => {
                failures.push(format!(
                    "{id}: check_model's message does not name the file: {}",
                    e.message()
                ))
            }
            _ => {}
        }
        // Copies of the real model are 98 MB each: never kept.
        if keep.is_none() || matches!(c.data, Data::RealFlips(_)) {
            let _ = std::fs::remove_file(&path);
        }
    }
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    eprintln!(
        "{:<10} {:>6} {:>6} {:>7} {:>8}",
        "class", "cases", "clean", "loaded", "crashed"
    );
    let mut total = Row::default();
    for (class, r) in &table {
        eprintln!(
            "{class:<10} {:>6} {:>6} {:>7} {:>8}",
            r.cases, r.clean, r.loaded, r.crashed
        );
        total.cases += r.cases;
        total.clean += r.clean;
        total.loaded += r.loaded;
        total.crashed += r.crashed;
    }
    eprintln!(
        "{:<10} {:>6} {:>6} {:>7} {:>8}",
        "total", total.cases, total.clean, total.loaded, total.crashed
    );
    check_ms.sort_by(f64::total_cmp);
    if !check_ms.is_empty() {
        eprintln!(
            "check_model per file: median {:.1} ms",
            check_ms[check_ms.len() / 2]
        );
    }
    if std::env::var("TABAGENT_CORPUS_ONLY").is_err() {
        assert!(
            total.cases >= 300,
            "the corpus has only {} cases",
            total.cases
        );
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Layer 2 on its own: with the semantic validator bypassed, an SPM vocabulary
/// without its `<0xNN>` byte tokens makes llama.cpp throw `std::out_of_range`
/// while tokenizing. The shim turns it into `BadModel` with the exception's text;
/// without the shim this test process would abort.
#[test]
fn exceptions_thrown_by_llama_cpp_end_in_bad_model() {
    let dir = std::env::temp_dir().join(format!("tabagent-throw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cases = Vec::new();
    vocab_cases(&mut cases);
    let c = cases
        .iter()
        .find(|c| c.name == "spm-no-byte-tokens")
        .expect("case exists");
    let path = write_case(c, &dir, None);
    let params = ModelParams::default();
    let m = tabagent::engine::Model::load_without_semantic_checks(&path, &params)
        .expect("llama.cpp itself loads it");
    let e = m.tokenize("a, b!", true, true).unwrap_err();
    assert_eq!(e.kind(), tabagent::ErrorKind::BadModel, "{e:?}");
    assert!(e.message().contains("C++ exception"), "{}", e.message());
    assert!(
        e.message().contains(&path.display().to_string()),
        "{}",
        e.message()
    );
    // Real SPM vocabularies without byte tokens exist, so the validator lets the
    // file through; text outside the vocabulary is then an error, not an abort.
    let m = tabagent::engine::Model::load(&path, &params).expect("validator accepts it");
    assert_eq!(
        m.tokenize("a, b!", true, true).unwrap_err().kind(),
        tabagent::ErrorKind::BadModel
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Tensor data the CPU backend cannot map (general.alignment 8) is read instead of
/// mapped, from a file and from a memory buffer; and the out-of-process check runs
/// on a memory buffer too (the child reads the host's memfd).
#[test]
fn unmappable_and_in_memory_models() {
    use tabagent::engine::{Context, ContextParams, GenParams, Model};
    let gp = GenParams {
        temperature: 0.0,
        max_tokens: 2,
        ..Default::default()
    };
    let cp = ContextParams {
        n_ctx: 128,
        ..Default::default()
    };
    let bytes = testgen::tiny_llama().alignment(8).build();
    let info = tabagent::gguf::GgufInfo::parse(&bytes, "a8").unwrap();
    assert!(info
        .unmappable
        .as_deref()
        .unwrap()
        .contains("not a multiple of 32"));
    let m = Model::load_from_buffer(&bytes, &ModelParams::default(), None).unwrap();
    let mut ctx = Context::new(std::sync::Arc::new(m), &cp).unwrap();
    assert_eq!(
        ctx.generate("Hello", &gp, &mut |_| true)
            .unwrap()
            .n_generated,
        2
    );

    let checked = ModelParams {
        check: Some(CheckLimits {
            probe: Some(PathBuf::from(PROBE)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let good = testgen::tiny_llama().build();
    Model::load_from_buffer(&good, &checked, None).expect("the check passes a valid model");
    // A tensor type that would crash llama_decode, past the in-process validator
    // only in the child: here the validator refuses it first, naming the buffer.
    let bad = retype(&testgen::tiny_llama(), "blk.0.attn_q.weight", 26).build();
    let e = Model::load_from_buffer(&bad, &checked, None).unwrap_err();
    assert_eq!(e.kind(), tabagent::ErrorKind::BadModel);
    assert!(e.message().contains("<memory buffer>"), "{}", e.message());
}

/// A child that dies is reported with its signal and last words, and the caller
/// lives: a stand-in probe that aborts plays the crashing llama.cpp.
#[test]
fn a_crashing_child_is_a_bad_model_status() {
    let dir = std::env::temp_dir().join(format!("tabagent-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("tiny.gguf");
    std::fs::write(&model, testgen::tiny_llama().build()).unwrap();
    let fake = dir.join("fake-probe");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'GGML_ASSERT(x) failed' >&2\nkill -ABRT $$\n",
    )
    .unwrap();
    let hang = dir.join("hang-probe");
    std::fs::write(&hang, "#!/bin/sh\nexec sleep 30\n").unwrap();
    for p in [&fake, &hang] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let limits = |probe: &Path, timeout_ms| CheckLimits {
        probe: Some(probe.to_path_buf()),
        timeout_ms,
        memory_bytes: 0,
    };
    let e = check_model(&model, &ModelParams::default(), &limits(&fake, 0)).unwrap_err();
    assert_eq!(e.kind(), tabagent::ErrorKind::BadModel);
    let m = e.message();
    assert!(
        m.contains("SIGABRT") && m.contains("GGML_ASSERT") && m.contains("tiny.gguf"),
        "{m}"
    );
    let t0 = Instant::now();
    let e = check_model(&model, &ModelParams::default(), &limits(&hang, 300)).unwrap_err();
    assert!(e.message().contains("did not finish"), "{}", e.message());
    assert!(t0.elapsed() < Duration::from_secs(10));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// When llama.cpp itself refuses a file, the message carries every error line it
/// logged during the call, in order: the specific reason, not only "failed to
/// load model". (The validator is bypassed so llama.cpp is the one refusing.)
#[test]
fn llama_cpp_refusals_carry_the_specific_reason() {
    let dir = std::env::temp_dir().join(format!("tabagent-reason-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let params = ModelParams::default();
    let cases = [
        (
            "missing.gguf",
            testgen::tiny_llama().without_tensor("blk.0.attn_q.weight"),
            "blk.0.attn_q.weight",
        ),
        (
            "arch.gguf",
            testgen::tiny_llama().set("general.architecture", Value::Str("foo".into())),
            "unknown model architecture: 'foo'",
        ),
    ];
    for (name, b, reason) in cases {
        let path = dir.join(name);
        std::fs::write(&path, b.build()).unwrap();
        let e = tabagent::engine::Model::load_without_semantic_checks(&path, &params).unwrap_err();
        let m = e.message();
        assert_eq!(e.kind(), tabagent::ErrorKind::BadModel, "{m}");
        let at_reason = m
            .find(reason)
            .unwrap_or_else(|| panic!("{reason:?} not in {m}"));
        let at_generic = m.find("failed to load model").expect(m);
        assert!(at_reason < at_generic, "{m}");
        assert!(m.contains(&path.display().to_string()), "{m}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
