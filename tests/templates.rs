//! Chat-template fidelity: every template of the corpus in tests/templates/ (real
//! templates of many model families) rendered over every conversation of
//! cases.json, by the library and by the reference (Python's jinja2 configured as
//! transformers configures it, tests/templates/reference.py, run here). Where the
//! reference renders, the library's prompt must be byte-identical, except the
//! documented exceptions in exceptions.json; where the reference raises, the
//! library must fail cleanly too. The hostile templates in tests/templates/hostile
//! must end in an error within a fixed budget.
//!
//! The reference needs the test virtualenv (`scripts/setup.sh`; `TABAGENT_PYTHON`
//! overrides the interpreter).

use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tabagent::engine::template::{render, ChatInput, RenderError};
use tabagent::engine::ChatMessage;

/// strftime_now's clock in both renderers: reference.py's default, 2025-03-14
/// 09:26:53, as Unix seconds (UTC).
const NOW: i64 = 1_741_944_413;
/// The share of reference-renderable pairs that must match byte for byte.
const TARGET: f64 = 0.98;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/templates")
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("TABAGENT_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} missing: run scripts/setup.sh (the reference renderer needs jinja2)",
        venv.display()
    );
    venv
}

fn read_json(p: &Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn reference() -> Vec<Json> {
    let out =
        std::env::temp_dir().join(format!("tabagent-template-ref-{}.json", std::process::id()));
    let st = std::process::Command::new(python())
        .arg(dir().join("reference.py"))
        .arg("--out")
        .arg(&out)
        .status()
        .expect("run reference.py");
    assert!(st.success(), "reference.py failed: {st}");
    let v = read_json(&out);
    let _ = std::fs::remove_file(&out);
    v.as_array().unwrap().clone()
}

fn messages(case: &Json) -> Vec<ChatMessage> {
    let s = |m: &Json, k: &str| m.get(k).and_then(Json::as_str).map(str::to_owned);
    case["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| ChatMessage {
            role: s(m, "role").unwrap(),
            content: s(m, "content").unwrap_or_default(),
            name: s(m, "name"),
            tool_call_id: s(m, "tool_call_id"),
            tool_calls: m
                .get("tool_calls")
                .filter(|v| !v.is_null())
                .map(|v| v.to_string()),
            reasoning_content: s(m, "reasoning_content"),
        })
        .collect()
}

/// Render one pair with the library, given the manifest entry and the case.
fn library(source: &str, entry: &Json, case: &Json) -> Result<String, RenderError> {
    let mut special: Vec<(&str, String)> = Vec::new();
    for k in ["bos_token", "eos_token"] {
        if let Some(t) = entry.get(k).and_then(Json::as_str) {
            special.push((k, t.to_owned()));
        }
    }
    // The other named special tokens (some are lists) and the case's own variables
    // go in as extra variables, the case's last (as transformers' kwargs).
    let mut vars = serde_json::Map::new();
    if let Some(o) = entry.get("special").and_then(Json::as_object) {
        for (k, v) in o {
            if !v.is_null() {
                vars.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(o) = case.get("extra").and_then(Json::as_object) {
        vars.extend(o.clone());
    }
    let vars = Json::Object(vars).to_string();
    let tools = case
        .get("tools")
        .filter(|t| !t.is_null())
        .map(Json::to_string);
    let msgs = messages(case);
    render(
        source,
        &ChatInput {
            messages: &msgs,
            tools: tools.as_deref(),
            vars: Some(&vars),
            add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap_or(false),
            now: Some(NOW),
        },
        &special,
    )
}

#[test]
fn corpus_matches_the_reference() {
    let manifest = read_json(&dir().join("manifest.json"));
    let cases = read_json(&dir().join("cases.json"));
    let exceptions = read_json(&dir().join("exceptions.json"));
    let excepted = |t: &str, c: &str| {
        exceptions["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["template"] == t && (e["case"] == c || e["case"] == "*"))
    };
    let entries: BTreeMap<String, &Json> = manifest
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["file"].as_str().unwrap().to_owned(), e))
        .collect();
    let families: std::collections::BTreeSet<&str> = entries
        .values()
        .map(|e| e["family"].as_str().unwrap())
        .collect();
    let case_by_name: BTreeMap<&str, &Json> = cases
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c))
        .collect();

    let (mut renderable, mut identical, mut raising, mut raising_ok) = (0, 0, 0, 0);
    let mut mismatches = Vec::new();
    let mut unexpected_pass = Vec::new();
    for r in reference() {
        let t = r["template"].as_str().unwrap();
        let c = r["case"].as_str().unwrap();
        let source = std::fs::read_to_string(dir().join("corpus").join(t)).unwrap();
        let got = library(&source, entries[t], case_by_name[c]);
        if r["ok"].as_bool().unwrap() {
            renderable += 1;
            let want = r["output"].as_str().unwrap();
            match &got {
                Ok(s) if s == want => identical += 1,
                _ if excepted(t, c) => {}
                Ok(s) => mismatches.push(format!("{t} / {c}: {}", first_difference(want, s))),
                Err(e) => mismatches.push(format!("{t} / {c}: library failed: {e}")),
            }
        } else {
            raising += 1;
            match &got {
                Err(RenderError::Failed(_)) => raising_ok += 1,
                _ if excepted(t, c) => {}
                other => unexpected_pass.push(format!(
                    "{t} / {c}: reference raised {:?}, library gave {:?}",
                    r["error"].as_str().unwrap_or(""),
                    other
                        .as_ref()
                        .map(|s| s.chars().take(80).collect::<String>())
                )),
            }
        }
    }
    let share = identical as f64 / renderable as f64;
    eprintln!(
        "template fidelity: {identical}/{renderable} identical ({:.1}%), {} families; \
         {raising_ok}/{raising} raising pairs refused by the library too",
        share * 100.0,
        families.len()
    );
    for m in mismatches.iter().chain(&unexpected_pass) {
        eprintln!("  {m}");
    }
    assert!(families.len() >= 50, "only {} families", families.len());
    assert!(
        mismatches.is_empty() && unexpected_pass.is_empty(),
        "{} mismatches and {} pairs the reference refuses but the library renders, not in exceptions.json",
        mismatches.len(),
        unexpected_pass.len()
    );
    assert!(share >= TARGET, "{share}");
}

