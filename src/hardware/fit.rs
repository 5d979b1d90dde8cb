//! Will a model fit? The memory llama.cpp allocates for a model and context,
//! estimated from the GGUF header alone (no load), and advice on threads and GPU
//! layers.
//!
//! What llama.cpp allocates for a CPU context (read from its own log):
//! * model buffer = the tensor data (memory-mapped from the file);
//! * KV cache = n_ctx · n_layer · (n_head_kv·head_dim_k + n_head_kv·head_dim_v) · 2
//!   bytes (f16 K and V);
//! * compute buffer, dominated by the logits of one micro-batch
//!   (n_ubatch · n_vocab · 4) plus per-token activations (≈ n_ff + 2·n_embd floats)
//!   and the attention mask (n_ctx · n_ubatch · 2 with flash attention; without it
//!   the KQ scores take ≈ 16 bytes per cell);
//! * output buffer = n_vocab · 4 bytes.

use super::HardwareInfo;
use crate::error::{Error, Result};
use crate::gguf::GgufInfo;
use serde_json::{json, Value};

/// The model shape the estimate needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelShape {
    pub weights_bytes: u64,
    pub n_layer: u64,
    pub n_embd: u64,
    pub n_ff: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub head_dim_k: u64,
    pub head_dim_v: u64,
    pub n_vocab: u64,
    pub n_ctx_train: u64,
}

impl ModelShape {
    /// Read the shape from a parsed GGUF (all shards' tensors for split models).
    pub fn from_gguf(g: &GgufInfo) -> Result<ModelShape> {
        let arch = g
            .architecture()
            .ok_or_else(|| Error::bad_model("general.architecture is missing"))?;
        let need = |k: &str| {
            g.arch_u64(k)
                .ok_or_else(|| Error::bad_model(format!("{arch}.{k} is missing")))
        };
        let n_embd = need("embedding_length")?;
        let n_layer = need("block_count")?;
        // Head counts may be per-layer arrays in some architectures: take the max.
        let per_layer_max = |k: &str| -> Option<u64> {
            match g.get(&format!("{arch}.{k}"))? {
                crate::gguf::Value::Array(a) => a.iter().filter_map(|v| v.as_u64()).max(),
                v => v.as_u64(),
            }
        };
        let n_head = per_layer_max("attention.head_count").unwrap_or(1).max(1);
        let n_head_kv = per_layer_max("attention.head_count_kv").unwrap_or(n_head);
        let n_ff = per_layer_max("feed_forward_length").unwrap_or(4 * n_embd);
        let head_dim_k = g
            .arch_u64("attention.key_length")
            .unwrap_or(n_embd / n_head);
        let head_dim_v = g
            .arch_u64("attention.value_length")
            .unwrap_or(n_embd / n_head);
        let n_vocab = match g.get("tokenizer.ggml.tokens") {
            Some(crate::gguf::Value::Array(a)) => a.len() as u64,
            _ => g.arch_u64("vocab_size").unwrap_or(32000),
        };
        Ok(ModelShape {
            weights_bytes: g.tensor_bytes(),
            n_layer,
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            n_vocab,
            n_ctx_train: g.arch_u64("context_length").unwrap_or(0),
        })
    }
}

/// Context settings the estimate depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FitParams {
    /// 0 = the model's training context.
    pub n_ctx: u64,
    pub n_ubatch: u64,
    pub flash_attn: bool,
}

impl Default for FitParams {
    fn default() -> Self {
        FitParams {
            n_ctx: 4096,
            n_ubatch: 512,
            flash_attn: true,
        }
    }
}

/// The estimate and the advice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fit {
    pub n_ctx: u64,
    pub weights_bytes: u64,
    pub kv_bytes: u64,
    pub compute_bytes: u64,
    pub total_bytes: u64,
    /// Fits in the memory available to this process (cgroup limits included).
    pub fits_ram: bool,
    /// Fits entirely in the largest GPU's memory (false without a GPU).
    pub fits_vram: bool,
    /// Layers to offload: all when it fits, as many as fit otherwise, 0 without a GPU.
    pub recommended_gpu_layers: i32,
    pub recommended_threads: u32,
}

/// The context size llama.cpp will use: the model's training context for 0, padded
/// to a multiple of 256 as llama.cpp pads it.
fn effective_n_ctx(shape: &ModelShape, p: &FitParams) -> u64 {
    let n_ctx = if p.n_ctx == 0 {
        shape.n_ctx_train.max(1)
    } else {
        p.n_ctx
    };
    n_ctx.div_ceil(256).saturating_mul(256)
}

