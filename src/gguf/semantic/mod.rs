//! Semantic GGUF validation: the conditions llama.cpp asserts on (GGML_ASSERT /
//! GGML_ABORT, which kill the host process) or crashes on (NULL kernels), checked
//! before llama.cpp sees the file. Conditions llama.cpp merely throws on are checked
//! too where cheap, for a better message. Every rule names the llama.cpp check it
//! mirrors (file and condition, as of the vendored llama-cpp-sys-2 0.1.161).
//!
//! Layout: `hparams` mirrors `llama_model_base::load_hparams`, `vocab` mirrors
//! `llama_vocab::impl::load`, `tensors` mirrors `load_tensors` and ggml-cpu's kernel
//! coverage; this file holds the driver, the typed key access shared by all three
//! (llama-model-loader.cpp `GGUFMeta::GKV::get_kv`) and the general rules. (Tensor data the CPU
//! backend cannot map is not refused: `GgufInfo::unmappable` makes the loader read it.)

use super::{bad, GgufInfo, Value};
use crate::error::{Error, Result};
use std::fmt;

mod hparams;
mod tensors;
mod vocab;

/// What llama.cpp would assert on, checked before it sees the file.
///
/// `name` is the file name shown in messages; every error is `ErrorKind::BadModel`.
/// `vocab_only`: llama.cpp will load only the vocabulary (`load_hparams` stops after
/// `general.name` and no tensor is created), so only those rules apply.
pub fn check(info: &GgufInfo, name: &str, vocab_only: bool) -> Result<()> {
    let cx = Cx::new(info, name)?;
    check_general(&cx, vocab_only)?;
    // llama_model_load: load_hparams, then load_vocab, then load_tensors.
    let hp = if vocab_only {
        None
    } else {
        Some(hparams::check(&cx)?)
    };
    let n_vocab = vocab::check(&cx)?;
    if let Some(hp) = hp {
        tensors::check(&cx, &hp, n_vocab)?;
    }
    Ok(())
}

/// `general.architecture` values llama.cpp knows (llama-arch.cpp `LLM_ARCH_NAMES`,
/// minus "(unknown)"). Anything else makes `llama_model_create` throw "unknown model
/// architecture".
#[rustfmt::skip]
const ARCHITECTURES: &[&str] = &[
    "clip", "llama", "llama4", "deci", "falcon", "grok", "gpt2", "gptj", "gptneox", "mpt",
    "baichuan", "starcoder", "refact", "bert", "modern-bert", "nomic-bert", "nomic-bert-moe",
    "neo-bert", "jina-bert-v2", "jina-bert-v3", "eurobert", "bloom", "stablelm", "qwen",
    "qwen2", "qwen2moe", "qwen2vl", "qwen3", "qwen3moe", "qwen3next", "qwen3vl", "qwen3vlmoe",
    "qwen35", "qwen35moe", "clef", "qwen4exp", "phi2", "phi3", "phimoe", "plamo", "plamo2",
    "plamo3", "codeshell", "orion", "internlm2", "minicpm", "minicpm3", "gemma", "gemma2",
    "gemma3", "gemma3n", "gemma4", "gemma4-assistant", "gemma-embedding", "starcoder2",
    "mamba", "mamba2", "maple", "jamba", "falcon-h1", "xverse", "command-r", "cohere2",
    "cohere2moe", "dbrx", "olmo", "olmo2", "olmoe", "muse-glimmer", "openelm", "arctic",
    "deepseek", "deepseek2", "deepseek2-ocr", "deepseek32", "deepseek4", "chatglm", "glm4",
    "glm4moe", "glm-dsa", "bitnet", "t5", "t5encoder", "jais", "jais2", "nemotron",
    "nemotron_h", "nemotron_h_moe", "exaone", "exaone4", "exaone-moe", "rwkv6", "rwkv6qwen2",
    "rwkv7", "arwkv7", "granite", "granitemoe", "granitehybrid", "graniteswitch",
    "granite_swa", "chameleon", "wavtokenizer-dec", "plm", "bailingmoe", "bailingmoe2",
    "bailingmoe3", "dots1", "dots3note", "arcee", "afmoe", "laguna", "ernie4_5",
    "ernie4_5-moe", "hunyuan-moe", "hunyuan-dense", "hunyuan_vl", "hy_v3", "hy_v4", "smollm3",
    "gpt-oss", "lfm2", "lfm2moe", "dream", "smallthinker", "llada", "llada-moe", "seed_oss",
    "grovemoe", "apertus", "minimax-01", "hrm_text", "minimax-m2", "minimax-m3", "cogvlm",
    "rnd1", "pangu-embedded", "mistral3", "eagle3", "dflash", "mistral4", "paddleocr", "mimo2",
    "step35", "spark2_5", "llama-embed", "maincoder", "kimi-linear", "kimi-k3", "glm5-next",
    "talkie", "mellum", "nanbeige", "qwen3tts", "pockettts",
];

