//! Hyperparameters, as llama-model.cpp `llama_model_base::load_hparams` (generic part,
//! every architecture) and the `load_arch_hparams` / graph builders of the llama-like
//! architectures in [`LLAMA_LIKE`] read them.

use super::{Cx, Ty};
use crate::error::Result;
use crate::gguf::Value;

/// llama-hparams.h `LLAMA_MAX_LAYERS`: load_hparams asserts
/// `n_layer_all > 0 && n_layer_all <= LLAMA_MAX_LAYERS`.
pub(crate) const LLAMA_MAX_LAYERS: u32 = 512;
/// llama-hparams.h `LLAMA_MAX_EXPERTS`: load_hparams asserts `n_expert <= LLAMA_MAX_EXPERTS`.
pub(crate) const LLAMA_MAX_EXPERTS: u32 = 1024;

/// Architectures whose hyperparameters are modelled precisely: plain RMS-norm
/// transformers (models/llama.cpp, qwen2.cpp, qwen3.cpp, mistral3.cpp, smollm3.cpp,
/// internlm2.cpp). Each `load_arch_hparams` requires
/// `attention.layer_norm_rms_epsilon`, and each graph GGML_ASSERTs
/// `n_embd_head_v == n_embd_head_k` and `n_embd_head_v == n_rot`.
pub(crate) const LLAMA_LIKE: &[&str] = &[
    "llama",
    "llama-embed",
    "mistral3",
    "qwen2",
    "qwen3",
    "smollm3",
    "internlm2",
];

/// llama-model.cpp `LLAMA_ROPE_SCALING_TYPES`; anything else is
/// LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED, which load_hparams GGML_ASSERTs against.
const ROPE_SCALING_TYPES: &[&str] = &["none", "linear", "yarn", "longrope"];

/// llama.h `llama_pooling_type`: NONE..RANK. llm_graph_context::build_pooling and
/// llama_context::encode/decode `GGML_ABORT("unknown pooling type")` on others.
const MAX_POOLING_TYPE: u32 = 4;

/// What the tensor checks need from the hyperparameters.
#[derive(Debug, Clone)]
pub struct Hparams {
    pub n_layer: usize,
    pub n_embd: u64,
    /// Per layer; zero-filled when the key is absent, as load_hparams does.
    pub n_head: Vec<u64>,
    pub n_head_kv: Vec<u64>,
    pub n_ff: Vec<u64>,
    pub n_expert: u64,
    /// `n_embd_head_k_full`, `n_embd_head_v_full`, `n_rot_full` (0 when n_head(0) is 0).
    pub head_k: u64,
    pub head_v: u64,
    pub n_rot: u64,
}

