//! The vocabulary, as llama-vocab.cpp `llama_vocab::impl::load` reads it (also in
//! vocab-only mode), plus the tokenizer-time asserts that follow from it.

use super::{Cx, Ty};
use crate::error::Result;
use crate::gguf::Value;
use std::collections::HashMap;

/// `tokenizer.ggml.model` values llama_vocab::impl::load knows; anything else throws
/// "unknown tokenizer".
#[rustfmt::skip]
const MODELS: &[&str] = &[
    "no_vocab", "none", "llama", "bert", "gpt2", "hybriddna", "whitespace", "t5", "rwkv",
    "test", "plamo2", "gemma4",
];

/// `tokenizer.ggml.pre` values of the BPE branch; anything else (non-empty) throws
/// "unknown pre-tokenizer type".
#[rustfmt::skip]
pub(super) const PRE_TYPES: &[&str] = &[
    "default", "minicpm5", "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1",
    "pixtral", "midm-2.0", "lfm2", "jina-v5-nano", "deepseek-llm", "deepseek-coder",
    "deepseek-v3", "spark2_5", "youtu", "falcon", "mpt", "starcoder", "gpt-2", "phi-2",
    "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum",
    "modern-bert", "jais-2", "gemma4", "granite-embed-multi-311m", "mmbert", "sarvam-moe",
    "jina-v1-en", "jina-v2-code", "roberta-bpe", "whitespace", "refact", "command-r", "qwen2",
    "deepseek-r1-qwen", "kormo", "f2llmv2", "qwen35", "stablelm2", "olmo", "dbrx", "smaug-bpe",
    "poro-chat", "chatglm-bpe", "glm4", "glm5", "viking", "jais", "tekken", "smollm",
    "codeshell", "bloom", "gpt3-finnish", "exaone", "exaone4", "exaone-moe", "chameleon",
    "minerva-7b", "megrez", "gpt-4o", "llama4", "kanana2", "talkie", "granite-embed-multi-97m",
    "tiny_aya", "cohere2moe", "superbpe", "trillion", "granite-docling", "bailingmoe",
    "bailingmoe2", "llada-moe", "seed-coder", "hunyuan", "hunyuan-dense", "hy_v4", "joyai-llm",
    "kimi-k2", "ufakzeka", "grok-2", "afmoe", "laguna", "minimax-m2", "solar-open", "mellum2",
];
/// Pre-tokenizer branches that set `add_bos = true`.
#[rustfmt::skip]
const PRE_ADD_BOS: &[&str] = &[
    "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
    "jina-v5-nano", "tekken", "chameleon",
];
/// Pre-tokenizer branches that set `special_bos_id = LLAMA_TOKEN_NULL`.
const PRE_NO_BOS: &[&str] = &["chatglm-bpe", "glm4", "glm5"];
/// Pre-tokenizers mapped to LLAMA_VOCAB_PRE_TYPE_GEMMA4, for which load forces
/// `add_bos = true` after reading the file's flag.
const PRE_GEMMA4: &[&str] = &["gemma4", "granite-embed-multi-311m"];

/// With model "none" llama.cpp allocates `{arch}.vocab_size` dummy token records
/// (`id_to_token.resize(n_tokens)`, ~40 bytes each, plus the same again in caches):
/// 4·10^9 of them exhausts memory. The largest real vocabularies are ~262k; 2^24
/// leaves ample room and bounds the allocation to under 1 GiB.
pub(crate) const MAX_VOCAB_NONE: u64 = 1 << 24;

/// LLAMA_TOKEN_TYPE_BYTE (llama.h `llama_token_type`).
const TOKEN_TYPE_BYTE: i32 = 6;

const MODEL_KEY: &str = "tokenizer.ggml.model";
const TOKENS_KEY: &str = "tokenizer.ggml.tokens";
const TYPES_KEY: &str = "tokenizer.ggml.token_type";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Spm,
    Bpe,
    Wpm,
    Ugm,
    Rwkv,
    Plamo2,
    Test,
}

/// Special-token ids llama_vocab::impl::load reads with get_key<uint32_t> (the last
/// three are deprecated aliases of the FIM ids).
const SPECIAL_ID_KEYS: &[&str] = &[
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.seperator_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.mask_token_id",
    "tokenizer.ggml.fim_pre_token_id",
    "tokenizer.ggml.fim_suf_token_id",
    "tokenizer.ggml.fim_mid_token_id",
    "tokenizer.ggml.fim_pad_token_id",
    "tokenizer.ggml.fim_rep_token_id",
    "tokenizer.ggml.fim_sep_token_id",
    "tokenizer.ggml.prefix_token_id",
    "tokenizer.ggml.suffix_token_id",
    "tokenizer.ggml.middle_token_id",
];

/// Boolean flags read with get_key<bool>.
const BOOL_KEYS: &[&str] = &[
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token",
    "tokenizer.ggml.add_sep_token",
    "tokenizer.ggml.add_space_prefix",
    "tokenizer.ggml.remove_extra_whitespaces",
    "tokenizer.ggml.normalizer.lowercase",
    "tokenizer.ggml.normalizer.strip_accents",
];

