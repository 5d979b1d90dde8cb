//! Embeddings: all-MiniLM-L6-v2 (BERT, converted by scripts/fetch-embed-model.sh)
//! against an independent reference (tests/embed/reference.py: NumPy over the
//! safetensors, `tokenizers` for the ids), and a decoder model (the test model)
//! with mean and last pooling. Batched and one-at-a-time vectors must agree; long,
//! empty and misplaced calls fail cleanly.

use serde_json::Value as Json;
use std::path::PathBuf;
use std::sync::Arc;
use tabagent::engine::embed::{EmbedParams, Pooling};
use tabagent::engine::{Context, ContextParams, GenParams, Model, ModelParams};
use tabagent::ErrorKind;

fn models_dir() -> PathBuf {
    match std::env::var_os("TABAGENT_MODEL_DIR") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/tabagent/models"),
    }
}

fn embed_model_dir() -> PathBuf {
    models_dir().join("all-MiniLM-L6-v2")
}

fn embed_model() -> Arc<Model> {
    let p = embed_model_dir().join("all-MiniLM-L6-v2.F32.gguf");
    assert!(
        p.exists(),
        "{} missing: run scripts/fetch-embed-model.sh",
        p.display()
    );
    Arc::new(Model::load(&p, &ModelParams::default()).unwrap())
}