pub fn check(cx: &Cx<'_>) -> Result<Hparams> {
    let k = |s: &str| cx.akey(s);

    // Required keys: get_key(..., required) throws "key not found in model".
    let n_ctx = cx.req_u32(&k("context_length"))?;
    // A model trained on no context: llama_init_from_model refuses n_ctx 0 when
    // n_ctx_train is 0, and every other use of n_ctx_train divides or sizes by it.
    if n_ctx == 0 {
        return Err(cx.err(format_args!(
            "{} is 0; a model needs a training context of at least 1 token",
            k("context_length")
        )));
    }
    let n_embd = cx.req_u32(&k("embedding_length"))?;
    // Zero-width embeddings make every weight zero-sized; ggml divides by row sizes.
    if n_embd == 0 {
        return Err(cx.err(format_args!(
            "{} is 0; the embedding needs at least 1 dimension",
            k("embedding_length")
        )));
    }
    cx.opt_u32(&k("embedding_length_out"))?;
    cx.opt_bool(&k("attention.causal"))?;
    for key in [k("pooling_type"), k("classifier.pooling_type")] {
        if let Some(p) = cx.opt_u32(&key)? {
            if p > MAX_POOLING_TYPE {
                return Err(cx.err(format_args!(
                    "{key} is {p}; llama.cpp knows pooling types 0..={MAX_POOLING_TYPE} and aborts on others"
                )));
            }
        }
    }

    // GGML_ASSERT(hparams.n_layer_all > 0 && hparams.n_layer_all <= LLAMA_MAX_LAYERS)
    let key = k("block_count");
    let n_layer = cx.req_u32(&key)?;
    if n_layer == 0 {
        return Err(cx.err(format_args!("{key} is 0; a model needs at least 1 layer")));
    }
    if n_layer > LLAMA_MAX_LAYERS {
        return Err(cx.err(format_args!(
            "{key} is {n_layer}; llama.cpp supports at most {LLAMA_MAX_LAYERS} layers (LLAMA_MAX_LAYERS)"
        )));
    }
    let n = n_layer as usize;

    // GGML_ASSERT(hparams.n_layer_nextn <= hparams.n_layer_all)
    let key = k("nextn_predict_layers");
    if let Some(v) = cx.opt_u32(&key)? {
        if v > n_layer {
            return Err(cx.err(format_args!(
                "{key} is {v}, more than {} ({n_layer}); llama.cpp asserts it is at most the layer count",
                k("block_count")
            )));
        }
    }

    let mut n_expert = u64::from(cx.opt_u32(&k("expert_count"))?.unwrap_or(0));
    let mut used = key_or_arr(cx, "expert_used_count", n)?.unwrap_or_else(|| vec![0; n]);
    let groups = u64::from(cx.opt_u32(&k("expert_group_count"))?.unwrap_or(0));
    let group_used = u64::from(cx.opt_u32(&k("expert_group_used_count"))?.unwrap_or(0));
    // load_hparams: HUNYUAN_VL / HUNYUAN_DENSE with n_expert <= 1 drop the experts.
    if matches!(cx.arch, "hunyuan_vl" | "hunyuan-dense") && n_expert <= 1 {
        n_expert = 0;
        used.iter_mut().for_each(|u| *u = 0);
    }
    if cx.arch == "wavtokenizer-dec" {
        // GGML_ASSERT(posnet.n_layer <= n_layer_all), same for convnext; all four keys
        // are required.
        cx.req_u32(&k("features_length"))?;
        for part in ["posnet", "convnext"] {
            cx.req_u32(&k(&format!("{part}.embedding_length")))?;
            let key = k(&format!("{part}.block_count"));
            let v = cx.req_u32(&key)?;
            if v > n_layer {
                return Err(cx.err(format_args!(
                    "{key} is {v}, more than {} ({n_layer})",
                    k("block_count")
                )));
            }
        }
    }
    check_experts(cx, n_expert, &used, groups, group_used)?;

    let n_ff = key_or_arr(cx, "feed_forward_length", n)?.unwrap_or_else(|| vec![0; n]);
    let n_head = key_or_arr(cx, "attention.head_count", n)?.unwrap_or_else(|| vec![0; n]);
    // n_head_kv is optional and defaults to n_head.
    let n_head_kv = key_or_arr(cx, "attention.head_count_kv", n)?.unwrap_or_else(|| n_head.clone());

    cx.opt_bool(&k("rope.scaling.finetuned"))?;
    cx.opt_u32(&k("rope.scaling.original_context_length"))?;
    // NaN/inf/negative frequencies produce NaN rotations: garbage logits, NaN-driven
    // sampling; no real model has them.
    for key in [k("rope.freq_base"), k("rope.freq_base_swa")] {
        if let Some(v) = cx.opt_f32(&key)? {
            if !(v.is_finite() && v > 0.0) {
                return Err(cx.err(format_args!(
                    "{key} is {v}; it must be a finite number above 0"
                )));
            }
        }
    }
    // GGML_ASSERT(hparams.rope_scaling_type_train != LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED)
    let key = k("rope.scaling.type");
    if let Some(s) = cx.opt_str(&key)? {
        if !ROPE_SCALING_TYPES.contains(&s) {
            return Err(cx.err(format_args!(
                "{key} is '{}'; llama.cpp knows {ROPE_SCALING_TYPES:?} and aborts on anything else",
                s.escape_debug()
            )));
        }
    }
    // rope.scaling.factor, else the legacy rope.scale_linear; 0 means "none".
    let factor_key = if cx.get(&k("rope.scaling.factor")).is_some() {
        k("rope.scaling.factor")
    } else {
        k("rope.scale_linear")
    };
    for (key, min) in [
        (factor_key, 0.0f32),
        (k("rope.scaling.attn_factor"), f32::NEG_INFINITY),
        (k("rope.scaling.alpha"), f32::NEG_INFINITY),
    ] {
        if let Some(v) = cx.opt_f32(&key)? {
            if !v.is_finite() || v < min {
                return Err(cx.err(format_args!(
                    "{key} is {v}; it must be a finite number{}",
                    if min == 0.0 { " (0 or more)" } else { "" }
                )));
            }
        }
    }

    // Head sizes: read only when n_head(0) > 0 ("non-transformer models do not have
    // attention heads").
    let (mut head_k, mut head_v, mut n_rot) = (0, 0, 0);
    if let Some(default) = u64::from(n_embd).checked_div(n_head[0]) {
        head_k = cx
            .opt_u32(&k("attention.key_length"))?
            .map_or(default, u64::from);
        head_v = cx
            .opt_u32(&k("attention.value_length"))?
            .map_or(default, u64::from);
        let rot_key = k("rope.dimension_count");
        let rot = cx.opt_u32(&rot_key)?;
        n_rot = rot.map_or(head_k, u64::from);
        // ggml-cpu ops.cpp ggml_compute_forward_rope_flt: GGML_ASSERT(n_dims % 2 == 0).
        // Only an explicit value is judged: archs without RoPE never write the key.
        if rot.is_some_and(|r| r % 2 != 0) {
            return Err(cx.err(format_args!(
                "{rot_key} is {n_rot}; RoPE needs an even dimension count (ggml's rope asserts it)"
            )));
        }
        // load_hparams throws "invalid n_rot" for these.
        if matches!(cx.arch, "llama" | "deci" | "falcon" | "llama-embed") && n_rot != head_k {
            return Err(cx.err(format_args!(
                "{rot_key} is {n_rot}, but the attention head size is {head_k}; llama.cpp requires them equal for '{}'",
                cx.arch
            )));
        }
    }
    for s in [
        "attention.key_length_swa",
        "attention.value_length_swa",
        "rope.dimension_count_swa",
    ] {
        cx.opt_u32(&k(s))?;
    }
    // get_arr<std::vector<std::string>>: a non-string array throws.
    let key = k("classifier.output_labels");
    if let Some(Value::Array(a)) = cx.get(&key) {
        if a.iter().any(|v| !matches!(v, Value::Str(_))) {
            return Err(cx.err(format_args!("{key} must be an array of strings")));
        }
    }

    // Attention with n_head query heads over n_head_kv key/value heads: ggml_mul_mat's
    // GGML_ASSERT(ggml_can_mul_mat) (t1->ne[2] % t0->ne[2] == 0) and
    // ggml_flash_attn_ext's equivalent both require n_head_kv to divide n_head.
    for il in 0..n {
        let (h, kv) = (n_head[il], n_head_kv[il]);
        if h > 0 && kv > 0 && h % kv != 0 {
            return Err(cx.err(format_args!(
                "layer {il}: {} ({h}) is not a multiple of {} ({kv}); grouped-query attention asserts it",
                k("attention.head_count"),
                k("attention.head_count_kv")
            )));
        }
    }

    // Epsilons: ggml-cpu norm / rms_norm / group_norm do GGML_ASSERT(eps >= 0.0f)
    // (false for NaN) at compute time. Each arch reads them with get_key<float>.
    for s in [
        "attention.layer_norm_epsilon",
        "attention.layer_norm_rms_epsilon",
        "attention.group_norm_epsilon",
    ] {
        let key = k(s);
        if let Some(v) = cx.opt_f32(&key)? {
            if !(v.is_finite() && v >= 0.0) {
                return Err(cx.err(format_args!(
                    "{key} is {v}; it must be a finite number of 0 or more (ggml's norms assert eps >= 0)"
                )));
            }
        }
    }

    let hp = Hparams {
        n_layer: n,
        n_embd: u64::from(n_embd),
        n_head,
        n_head_kv,
        n_ff,
        n_expert,
        head_k,
        head_v,
        n_rot,
    };
    if LLAMA_LIKE.contains(&cx.arch) {
        check_llama_like(cx, &hp)?;
    }
    Ok(hp)
}