/// Check the vocabulary; returns its token count (llama.cpp's `n_vocab`).
pub fn check(cx: &Cx<'_>) -> Result<u64> {
    // get_key(LLM_KV_TOKENIZER_MODEL, tokenizer_model) is required.
    let model = cx.opt_str(MODEL_KEY)?.ok_or_else(|| {
        cx.err(format_args!(
            "{MODEL_KEY} is missing; llama.cpp requires a tokenizer model"
        ))
    })?;
    if !MODELS.contains(&model) {
        return Err(cx.err(format_args!(
            "{MODEL_KEY} is '{}', a tokenizer this llama.cpp does not know",
            model.escape_debug()
        )));
    }
    let file_pre = cx.opt_str("tokenizer.ggml.pre")?;
    cx.opt_u32("tokenizer.ggml.token_type_count")?;
    if matches!(model, "none" | "no_vocab") {
        return check_no_vocab(cx, model);
    }
    // With a token list llama.cpp sizes the vocabulary from it, but tools read
    // `{arch}.vocab_size` to size buffers before loading: an absurd value is refused
    // whatever the tokenizer.
    let key = cx.akey("vocab_size");
    if let Some(n) = cx.get(&key).and_then(Value::as_u64) {
        if n > MAX_VOCAB_NONE {
            return Err(cx.err(format_args!(
                "{key} is {n}; more than {MAX_VOCAB_NONE} tokens is absurd (the largest real vocabularies have ~262k)"
            )));
        }
    }
    for key in BOOL_KEYS {
        cx.typed(key, Ty::Bool)?;
    }
    let kind = match model {
        "llama" => Kind::Spm,
        "bert" => Kind::Wpm,
        "gpt2" | "hybriddna" | "whitespace" | "gemma4" => Kind::Bpe,
        "t5" => Kind::Ugm,
        "rwkv" => Kind::Rwkv,
        "plamo2" => Kind::Plamo2,
        _ => Kind::Test,
    };
    // The gemma4 tokenizer overrides the pre-tokenizer name.
    let pre = if model == "gemma4" {
        "gemma4"
    } else {
        file_pre.unwrap_or("")
    };
    if kind == Kind::Bpe {
        check_merges(cx, model, file_pre)?;
        // An empty or absent pre means "default" (with a warning).
        if !pre.is_empty() && !PRE_TYPES.contains(&pre) {
            return Err(cx.err(format_args!(
                "tokenizer.ggml.pre is '{}', a pre-tokenizer this llama.cpp does not know",
                pre.escape_debug()
            )));
        }
    }
    if kind == Kind::Ugm {
        check_charsmap(cx)?;
    }

    let texts = check_token_arrays(cx)?;
    let n = texts.len() as u64;
    let types: Option<Vec<i32>> = match cx.get(TYPES_KEY) {
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|v| if let Value::I32(t) = v { *t } else { 0 })
                .collect(),
        ),
        _ => None,
    };
    check_byte_tokens(cx, kind, &texts, types.as_deref())?;

    // Special ids: get_key<uint32_t> throws on another type. An id >= n_tokens is
    // dropped with a warning (the type's default is used instead); refuse it anyway:
    // gguf-py never writes one, so it means a corrupt or hand-edited vocabulary.
    let mut ids: HashMap<&str, u64> = HashMap::new();
    for key in SPECIAL_ID_KEYS {
        if let Some(id) = cx.opt_u32(key)? {
            let id = u64::from(id);
            if id >= n {
                return Err(cx.err(format_args!(
                    "{key} is {id}, but the vocabulary has only {n} tokens"
                )));
            }
            ids.insert(key, id);
        }
    }
    check_add_special(cx, kind, pre, n, &ids)?;

    // suppress_tokens: anything but an i32 array throws (out-of-range ids are dropped).
    let key = "tokenizer.ggml.suppress_tokens";
    if let Some(v) = cx.get(key) {
        let ok = match v {
            Value::Array(a) => a.iter().all(|e| matches!(e, Value::I32(_))),
            _ => false,
        };
        if !ok {
            return Err(cx.err(format_args!("{key} must be an array of i32")));
        }
    }
    check_phi3_tokens(cx, pre, &texts)?;
    Ok(n)
}

