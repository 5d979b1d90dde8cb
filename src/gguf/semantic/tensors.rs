//! Tensors by role, as llama-model-loader.cpp `create_tensor` selects their op
//! (llama-arch.cpp `LLM_TENSOR_INFOS`, which is the same for every architecture; a
//! "bias" suffix always means GGML_OP_ADD) and as ggml-cpu can then compute them.
//! Shapes are checked for llama, whose tensor list is modelled.

use super::hparams::Hparams;
use super::Cx;
use crate::error::Result;
use crate::gguf::{ggml_type_name, TensorInfo};

/// ggml types the CPU backend can both multiply and look up rows of:
/// ggml-cpu.c `type_traits_cpu` entries with a `vec_dot` (ggml_compute_forward_mul_mat
/// and mul_mat_id call it unchecked: I8/I16/I32/I64/F64/Q8_1/Q8_K have none, so
/// llama_decode jumps to NULL), which is exactly the set ops.cpp
/// `ggml_compute_forward_get_rows` supports with an F32 result (its default branch
/// aborts; Q8_1 has no `to_float` in ggml.c and would be called through NULL; I32 rows
/// stay I32 and the next op aborts on the type).
const CPU_COMPUTE_TYPES: &[u32] = &[
    0,  // F32
    1,  // F16
    2,  // Q4_0
    3,  // Q4_1
    6,  // Q5_0
    7,  // Q5_1
    8,  // Q8_0
    10, // Q2_K
    11, // Q3_K
    12, // Q4_K
    13, // Q5_K
    14, // Q6_K
    16, // IQ2_XXS
    17, // IQ2_XS
    18, // IQ3_XXS
    19, // IQ1_S
    20, // IQ4_NL
    21, // IQ3_S
    22, // IQ2_S
    23, // IQ4_XS
    29, // IQ1_M
    30, // BF16
    34, // TQ1_0
    35, // TQ2_0
    39, // MXFP4
    40, // NVFP4
    41, // Q1_0
    42, // Q2_0
];
const GGML_F32: u32 = 0;
const GGML_NVFP4: u32 = 40;

/// Per-layer weights whose op is GGML_OP_MUL_MAT or GGML_OP_MUL_MAT_ID.
const MATMUL_STEMS: &[&str] = &[
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_qkv",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
    "ffn_gate_inp",
    "ffn_gate_exps",
    "ffn_up_exps",
    "ffn_down_exps",
    "ffn_gate_shexp",
    "ffn_up_shexp",
    "ffn_down_shexp",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// GGML_OP_GET_ROWS: token_embd, position_embd, token_types.
    Lookup,
    /// GGML_OP_MUL_MAT(_ID).
    Matmul,
    /// Second operand of ggml_mul / ggml_add with F32 activations (norm weights,
    /// biases, per-tensor weight scales, which llm_graph_context::build_lora_mm
    /// applies with ggml_mul): ggml-cpu binary-ops.cpp supports only
    /// F32 × F32 → F32 here and otherwise GGML_ABORT("unsupported types").
    Elementwise,
    /// GGML_OP_ROPE frequency factors: ggml.c ggml_rope_impl GGML_ASSERTs
    /// `c->type == GGML_TYPE_F32`, already while loading (weight_buft_supported
    /// builds the op to pick a buffer type).
    RopeFactors,
}

fn role(name: &str) -> Option<Role> {
    let (stem, suffix) = name.rsplit_once('.')?;
    let (layer, stem) = match stem.strip_prefix("blk.") {
        Some(rest) => (true, rest.split_once('.')?.1),
        None => (false, stem),
    };
    match suffix {
        "bias" | "scale" => Some(Role::Elementwise),
        "weight" if stem.ends_with("_norm") => Some(Role::Elementwise),
        "weight"
            if matches!(
                stem,
                "rope_freqs" | "rope_factors_long" | "rope_factors_short"
            ) =>
        {
            Some(Role::RopeFactors)
        }
        "weight" if !layer && matches!(stem, "token_embd" | "position_embd" | "token_types") => {
            Some(Role::Lookup)
        }
        "weight" if (layer && MATMUL_STEMS.contains(&stem)) || (!layer && stem == "output") => {
            Some(Role::Matmul)
        }
        _ => None,
    }
}