/// Keys read with a fixed type whatever the architecture and load mode.
const GENERAL_KEYS: &[(&str, Ty, &str)] = &[
    // llama_model_loader ctor: get_key(LLM_KV_GENERAL_FILE_TYPE, uint32_t).
    (
        "general.file_type",
        Ty::U32,
        "llama_model_loader reads it as uint32",
    ),
    // load_hparams (also in vocab_only mode) and llama_vocab::load: get_key(std::string).
    ("general.name", Ty::Str, "load_hparams reads it as a string"),
    // llama_model_loader ctor: get_key(LLM_KV_SPLIT_COUNT, uint16_t n_split).
    (
        "split.count",
        Ty::U16,
        "llama_model_loader reads it as uint16",
    ),
];

/// Rules that hold for every architecture.
fn check_general(cx: &Cx<'_>, vocab_only: bool) -> Result<()> {
    // gguf.cpp gguf_init_from_file_impl: an array whose element type is ARRAY is "invalid
    // GGUF type" and the whole file is refused; our parser accepts shallow nesting.
    for (k, v) in &cx.info.kv {
        if let Value::Array(a) = v {
            if a.iter().any(|e| matches!(e, Value::Array(_))) {
                return Err(cx.err(format_args!(
                    "metadata key '{k}' is an array of arrays; llama.cpp's GGUF reader refuses nested arrays"
                )));
            }
        }
    }
    for &(key, ty, why) in GENERAL_KEYS {
        cx.typed_why(key, ty, why)?;
    }
    // llama_model_loader ctor, split.count > 1: get_key(LLM_KV_SPLIT_NO, uint16_t),
    // get_key(LLM_KV_SPLIT_TENSORS_COUNT, int n_tensors); for the other shards split.no
    // is read with gguf_get_val_u16, which GGML_ASSERTs the type.
    if cx.opt_u16("split.count")?.unwrap_or(0) > 1 {
        cx.typed_why(
            "split.no",
            Ty::U16,
            "llama.cpp reads it with gguf_get_val_u16, which asserts the type",
        )?;
        cx.typed_why(
            "split.tensors.count",
            Ty::I32,
            "llama_model_loader reads it as int",
        )?;
    }
    if vocab_only {
        return Ok(());
    }
    // llama_prec_policy::load (end of load_tensors): get_arr<std::string> on the names
    // throws on another element type; then prec_a4 must be a bool array of the same
    // length or it throws.
    if let Some(Value::Array(names)) = cx.get("general.tensor_extra.name") {
        let key = "general.tensor_extra.prec_a4";
        if names.first().is_some_and(|v| !matches!(v, Value::Str(_))) {
            return Err(cx.err("general.tensor_extra.name must be an array of strings"));
        }
        match cx.get(key) {
            Some(Value::Array(a))
                if a.len() == names.len() && a.iter().all(|v| matches!(v, Value::Bool(_))) => {}
            _ => {
                return Err(cx.err(format_args!(
                    "{key} must be a bool array with one entry per general.tensor_extra.name ({})",
                    names.len()
                )))
            }
        }
    }
    Ok(())
}