/// Model "none"/"no_vocab": llama_vocab::impl::load returns before reading any token
/// and only sizes a dummy vocabulary from `{arch}.vocab_size`.
fn check_no_vocab(cx: &Cx<'_>, model: &str) -> Result<u64> {
    // No tokenizer is ever initialised for LLAMA_VOCAB_TYPE_NONE, so tokenizing text
    // hits GGML_ASSERT(tokenizer && "Tokenizer not initialized") and the other vocab
    // accessors GGML_ASSERT(type != LLAMA_VOCAB_TYPE_NONE). A token list next to
    // "none" means the file promises text it cannot tokenize.
    if cx.get(TOKENS_KEY).is_some() {
        return Err(cx.err(format_args!(
            "{MODEL_KEY} is '{model}' but {TOKENS_KEY} is present; llama.cpp ignores the tokens and aborts when asked to tokenize"
        )));
    }
    let key = cx.akey("vocab_size");
    let n = u64::from(cx.opt_u32(&key)?.unwrap_or(0));
    if n > MAX_VOCAB_NONE {
        return Err(cx.err(format_args!(
            "{key} is {n}; with {MODEL_KEY} '{model}' llama.cpp allocates a record per token, and more than {MAX_VOCAB_NONE} is absurd"
        )));
    }
    Ok(n)
}

/// BPE merges: required (except for the kimi-k2 pre-tokenizer) and an array of
/// strings, or load throws. Each merge is split at the first space after position 0;
/// a merge without one is stored as an empty pair — harmless to llama.cpp, but no
/// tokenizer produces it, so the list is corrupt.
fn check_merges(cx: &Cx<'_>, model: &str, file_pre: Option<&str>) -> Result<()> {
    let key = "tokenizer.ggml.merges";
    let merges = match cx.get(key) {
        None if model != "gemma4" && file_pre == Some("kimi-k2") => return Ok(()),
        None => {
            return Err(cx.err(format_args!(
                "{key} is missing; llama.cpp requires merges for a BPE tokenizer ('{model}')"
            )))
        }
        Some(Value::Array(a)) if a.iter().all(|v| matches!(v, Value::Str(_))) => a,
        Some(_) => return Err(cx.err(format_args!("{key} must be an array of strings"))),
    };
    for (i, m) in merges.iter().enumerate() {
        let s = m.as_str().unwrap_or_default();
        if s.as_bytes()
            .get(1..)
            .is_none_or(|rest| !rest.contains(&b' '))
        {
            return Err(cx.err(format_args!(
                "{key}[{i}] is '{}', not two tokens separated by a space",
                s.escape_debug()
            )));
        }
    }
    Ok(())
}

/// UGM (`t5`): the precompiled charsmap must be an i8/u8 array (else load throws) that
/// starts with a u32 blob size; load throws unless `size + 4 < len` ("Index out of
/// array bounds in precompiled charsmap!") and llm_tokenizer_ugm indexes the blob
/// by that size.
fn check_charsmap(cx: &Cx<'_>) -> Result<()> {
    let key = "tokenizer.ggml.precompiled_charsmap";
    let Some(v) = cx.get(key) else {
        return Ok(());
    };
    let bytes: Option<Vec<u8>> = match v {
        Value::Array(a) => a
            .iter()
            .map(|e| match *e {
                Value::U8(b) => Some(b),
                Value::I8(b) => Some(b as u8),
                _ => None,
            })
            .collect(),
        _ => None,
    };
    let Some(bytes) = bytes else {
        return Err(cx.err(format_args!("{key} must be an array of u8 or i8")));
    };
    let Some(head) = bytes.get(..4) else {
        return Err(cx.err(format_args!(
            "{key} is {} bytes, too short for its 4-byte size header",
            bytes.len()
        )));
    };
    let blob = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
    if blob + 4 >= bytes.len() as u64 {
        return Err(cx.err(format_args!(
            "{key} header says {blob} bytes of XCDA data follow, but only {} bytes follow the header \
             (llama.cpp requires the blob plus replacement strings after it)",
            bytes.len() - 4
        )));
    }
    Ok(())
}