fn test_model() -> Arc<Model> {
    let p = match std::env::var_os("TABAGENT_TEST_MODEL") {
        Some(p) => PathBuf::from(p),
        None => models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    Arc::new(Model::load(&p, &ModelParams::default()).unwrap())
}

fn params(pooling: Pooling) -> ContextParams {
    ContextParams {
        embeddings: true,
        pooling,
        n_threads: 2,
        n_ctx: 512,
        ..Default::default()
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn reference() -> Json {
    reference_with(&[])
}

/// The reference, with extra arguments (e.g. `--pooling cls`).
fn reference_with(args: &[&str]) -> Json {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let py = std::env::var_os("TABAGENT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    let out = std::env::temp_dir().join(format!("tabagent-embed-ref-{}.json", std::process::id()));
    let st = std::process::Command::new(py)
        .arg(root.join("tests/embed/reference.py"))
        .arg("--model-dir")
        .arg(embed_model_dir())
        .arg("--out")
        .arg(&out)
        .args(args)
        .status()
        .expect("run tests/embed/reference.py (scripts/setup.sh makes the venv)");
    assert!(st.success(), "reference.py failed");
    let v: Json = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let _ = std::fs::remove_file(out);
    v
}

fn sentences_of(r: &Json) -> Vec<&str> {
    r["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

fn vectors_of(r: &Json) -> Vec<Vec<f32>> {
    r["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

#[test]
fn minilm_matches_the_reference_and_ranks_pairs() {
    let r = reference();
    let sentences = sentences_of(&r);
    let want = vectors_of(&r);
    let model = embed_model();
    // The reference's token ids are what llama's WordPiece gives too.
    for (s, ids) in sentences.iter().zip(r["token_ids"].as_array().unwrap()) {
        let ids: Vec<i32> = ids
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap() as i32)
            .collect();
        assert_eq!(model.tokenize(s, true, false).unwrap(), ids, "{s}");
    }
    let ctx = Context::new(model, &params(Pooling::Model)).unwrap();
    assert_eq!(ctx.pooling(), Some(Pooling::Mean));
    assert_eq!(ctx.embed_dim(), 384);
    let got = ctx.embed(&sentences, &EmbedParams::default()).unwrap();
    assert_eq!(got.len(), sentences.len());
    let mut worst = 1.0f64;
    for (i, w) in want.iter().enumerate() {
        let c = cosine(got.get(i), w);
        worst = worst.min(c);
        assert!(c >= 0.99, "sentence {i} {:?}: cosine {c}", sentences[i]);
        let norm: f64 = got.get(i).iter().map(|x| (*x as f64).powi(2)).sum();
        assert!((norm - 1.0).abs() < 1e-4, "not normalised: {norm}");
    }
    eprintln!("all-MiniLM-L6-v2: worst cosine vs reference {worst:.6}");
    for p in r["pairs"].as_array().unwrap() {
        let [i, j, k] = [0, 1, 2].map(|n| p[n].as_u64().unwrap() as usize);
        let (sij, sik) = (
            cosine(got.get(i), got.get(j)),
            cosine(got.get(i), got.get(k)),
        );
        assert!(sij > sik, "pair {i},{j} vs {k}: {sij} <= {sik}");
    }
    // One at a time gives the same vectors as the batch.
    for (i, s) in sentences.iter().enumerate() {
        let one = ctx.embed(&[s], &EmbedParams::default()).unwrap();
        let c = cosine(one.get(0), got.get(i));
        assert!(c > 0.99999, "sentence {i}: batched vs alone {c}");
    }
    // Unnormalised: same direction, norm not 1.
    let raw = ctx
        .embed(
            &sentences[..1],
            &EmbedParams {
                normalize: false,
                truncate: false,
            },
        )
        .unwrap();
    assert!(cosine(raw.get(0), got.get(0)) > 0.99999);
    let norm: f64 = raw.get(0).iter().map(|x| (*x as f64).powi(2)).sum();
    assert!((norm - 1.0).abs() > 1e-3);
}

/// CLS pooling: the first token's ([CLS]) final hidden state, checked against the
/// reference's, normalised, and far from the mean-pooled vector of the same text.
#[test]
fn minilm_cls_pooling_is_the_first_token_state() {
    let r = reference_with(&["--pooling", "cls"]);
    assert_eq!(r["pooling"], "cls");
    let sentences = sentences_of(&r);
    let want = vectors_of(&r);
    let model = embed_model();
    let cls = Context::new(model.clone(), &params(Pooling::Cls)).unwrap();
    assert_eq!(cls.pooling(), Some(Pooling::Cls));
    assert_eq!(cls.embed_dim(), 384);
    let got = cls.embed(&sentences, &EmbedParams::default()).unwrap();
    let mean = Context::new(model, &params(Pooling::Mean))
        .unwrap()
        .embed(&sentences, &EmbedParams::default())
        .unwrap();
    let mut worst = 1.0f64;
    for (i, w) in want.iter().enumerate() {
        assert_eq!(got.get(i).len(), 384);
        let norm: f64 = got.get(i).iter().map(|x| (*x as f64).powi(2)).sum();
        assert!(
            (norm - 1.0).abs() < 1e-4,
            "sentence {i}: not normalised: {norm}"
        );
        let c = cosine(got.get(i), w);
        worst = worst.min(c);
        assert!(c >= 0.99, "sentence {i} {:?}: cosine {c}", sentences[i]);
        // The reference's CLS and mean vectors are 0.3..0.65 apart in cosine: mean
        // pooling under the name CLS cannot pass the check above, nor this one.
        let m = cosine(got.get(i), mean.get(i));
        assert!(m < 0.9, "sentence {i}: CLS vs mean {m}");
    }
    eprintln!("all-MiniLM-L6-v2, CLS pooling: worst cosine vs reference {worst:.6}");
}

fn model_copy(src: &std::path::Path, name: &str, key: &str, v: tabagent::gguf::Value) -> PathBuf {
    let bytes = std::fs::read(src).unwrap();
    let info = tabagent::gguf::GgufInfo::parse(&bytes, name).unwrap();
    let out = tabagent::gguf::testgen::Builder::from_gguf(&info, &bytes)
        .set(key, v)
        .build();
    let p = std::env::temp_dir().join(format!("tabagent-{}-{name}", std::process::id()));
    std::fs::write(&p, out).unwrap();
    p
}

/// Rank pooling needs a reranker's classification head; llama.cpp would run
/// without one and return a meaningless "score" (one float read out of the pooled
/// hidden state), so the library refuses the context instead, for an encoder and
/// a decoder model, asked for rank or told so by the file's own pooling_type.
#[test]
fn rank_pooling_without_a_classifier_head_is_refused() {
    for (what, model) in [("minilm", embed_model()), ("decoder", test_model())] {
        assert!(!model
            .gguf()
            .tensors
            .iter()
            .any(|t| t.name.starts_with("cls.")));
        let e = Context::new(model, &params(Pooling::Rank))
            .err()
            .expect("rank refused");
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{what}: {e}");
        assert!(e.message().contains("classification head"), "{what}: {e}");
    }
    // A file that names rank as its own pooling.
    let p = model_copy(
        &embed_model_dir().join("all-MiniLM-L6-v2.F32.gguf"),
        "minilm-rank.gguf",
        "bert.pooling_type",
        tabagent::gguf::Value::U32(4),
    );
    let model = Arc::new(Model::load(&p, &ModelParams::default()).unwrap());
    let _ = std::fs::remove_file(&p);
    let e = Context::new(model.clone(), &params(Pooling::Model))
        .err()
        .expect("rank refused");
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    // The same file still embeds with a pooling that needs no head.
    let ctx = Context::new(model, &params(Pooling::Cls)).unwrap();
    assert_eq!(ctx.embed(&["x"], &EmbedParams::default()).unwrap().dim, 384);
}

#[test]
fn long_empty_and_misplaced_calls_fail_cleanly() {
    let model = embed_model();
    let ctx = Context::new(
        model.clone(),
        &ContextParams {
            n_ctx: 64,
            ..params(Pooling::Model)
        },
    )
    .unwrap();
    let long = "word ".repeat(200);
    let e = ctx
        .embed(&["short", &long], &EmbedParams::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ContextFull);
    assert!(e.message().contains("texts[1]"), "{e}");
    let cut = ctx
        .embed(
            &[&long],
            &EmbedParams {
                truncate: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(cut.n_tokens, vec![64]);
    let e = ctx.embed(&["ok", ""], &EmbedParams::default());
    // BERT adds [CLS] [SEP] to an empty text, so it has tokens; a decoder model
    // without BOS has none (below).
    assert!(e.is_ok());
    assert!(ctx.embed(&[], &EmbedParams::default()).unwrap().is_empty());
    // More texts than one batch holds: several decodes, same vectors.
    let many: Vec<String> = (0..150).map(|i| format!("sentence number {i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let all = ctx.embed(&refs, &EmbedParams::default()).unwrap();
    let one = ctx.embed(&refs[149..], &EmbedParams::default()).unwrap();
    assert!(cosine(all.get(149), one.get(0)) > 0.99999);
    // Generation on an embedding context, embeddings on a generation context.
    let mut ctx = ctx;
    let e = ctx
        .generate("x", &GenParams::default(), &mut |_| true)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArg, "{e}");
    let gen = Context::new(
        test_model(),
        &ContextParams {
            n_ctx: 256,
            n_threads: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let e = gen.embed(&["x"], &EmbedParams::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArg);
    assert_eq!(gen.embed_dim(), 0);
    // Pooling none: one vector per token, refused by embed.
    let none = Context::new(model, &params(Pooling::None)).unwrap();
    assert_eq!(
        none.embed(&["x"], &EmbedParams::default())
            .unwrap_err()
            .kind(),
        ErrorKind::Unsupported
    );
}

#[test]
fn decoder_model_mean_and_last_pooling() {
    let model = test_model();
    let texts = [
        "The cat sat on the mat.",
        "A feline rested on a rug.",
        "Stock prices fell today.",
    ];
    for pooling in [Pooling::Mean, Pooling::Last] {
        let ctx = Context::new(model.clone(), &params(pooling)).unwrap();
        assert_eq!(ctx.pooling(), Some(pooling));
        assert_eq!(ctx.embed_dim(), model.info().n_embd as usize);
        let all = ctx.embed(&texts, &EmbedParams::default()).unwrap();
        for (i, t) in texts.iter().enumerate() {
            let one = ctx.embed(&[t], &EmbedParams::default()).unwrap();
            let c = cosine(all.get(i), one.get(0));
            assert!(c > 0.9999, "{pooling:?} text {i}: batched vs alone {c}");
            assert!(all.get(i).iter().all(|x| x.is_finite()));
        }
        // A decoder tokenizer without BOS gives an empty text no tokens.
        if model.tokenize("", true, false).unwrap().is_empty() {
            let e = ctx.embed(&[""], &EmbedParams::default()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArg);
        }
    }
}

#[test]
fn more_sequences_than_batch_rows_is_refused_not_aborted() {
    // llama.cpp asserts when n_seq_max exceeds the rows of a batch.
    let e = Context::new(
        test_model(),
        &ContextParams {
            n_ctx: 512,
            n_batch: 32,
            n_ubatch: 32,
            n_seq_max: 64,
            n_threads: 2,
            ..Default::default()
        },
    )
    .err()
    .expect("refused");
    assert_eq!(e.kind(), ErrorKind::InvalidArg, "{e}");
    // An embedding context smaller than its batch of sequences is sized to fit.
    let ctx = Context::new(
        embed_model(),
        &ContextParams {
            n_ctx: 32,
            ..params(Pooling::Model)
        },
    )
    .unwrap();
    let texts: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    assert_eq!(ctx.embed(&refs, &EmbedParams::default()).unwrap().len(), 40);
}