/// The expert block of load_hparams, assert by assert.
fn check_experts(
    cx: &Cx<'_>,
    n_expert: u64,
    used: &[u64],
    groups: u64,
    group_used: u64,
) -> Result<()> {
    let k = |s: &str| cx.akey(s);
    let used_max = used.iter().copied().max().unwrap_or(0);
    // GGML_ASSERT(hparams.n_expert <= LLAMA_MAX_EXPERTS)
    if n_expert > u64::from(LLAMA_MAX_EXPERTS) {
        return Err(cx.err(format_args!(
            "{} is {n_expert}; llama.cpp supports at most {LLAMA_MAX_EXPERTS} experts (LLAMA_MAX_EXPERTS)",
            k("expert_count")
        )));
    }
    if n_expert == 0 {
        // GGML_ASSERT(n_expert_used_max == 0); GGML_ASSERT(hparams.n_expert_groups == 0)
        if used_max > 0 {
            return Err(cx.err(format_args!(
                "{} is {used_max}, but the model has no experts ({} absent or 0)",
                k("expert_used_count"),
                k("expert_count")
            )));
        }
        if groups > 0 {
            return Err(cx.err(format_args!(
                "{} is {groups}, but the model has no experts ({} absent or 0)",
                k("expert_group_count"),
                k("expert_count")
            )));
        }
        return Ok(());
    }
    // GGML_ASSERT(n_expert_used_max <= hparams.n_expert), GGML_ASSERT(n_expert_used_max > 0)
    if used_max > n_expert {
        return Err(cx.err(format_args!(
            "{} is {used_max}, more than {} ({n_expert})",
            k("expert_used_count"),
            k("expert_count")
        )));
    }
    if used_max == 0 {
        return Err(cx.err(format_args!(
            "{} is absent or 0, but the model has {n_expert} experts ({}); llama.cpp asserts at least 1 is used",
            k("expert_used_count"),
            k("expert_count")
        )));
    }
    // GGML_ASSERT(hparams.n_expert_groups < hparams.n_expert)
    if groups >= n_expert {
        return Err(cx.err(format_args!(
            "{} is {groups}; it must be below {} ({n_expert})",
            k("expert_group_count"),
            k("expert_count")
        )));
    }
    if groups > 1 {
        // GGML_ASSERT(n_expert % n_expert_groups == 0), GGML_ASSERT(n_group_used > 0),
        // GGML_ASSERT(n_group_used < n_expert_groups)
        if !n_expert.is_multiple_of(groups) {
            return Err(cx.err(format_args!(
                "{} ({n_expert}) is not a multiple of {} ({groups})",
                k("expert_count"),
                k("expert_group_count")
            )));
        }
        if group_used == 0 || group_used >= groups {
            return Err(cx.err(format_args!(
                "{} is {group_used}; with {groups} expert groups it must be 1..{}",
                k("expert_group_used_count"),
                groups - 1
            )));
        }
    }
    Ok(())
}