/// The token list and its companion arrays; returns each token's text as llama.cpp
/// stores it.
fn check_token_arrays(cx: &Cx<'_>) -> Result<Vec<String>> {
    // "cannot find tokenizer vocab" / "invalid gguf type" throws.
    let tokens = match cx.get(TOKENS_KEY) {
        None => {
            return Err(cx.err(format_args!(
                "{TOKENS_KEY} is missing; llama.cpp requires a token list for tokenizer '{}'",
                cx.get(MODEL_KEY)
                    .map(Value::to_display_string)
                    .unwrap_or_default()
            )))
        }
        Some(Value::Array(a)) if a.iter().all(|v| matches!(v, Value::Str(_))) => a,
        Some(_) => return Err(cx.err(format_args!("{TOKENS_KEY} must be an array of strings"))),
    };
    // Nothing to encode to or decode from: zero-sized logits and embeddings.
    if tokens.is_empty() {
        return Err(cx.err(format_args!(
            "{TOKENS_KEY} is empty; a vocabulary needs at least 1 token"
        )));
    }
    let n = tokens.len();
    // scores: f32 or i32 array ("invalid gguf type"), at least n long ("Index out of
    // array bounds for scores"); token_type: i32 array, at least n long. gguf-py
    // writes all three from one list, so a length mismatch means corruption.
    for (key, allowed) in [
        ("tokenizer.ggml.scores", &[Ty::F32, Ty::I32][..]),
        (TYPES_KEY, &[Ty::I32][..]),
    ] {
        match cx.get(key) {
            None => {}
            Some(Value::Array(a))
                if a.first()
                    .is_none_or(|v| allowed.iter().any(|t| t.matches(v)))
                    && a.len() != n =>
            {
                return Err(cx.err(format_args!(
                    "{key} has {} entries but {TOKENS_KEY} has {n}; they must have one per token",
                    a.len()
                )));
            }
            Some(Value::Array(a))
                if a.first()
                    .is_none_or(|v| allowed.iter().any(|t| t.matches(v))) => {}
            Some(_) => {
                let names: Vec<&str> = allowed.iter().map(|t| t.name()).collect();
                return Err(cx.err(format_args!(
                    "{key} must be an array of {}",
                    names.join(" or ")
                )));
            }
        }
    }

    // The text llama.cpp stores: gguf_get_arr_str returns a C string, so it ends at
    // the first NUL, and an empty text becomes "[EMPTY_<id>]".
    let texts: Vec<String> = tokens
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let s = v.as_str().unwrap_or_default();
            let s = s.split('\0').next().unwrap_or_default();
            if s.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                s.to_owned()
            }
        })
        .collect();
    // GGML_ASSERT(id_to_token.size() == token_to_id.size()): two tokens with the same
    // text (after the NUL cut) abort the load.
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(n);
    for (i, t) in texts.iter().enumerate() {
        if let Some(j) = seen.insert(t.as_str(), i) {
            // Our parser replaces invalid UTF-8 with U+FFFD; distinct raw bytes may
            // collide only here, so such a pair is not proof of a duplicate.
            if t.contains('\u{FFFD}') {
                continue;
            }
            let raw = |k: usize| {
                tokens[k]
                    .as_str()
                    .unwrap_or_default()
                    .escape_debug()
                    .to_string()
            };
            let cut = if raw(i) == raw(j) {
                ""
            } else {
                " once llama.cpp cuts them at their first NUL byte"
            };
            return Err(cx.err(format_args!(
                "{TOKENS_KEY}: tokens {j} ('{}') and {i} ('{}') are both '{}'{cut}; \
                 duplicate token texts abort the load",
                raw(j),
                raw(i),
                t.escape_debug()
            )));
        }
        // token_to_piece: GGML_ABORT("invalid token size") at INT32_MAX bytes.
        if t.len() >= i32::MAX as usize {
            return Err(cx.err(format_args!("{TOKENS_KEY}[{i}] is {} bytes long", t.len())));
        }
    }
    Ok(texts)
}

/// Byte tokens: what the tokenizer needs of them, per type.
fn check_byte_tokens(
    cx: &Cx<'_>,
    kind: Kind,
    texts: &[String],
    types: Option<&[i32]>,
) -> Result<()> {
    let is_byte = |i: usize| types.is_some_and(|t| t.get(i) == Some(&TOKEN_TYPE_BYTE));
    for (i, t) in texts.iter().enumerate().filter(|&(i, _)| is_byte(i)) {
        match kind {
            // load builds the token-to-piece cache; for a WPM byte token
            // token_to_byte hits GGML_ABORT("fatal error").
            Kind::Wpm => {
                return Err(cx.err(format_args!(
                    "{TYPES_KEY}[{i}] marks '{}' as a byte token, which a BERT (WPM) vocabulary cannot have (llama.cpp aborts)",
                    t.escape_debug()
                )))
            }
            // token_to_byte: text.substr(3, 2) throws std::out_of_range on texts
            // shorter than 3 bytes while the piece cache is built.
            Kind::Spm | Kind::Ugm | Kind::Bpe if t.len() < 3 => {
                return Err(cx.err(format_args!(
                    "{TYPES_KEY}[{i}] marks '{}' as a byte token, but byte tokens are written '<0xHH>'",
                    t.escape_debug()
                )))
            }
            _ => {}
        }
    }
    let index: HashMap<&str, usize> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let hex = |b: u8| format!("<0x{b:02X}>");
    match kind {
        // llm_tokenizer_spm::resegment: a symbol not in the vocabulary is emitted byte
        // by byte via byte_to_token, which looks up "<0xHH>", then the 1-byte string,
        // and throws std::out_of_range from llama_tokenize when neither exists. A
        // vocabulary with byte-fallback tokens must therefore cover every byte. (One
        // with none at all throws on any out-of-vocabulary character; it is accepted:
        // only some inputs fail, and such sentencepiece models exist.)
        Kind::Spm => {
            let has_any = (0..=255u8).any(|b| index.contains_key(hex(b).as_str()));
            if !has_any {
                return Ok(());
            }
            let maybe_raw_high = index.contains_key("\u{FFFD}");
            for b in 0..=255u8 {
                let raw =
                    b != 0 && b < 0x80 && index.contains_key(char::from(b).to_string().as_str());
                let maybe_raw = b >= 0x80 && maybe_raw_high;
                if !index.contains_key(hex(b).as_str()) && !raw && !maybe_raw {
                    return Err(cx.err(format_args!(
                        "{TOKENS_KEY}: this SentencePiece vocabulary has byte-fallback tokens but no '{}'; \
                         llama.cpp throws while tokenizing text containing that byte",
                        hex(b)
                    )));
                }
            }
        }
        // llm_tokenizer_plamo2::build throws "Byte token for <0x..> is not set" unless
        // every byte has a BYTE-typed "<0xHH>" token (6 chars, hex digits) at an id
        // other than 0.
        Kind::Plamo2 => {
            let mut have = [false; 256];
            for (_, t) in texts
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != 0 && is_byte(i))
            {
                let b = t.as_bytes();
                let digit = |i: usize| b.get(i).and_then(|&c| char::from(c).to_digit(16));
                if b.len() == 6 && t.starts_with("<0x") && b[5] == b'>' {
                    if let (Some(hi), Some(lo)) = (digit(3), digit(4)) {
                        have[(hi * 16 + lo) as usize] = true;
                    }
                }
            }
            if let Some(missing) = have.iter().position(|&h| !h) {
                return Err(cx.err(format_args!(
                    "{TOKENS_KEY}: the PLaMo-2 tokenizer needs a byte token for every byte, and '{}' is missing",
                    hex(missing as u8)
                )));
            }
        }
        _ => {}
    }
    Ok(())
}

