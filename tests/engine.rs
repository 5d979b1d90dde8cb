//! The safe Rust API against the real test model (SmolLM2-135M-Instruct Q4_1).
//! The model is found through TABAGENT_TEST_MODEL, defaulting to where
//! scripts/fetch-model.sh puts it.

use std::path::PathBuf;
use std::sync::Arc;
use tabagent::engine::{
    ChatMessage, Context, ContextParams, GenParams, Model, ModelParams, StopReason,
};
use tabagent::ErrorKind;

fn model_path() -> PathBuf {
    match std::env::var_os("TABAGENT_TEST_MODEL") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var("HOME").unwrap())
            .join(".cache/tabagent/models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    }
}

fn model() -> Arc<Model> {
    static M: once_cell::sync::OnceCell<Arc<Model>> = once_cell::sync::OnceCell::new();
    M.get_or_init(|| {
        let p = model_path();
        assert!(
            p.exists(),
            "test model missing at {}: run scripts/fetch-model.sh",
            p.display()
        );
        Arc::new(Model::load(&p, &ModelParams::default()).expect("load test model"))
    })
    .clone()
}

fn ctx(n_ctx: u32) -> Context {
    Context::new(
        model(),
        &ContextParams {
            n_ctx,
            n_threads: 2,
            ..Default::default()
        },
    )
    .unwrap()
}

fn greedy(max_tokens: i32) -> GenParams {
    GenParams {
        temperature: 0.0,
        max_tokens,
        ..Default::default()
    }
}

fn collect(c: &mut Context, prompt: &str, p: &GenParams) -> (String, tabagent::engine::GenResult) {
    let mut out = String::new();
    let r = c
        .generate(prompt, p, &mut |s| {
            out.push_str(s);
            true
        })
        .unwrap();
    (out, r)
}

#[test]
fn metadata_matches_the_file() {
    let m = model();
    let i = m.info();
    assert_eq!(i.architecture, "llama");
    assert_eq!(i.n_vocab, 49152);
    assert_eq!(i.n_ctx_train, 8192);
    assert_eq!(i.n_embd, 576);
    assert_eq!(i.n_layer, 30);
    assert_eq!(i.quantization, "Q4_1");
    assert!(
        i.n_params > 130_000_000 && i.n_params < 140_000_000,
        "{}",
        i.n_params
    );
    assert_eq!(i.file_size, std::fs::metadata(model_path()).unwrap().len());
    assert!(i
        .chat_template
        .as_deref()
        .unwrap_or("")
        .contains("im_start"));
    assert!(i.eos >= 0 && i.bos >= 0);
    assert_eq!(m.meta("llama.block_count").as_deref(), Some("30"));
    let j = m.to_json();
    assert_eq!(j["n_layer"], 30);
    assert_eq!(j["gguf"]["metadata"]["general.architecture"], "llama");
}

#[test]
fn tokenize_round_trips() {
    let m = model();
    let text = "Hello, wörld! 你好 🙂";
    let toks = m.tokenize(text, false, false).unwrap();
    assert!(!toks.is_empty());
    assert_eq!(
        String::from_utf8(m.detokenize(&toks, false, false).unwrap()).unwrap(),
        text
    );
    let pieces: Vec<u8> = toks
        .iter()
        .flat_map(|&t| m.token_to_piece(t, false).unwrap())
        .collect();
    assert_eq!(String::from_utf8(pieces).unwrap(), text);
    // Special-token text becomes one control token only when parse_special is set.
    let a = m.tokenize("<|im_start|>", false, true).unwrap();
    let b = m.tokenize("<|im_start|>", false, false).unwrap();
    assert_eq!(a.len(), 1);
    assert!(b.len() > 1);
    assert_eq!(
        m.token_to_piece(-1, false).unwrap_err().kind(),
        ErrorKind::InvalidArg
    );
}

#[test]
fn greedy_is_deterministic_and_seeded_sampling_repeats() {
    let mut c = ctx(512);
    let (a, ra) = collect(&mut c, "The capital of France is", &greedy(12));
    c.reset();
    let (b, _) = collect(&mut c, "The capital of France is", &greedy(12));
    assert_eq!(a, b);
    assert!(ra.n_generated > 0 && !a.is_empty());
    let sp = GenParams {
        temperature: 1.0,
        seed: 1234,
        max_tokens: 24,
        ..Default::default()
    };
    let (x, _) = collect(&mut c, "Once upon a time", &sp);
    let (y, _) = collect(&mut c, "Once upon a time", &sp);
    assert_eq!(x, y, "same seed and params must give the same text");
}