/// A GGUF value type as llama.cpp's typed getters demand it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ty {
    U16,
    U32,
    I32,
    F32,
    Bool,
    Str,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::U16 => "u16",
            Ty::U32 => "u32",
            Ty::I32 => "i32",
            Ty::F32 => "f32",
            Ty::Bool => "bool",
            Ty::Str => "string",
        }
    }

    fn matches(self, v: &Value) -> bool {
        matches!(
            (self, v),
            (Ty::U16, Value::U16(_))
                | (Ty::U32, Value::U32(_))
                | (Ty::I32, Value::I32(_))
                | (Ty::F32, Value::F32(_))
                | (Ty::Bool, Value::Bool(_))
                | (Ty::Str, Value::Str(_))
        )
    }
}

/// The file being checked, its architecture, and typed key access.
pub(super) struct Cx<'a> {
    pub info: &'a GgufInfo,
    pub name: &'a str,
    /// `general.architecture`, known to llama.cpp and not "clip".
    pub arch: &'a str,
}

impl<'a> Cx<'a> {
    fn new(info: &'a GgufInfo, name: &'a str) -> Result<Cx<'a>> {
        let key = "general.architecture";
        // llama_model_loader ctor: get_key(LLM_KV_GENERAL_ARCHITECTURE, std::string),
        // then llama_model_create throws on an unknown name.
        let arch = match info.get(key) {
            None => {
                return Err(bad(
                    name,
                    format_args!("{key} is missing; llama.cpp cannot pick a model architecture"),
                ))
            }
            Some(Value::Str(s)) => s.as_str(),
            Some(v) => {
                return Err(bad(
                    name,
                    format_args!("{key} has type {}, expected string", v.type_name()),
                ))
            }
        };
        if !ARCHITECTURES.contains(&arch) {
            return Err(bad(
                name,
                format_args!(
                    "{key} is '{}', an architecture this llama.cpp does not know",
                    arch.escape_debug()
                ),
            ));
        }
        // llama_model_load: "CLIP cannot be used as main model" (a projector file).
        if arch == "clip" {
            return Err(bad(
                name,
                format_args!(
                    "{key} is 'clip': this is a multimodal projector, not a language model"
                ),
            ));
        }
        Ok(Cx { info, name, arch })
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.info.get(key)
    }

    /// `{arch}.{suffix}`, as llama-arch.cpp's LLM_KV formats per-architecture keys.
    pub fn akey(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.arch)
    }

    pub fn err(&self, msg: impl fmt::Display) -> Error {
        bad(self.name, msg)
    }

    /// llama-model-loader.cpp `GGUFMeta::GKV<T>::get_kv`: a present key of another type
    /// throws "key %s has wrong type %s but expected type %s".
    pub fn typed(&self, key: &str, ty: Ty) -> Result<Option<&'a Value>> {
        self.typed_why(
            key,
            ty,
            "llama.cpp's typed getter throws on a type mismatch",
        )
    }

    fn typed_why(&self, key: &str, ty: Ty, why: &str) -> Result<Option<&'a Value>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) if ty.matches(v) => Ok(Some(v)),
            Some(v) => Err(self.err(format_args!(
                "{key} has type {}, expected {} ({why})",
                v.type_name(),
                ty.name()
            ))),
        }
    }

    pub fn opt_u16(&self, key: &str) -> Result<Option<u16>> {
        Ok(match self.typed(key, Ty::U16)? {
            Some(Value::U16(v)) => Some(*v),
            _ => None,
        })
    }

    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        Ok(match self.typed(key, Ty::U32)? {
            Some(Value::U32(v)) => Some(*v),
            _ => None,
        })
    }

    /// A key llama.cpp reads with `required = true` (it throws "key not found").
    pub fn req_u32(&self, key: &str) -> Result<u32> {
        self.opt_u32(key)?.ok_or_else(|| {
            self.err(format_args!(
                "{key} is missing; llama.cpp requires it for architecture '{}'",
                self.arch
            ))
        })
    }

    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        Ok(match self.typed(key, Ty::F32)? {
            Some(Value::F32(v)) => Some(*v),
            _ => None,
        })
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        Ok(match self.typed(key, Ty::Bool)? {
            Some(Value::Bool(v)) => Some(*v),
            _ => None,
        })
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        Ok(match self.typed(key, Ty::Str)? {
            Some(Value::Str(v)) => Some(v.as_str()),
            _ => None,
        })
    }
}

