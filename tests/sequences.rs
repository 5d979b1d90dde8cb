//! Sequences: many conversations on one context, decoded in shared batches;
//! cancellation, freeing, context full and context shift per sequence; KV state
//! files across processes. Against the real test model (TABAGENT_TEST_MODEL).
//!
//! Greedy texts are compared with the text each sequence produces alone. Where
//! the scheduling is the same (one sequence after another) the comparison is
//! exact. When several sequences read prompt tokens in the same step, llama.cpp
//! splits the batch into ubatches with an equal number of tokens per sequence
//! (`split_equal`, needed for one KV stream per sequence), so a sequence's prompt is
//! cut into other chunks than when it runs alone, the kernels sum in another order,
//! and a near-tie between two tokens can flip in a reply. The tolerance there
//! ([`assert_close`]): every reply begins with the same first tokens as its
//! reference (6 for short prompts; 3 where prompt tails of several sequences are
//! read in lockstep, which cuts them into single tokens) and most match entirely;
//! wrong KV cells (a real bug) change a reply from its first token. The exact
//! checks are the sequential ones.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tabagent::engine::{
    Context, ContextParams, GenParams, GenResult, Model, ModelParams, Sequence, StopReason,
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
    M.get_or_init(|| Arc::new(Model::load(&model_path(), &ModelParams::default()).unwrap()))
        .clone()
}