#[test]
fn second_chat_turn_reuses_the_history() {
    let mut c = ctx(2048);
    let mut msgs = vec![
        ChatMessage::new("system", "You are a helpful assistant."),
        ChatMessage::new("user", "Name three colours."),
    ];
    let mut reply = String::new();
    let r1 = c
        .chat(&msgs, &greedy(24), &mut |s| {
            reply.push_str(s);
            true
        })
        .unwrap();
    assert_eq!(r1.n_reused, 0);
    msgs.push(ChatMessage::new("assistant", reply.clone()));
    msgs.push(ChatMessage::new("user", "And three animals?"));
    let r2 = c.chat(&msgs, &greedy(8), &mut |_| true).unwrap();
    // Everything up to the end of the first prompt (and most of the reply) is cached.
    assert!(r2.n_reused >= r1.n_prompt, "{r2:?} {r1:?}");
    assert!(r2.n_prompt - r2.n_reused < 40, "{r2:?}");
}

#[test]
fn stop_strings_end_generation_and_are_not_emitted() {
    let mut c = ctx(512);
    let (full, _) = collect(&mut c, "Count: 1, 2, 3, 4,", &greedy(20));
    // Pick a stop string from the real continuation, spanning several characters.
    let stop = full
        .trim_start()
        .chars()
        .skip(2)
        .take(3)
        .collect::<String>();
    assert_eq!(stop.chars().count(), 3, "continuation too short: {full:?}");
    let p = GenParams {
        stop: vec![stop.clone()],
        ..greedy(20)
    };
    let (text, r) = collect(&mut c, "Count: 1, 2, 3, 4,", &p);
    assert_eq!(r.stop_reason, StopReason::StopString);
    assert!(!text.contains(&stop));
    assert!(full.starts_with(&text), "{text:?} vs {full:?}");
}

#[test]
fn callback_false_cancels_with_text_so_far() {
    let mut c = ctx(512);
    let mut got = String::new();
    let mut n = 0;
    let r = c
        .generate(
            "Once upon a time, in a land far away,",
            &greedy(100),
            &mut |s| {
                got.push_str(s);
                n += 1;
                n < 3
            },
        )
        .unwrap();
    assert_eq!(r.stop_reason, StopReason::Cancelled);
    assert_eq!(n, 3);
    assert!(!got.is_empty());
}

#[test]
fn cancel_from_another_thread_stops_a_long_prompt() {
    let mut c = ctx(4096);
    let h = c.abort_handle();
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(300);
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(150));
        h.cancel();
    });
    let r = c.generate(&long, &greedy(50), &mut |_| true).unwrap();
    t.join().unwrap();
    assert_eq!(r.stop_reason, StopReason::Cancelled);
    // The cache holds exactly a prefix of the prompt, so the next call stays correct.
    let toks = c.model().tokenize(&long, true, true).unwrap();
    assert!(c.cached_tokens().len() < toks.len());
    assert_eq!(c.cached_tokens(), &toks[..c.cached_tokens().len()]);
    let r2 = c.generate(&long, &greedy(2), &mut |_| true).unwrap();
    assert_eq!(
        r2.n_reused as usize,
        c.cached_tokens().len().min(r2.n_reused as usize)
    );
    assert_ne!(r2.stop_reason, StopReason::Cancelled);
}

#[test]
fn oversized_prompt_is_context_full_before_work() {
    let mut c = ctx(64);
    let long = "word ".repeat(2000);
    let mut called = false;
    let e = c
        .generate(&long, &greedy(4), &mut |_| {
            called = true;
            true
        })
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ContextFull);
    assert!(e.message().contains("n_ctx"), "{}", e.message());
    assert!(!called);
    assert!(c.cached_tokens().is_empty());
    // Generation that runs into the window stops with ContextFull.
    let r = c
        .generate("Once upon a time", &greedy(0), &mut |_| true)
        .unwrap();
    assert!(matches!(
        r.stop_reason,
        StopReason::ContextFull | StopReason::Eog
    ));
}

#[test]
fn grammar_constrains_output_and_bad_grammar_is_invalid() {
    let mut c = ctx(512);
    let p = GenParams {
        grammar: Some(r#"root ::= ("yes" | "no")"#.into()),
        ..greedy(8)
    };
    let (t, _) = collect(&mut c, "Is the sky blue? Answer:", &p);
    assert!(t == "yes" || t == "no", "{t:?}");
    let bad = GenParams {
        grammar: Some("root ::= (".into()),
        ..greedy(8)
    };
    let e = c.generate("x", &bad, &mut |_| true).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArg);
}

