//! The fit estimate against what llama.cpp really allocates (read from its own log
//! lines "... buffer size = X MiB") for the test model at two context sizes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tabagent::engine::{Context, ContextParams, Model, ModelParams};
use tabagent::hardware::fit::{estimate, FitParams, ModelShape};
use tabagent::log::{set_sink, LogLevel};

fn model_path() -> PathBuf {
    match std::env::var_os("TABAGENT_TEST_MODEL") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var("HOME").unwrap())
            .join(".cache/tabagent/models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    }
}

fn mib_sum(lines: &[String]) -> f64 {
    lines
        .iter()
        .filter(|l| l.contains("buffer size ="))
        .filter_map(|l| {
            l.split("buffer size =")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .sum()
}

#[test]
fn fit_estimate_is_within_15_percent_of_llama_allocations() {
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    set_sink(
        Some(Box::new(move |_, t| {
            sink.lock().unwrap().push(t.to_string())
        })),
        LogLevel::Info,
    );
    let model = Arc::new(Model::load(&model_path(), &ModelParams::default()).unwrap());
    let model_mib = mib_sum(&lines.lock().unwrap());
    assert!(model_mib > 50.0, "no model buffer line seen");
    let hw = tabagent::hardware::detect("");
    let shape = ModelShape::from_gguf(model.gguf()).unwrap();
    for n_ctx in [512u32, 4096] {
        lines.lock().unwrap().clear();
        let ctx = Context::new(
            model.clone(),
            &ContextParams {
                n_ctx,
                n_threads: 1,
                ..Default::default()
            },
        )
        .unwrap();
        let actual = (model_mib + mib_sum(&lines.lock().unwrap())) * 1048576.0;
        drop(ctx);
        let fit = estimate(
            &shape,
            &FitParams {
                n_ctx: n_ctx as u64,
                ..Default::default()
            },
            &hw,
        );
        let err = (fit.total_bytes as f64 - actual) / actual;
        println!(
            "fit n_ctx={n_ctx}: estimate {:.1} MiB (weights {:.1}, kv {:.1}, compute {:.1}), llama.cpp {:.1} MiB, error {:+.1}%",
            fit.total_bytes as f64 / 1048576.0,
            fit.weights_bytes as f64 / 1048576.0,
            fit.kv_bytes as f64 / 1048576.0,
            fit.compute_bytes as f64 / 1048576.0,
            actual / 1048576.0,
            err * 100.0
        );
        assert!(err.abs() < 0.15, "n_ctx {n_ctx}: error {:.1}%", err * 100.0);
    }
    set_sink(None, LogLevel::Error);
}

#[test]
fn hardware_report_matches_proc_cpuinfo() {
    let hw = tabagent::hardware::detect(&tabagent::engine::system_info());
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let n_proc = text.lines().filter(|l| l.starts_with("processor")).count() as u32;
    if n_proc > 0 {
        assert_eq!(hw.cpu.logical_cores, n_proc);
    }
    if let Some(flags) = text.lines().find(|l| l.starts_with("flags")) {
        for f in ["avx2", "avx", "fma", "f16c", "sse4_2"] {
            let has = flags.split_whitespace().any(|x| x == f);
            assert_eq!(hw.cpu.features.iter().any(|x| x == f), has, "{f}");
        }
    }
    // This build uses the CPU's SIMD (target-cpu=native): no slowdown warning.
    assert!(hw.build_warning.is_none(), "{:?}", hw.build_warning);
    assert!(
        hw.build_features.iter().any(|f| f == "avx2")
            || !hw.cpu.features.iter().any(|f| f == "avx2")
    );
    assert!(hw.memory.total_bytes > 0 && hw.memory.available_bytes <= hw.memory.total_bytes);
}