fn first_difference(want: &str, got: &str) -> String {
    let at = want
        .char_indices()
        .zip(got.chars())
        .find(|((_, a), b)| a != b)
        .map(|((i, _), _)| i)
        .unwrap_or(want.len().min(got.len()));
    let from = want[..at]
        .char_indices()
        .rev()
        .nth(40)
        .map_or(0, |(i, _)| i);
    let end = |s: &str| {
        s[at.min(s.len())..]
            .char_indices()
            .nth(40)
            .map_or(s.len(), |(i, _)| at + i)
    };
    format!(
        "at byte {at}: want {:?} got {:?}",
        &want[from..end(want)],
        got.get(from..end(got)).unwrap_or("")
    )
}

/// Hostile templates that the engine completes quickly (well within the budget)
/// where jinja2 fails, and why.
const BOUNDED_NOT_FAILING: &[(&str, &str)] = &[
    (
        "deep_filter_chain.jinja",
        "minijinja applies a chain of 10000 filters iteratively, in milliseconds; jinja2 recurses and fails",
    ),
    (
        "deep_unary.jinja",
        "minijinja parses a long run of unary operators in a loop, in milliseconds; jinja2 recurses and fails",
    ),
];

#[test]
fn hostile_templates_fail_within_budget() {
    // A template that escaped its budget must fail this test, not take the CI
    // machine's memory with it: cap this process's address space (no model here).
    let cap = libc::rlimit {
        rlim_cur: 6 << 30,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall on a stack value.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &cap) }, 0);
    let msgs = vec![
        ChatMessage::new("system", "s"),
        ChatMessage::new("user", "u"),
        ChatMessage::new("assistant", "a"),
        ChatMessage::new("user", "u2"),
    ];
    let mut n = 0;
    for e in std::fs::read_dir(dir().join("hostile")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "jinja") {
            continue;
        }
        n += 1;
        let source = std::fs::read_to_string(&p).unwrap();
        let t0 = Instant::now();
        let r = render(
            &source,
            &ChatInput {
                messages: &msgs,
                add_generation_prompt: true,
                ..Default::default()
            },
            &[("bos_token", "<s>".into())],
        );
        let took = t0.elapsed();
        eprintln!(
            "{}: {:?} in {took:?}",
            p.display(),
            r.as_ref().map(String::len)
        );
        let name = p.file_name().unwrap().to_str().unwrap();
        match &r {
            Ok(out) if BOUNDED_NOT_FAILING.iter().any(|(n, _)| *n == name) => {
                assert!(out.len() < 1 << 20, "{name}: {} bytes", out.len())
            }
            Ok(_) => panic!("{} rendered", p.display()),
            Err(_) => {}
        }
        assert!(
            took < Duration::from_secs(5),
            "{} took {took:?}",
            p.display()
        );
    }
    assert!(n >= 15, "only {n} hostile templates");
}

fn test_model_path() -> PathBuf {
    match std::env::var_os("TABAGENT_TEST_MODEL") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var("HOME").unwrap())
            .join(".cache/tabagent/models/SmolLM2-135M-Instruct.Q4_1.gguf"),
    }
}

/// A context just large enough for the short chats these tests run.
fn small_context(model: std::sync::Arc<tabagent::engine::Model>) -> tabagent::engine::Context {
    use tabagent::engine::{Context, ContextParams};
    let p = ContextParams {
        n_ctx: 256,
        n_threads: 2,
        ..Default::default()
    };
    Context::new(model, &p).unwrap()
}

/// The lines of the library log that say which template path ran.
fn path_lines(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l.trim_end().to_owned())
        .filter(|l| l.contains("chat template: ") || l.contains("falling back to llama.cpp"))
        .collect()
}