/// llama_model_loader::get_key_or_arr for a per-layer uint32 array: a scalar must be
/// u32 (get_key) and applies to every layer; an array must have exactly n_layer
/// elements ("key %s has wrong array length") of type u32, i32 or bool (get_arr throws
/// on others). Values are copied as uint32_t, so a negative i32 would become huge.
fn key_or_arr(cx: &Cx<'_>, suffix: &str, n_layer: usize) -> Result<Option<Vec<u64>>> {
    let key = cx.akey(suffix);
    match cx.get(&key) {
        None => Ok(None),
        Some(Value::Array(a)) => {
            if a.len() != n_layer {
                return Err(cx.err(format_args!(
                    "{key} has {} elements; llama.cpp expects one per layer ({n_layer}, {})",
                    a.len(),
                    cx.akey("block_count")
                )));
            }
            a.iter()
                .enumerate()
                .map(|(i, v)| match *v {
                    Value::U32(x) => Ok(u64::from(x)),
                    Value::I32(x) if x >= 0 => Ok(x as u64),
                    Value::Bool(b) => Ok(u64::from(b)),
                    Value::I32(x) => {
                        Err(cx.err(format_args!("{key}[{i}] is {x}; it cannot be negative")))
                    }
                    ref v => Err(cx.err(format_args!(
                        "{key} is an array of {}; llama.cpp reads it as u32, i32 or bool",
                        v.type_name()
                    ))),
                })
                .collect::<Result<Vec<u64>>>()
                .map(Some)
        }
        Some(v) => match cx.typed(&key, Ty::U32)? {
            Some(_) => Ok(Some(vec![v.as_u64().unwrap_or(0); n_layer])),
            None => Ok(None),
        },
    }
}