#[cfg(test)]
pub(super) mod test_util {
    use super::super::testgen::{self, Builder};
    use super::super::{GgufInfo, Value};
    use crate::error::ErrorKind;

    /// The valid baseline: testgen's loadable 1-layer llama.
    pub fn base() -> Builder {
        testgen::tiny_llama()
    }

    pub fn run(b: &Builder, vocab_only: bool) -> crate::error::Result<()> {
        let info = GgufInfo::parse(&b.build(), "m.gguf").expect("structurally valid");
        super::check(&info, "m.gguf", vocab_only)
    }

    #[track_caller]
    pub fn ok(b: &Builder) {
        if let Err(e) = run(b, false) {
            panic!("refused: {}", e.message());
        }
    }

    /// Refused with BadModel, naming the file and containing every needle.
    #[track_caller]
    pub fn refused(b: &Builder, needles: &[&str]) {
        refused_mode(b, false, needles)
    }

    #[track_caller]
    pub fn refused_mode(b: &Builder, vocab_only: bool, needles: &[&str]) {
        match run(b, vocab_only) {
            Ok(()) => panic!("accepted, expected refusal mentioning {needles:?}"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::BadModel, "{}", e.message());
                let m = e.message();
                assert!(m.starts_with("m.gguf: "), "{m}");
                for n in needles {
                    assert!(m.contains(n), "message {m:?} lacks {n:?}");
                }
            }
        }
    }

    /// The baseline under another architecture name, its `llama.*` keys copied.
    pub fn as_arch(arch: &str) -> Builder {
        let b = base();
        let mut out = b
            .clone()
            .set("general.architecture", Value::Str(arch.into()));
        for k in [
            "block_count",
            "context_length",
            "embedding_length",
            "feed_forward_length",
            "attention.head_count",
            "attention.head_count_kv",
            "rope.dimension_count",
            "rope.freq_base",
            "attention.layer_norm_rms_epsilon",
        ] {
            let v = b.value(&format!("llama.{k}")).unwrap().clone();
            out = out.set(&format!("{arch}.{k}"), v);
        }
        out
    }

    pub fn strs(v: &[&str]) -> Value {
        Value::Array(v.iter().map(|s| Value::Str((*s).into())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;

    #[test]
    fn baseline_passes() {
        ok(&base());
        assert!(run(&base(), true).is_ok());
    }

    #[test]
    fn real_model_passes() {
        let Some(home) = std::env::var_os("HOME") else {
            return;
        };
        let p = std::path::Path::new(&home)
            .join(".cache/tabagent/models/SmolLM2-135M-Instruct.Q4_1.gguf");
        if !p.exists() {
            eprintln!("skipping: {} not present", p.display());
            return;
        }
        let info = crate::gguf::open_model(&p).unwrap();
        check(&info, "SmolLM2.gguf", false).unwrap();
        check(&info, "SmolLM2.gguf", true).unwrap();
        // And the rules do bite on it.
        let mut broken = info.clone();
        for (k, v) in broken.kv.iter_mut() {
            if k == "llama.block_count" {
                *v = Value::U32(0);
            }
        }
        let e = check(&broken, "SmolLM2.gguf", false).unwrap_err();
        assert!(
            e.message().contains("llama.block_count is 0"),
            "{}",
            e.message()
        );
        let mut broken = info.clone();
        let t = broken
            .tensors
            .iter_mut()
            .find(|t| t.name == "blk.0.attn_q.weight")
            .unwrap();
        t.ggml_type = 26; // I32
        let e = check(&broken, "SmolLM2.gguf", false).unwrap_err();
        assert!(
            e.message().contains("blk.0.attn_q.weight"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn architecture() {
        refused(
            &base().without("general.architecture"),
            &["general.architecture is missing"],
        );
        refused(
            &base().set("general.architecture", Value::U32(1)),
            &["general.architecture has type u32, expected string"],
        );
        refused(
            &base().set("general.architecture", Value::Str("llama9".into())),
            &["general.architecture", "'llama9'"],
        );
        refused_mode(
            &base().set("general.architecture", Value::Str("clip".into())),
            true,
            &["general.architecture", "projector"],
        );
    }

    #[test]
    fn general_key_types() {
        refused(
            &base().set("general.name", Value::U32(3)),
            &["general.name has type u32, expected string"],
        );
        refused_mode(
            &base().set("general.file_type", Value::I32(0)),
            true,
            &["general.file_type", "expected u32"],
        );
        refused(
            &base().set("split.count", Value::U32(1)),
            &["split.count", "expected u16"],
        );
        let split = base()
            .set("split.count", Value::U16(2))
            .set("split.no", Value::U16(0));
        refused(
            &split.clone().set("split.tensors.count", Value::U32(12)),
            &["split.tensors.count", "expected i32"],
        );
        refused(
            &split
                .set("split.no", Value::U32(0))
                .set("split.tensors.count", Value::I32(12)),
            &["split.no", "expected u16"],
        );
    }

    #[test]
    fn nested_arrays() {
        let b = base().kv(
            "x.nested",
            Value::Array(vec![Value::Array(vec![Value::U8(1)])]),
        );
        refused_mode(&b, true, &["'x.nested'", "array of arrays"]);
    }

    #[test]
    fn tensor_extra_prec() {
        let b = base().kv("general.tensor_extra.name", strs(&["output.weight"]));
        refused(&b, &["general.tensor_extra.prec_a4"]);
        let good = b.clone().kv(
            "general.tensor_extra.prec_a4",
            Value::Array(vec![Value::Bool(false)]),
        );
        ok(&good);
        let long = b.kv(
            "general.tensor_extra.prec_a4",
            Value::Array(vec![Value::Bool(false), Value::Bool(true)]),
        );
        refused(&long, &["general.tensor_extra.prec_a4", "one entry per"]);
    }
}

/// The hand-kept name lists must equal the vendored llama.cpp's: a newer
/// llama-cpp-sys-2 that adds an architecture or pre-tokenizer fails this test
/// instead of making the validator refuse the models it newly supports.
#[cfg(test)]
mod drift {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    fn vendored() -> PathBuf {
        let toml = include_str!("../../../Cargo.toml");
        let ver = toml
            .lines()
            .find(|l| l.starts_with("llama-cpp-sys-2"))
            .and_then(|l| l.split("version = \"=").nth(1))
            .and_then(|v| v.split('"').next())
            .expect("llama-cpp-sys-2 is pinned with =VERSION in Cargo.toml");
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
        std::fs::read_dir(home.join("registry/src"))
            .expect("cargo registry sources")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join(format!("llama-cpp-sys-2-{ver}/llama.cpp")))
            .find(|p| p.is_dir())
            .expect("the vendored llama.cpp sources")
    }

    fn quoted(line: &str) -> Option<&str> {
        line.split('"').nth(1)
    }

    #[test]
    fn architectures_match_llm_arch_names() {
        let src = std::fs::read_to_string(vendored().join("src/llama-arch.cpp")).unwrap();
        let body = src
            .split("LLM_ARCH_NAMES = {")
            .nth(1)
            .and_then(|b| b.split("};").next())
            .expect("LLM_ARCH_NAMES");
        let theirs: BTreeSet<&str> = body
            .lines()
            .filter(|l| l.trim_start().starts_with("{ LLM_ARCH_"))
            .filter_map(quoted)
            .filter(|n| *n != "(unknown)")
            .collect();
        let ours: BTreeSet<&str> = super::ARCHITECTURES.iter().copied().collect();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn pre_tokenizers_match_llama_vocab() {
        let src = std::fs::read_to_string(vendored().join("src/llama-vocab.cpp")).unwrap();
        let theirs: BTreeSet<&str> = src
            .split("tokenizer_pre == \"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .collect();
        let ours: BTreeSet<&str> = super::vocab::PRE_TYPES.iter().copied().collect();
        let missing: Vec<_> = theirs.difference(&ours).collect();
        let extra: Vec<_> = ours.difference(&theirs).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "missing {missing:?}, extra {extra:?}"
        );
    }
}