/// Each path through `apply_chat_template` says so in the log: the model's own
/// template rendered by the Jinja engine, a built-in format named for the call,
/// and a template text the engine cannot parse handed to llama.cpp's built-ins.
#[test]
fn the_log_says_which_template_path_ran() {
    use std::sync::{Arc, Mutex};
    use tabagent::engine::{ChatOptions, GenParams, Model, ModelParams};
    use tabagent::log::{set_sink, LogLevel};
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let me = std::thread::current().id();
    let sink = lines.clone();
    set_sink(
        Some(Box::new(move |_, l: &str| {
            // Only this test's thread: others may log at the same time.
            if std::thread::current().id() == me {
                sink.lock().unwrap().push(l.to_owned());
            }
        })),
        LogLevel::Debug,
    );
    let take = || path_lines(&std::mem::take(&mut *lines.lock().unwrap()));
    let model = Arc::new(Model::load(&test_model_path(), &ModelParams::default()).unwrap());
    assert!(model.info().chat_template.is_some());
    let msgs = [ChatMessage::new("user", "Hello")];
    take();

    let own = model
        .apply_chat_template(&msgs, true, &ChatOptions::default())
        .unwrap();
    assert_eq!(take(), ["chat template: rendered by the Jinja engine"]);

    let opts = ChatOptions {
        template: Some("chatml"),
        ..Default::default()
    };
    let builtin = model.apply_chat_template(&msgs, true, &opts).unwrap();
    assert_eq!(
        take(),
        ["chat template: llama.cpp built-in format \"chatml\""]
    );
    assert!(
        builtin.contains("<|im_start|>user\nHello<|im_end|>"),
        "{builtin}"
    );
    assert_ne!(
        own, builtin,
        "SmolLM2's template adds a default system turn"
    );

    // Not Jinja that minijinja parses, but llama.cpp recognises ChatML in it.
    let opts = ChatOptions {
        template: Some("{% frobnicate %}<|im_start|>{{ x }}"),
        ..Default::default()
    };
    let fallback = model.apply_chat_template(&msgs, true, &opts).unwrap();
    let l = take();
    assert_eq!(l.len(), 1, "{l:?}");
    assert!(
        l[0].contains("chat template does not parse")
            && l[0].ends_with("falling back to llama.cpp's built-in format for this template"),
        "{l:?}"
    );
    assert_eq!(fallback, builtin);

    // A chat call takes the same path and says so.
    let mut ctx = small_context(model);
    let p = GenParams {
        temperature: 0.0,
        max_tokens: 1,
        ..Default::default()
    };
    ctx.chat(&msgs, &p, &mut |_| true).unwrap();
    assert_eq!(take(), ["chat template: rendered by the Jinja engine"]);
    set_sink(None, LogLevel::Warn);
}

/// A hostile template inside a model file (its `tokenizer.chat_template`) ends a
/// chat call in a clean invalid-argument error within the budget, and the model
/// and context still chat with a named template afterwards.
#[test]
fn hostile_template_in_a_gguf_fails_chat_cleanly() {
    use std::sync::Arc;
    use tabagent::engine::{GenParams, Model, ModelParams};
    use tabagent::gguf::{testgen::Builder, GgufInfo, Value};
    use tabagent::ErrorKind;
    let bytes = std::fs::read(test_model_path()).unwrap();
    let info = GgufInfo::parse(&bytes, "test model").unwrap();
    let base = Builder::from_gguf(&info, &bytes);
    drop(bytes);
    let msgs = [
        ChatMessage::new("system", "s"),
        ChatMessage::new("user", "u"),
    ];
    for name in ["nested_loop_1e12.jinja", "huge_output_doubling.jinja"] {
        let tmpl = std::fs::read_to_string(dir().join("hostile").join(name)).unwrap();
        let p = std::env::temp_dir().join(format!("tabagent-{}-{name}.gguf", std::process::id()));
        std::fs::write(
            &p,
            base.clone()
                .set("tokenizer.chat_template", Value::Str(tmpl.clone()))
                .build(),
        )
        .unwrap();
        let model = Model::load(&p, &ModelParams::default());
        let _ = std::fs::remove_file(&p);
        let model = Arc::new(model.unwrap());
        assert_eq!(model.info().chat_template.as_deref(), Some(tmpl.as_str()));
        let mut ctx = small_context(model);
        let mut p = GenParams {
            temperature: 0.0,
            max_tokens: 4,
            ..Default::default()
        };
        let t0 = Instant::now();
        let e = ctx.chat(&msgs, &p, &mut |_| true).unwrap_err();
        let took = t0.elapsed();
        eprintln!("{name} in a GGUF: {e} in {took:?}");
        assert_eq!(e.kind(), ErrorKind::InvalidArg, "{name}: {e}");
        assert!(took < Duration::from_secs(5), "{name} took {took:?}");
        p.chat_template = Some("chatml".into());
        let mut text = String::new();
        let r = ctx
            .chat(&msgs, &p, &mut |s| {
                text.push_str(s);
                true
            })
            .unwrap();
        assert!(r.n_generated > 0 && !text.is_empty(), "{name}: {r:?}");
    }
}