/// Rules for the architectures in [`LLAMA_LIKE`].
fn check_llama_like(cx: &Cx<'_>, hp: &Hparams) -> Result<()> {
    let k = |s: &str| cx.akey(s);
    // load_arch_hparams: get_key(LLM_KV_ATTENTION_LAYERNORM_RMS_EPS, f_norm_rms_eps) is
    // required (throws); an absent key would also leave the epsilon uninitialised.
    let key = k("attention.layer_norm_rms_epsilon");
    if cx.opt_f32(&key)?.is_none() {
        return Err(cx.err(format_args!(
            "{key} is missing; llama.cpp requires it for '{}'",
            cx.arch
        )));
    }
    // llama.cpp reads the vocabulary size for the model-type guess with get_key<uint32>.
    if matches!(cx.arch, "llama" | "llama-embed") {
        cx.opt_u32(&k("vocab_size"))?;
    }
    if cx.arch == "mistral3" {
        for s in [
            "rope.scaling.yarn_beta_fast",
            "rope.scaling.yarn_beta_slow",
            "rope.scaling.yarn_log_multiplier",
        ] {
            cx.opt_f32(&k(s))?;
        }
        // load_arch_hparams throws "invalid n_ctx_orig_yarn for attention temperature
        // scaling" when the scale is set and the original context is 0.
        let key = k("attention.temperature_scale");
        let orig = k("rope.scaling.original_context_length");
        if cx.opt_f32(&key)?.is_some_and(|s| s != 0.0) && cx.opt_u32(&orig)? == Some(0) {
            return Err(cx.err(format_args!("{key} is set but {orig} is 0")));
        }
    }
    for il in 0..hp.n_layer {
        // n_head 0 takes the "no attention heads" path (all head sizes 0) and a
        // zero-sized attention; n_head_kv 0 makes ggml_can_mul_mat divide by zero.
        if hp.n_head[il] == 0 {
            return Err(cx.err(format_args!(
                "layer {il}: {} is 0 (or absent); '{}' needs attention heads in every layer",
                k("attention.head_count"),
                cx.arch
            )));
        }
        if hp.n_head_kv[il] == 0 {
            return Err(cx.err(format_args!(
                "layer {il}: {} is 0; '{}' needs key/value heads in every layer",
                k("attention.head_count_kv"),
                cx.arch
            )));
        }
        // The FFN (dense or per expert) is sized by n_ff.
        if hp.n_ff[il] == 0 {
            return Err(cx.err(format_args!(
                "layer {il}: {} is 0 (or absent); '{}' needs a feed-forward size",
                k("feed_forward_length"),
                cx.arch
            )));
        }
    }
    if hp.head_k == 0 {
        return Err(cx.err(format_args!(
            "the attention head size is 0 ({} {} / {} {}, or {})",
            k("embedding_length"),
            hp.n_embd,
            k("attention.head_count"),
            hp.n_head[0],
            k("attention.key_length")
        )));
    }
    // Graph builders: GGML_ASSERT(n_embd_head == hparams.n_embd_head_k()) with
    // n_embd_head = n_embd_head_v, and GGML_ASSERT(n_embd_head == n_rot).
    if hp.head_v != hp.head_k {
        return Err(cx.err(format_args!(
            "{} ({}) differs from {} ({}); the '{}' graph asserts equal key and value head sizes",
            k("attention.value_length"),
            hp.head_v,
            k("attention.key_length"),
            hp.head_k,
            cx.arch
        )));
    }
    if hp.n_rot != hp.head_k {
        return Err(cx.err(format_args!(
            "{} is {}, but the attention head size is {}; the '{}' graph asserts they are equal",
            k("rope.dimension_count"),
            hp.n_rot,
            hp.head_k,
            cx.arch
        )));
    }
    // ggml-cpu rope: GGML_ASSERT(n_dims % 2 == 0), here with an implicit n_rot.
    if !hp.n_rot.is_multiple_of(2) {
        return Err(cx.err(format_args!(
            "the attention head size ({}) is odd; RoPE over the whole head needs an even size ({})",
            hp.n_rot,
            k("rope.dimension_count")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use crate::gguf::Value;

    fn u32s(v: &[u32]) -> Value {
        Value::Array(v.iter().map(|&x| Value::U32(x)).collect())
    }

    #[test]
    fn block_count() {
        let key = "llama.block_count";
        refused(
            &base().set(key, Value::U32(0)),
            &[key, "is 0", "at least 1 layer"],
        );
        refused(
            &base().set(key, Value::U32(513)),
            &[key, "513", "at most 512"],
        );
        refused(&base().set(key, Value::U32(u32::MAX)), &[key, "4294967295"]);
        refused(&base().without(key), &[key, "missing"]);
        refused(
            &base().set(key, Value::U64(1)),
            &[key, "type u64, expected u32"],
        );
        // Not read in vocab-only mode.
        assert!(run(&base().set(key, Value::U32(0)), true).is_ok());
    }

    #[test]
    fn nextn() {
        let key = "llama.nextn_predict_layers";
        refused(&base().set(key, Value::U32(2)), &[key, "is 2"]);
        ok(&base().set(key, Value::U32(1)));
    }

    #[test]
    fn experts() {
        let b = base();
        refused(
            &b.clone().set("llama.expert_count", Value::U32(2000)),
            &["llama.expert_count", "2000", "1024"],
        );
        refused(
            &b.clone().set("llama.expert_used_count", Value::U32(2)),
            &["llama.expert_used_count", "no experts"],
        );
        refused(
            &b.clone().set("llama.expert_group_count", Value::U32(2)),
            &["llama.expert_group_count", "no experts"],
        );
        let moe = b.set("llama.expert_count", Value::U32(8));
        refused(&moe, &["llama.expert_used_count", "absent or 0"]);
        refused(
            &moe.clone().set("llama.expert_used_count", Value::U32(9)),
            &["llama.expert_used_count", "9"],
        );
        let moe = moe.set("llama.expert_used_count", Value::U32(2));
        refused(
            &moe.clone().set("llama.expert_group_count", Value::U32(8)),
            &["llama.expert_group_count", "below"],
        );
        refused(
            &moe.clone().set("llama.expert_group_count", Value::U32(3)),
            &["llama.expert_count", "multiple of"],
        );
        refused(
            &moe.clone().set("llama.expert_group_count", Value::U32(4)),
            &["llama.expert_group_used_count", "is 0"],
        );
        refused(
            &moe.clone()
                .set("llama.expert_group_count", Value::U32(4))
                .set("llama.expert_group_used_count", Value::U32(4)),
            &["llama.expert_group_used_count", "is 4"],
        );
        // Per-layer used counts: array of the right length.
        refused(
            &moe.clone().set("llama.expert_used_count", u32s(&[2, 2])),
            &["llama.expert_used_count", "2 elements"],
        );
        refused(
            &moe.clone().set(
                "llama.expert_used_count",
                Value::Array(vec![Value::F32(2.0)]),
            ),
            &["llama.expert_used_count", "array of f32"],
        );
    }

    #[test]
    fn heads() {
        let b = base();
        refused(
            &b.clone().set("llama.attention.head_count", Value::U32(0)),
            &["llama.attention.head_count", "is 0"],
        );
        refused(
            &b.clone()
                .set("llama.attention.head_count_kv", Value::U32(0)),
            &["llama.attention.head_count_kv", "is 0"],
        );
        refused(
            &b.clone().without("llama.attention.head_count"),
            &["llama.attention.head_count"],
        );
        // 2 heads over 3 kv heads: not a multiple.
        refused(
            &b.clone()
                .set("llama.attention.head_count_kv", Value::U32(3)),
            &["llama.attention.head_count_kv", "multiple"],
        );
        // Per-layer arrays: wrong length, wrong element type, negative.
        refused(
            &b.clone().set("llama.attention.head_count", u32s(&[2, 2])),
            &["llama.attention.head_count", "2 elements"],
        );
        refused(
            &b.clone().set(
                "llama.attention.head_count",
                Value::Array(vec![Value::I32(-2)]),
            ),
            &["llama.attention.head_count[0]", "negative"],
        );
        refused(
            &b.clone().set("llama.attention.head_count", Value::U64(2)),
            &["llama.attention.head_count", "expected u32"],
        );
        ok(&b.clone().set("llama.attention.head_count", u32s(&[2])));
        ok(&b.set(
            "llama.attention.head_count_kv",
            Value::Array(vec![Value::I32(2)]),
        ));
    }

    #[test]
    fn sizes() {
        let b = base();
        refused(
            &b.clone().set("llama.embedding_length", Value::U32(0)),
            &["llama.embedding_length", "is 0"],
        );
        refused(
            &b.clone().without("llama.embedding_length"),
            &["llama.embedding_length", "missing"],
        );
        refused(
            &b.clone().set("llama.context_length", Value::U32(0)),
            &["llama.context_length", "is 0"],
        );
        refused(
            &b.clone().set("llama.context_length", Value::I32(256)),
            &["llama.context_length", "expected u32"],
        );
        refused(
            &b.clone().set("llama.feed_forward_length", Value::U32(0)),
            &["llama.feed_forward_length", "is 0"],
        );
        refused(
            &b.clone().set("llama.attention.value_length", Value::U32(8)),
            &["llama.attention.value_length", "differs"],
        );
        refused(
            &b.clone()
                .set("llama.attention.key_length", Value::U32(8))
                .set("llama.attention.value_length", Value::U32(8)),
            &["llama.rope.dimension_count", "16"],
        );
        refused(
            &b.clone().set("llama.rope.dimension_count", Value::U32(15)),
            &["llama.rope.dimension_count", "even"],
        );
        refused(
            &b.clone().set("llama.rope.dimension_count", Value::U32(8)),
            &["llama.rope.dimension_count", "equal"],
        );
        // Implicit odd head size: 2 heads over 30 dims.
        refused(
            &b.clone()
                .set("llama.embedding_length", Value::U32(30))
                .without("llama.rope.dimension_count"),
            &["odd", "llama.rope.dimension_count"],
        );
        refused(
            &b.set("llama.attention.key_length", Value::F32(16.0)),
            &["llama.attention.key_length", "expected u32"],
        );
    }

    #[test]
    fn rope() {
        let b = base();
        refused(
            &b.clone()
                .set("llama.rope.scaling.type", Value::Str("ntk".into())),
            &["llama.rope.scaling.type", "'ntk'"],
        );
        ok(&b
            .clone()
            .set("llama.rope.scaling.type", Value::Str("yarn".into())));
        refused(
            &b.clone().set("llama.rope.scaling.type", Value::U32(1)),
            &["llama.rope.scaling.type", "expected string"],
        );
        for v in [f32::NAN, f32::INFINITY, 0.0, -1.0] {
            refused(
                &b.clone().set("llama.rope.freq_base", Value::F32(v)),
                &["llama.rope.freq_base"],
            );
        }
        refused(
            &b.clone().set("llama.rope.freq_base", Value::F64(1e4)),
            &["llama.rope.freq_base", "expected f32"],
        );
        refused(
            &b.clone()
                .set("llama.rope.scaling.factor", Value::F32(f32::NAN)),
            &["llama.rope.scaling.factor"],
        );
        refused(
            &b.clone().set("llama.rope.scale_linear", Value::F32(-2.0)),
            &["llama.rope.scale_linear"],
        );
        refused(
            &b.clone()
                .set("llama.rope.scaling.attn_factor", Value::F32(f32::INFINITY)),
            &["llama.rope.scaling.attn_factor"],
        );
        refused(
            &b.clone().set("llama.rope.scaling.finetuned", Value::U8(1)),
            &["llama.rope.scaling.finetuned", "expected bool"],
        );
        ok(&b.set("llama.rope.scaling.factor", Value::F32(4.0)));
    }

    #[test]
    fn epsilons() {
        let key = "llama.attention.layer_norm_rms_epsilon";
        for v in [f32::NAN, -1e-5, f32::INFINITY] {
            refused(&base().set(key, Value::F32(v)), &[key]);
        }
        refused(&base().set(key, Value::F64(1e-5)), &[key, "expected f32"]);
        refused(&base().without(key), &[key, "missing"]);
        ok(&base().set(key, Value::F32(0.0)));
        let key = "llama.attention.layer_norm_epsilon";
        refused(&base().set(key, Value::F32(f32::NAN)), &[key]);
    }

    #[test]
    fn pooling_and_misc_types() {
        refused(
            &base().set("llama.pooling_type", Value::U32(5)),
            &["llama.pooling_type", "is 5"],
        );
        ok(&base().set("llama.pooling_type", Value::U32(1)));
        refused(
            &base().set("llama.attention.causal", Value::U32(1)),
            &["llama.attention.causal", "expected bool"],
        );
        refused(
            &base().set(
                "llama.classifier.output_labels",
                Value::Array(vec![Value::U32(1)]),
            ),
            &["llama.classifier.output_labels"],
        );
        refused(
            &base().set("llama.vocab_size", Value::U64(267)),
            &["llama.vocab_size", "expected u32"],
        );
    }

    #[test]
    fn other_arch_gets_generic_rules_only() {
        // gpt2 is not modelled: no rms-eps requirement, no head-size equality, but the
        // generic layer/expert asserts still apply.
        let b = as_arch("gpt2").without("gpt2.attention.layer_norm_rms_epsilon");
        ok(&b.clone().set("gpt2.attention.value_length", Value::U32(8)));
        refused(
            &b.clone().set("gpt2.block_count", Value::U32(0)),
            &["gpt2.block_count", "is 0"],
        );
        refused(
            &b.set("gpt2.expert_used_count", Value::U32(1)),
            &["gpt2.expert_used_count"],
        );
        // qwen2 is llama-like.
        let q = as_arch("qwen2");
        ok(&q);
        refused(
            &q.clone().without("qwen2.attention.layer_norm_rms_epsilon"),
            &["qwen2.attention.layer_norm_rms_epsilon"],
        );
        refused(
            &q.set("qwen2.attention.value_length", Value::U32(8)),
            &["qwen2.attention.value_length"],
        );
    }

    #[test]
    fn mistral3_temperature() {
        let m = as_arch("mistral3").set("mistral3.attention.temperature_scale", Value::F32(0.1));
        ok(&m);
        refused(
            &m.set(
                "mistral3.rope.scaling.original_context_length",
                Value::U32(0),
            ),
            &[
                "mistral3.attention.temperature_scale",
                "original_context_length is 0",
            ],
        );
    }
}