pub fn check(cx: &Cx<'_>, hp: &Hparams, n_vocab: u64) -> Result<()> {
    for t in &cx.info.tensors {
        let Some(role) = role(&t.name) else { continue };
        let ty = ggml_type_name(t.ggml_type).unwrap_or("unknown");
        let ok = match role {
            Role::Lookup | Role::Matmul => CPU_COMPUTE_TYPES.contains(&t.ggml_type),
            Role::Elementwise | Role::RopeFactors => t.ggml_type == GGML_F32,
        };
        if ok {
            continue;
        }
        let why = match role {
            Role::Lookup => "ggml's CPU backend cannot look up rows of that type (get_rows aborts or calls a missing kernel)",
            Role::Matmul => "ggml's CPU backend has no matrix-multiply kernel for that type (llama_decode would call a NULL function)",
            Role::Elementwise => "it must be F32: ggml's CPU add/mul abort with \"unsupported types\" on anything else",
            Role::RopeFactors => "it must be F32: ggml_rope_ext asserts it while llama.cpp loads the model",
        };
        return Err(cx.err(format_args!("tensor '{}' has type {ty}; {why}", t.name)));
    }

    // load_tensors: GGML_ASSERT(!(output && tok_embd && output is tok_embd &&
    // output->type == GGML_TYPE_NVFP4 && (output_s || output_in_s))) — a tied NVFP4
    // output with separate output scale tensors.
    let find = |n: &str| cx.info.tensors.iter().find(|t| t.name == n);
    if find("output.weight").is_none()
        && find("token_embd.weight").is_some_and(|t| t.ggml_type == GGML_NVFP4)
        && (find("output.scale").is_some() || find("output.input_scale").is_some())
    {
        return Err(cx.err(
            "token_embd.weight is NVFP4 and doubles as the output layer (no output.weight), \
             but output.scale/output.input_scale exist; llama.cpp asserts a tied NVFP4 output has no scales",
        ));
    }

    if matches!(cx.arch, "llama" | "llama-embed") {
        check_llama_shapes(cx, hp, n_vocab)?;
    }
    Ok(())
}

/// models/llama.cpp `load_arch_tensors`: which tensors must exist and their shapes
/// (create_tensor throws "missing tensor" / "wrong shape"; checked here for the
/// message). Layer-0 sizes apply to every layer, as in LLAMA_LOAD_LOCALS.
fn check_llama_shapes(cx: &Cx<'_>, hp: &Hparams, n_vocab: u64) -> Result<()> {
    let find = |n: &str| cx.info.tensors.iter().find(|t| t.name == n);
    let expect = |name: &str, want: &[u64], required: bool| -> Result<()> {
        let Some(t) = find(name) else {
            if required {
                return Err(cx.err(format_args!(
                    "tensor '{name}' is missing; llama.cpp requires it for '{}'",
                    cx.arch
                )));
            }
            return Ok(());
        };
        if !same_shape(t, want) {
            return Err(cx.err(format_args!(
                "tensor '{name}' has shape {:?}, but the metadata ({}.embedding_length, attention.*, \
                 feed_forward_length, vocabulary size) implies {want:?}",
                t.dims, cx.arch
            )));
        }
        Ok(())
    };
    let e = hp.n_embd;
    let ff = hp.n_ff[0];
    let nq = hp.head_k.saturating_mul(hp.n_head[0]);
    let nk = hp.head_k.saturating_mul(hp.n_head_kv[0]);
    let nv = hp.head_v.saturating_mul(hp.n_head_kv[0]);
    expect("token_embd.weight", &[e, n_vocab], true)?;
    expect("output_norm.weight", &[e], true)?;
    expect("output.weight", &[e, n_vocab], false)?;
    for i in 0..hp.n_layer {
        let n = |s: &str| format!("blk.{i}.{s}");
        expect(&n("attn_norm.weight"), &[e], true)?;
        let qkv = n("attn_qkv.weight");
        if find(&qkv).is_some() {
            expect(&qkv, &[e, nq.saturating_add(nk).saturating_add(nv)], true)?;
        } else {
            expect(&n("attn_q.weight"), &[e, nq], true)?;
            expect(&n("attn_k.weight"), &[e, nk], true)?;
            expect(&n("attn_v.weight"), &[e, nv], true)?;
        }
        expect(&n("attn_output.weight"), &[nq, e], true)?;
        expect(&n("ffn_norm.weight"), &[e], true)?;
        if hp.n_expert == 0 {
            expect(&n("ffn_gate.weight"), &[e, ff], true)?;
            expect(&n("ffn_down.weight"), &[ff, e], true)?;
            expect(&n("ffn_up.weight"), &[e, ff], true)?;
        } else {
            let x = hp.n_expert;
            expect(&n("ffn_gate_inp.weight"), &[e, x], true)?;
            expect(&n("ffn_gate_exps.weight"), &[e, ff, x], false)?;
            expect(&n("ffn_down_exps.weight"), &[ff, e, x], true)?;
            expect(&n("ffn_up_exps.weight"), &[e, ff, x], true)?;
        }
    }
    Ok(())
}