/// (KV cache bytes, compute buffer bytes) of a context; saturating, since the
/// shape may come from a hostile file.
pub fn context_bytes(shape: &ModelShape, p: &FitParams) -> (u64, u64) {
    let n_ctx = effective_n_ctx(shape, p);
    let n_ubatch = p.n_ubatch.clamp(1, n_ctx);
    let m = |a: u64, b: u64| a.saturating_mul(b);
    let kv = [
        shape.n_layer,
        shape.n_head_kv,
        shape.head_dim_k.saturating_add(shape.head_dim_v),
        2,
    ]
    .into_iter()
    .fold(n_ctx, m);
    let attn_cell = if p.flash_attn { 2 } else { 16 };
    let per_token = shape
        .n_vocab
        .saturating_add(shape.n_ff)
        .saturating_add(m(2, shape.n_embd));
    let compute = m(m(n_ubatch, 4), per_token)
        .saturating_add(m(m(n_ctx, n_ubatch), attn_cell))
        .saturating_add(m(shape.n_vocab, 4));
    (kv, compute)
}

/// Estimate the allocation for `shape` with `p` on the machine `hw`.
pub fn estimate(shape: &ModelShape, p: &FitParams, hw: &HardwareInfo) -> Fit {
    let n_ctx = effective_n_ctx(shape, p);
    let (kv, compute) = context_bytes(shape, p);
    let total = shape
        .weights_bytes
        .saturating_add(kv)
        .saturating_add(compute);
    let fits_ram = hw.memory.available_bytes == 0 || total <= hw.memory.available_bytes;
    let vram = hw
        .gpus
        .iter()
        .map(|g| g.free_bytes.unwrap_or(g.total_bytes))
        .max()
        .unwrap_or(0);
    // Leave 10% of VRAM for the driver and fragmentation.
    let usable = vram - vram / 10;
    let fits_vram = vram > 0 && total <= usable;
    let gpu_layers = if vram == 0 {
        0
    } else if fits_vram {
        -1
    } else {
        let per_layer = shape.weights_bytes.saturating_add(kv) / shape.n_layer.max(1);
        let room = usable.saturating_sub(compute);
        (room / per_layer.max(1)).min(shape.n_layer) as i32
    };
    Fit {
        n_ctx,
        weights_bytes: shape.weights_bytes,
        kv_bytes: kv,
        compute_bytes: compute,
        total_bytes: total,
        fits_ram,
        fits_vram,
        recommended_gpu_layers: gpu_layers,
        recommended_threads: hw.recommended_threads(),
    }
}

impl Fit {
    pub fn to_json(&self) -> Value {
        json!({
            "n_ctx": self.n_ctx,
            "weights_bytes": self.weights_bytes,
            "kv_bytes": self.kv_bytes,
            "compute_bytes": self.compute_bytes,
            "total_bytes": self.total_bytes,
            "fits_ram": self.fits_ram,
            "fits_vram": self.fits_vram,
            "recommended_gpu_layers": self.recommended_gpu_layers,
            "recommended_threads": self.recommended_threads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> ModelShape {
        ModelShape {
            weights_bytes: 1 << 30,
            n_layer: 32,
            n_embd: 4096,
            n_ff: 14336,
            n_head: 32,
            n_head_kv: 8,
            head_dim_k: 128,
            head_dim_v: 128,
            n_vocab: 128256,
            n_ctx_train: 8192,
        }
    }

    fn machine(ram: u64, vram: Option<u64>) -> HardwareInfo {
        let mut hw = super::super::detect("");
        hw.memory.available_bytes = ram;
        hw.gpus = vram
            .map(|v| {
                vec![super::super::GpuInfo {
                    backend: "cuda".into(),
                    index: 0,
                    name: "test".into(),
                    total_bytes: v,
                    free_bytes: Some(v),
                    compute_capability: None,
                    device_type: None,
                    driver: None,
                }]
            })
            .unwrap_or_default();
        hw
    }

    #[test]
    fn kv_matches_the_llama_formula() {
        let f = estimate(
            &shape(),
            &FitParams {
                n_ctx: 8192,
                ..Default::default()
            },
            &machine(0, None),
        );
        // Llama-3-8B: 8192 ctx · 32 layers · 8 kv heads · 256 dims · 2 bytes = 1 GiB.
        assert_eq!(f.kv_bytes, 1 << 30);
        assert_eq!(f.recommended_gpu_layers, 0);
        assert!(!f.fits_vram);
    }

    #[test]
    fn advice_follows_memory() {
        let p = FitParams::default();
        let f = estimate(&shape(), &p, &machine(64 << 30, Some(24 << 30)));
        assert!(f.fits_ram && f.fits_vram);
        assert_eq!(f.recommended_gpu_layers, -1);
        let f = estimate(&shape(), &p, &machine(1 << 30, Some(1 << 30)));
        assert!(!f.fits_ram && !f.fits_vram);
        assert!(f.recommended_gpu_layers >= 0 && f.recommended_gpu_layers < 32);
        let small = estimate(&shape(), &FitParams { n_ctx: 512, ..p }, &machine(0, None));
        assert!(small.total_bytes < f.total_bytes);
        assert_eq!(small.n_ctx, 512);
        // n_ctx is padded like llama.cpp pads it.
        assert_eq!(
            estimate(&shape(), &FitParams { n_ctx: 1000, ..p }, &machine(0, None)).n_ctx,
            1024
        );
    }
}