/// The BOS/EOS/SEP ids the tokenizer asserts on when it adds special tokens:
/// `GGML_ASSERT(special_bos_id != LLAMA_TOKEN_NULL)` (and eos, sep) in
/// llama_vocab::impl::tokenize / llm_tokenizer_bpe_session::append_bos/eos.
fn check_add_special(
    cx: &Cx<'_>,
    kind: Kind,
    pre: &str,
    n: u64,
    ids: &HashMap<&str, u64>,
) -> Result<()> {
    // Type defaults (load's per-tokenizer branches); a default outside the vocabulary
    // is disabled.
    let (bos, eos, sep, mut add_bos, mut add_eos) = match kind {
        Kind::Spm | Kind::Plamo2 => (Some(1), Some(2), None, kind == Kind::Spm, false),
        Kind::Wpm => (Some(101), None, Some(102), true, false),
        Kind::Bpe if PRE_NO_BOS.contains(&pre) => {
            (None, Some(11), None, PRE_ADD_BOS.contains(&pre), false)
        }
        Kind::Bpe if cx.get(MODEL_KEY).and_then(Value::as_str) == Some("gemma4") => {
            (None, None, None, false, false)
        }
        Kind::Bpe => (Some(11), Some(11), None, PRE_ADD_BOS.contains(&pre), false),
        Kind::Ugm => (None, Some(1), None, false, true),
        Kind::Rwkv | Kind::Test => return Ok(()),
    };
    let eff =
        |default: Option<u64>, key: &str| ids.get(key).copied().or(default.filter(|&d| d < n));
    let bos = eff(bos, "tokenizer.ggml.bos_token_id");
    let eos = eff(eos, "tokenizer.ggml.eos_token_id");
    let sep = eff(sep, "tokenizer.ggml.seperator_token_id");
    if let Some(v) = cx.opt_bool("tokenizer.ggml.add_bos_token")? {
        add_bos = v;
    }
    if let Some(v) = cx.opt_bool("tokenizer.ggml.add_eos_token")? {
        add_eos = v;
    }
    if kind == Kind::Bpe && PRE_GEMMA4.contains(&pre) {
        add_bos = true;
    }
    if kind == Kind::Wpm {
        // The WPM path adds [CLS] and [SEP] whenever special tokens are requested.
        add_bos = true;
    }
    let missing = |what: &str, key: &str| {
        cx.err(format_args!(
            "the tokenizer adds a {what} token but there is none: set {key} to a token id (llama.cpp asserts when tokenizing)"
        ))
    };
    if add_bos && bos.is_none() {
        return Err(missing("BOS", "tokenizer.ggml.bos_token_id"));
    }
    if add_eos && eos.is_none() {
        return Err(missing("EOS", "tokenizer.ggml.eos_token_id"));
    }
    if kind == Kind::Wpm && sep.is_none() {
        return Err(missing("SEP", "tokenizer.ggml.seperator_token_id"));
    }
    Ok(())
}