/// llama_model_loader::check_tensor_dims: equal dims, missing trailing dims being 1.
fn same_shape(t: &TensorInfo, want: &[u64]) -> bool {
    (0..4).all(|i| t.dims.get(i).copied().unwrap_or(1) == want.get(i).copied().unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;
    use crate::gguf::testgen::Builder;
    use crate::gguf::Value;

    /// Give a tensor a new type, with zeroed data of the right size.
    fn retype(b: Builder, name: &str, ty: u32) -> Builder {
        let dims = b
            .tensor_list()
            .into_iter()
            .find(|t| t.0 == name)
            .expect(name)
            .1;
        let (blk, bytes) = crate::gguf::ggml_type_block(ty).unwrap();
        let n: u64 = dims.iter().product();
        b.retype(name, ty, vec![0; (n / blk * bytes) as usize])
    }

    fn reshape_f32(b: Builder, name: &str, dims: &[u64]) -> Builder {
        let n: u64 = dims.iter().product();
        b.reshape(name, dims)
            .retype(name, 0, vec![0; n as usize * 4])
    }

    #[test]
    fn roles() {
        assert_eq!(role("blk.0.attn_norm.weight"), Some(Role::Elementwise));
        assert_eq!(role("blk.12.attn_q.bias"), Some(Role::Elementwise));
        assert_eq!(role("blk.1.attn_q.scale"), Some(Role::Elementwise));
        assert_eq!(role("output_norm.weight"), Some(Role::Elementwise));
        assert_eq!(role("rope_freqs.weight"), Some(Role::RopeFactors));
        assert_eq!(role("token_embd.weight"), Some(Role::Lookup));
        assert_eq!(role("output.weight"), Some(Role::Matmul));
        assert_eq!(role("blk.3.ffn_down_exps.weight"), Some(Role::Matmul));
        assert_eq!(role("blk.3.output.weight"), None);
        assert_eq!(role("blk.3.ssm_a"), None);
        assert_eq!(role("blk.x"), None);
    }

    #[test]
    fn norm_types() {
        for name in [
            "blk.0.attn_norm.weight",
            "blk.0.ffn_norm.weight",
            "output_norm.weight",
        ] {
            for ty in [1u32, 2, 30] {
                refused(&retype(base(), name, ty), &[name, "must be F32"]);
            }
            // Tensors are not loaded in vocab-only mode.
            assert!(run(&retype(base(), name, 2), true).is_ok());
        }
        let b = base().tensor_raw("blk.0.attn_output.bias", &[32], 1, vec![0; 64]);
        refused(&b, &["blk.0.attn_output.bias", "type F16"]);
        ok(&base().tensor_f32("blk.0.attn_output.bias", &[32], &[0.0; 32]));
    }

    #[test]
    fn matmul_types() {
        for name in [
            "blk.0.attn_q.weight",
            "blk.0.ffn_down.weight",
            "output.weight",
        ] {
            for ty in [24u32, 25, 26, 27, 28, 9] {
                refused(&retype(base(), name, ty), &[name, "matrix-multiply"]);
            }
            for ty in [1u32, 2, 8, 30] {
                ok(&retype(base(), name, ty));
            }
        }
    }

    #[test]
    fn embedding_types() {
        let name = "token_embd.weight";
        for ty in [24u32, 26, 27, 28, 9] {
            refused(&retype(base(), name, ty), &[name, "look up rows"]);
        }
        ok(&retype(base(), name, 8));
    }

    #[test]
    fn rope_factors() {
        let b = base().tensor_raw("rope_freqs.weight", &[8], 1, vec![0; 16]);
        refused(&b, &["rope_freqs.weight", "ggml_rope_ext"]);
        ok(&base().tensor_f32("rope_freqs.weight", &[8], &[1.0; 8]));
    }

    #[test]
    fn scales() {
        let b = base().tensor_raw("blk.0.attn_q.scale", &[1], 1, vec![0; 2]);
        refused(&b, &["blk.0.attn_q.scale"]);
    }

    #[test]
    fn llama_shapes() {
        refused(
            &reshape_f32(base(), "blk.0.attn_q.weight", &[32, 16]),
            &["blk.0.attn_q.weight", "[32, 16]", "[32, 32]"],
        );
        refused(
            &reshape_f32(base(), "token_embd.weight", &[32, 10]),
            &["token_embd.weight", "[32, 10]"],
        );
        refused(
            &reshape_f32(base(), "blk.0.ffn_up.weight", &[32, 32]),
            &["blk.0.ffn_up.weight", "[32, 64]"],
        );
        refused(
            &base().without_tensor("blk.0.ffn_up.weight"),
            &["blk.0.ffn_up.weight", "missing"],
        );
        refused(
            &base().without_tensor("output_norm.weight"),
            &["output_norm.weight", "missing"],
        );
        // A trailing 1 is the same shape.
        ok(&reshape_f32(base(), "output_norm.weight", &[32, 1]));
        // Output tied to the embedding.
        ok(&base().without_tensor("output.weight"));
        // Fused QKV instead of Q, K, V.
        let fused = base()
            .without_tensor("blk.0.attn_q.weight")
            .without_tensor("blk.0.attn_k.weight")
            .without_tensor("blk.0.attn_v.weight")
            .tensor_f32("blk.0.attn_qkv.weight", &[32, 96], &[0.0; 32 * 96]);
        ok(&fused);
    }

    #[test]
    fn nvfp4_tied_output() {
        let n = match base().value("tokenizer.ggml.tokens") {
            Some(Value::Array(a)) => a.len() as u64,
            _ => unreachable!(),
        };
        // NVFP4 needs rows of 64; only the shape-free architectures allow that here.
        let b = as_arch("qwen2")
            .without_tensor("output.weight")
            .reshape("token_embd.weight", &[64, n])
            .retype("token_embd.weight", GGML_NVFP4, vec![0; n as usize * 36]);
        ok(&b);
        let scaled = b.tensor_f32("output.scale", &[1], &[1.0]);
        refused(&scaled, &["NVFP4", "output.scale"]);
    }

    #[test]
    fn generic_roles_apply_to_other_archs() {
        refused(
            &retype(as_arch("qwen2"), "blk.0.attn_norm.weight", 1),
            &["blk.0.attn_norm.weight"],
        );
        // Shapes are only modelled for llama.
        ok(&reshape_f32(
            as_arch("qwen2"),
            "blk.0.ffn_up.weight",
            &[32, 32],
        ));
    }
}