fn ctx(n_ctx: u32, n_seq: u32, n_batch: u32) -> Context {
    Context::new(
        model(),
        &ContextParams {
            n_ctx,
            n_seq_max: n_seq,
            n_batch,
            n_ubatch: n_batch,
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

fn gen(s: &mut Sequence, prompt: &str, p: &GenParams) -> (String, GenResult) {
    let mut out = String::new();
    let r = s
        .generate(prompt, p, &mut |t| {
            out.push_str(t);
            true
        })
        .unwrap();
    (out, r)
}

/// See the module comment for why concurrent replies get this tolerance.
fn assert_close(what: &str, got: &[String], want: &[&String], first: usize, min_whole: usize) {
    let toks = |t: &str| model().tokenize(t, false, false).unwrap();
    let mut whole = 0;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let (a, b) = (toks(g), toks(w));
        let n = first.min(b.len());
        assert!(
            a.len() >= n && a[..n] == b[..n],
            "{what} {i}: the reply differs early\n got: {g:?}\nwant: {w:?}"
        );
        whole += (g == *w) as usize;
    }
    assert!(
        whole >= min_whole,
        "{what}: only {whole} of {} replies match entirely",
        got.len()
    );
}

fn chatml(user: &str) -> String {
    format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
}

const QUESTIONS: [&str; 4] = [
    "What is the capital of France?",
    "Name three colors of the rainbow.",
    "Why is the sky blue? Answer briefly.",
    "Write one sentence about cats.",
];

/// Each question's greedy answer on a sequence of its own, one at a time.
fn solo(c: &Context, prompts: &[String], p: &GenParams) -> Vec<String> {
    prompts
        .iter()
        .map(|q| {
            let mut s = c.new_sequence().unwrap();
            gen(&mut s, q, p).0
        })
        .collect()
}

#[test]
fn concurrent_sequences_produce_what_each_produces_alone() {
    let c = ctx(4096, 4, 512);
    let prompts: Vec<String> = QUESTIONS.iter().map(|q| chatml(q)).collect();
    let p = greedy(40);
    let alone = solo(&c, &prompts, &p);
    for round in 0..2 {
        let handles: Vec<_> = prompts
            .iter()
            .cloned()
            .map(|q| {
                let mut s = c.new_sequence().unwrap();
                let p = p.clone();
                std::thread::spawn(move || gen(&mut s, &q, &p))
            })
            .collect();
        let got: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(got.iter().all(|(_, r)| r.n_generated > 0));
        let texts: Vec<String> = got.into_iter().map(|g| g.0).collect();
        assert_close(
            &format!("round {round}"),
            &texts,
            &alone.iter().collect::<Vec<_>>(),
            6,
            3,
        );
    }
}

#[test]
fn the_context_calls_use_a_sequence_and_count_against_n_seq_max() {
    let mut c = ctx(1024, 2, 512);
    assert_eq!(c.n_seq_max(), 2);
    assert_eq!(c.n_ctx_seq(), 512);
    let a = c.new_sequence().unwrap();
    let _b = c.new_sequence().unwrap();
    assert_eq!(c.new_sequence().unwrap_err().kind(), ErrorKind::Busy);
    let e = c.generate("Hi", &greedy(2), &mut |_| true).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy);
    drop(a);
    // The freed id serves the context's own calls now.
    let r = c.generate("Hi", &greedy(2), &mut |_| true).unwrap();
    assert!(r.n_generated > 0);
    assert!(!c.cached_tokens().is_empty());
}

#[test]
fn cancel_one_sequence_mid_prompt_and_one_mid_generation_while_another_finishes() {
    // Small batches make the long prompt take many steps.
    let c = ctx(4096, 3, 16);
    let p = greedy(48);
    let q = chatml(QUESTIONS[0]);
    let alone = solo(&c, std::slice::from_ref(&q), &p).remove(0);

    let long = chatml(&"Tell me about the history of the printing press. ".repeat(40));
    let mut a = c.new_sequence().unwrap();
    let abort_a = a.abort_handle();
    let ta = std::thread::spawn(move || {
        let r = gen(&mut a, &long, &greedy(16)).1;
        (r, a.cached_tokens().len())
    });
    // A must be queued before B starts, or B could finish its tokens before A's
    // prompt is read at all (a starved thread on a loaded machine).
    let t0 = std::time::Instant::now();
    while !abort_a.is_running() {
        assert!(t0.elapsed() < Duration::from_secs(120), "A never started");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut b = c.new_sequence().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let tb = std::thread::spawn(move || {
        let mut n = 0;
        b.generate(&chatml(QUESTIONS[1]), &greedy(64), &mut |_| {
            n += 1;
            let _ = tx.send(());
            n < 3
        })
        .unwrap()
    });
    let mut s = c.new_sequence().unwrap();
    let other = std::thread::spawn(move || gen(&mut s, &q, &p).0);
    // B answering means steps ran since A's prompt started: prompts share each
    // step's room, so A has read part of its prompt, far from all of it.
    rx.recv_timeout(Duration::from_secs(120)).unwrap();
    abort_a.cancel();
    let (ra, held) = ta.join().unwrap();
    assert_eq!(ra.stop_reason, StopReason::Cancelled);
    assert_eq!(ra.n_generated, 0, "cancelled during its prompt");
    assert!(
        held > 0 && held < ra.n_prompt as usize,
        "{held} of {}",
        ra.n_prompt
    );
    let rb = tb.join().unwrap();
    assert_eq!(rb.stop_reason, StopReason::Cancelled);
    assert!(rb.n_generated >= 3);
    assert_eq!(other.join().unwrap(), alone);
}

#[test]
fn a_sequence_freed_while_others_run_leaves_them_intact() {
    let c = ctx(4096, 3, 512);
    let p = greedy(64);
    let q = chatml(QUESTIONS[2]);
    let alone = solo(&c, std::slice::from_ref(&q), &p).remove(0);
    let mut s = c.new_sequence().unwrap();
    let runner = std::thread::spawn(move || gen(&mut s, &q, &p).0);
    for q in &QUESTIONS[..3] {
        let mut t = c.new_sequence().unwrap();
        let (text, _) = gen(&mut t, &chatml(q), &greedy(4));
        assert!(!text.is_empty());
        drop(t);
    }
    // Dropping the context first is allowed too: the sequence keeps it alive.
    drop(c);
    assert_eq!(runner.join().unwrap(), alone);
}

/// A grammar that allows no end for `n` characters: generation runs until the
/// window is full (or max_tokens).
fn endless(n: usize, max_tokens: i32) -> GenParams {
    // llama.cpp allows at most 2000 repetitions per item: chain items of 1000.
    let items = vec!["x"; n.div_ceil(1000)].join(" ");
    GenParams {
        grammar: Some(format!("root ::= {items}\nx ::= [a-z ]{{1000}}")),
        ..greedy(max_tokens)
    }
}

#[test]
fn a_full_window_stops_only_its_own_sequence() {
    // Two sequences of 256 tokens each.
    let c = ctx(512, 2, 512);
    assert_eq!(c.n_ctx_seq(), 256);
    let q = chatml(QUESTIONS[3]);
    let p = greedy(24);
    let alone = solo(&c, std::slice::from_ref(&q), &p).remove(0);
    let mut a = c.new_sequence().unwrap();
    let ta =
        std::thread::spawn(move || gen(&mut a, &chatml("Write many words."), &endless(2000, 0)).1);
    let mut b = c.new_sequence().unwrap();
    let (text, _) = gen(&mut b, &q, &p);
    let ra = ta.join().unwrap();
    assert_eq!(ra.stop_reason, StopReason::ContextFull);
    assert!(ra.n_prompt + ra.n_generated >= 250, "{ra:?}");
    assert_eq!(text, alone);
    // A prompt that cannot fit one sequence's window is refused before any work.
    let e = b
        .generate(&"word ".repeat(300), &greedy(1), &mut |_| true)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ContextFull);
    assert!(e.message().contains("n_seq_max"), "{}", e.message());
}

#[test]
fn context_shift_keeps_n_keep_tokens_and_goes_on() {
    let c = ctx(256, 1, 512);
    let mut s = c.new_sequence().unwrap();
    let prompt = chatml("Write a long list of words.");
    let n_keep = model().tokenize_prompt(&prompt).unwrap().len();
    let mut text = String::new();
    let p = GenParams {
        context_shift: true,
        n_keep: n_keep as u32,
        ..endless(6000, 600)
    };
    let r = s
        .generate(&prompt, &p, &mut |t| {
            text.push_str(t);
            true
        })
        .unwrap();
    assert_eq!(r.stop_reason, StopReason::MaxTokens, "{r:?}");
    assert_eq!(r.n_generated, 600);
    assert!(r.n_shifts >= 2, "{r:?}");
    assert!(r.n_shifted as usize >= 600 - 256, "{r:?}");
    assert!(text.chars().all(|ch| ch.is_ascii_lowercase() || ch == ' '));
    let held = s.cached_tokens();
    let prompt_tokens = model().tokenize_prompt(&prompt).unwrap();
    assert_eq!(
        &held[..n_keep],
        &prompt_tokens[..],
        "the kept prefix is intact"
    );
    assert!(held.len() < 256);
    // The cells' positions agree with the token list: a call continuing exactly
    // these tokens reuses all but the last and decodes fine.
    let r2 = s.run(&held, &greedy(4), &mut |_| true).unwrap();
    assert_eq!(r2.n_reused as usize, held.len() - 1);
    assert!(r2.n_generated > 0);
    // Without the opt-in the same call stops at the full window.
    let mut s2 = c.new_sequence();
    assert!(s2.is_err(), "n_seq_max 1: one sequence at a time");
    drop(s);
    s2 = c.new_sequence();
    let r3 = gen(&mut s2.unwrap(), &prompt, &endless(6000, 600)).1;
    assert_eq!(r3.stop_reason, StopReason::ContextFull);
    assert_eq!(r3.n_shifts, 0);
}

#[test]
fn shared_prefixes_are_evaluated_once() {
    let c = ctx(4096, 4, 512);
    let doc = "The library answers questions about a long document. ".repeat(40);
    let prompts: Vec<String> = QUESTIONS
        .iter()
        .map(|q| chatml(&format!("{doc}\n{q}")))
        .collect();
    let prefix = {
        let a = model().tokenize_prompt(&prompts[0]).unwrap();
        let b = model().tokenize_prompt(&prompts[1]).unwrap();
        a.iter().zip(&b).take_while(|(x, y)| x == y).count()
    };
    assert!(prefix > 300, "{prefix}");
    let p = greedy(24);
    // References on a context of the same layout, one sequence at a time. A
    // sequence that copies the prefix evaluates only its own tail, in a smaller
    // batch than a whole prompt: the kernels sum in another order, so its exact
    // reference evaluates the prefix first, then the rest.
    let c1 = ctx(4096, 4, 512);
    let whole = solo(&c1, &prompts, &p);
    let split: Vec<String> = prompts
        .iter()
        .map(|q| {
            let mut s = c1.new_sequence().unwrap();
            let toks = model().tokenize_prompt(q).unwrap();
            s.run(&toks[..prefix], &greedy(1), &mut |_| true).unwrap();
            let (text, r) = gen(&mut s, q, &p);
            assert_eq!(r.n_reused as usize, prefix);
            text
        })
        .collect();
    drop(c1);
    // One after another: each later sequence copies the prefix from the first.
    let mut seqs: Vec<Sequence> = (0..4).map(|_| c.new_sequence().unwrap()).collect();
    for (i, s) in seqs.iter_mut().enumerate() {
        let (text, r) = gen(s, &prompts[i], &p);
        let want = if i == 0 { &whole[i] } else { &split[i] };
        assert_eq!(r.n_reused as usize, if i == 0 { 0 } else { prefix });
        assert_eq!(&text, want, "sequential, question {i}");
    }
    seqs.iter_mut().for_each(Sequence::reset);
    let handles: Vec<_> = prompts
        .iter()
        .cloned()
        .zip(seqs)
        .map(|(q, mut s)| {
            let p = p.clone();
            std::thread::spawn(move || gen(&mut s, &q, &p))
        })
        .collect();
    let got: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let sharing = got
        .iter()
        .filter(|(_, r)| r.n_reused as usize == prefix)
        .count();
    assert!(
        sharing >= 3,
        "{:?}",
        got.iter().map(|g| g.1.n_reused).collect::<Vec<_>>()
    );
    let want: Vec<&String> = got
        .iter()
        .enumerate()
        .map(|(i, (_, r))| {
            if r.n_reused as usize == prefix {
                &split[i]
            } else {
                &whole[i]
            }
        })
        .collect();
    let texts: Vec<String> = got.into_iter().map(|g| g.0).collect();
    assert_close("concurrent shared prefix", &texts, &want, 3, 2);
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tabagent-seq-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// The child half of the cross-process test: restores a state file and
/// continues the conversation (does nothing unless the parent set the variables).
#[test]
fn state_child() {
    let Some(file) = std::env::var_os("TABAGENT_STATE_FILE") else {
        return;
    };
    let tokens: Vec<i32> = std::env::var("TABAGENT_STATE_TOKENS")
        .unwrap()
        .split(',')
        .map(|t| t.parse().unwrap())
        .collect();
    let c = ctx(2048, 2, 512);
    let mut s = c.new_sequence().unwrap();
    let n = s.load_state(std::path::Path::new(&file)).unwrap();
    let mut text = String::new();
    let r = s
        .run(&tokens, &greedy(24), &mut |t| {
            text.push_str(t);
            true
        })
        .unwrap();
    println!("CHILD restored={n} reused={} text={text:?}", r.n_reused);
}

#[test]
fn state_round_trip_across_processes() {
    let c = ctx(2048, 2, 512);
    let mut s = c.new_sequence().unwrap();
    let conv = chatml(&format!(
        "{} Summarise the text above.",
        "A state file holds a sequence's KV cells. ".repeat(20)
    ));
    gen(&mut s, &conv, &greedy(16));
    let file = scratch("conv.kv");
    let held = s.cached_tokens();
    assert_eq!(s.save_state(&file).unwrap(), held.len());
    let mut next = held.clone();
    next.extend(
        model()
            .tokenize(" Thanks! And in French?", false, true)
            .unwrap(),
    );
    // What this process answers from the same cells.
    let mut want = String::new();
    let r = s
        .run(&next, &greedy(24), &mut |t| {
            want.push_str(t);
            true
        })
        .unwrap();
    assert_eq!(r.n_reused as usize, held.len());
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "state_child", "--nocapture", "--test-threads=1"])
        .env("TABAGENT_STATE_FILE", &file)
        .env(
            "TABAGENT_STATE_TOKENS",
            next.iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(","),
        )
        .env("TABAGENT_TEST_MODEL", model_path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.find("CHILD ").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no child line in: {stdout}"));
    assert_eq!(
        line,
        format!(
            "CHILD restored={} reused={} text={want:?}",
            held.len(),
            held.len()
        )
    );
}

#[test]
fn state_files_from_another_model_or_damaged_are_refused() {
    let c = ctx(2048, 2, 512);
    let mut s = c.new_sequence().unwrap();
    gen(&mut s, &chatml(QUESTIONS[0]), &greedy(8));
    let good = scratch("good.kv");
    s.save_state(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    let mut t = c.new_sequence().unwrap();
    fn refused(t: &mut Sequence, b: &[u8], name: &str, kind: ErrorKind) -> tabagent::Error {
        let f = scratch(name);
        std::fs::write(&f, b).unwrap();
        // Something cached first, to prove a refusal leaves the sequence empty.
        gen(t, "Hello", &greedy(2));
        assert!(!t.cached_tokens().is_empty());
        let e = t.load_state(&f).unwrap_err();
        assert_eq!(e.kind(), kind, "{name}: {}", e.message());
        assert!(t.cached_tokens().is_empty(), "{name}");
        e
    }
    refused(
        &mut t,
        &bytes[..bytes.len() / 2],
        "half.kv",
        ErrorKind::InvalidArg,
    );
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 1;
    let e = refused(&mut t, &flipped, "flipped.kv", ErrorKind::InvalidArg);
    assert!(e.message().contains("checksum"), "{}", e.message());
    refused(&mut t, b"", "empty.kv", ErrorKind::InvalidArg);

    // Files that pass every check of their own (a crafted digest) with damaged
    // cells: llama.cpp's reader refuses broken structure; values it cannot judge
    // load. Either way: no crash, and a refusal leaves the sequence empty.
    use sha2::Digest;
    let head = 8 + 4 + 32 + 4;
    let n = u32::from_le_bytes(bytes[44..48].try_into().unwrap()) as usize;
    let blob_at = head + 4 * n + 8;
    let end = bytes.len() - 32;
    let mut rng = tabagent::gguf::testgen::seeded(7);
    for (k, cut) in [(0u8, 0usize), (1, 64), (2, end - blob_at - 16)] {
        let mut g = bytes[..end].to_vec();
        match k {
            0 => g[blob_at..].iter_mut().for_each(|b| *b = rng() as u8),
            1 => g[blob_at + cut..].iter_mut().for_each(|b| *b = 0xff),
            _ => g[blob_at + cut] ^= 0x80,
        }
        let d: [u8; 32] = sha2::Sha256::digest(&g).into();
        g.extend_from_slice(&d);
        let f = scratch(&format!("crafted{k}.kv"));
        std::fs::write(&f, &g).unwrap();
        match t.load_state(&f) {
            Ok(got) if k == 2 => assert_eq!(t.cached_tokens().len(), got),
            Ok(_) => panic!("crafted {k}: broken structure loaded"),
            Err(e) => {
                assert_eq!(
                    e.kind(),
                    ErrorKind::InvalidArg,
                    "crafted {k}: {}",
                    e.message()
                );
                assert!(t.cached_tokens().is_empty(), "crafted {k}");
            }
        }
    }

    // Fuzz llama.cpp's reader with a valid digest: flips and cuts where it keeps
    // its structure (cell counts, positions, sequence ids, layer and row sizes at
    // the start of the state, and the start of each layer's rows).
    let blob_len = end - blob_at;
    for i in 0..400u64 {
        let mut g = bytes[..end].to_vec();
        let r = rng();
        let at = blob_at
            + if i % 2 == 0 {
                (r % 512) as usize % blob_len
            } else {
                (r % blob_len as u64) as usize
            };
        if i % 10 == 9 {
            // A shorter state, its length field adjusted to match.
            g.truncate(at);
            let new_len = (at - blob_at) as u64;
            g[blob_at - 8..blob_at].copy_from_slice(&new_len.to_le_bytes());
        } else {
            g[at] ^= 1 << ((r >> 32) % 8);
        }
        let d: [u8; 32] = sha2::Sha256::digest(&g).into();
        g.extend_from_slice(&d);
        let f = scratch("fuzz.kv");
        std::fs::write(&f, &g).unwrap();
        match t.load_state(&f) {
            Ok(got) => assert_eq!(t.cached_tokens().len(), got, "fuzz {i}"),
            Err(e) => assert!(t.cached_tokens().is_empty(), "fuzz {i}: {}", e.message()),
        }
    }
    // The sequence still works after all that.
    t.reset();
    assert!(gen(&mut t, "Hello", &greedy(2)).1.n_generated > 0);

    // Another model: the tiny generated llama.
    let tiny = scratch("tiny.gguf");
    std::fs::write(&tiny, tabagent::gguf::testgen::tiny_llama().build()).unwrap();
    let tm = Arc::new(Model::load(&tiny, &ModelParams::default()).unwrap());
    // The fingerprint is the file's, whether loaded from a path or from memory.
    let from_memory = Model::load_from_buffer(
        &std::fs::read(&tiny).unwrap(),
        &ModelParams::default(),
        None,
    )
    .unwrap();
    assert!(tm.fingerprint().is_some());
    assert_eq!(tm.fingerprint(), from_memory.fingerprint());
    assert_ne!(tm.fingerprint(), model().fingerprint());
    let tc = Context::new(
        tm,
        &ContextParams {
            n_ctx: 256,
            n_threads: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let mut ts = tc.new_sequence().unwrap();
    let e = ts.load_state(&good).unwrap_err();
    assert!(e.message().contains("another model"), "{}", e.message());
    ts.run(&[1, 2, 3], &greedy(2), &mut |_| true).unwrap();
    let tiny_state = scratch("tiny.kv");
    ts.save_state(&tiny_state).unwrap();
    let e = refused(
        &mut t,
        &std::fs::read(&tiny_state).unwrap(),
        "other.kv",
        ErrorKind::InvalidArg,
    );
    assert!(e.message().contains("another model"), "{}", e.message());

    // The good file still loads, and the next call reuses it.
    let n = t.load_state(&good).unwrap();
    assert_eq!(t.cached_tokens().len(), n);
}

#[test]
fn a_panicking_callback_stops_its_job_before_the_sequence_is_reused() {
    let c = ctx(2048, 2, 512);
    let mut s = c.new_sequence().unwrap();
    let q = chatml(QUESTIONS[0]);
    let alone = gen(&mut s, &q, &greedy(16)).0;
    s.reset();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = s.generate(&q, &greedy(64), &mut |_| panic!("callback bug"));
    }));
    assert!(r.is_err());
    // The worker let go of the job: the same sequence answers as before.
    s.reset();
    assert_eq!(gen(&mut s, &q, &greedy(16)).0, alone);
}