#[test]
fn two_contexts_on_one_model_in_two_threads() {
    let m = model();
    let run = |m: Arc<Model>| {
        std::thread::spawn(move || {
            let mut c = Context::new(
                m,
                &ContextParams {
                    n_ctx: 256,
                    n_threads: 1,
                    ..Default::default()
                },
            )
            .unwrap();
            collect(&mut c, "The capital of France is", &greedy(8)).0
        })
    };
    let a = run(m.clone());
    let b = run(m.clone());
    assert_eq!(a.join().unwrap(), b.join().unwrap());
}

#[test]
fn load_from_buffer_matches_file_load() {
    let bytes = std::fs::read(model_path()).unwrap();
    let m = Model::load_from_buffer(&bytes, &ModelParams::default(), None).unwrap();
    assert_eq!(m.info(), model().info());
    drop(bytes);
    let mut c = Context::new(
        Arc::new(m),
        &ContextParams {
            n_ctx: 256,
            n_threads: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let (a, _) = collect(&mut c, "The capital of France is", &greedy(6));
    let (b, _) = collect(&mut ctx(256), "The capital of France is", &greedy(6));
    assert_eq!(a, b);
}

#[test]
fn progress_callback_can_cancel_the_load() {
    let mut seen = 0;
    let mut cb = |_p: f32| {
        seen += 1;
        false
    };
    let e = Model::load_with_progress(&model_path(), &ModelParams::default(), Some(&mut cb))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert!(seen >= 1);
}

fn tiny(b: tabagent::gguf::testgen::Builder) -> Context {
    let m = Model::load_from_buffer(&b.build(), &ModelParams::default(), None).unwrap();
    let cp = ContextParams {
        n_ctx: 128,
        ..Default::default()
    };
    Context::new(Arc::new(m), &cp).unwrap()
}

/// BOS is added when the model asks for it, and a prompt (or a template's output)
/// that already starts with the BOS text does not get a second one.
#[test]
fn bos_is_never_doubled() {
    use tabagent::gguf::{testgen, Value};
    let mut c = tiny(testgen::tiny_llama().set("tokenizer.ggml.add_bos_token", Value::Bool(true)));
    let bos = c.model().info().bos;
    assert!(bos >= 0);
    for prompt in ["Hello", "<|endoftext|>Hello"] {
        c.reset();
        c.generate(prompt, &greedy(1), &mut |_| true).unwrap();
        let t = c.cached_tokens();
        assert_eq!(t[0], bos, "{prompt}");
        assert_ne!(t[1], bos, "{prompt}: BOS doubled");
    }
    let toks = c.model().tokenize_prompt("<|endoftext|>Hi").unwrap();
    assert_eq!(toks.iter().filter(|&&t| t == bos).count(), 1);
}

/// Chat on a model without a template: a clear UNSUPPORTED that says what to do,
/// and a template named for the call (built-in or text) works.
#[test]
fn chat_with_a_template_named_for_the_call() {
    use tabagent::gguf::testgen;
    let mut c = tiny(testgen::tiny_llama().without("tokenizer.chat_template"));
    let msgs = [ChatMessage::new("user", "Hi")];
    let e = c.chat(&msgs, &greedy(2), &mut |_| true).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(
        e.message().contains("name one for the call"),
        "{}",
        e.message()
    );
    for t in [
        "chatml",
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n",
    ] {
        let p = GenParams {
            chat_template: Some(t.into()),
            ..greedy(2)
        };
        let r = c.chat(&msgs, &p, &mut |_| true).unwrap();
        assert_eq!(r.n_generated, 2, "{t}");
    }
}

/// A context above the model's training context is allowed, and says so in the
/// log; the size in use is the rounded one `n_ctx()` reports.
#[test]
fn n_ctx_above_training_is_logged_and_rounded() {
    use std::sync::Mutex;
    use tabagent::gguf::testgen;
    use tabagent::log::{set_sink, LogLevel};
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let l2 = lines.clone();
    set_sink(
        Some(Box::new(move |_, m| l2.lock().unwrap().push(m.to_string()))),
        LogLevel::Warn,
    );
    let m = Model::load_from_buffer(
        &testgen::tiny_llama().build(),
        &ModelParams::default(),
        None,
    )
    .unwrap();
    let cp = ContextParams {
        n_ctx: 300,
        ..Default::default()
    };
    let c = Context::new(Arc::new(m), &cp).unwrap();
    set_sink(None, LogLevel::Warn);
    assert_eq!(c.n_ctx(), 512);
    let lines = lines.lock().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("n_ctx 300") && l.contains("training context 256")),
        "{lines:?}"
    );
}