/// load, per-token attributes: a model whose lower-cased general.name contains "phi-3"
/// or "phi3" gets `token_to_id.at()` on "</s>", "<unk>", "<s>" and "<|endoftext|>",
/// which throws std::out_of_range if one is missing (the jina/mmbert/nomic branch
/// comes first).
fn check_phi3_tokens(cx: &Cx<'_>, pre: &str, texts: &[String]) -> Result<()> {
    let name = cx
        .get("general.name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_lowercase();
    let jina = ["jina-v2-de", "jina-v2-es", "jina-v2-code", "mmbert"]
        .iter()
        .any(|p| pre.contains(p))
        || ["nomic-bert-moe", "jina-bert-v3"]
            .iter()
            .any(|a| cx.arch.contains(a));
    if jina || !(name.contains("phi-3") || name.contains("phi3")) {
        return Ok(());
    }
    for t in ["</s>", "<unk>", "<s>", "<|endoftext|>"] {
        if !texts.iter().any(|x| x == t) {
            return Err(cx.err(format_args!(
                "general.name says Phi-3, for which llama.cpp requires the token '{t}' in {TOKENS_KEY}; it is missing"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;
    use crate::gguf::testgen::Builder;

    fn tokens(b: &Builder) -> Vec<String> {
        match b.value(TOKENS_KEY) {
            Some(Value::Array(a)) => a.iter().map(|v| v.as_str().unwrap().to_owned()).collect(),
            _ => panic!("no tokens"),
        }
    }

    fn set_tokens(b: Builder, t: &[String]) -> Builder {
        b.set(
            TOKENS_KEY,
            Value::Array(t.iter().map(|s| Value::Str(s.clone())).collect()),
        )
    }

    #[test]
    fn tokenizer_model() {
        refused_mode(&base().without(MODEL_KEY), true, &[MODEL_KEY, "missing"]);
        refused_mode(
            &base().set(MODEL_KEY, Value::Str("sentencepiece".into())),
            true,
            &[MODEL_KEY, "'sentencepiece'"],
        );
        refused_mode(
            &base().set(MODEL_KEY, Value::U32(1)),
            true,
            &[MODEL_KEY, "expected string"],
        );
    }

    #[test]
    fn pre_tokenizer() {
        let key = "tokenizer.ggml.pre";
        refused_mode(
            &base().set(key, Value::Str("gpt-5".into())),
            true,
            &[key, "'gpt-5'"],
        );
        refused_mode(
            &base().set(key, Value::U32(1)),
            true,
            &[key, "expected string"],
        );
        assert!(run(&base().without(key), true).is_ok());
        assert!(run(&base().set(key, Value::Str("smollm".into())), true).is_ok());
    }

    #[test]
    fn model_none() {
        let none = base().set(MODEL_KEY, Value::Str("none".into()));
        refused_mode(&none, true, &[MODEL_KEY, "'none'", TOKENS_KEY]);
        let bare = none
            .without(TOKENS_KEY)
            .without("tokenizer.ggml.token_type")
            .without("tokenizer.ggml.merges");
        refused_mode(
            &bare
                .clone()
                .set("llama.vocab_size", Value::U32(100_000_000)),
            true,
            &["llama.vocab_size", "100000000"],
        );
        refused_mode(
            &bare.clone().set("llama.vocab_size", Value::U32(u32::MAX)),
            true,
            &["llama.vocab_size"],
        );
        assert!(run(&bare.set("llama.vocab_size", Value::U32(1000)), true).is_ok());
    }

    #[test]
    fn token_arrays() {
        refused_mode(&base().without(TOKENS_KEY), true, &[TOKENS_KEY, "missing"]);
        refused_mode(
            &base().set(TOKENS_KEY, Value::Array(vec![Value::U32(1)])),
            true,
            &[TOKENS_KEY, "array of strings"],
        );
        refused_mode(
            &base().set(TOKENS_KEY, Value::Str("a".into())),
            true,
            &[TOKENS_KEY, "array of strings"],
        );
        // Token types: wrong length, wrong element type.
        let key = "tokenizer.ggml.token_type";
        refused_mode(
            &base().set(key, Value::Array(vec![Value::I32(1)])),
            true,
            &[key, "1 entries"],
        );
        refused_mode(
            &base().set(key, Value::Array(vec![Value::U32(1)])),
            true,
            &[key, "array of i32"],
        );
        // Scores: f32 or i32.
        let n = tokens(&base()).len();
        let key = "tokenizer.ggml.scores";
        assert!(run(
            &base().set(key, Value::Array(vec![Value::F32(0.0); n])),
            true
        )
        .is_ok());
        assert!(run(&base().set(key, Value::Array(vec![Value::I32(0); n])), true).is_ok());
        refused_mode(
            &base().set(key, Value::Array(vec![Value::F32(0.0); n - 1])),
            true,
            &[key],
        );
        refused_mode(
            &base().set(key, Value::Array(vec![Value::F64(0.0); n])),
            true,
            &[key, "f32 or i32"],
        );
    }

    #[test]
    fn duplicate_and_nul_tokens() {
        let b = base();
        let mut t = tokens(&b);
        t[260] = t[100].clone();
        refused_mode(
            &set_tokens(b.clone(), &t),
            true,
            &[TOKENS_KEY, "100", "260", "duplicate"],
        );
        // "a\0x" reads as "a", which already exists.
        let mut t = tokens(&b);
        t[260] = format!("{}\0x", t[b'a' as usize]);
        refused_mode(&set_tokens(b.clone(), &t), true, &[TOKENS_KEY, "NUL"]);
        // A NUL with a unique prefix is fine; an empty token becomes "[EMPTY_i]".
        let mut t = tokens(&b);
        t[260] = "zz\0q".into();
        t[261] = String::new();
        assert!(run(&set_tokens(b.clone(), &t), true).is_ok());
        let mut t = tokens(&b);
        t[260] = String::new();
        t[261] = "[EMPTY_260]".into();
        refused_mode(&set_tokens(b, &t), true, &["[EMPTY_260]"]);
    }

    #[test]
    fn special_ids() {
        let n = tokens(&base()).len() as u32;
        for key in SPECIAL_ID_KEYS {
            refused_mode(&base().set(key, Value::U32(n)), true, &[key, "only"]);
            refused_mode(
                &base().set(key, Value::I32(1)),
                true,
                &[key, "expected u32"],
            );
            assert!(
                run(&base().set(key, Value::U32(n - 1)), true).is_ok(),
                "{key}"
            );
        }
    }

    #[test]
    fn add_bos_eos() {
        // BPE: add_bos with the default BOS (11) is fine, without any BOS not.
        let b = base().without("tokenizer.ggml.bos_token_id");
        assert!(run(
            &b.clone()
                .set("tokenizer.ggml.add_bos_token", Value::Bool(true)),
            true
        )
        .is_ok());
        let glm = b
            .clone()
            .set("tokenizer.ggml.pre", Value::Str("glm4".into()));
        assert!(run(&glm, true).is_ok());
        refused_mode(
            &glm.set("tokenizer.ggml.add_bos_token", Value::Bool(true)),
            true,
            &["BOS", "tokenizer.ggml.bos_token_id"],
        );
        // llama3 pre defaults add_bos to true.
        let l3 = b
            .clone()
            .without("tokenizer.ggml.add_bos_token")
            .set("tokenizer.ggml.pre", Value::Str("chatglm-bpe".into()));
        assert!(run(&l3, true).is_ok());
        let l3 = b
            .without("tokenizer.ggml.add_bos_token")
            .set("tokenizer.ggml.pre", Value::Str("llama3".into()));
        assert!(run(&l3, true).is_ok()); // default bos 11 exists
        let gemma4 = base()
            .set(MODEL_KEY, Value::Str("gemma4".into()))
            .without("tokenizer.ggml.bos_token_id");
        refused_mode(&gemma4, true, &["BOS"]);
        // EOS: BPE default is 11; add_eos with no EOS key keeps 11.
        assert!(run(
            &base()
                .without("tokenizer.ggml.eos_token_id")
                .set("tokenizer.ggml.add_eos_token", Value::Bool(true)),
            true
        )
        .is_ok());
        refused_mode(
            &base().set("tokenizer.ggml.add_eos_token", Value::U8(1)),
            true,
            &["tokenizer.ggml.add_eos_token", "expected bool"],
        );
    }

    /// A small vocabulary for non-BPE tokenizer types.
    fn vocab_of(model: &str, t: &[&str], types: &[i32]) -> Builder {
        base()
            .set(MODEL_KEY, Value::Str(model.into()))
            .without("tokenizer.ggml.pre")
            .without("tokenizer.ggml.merges")
            .without("tokenizer.ggml.bos_token_id")
            .without("tokenizer.ggml.eos_token_id")
            .without("tokenizer.ggml.add_bos_token")
            .set(TOKENS_KEY, strs(t))
            .set(
                TYPES_KEY,
                Value::Array(types.iter().map(|&x| Value::I32(x)).collect()),
            )
    }

    #[test]
    fn spm() {
        let mut t: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        t.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
        t.push("▁a".into());
        let mut ty = vec![2, 3, 3];
        ty.extend([6; 256]);
        ty.push(1);
        let tr: Vec<&str> = t.iter().map(String::as_str).collect();
        let good = vocab_of("llama", &tr, &ty);
        assert!(run(&good, true).is_ok(), "{:?}", run(&good, true));
        // A missing byte token.
        let mut t2 = t.clone();
        t2[3 + 0xC3] = "x".into();
        let tr2: Vec<&str> = t2.iter().map(String::as_str).collect();
        let mut ty2 = ty.clone();
        ty2[3 + 0xC3] = 1;
        refused_mode(
            &vocab_of("llama", &tr2, &ty2),
            true,
            &[TOKENS_KEY, "<0xC3>"],
        );
        // No byte tokens at all: accepted.
        assert!(run(
            &vocab_of("llama", &["<unk>", "<s>", "</s>", "a"], &[2, 3, 3, 1]),
            true
        )
        .is_ok());
        // A byte-typed token with a short text.
        refused_mode(
            &vocab_of("llama", &["<unk>", "<s>", "</s>", "a"], &[2, 3, 3, 6]),
            true,
            &[TYPES_KEY, "'a'"],
        );
        // add_bos is the SPM default: a 1-token vocabulary has no BOS.
        refused_mode(&vocab_of("llama", &["<unk>"], &[2]), true, &["BOS"]);
    }

    #[test]
    fn wpm() {
        let mut t: Vec<String> = (0..110).map(|i| format!("w{i}")).collect();
        t[101] = "[CLS]".into();
        t[102] = "[SEP]".into();
        let tr: Vec<&str> = t.iter().map(String::as_str).collect();
        let ty = vec![1; 110];
        assert!(run(&vocab_of("bert", &tr, &ty), true).is_ok());
        let mut ty6 = ty.clone();
        ty6[5] = 6;
        refused_mode(
            &vocab_of("bert", &tr, &ty6),
            true,
            &[TYPES_KEY, "byte token"],
        );
        // Under 103 tokens the default [SEP] (102) is disabled.
        refused_mode(
            &vocab_of("bert", &tr[..102], &ty[..102]),
            true,
            &["SEP", "seperator_token_id"],
        );
        assert!(run(
            &vocab_of("bert", &tr[..102], &ty[..102])
                .set("tokenizer.ggml.seperator_token_id", Value::U32(5)),
            true
        )
        .is_ok());
    }

    #[test]
    fn ugm_charsmap() {
        let t = vocab_of("t5", &["<pad>", "</s>", "<unk>", "▁a"], &[3, 3, 2, 1]);
        assert!(run(&t, true).is_ok(), "{:?}", run(&t, true));
        let key = "tokenizer.ggml.precompiled_charsmap";
        let cm = |v: &[u8]| Value::Array(v.iter().map(|&b| Value::U8(b)).collect());
        assert!(run(&t.clone().set(key, cm(&[4, 0, 0, 0, 1, 2, 3, 4, 0])), true).is_ok());
        refused_mode(
            &t.clone().set(key, cm(&[4, 0, 0, 0, 1, 2, 3, 4])),
            true,
            &[key, "header says 4"],
        );
        refused_mode(
            &t.clone().set(key, cm(&[0xff, 0xff, 0xff, 0xff, 0])),
            true,
            &[key],
        );
        refused_mode(&t.clone().set(key, cm(&[1, 0])), true, &[key, "too short"]);
        refused_mode(
            &t.clone().set(key, Value::Array(vec![Value::U32(1); 8])),
            true,
            &[key, "u8 or i8"],
        );
        // UGM adds EOS by default: EOS 1 exists in 4 tokens, not in 1.
        refused_mode(&vocab_of("t5", &["<pad>"], &[3]), true, &["EOS"]);
    }

    #[test]
    fn plamo2() {
        let mut t: Vec<String> = vec![
            "<|plamo:unk|>".into(),
            "<|plamo:bos|>".into(),
            "<|plamo:eos|>".into(),
        ];
        t.extend((0..=255u8).map(|b| format!("<0x{b:02x}>")));
        let mut ty = vec![2, 3, 3];
        ty.extend([6; 256]);
        let tr: Vec<&str> = t.iter().map(String::as_str).collect();
        assert!(run(&vocab_of("plamo2", &tr, &ty), true).is_ok());
        let mut ty2 = ty.clone();
        ty2[3 + 7] = 1;
        refused_mode(
            &vocab_of("plamo2", &tr, &ty2),
            true,
            &[TOKENS_KEY, "PLaMo-2", "<0x07>"],
        );
    }

    #[test]
    fn merges() {
        let key = "tokenizer.ggml.merges";
        refused_mode(&base().without(key), true, &[key, "missing"]);
        assert!(run(
            &base()
                .without(key)
                .set("tokenizer.ggml.pre", Value::Str("kimi-k2".into())),
            true
        )
        .is_ok());
        refused_mode(&base().set(key, strs(&["Ġt"])), true, &[key, "'Ġt'"]);
        refused_mode(&base().set(key, strs(&[" t"])), true, &[key]);
        refused_mode(
            &base().set(key, Value::Array(vec![Value::U32(1)])),
            true,
            &[key, "array of strings"],
        );
        assert!(run(&base().set(key, strs(&["Ġ t", "a  b"])), true).is_ok());
    }

    #[test]
    fn misc_types_and_phi3() {
        let key = "tokenizer.ggml.suppress_tokens";
        refused_mode(
            &base().set(key, Value::Array(vec![Value::U32(1)])),
            true,
            &[key, "i32"],
        );
        assert!(run(
            &base().set(key, Value::Array(vec![Value::I32(-5), Value::I32(1)])),
            true
        )
        .is_ok());
        refused_mode(
            &base().set("tokenizer.ggml.add_space_prefix", Value::U32(1)),
            true,
            &["tokenizer.ggml.add_space_prefix"],
        );
        refused_mode(
            &base().set("tokenizer.ggml.token_type_count", Value::I32(1)),
            true,
            &["tokenizer.ggml.token_type_count"],
        );
        refused_mode(
            &base().set("general.name", Value::Str("Phi-3 mini".into())),
            true,
            &["Phi-3", "'</s>'"],
        );
    }

    #[test]
    fn empty_vocab() {
        refused_mode(
            &base().set(TOKENS_KEY, Value::Array(vec![])),
            true,
            &[TOKENS_KEY, "empty"],
        );
    }
}
