//! `tabagent run MODEL [PROMPT]`: one streamed answer, or an interactive chat.
//! Ctrl-C during an answer cancels that answer (the sequence's `AbortHandle`);
//! at the prompt it is the line editor's (clears the line; Ctrl-D or /quit exits).

use crate::common::{self, err, CliResult};
use rustyline::error::ReadlineError;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tabagent::engine::{
    AbortHandle, ChatMessage, Context, ContextParams, GenParams, Sequence, StopReason,
};

#[derive(clap::Args)]
pub struct RunArgs {
    /// A .gguf path or org/name[:VARIANT] (pulled when missing).
    model: String,
    /// Answer this prompt and exit; without it, chat interactively.
    prompt: Option<String>,
    #[arg(long)]
    system: Option<String>,
    #[arg(long)]
    temperature: Option<f32>,
    #[arg(long)]
    top_p: Option<f32>,
    #[arg(long)]
    top_k: Option<i32>,
    #[arg(long)]
    max_tokens: Option<i32>,
    #[arg(long)]
    seed: Option<u32>,
    #[arg(long, default_value_t = 4096)]
    ctx_size: u32,
    #[arg(long, default_value_t = 0)]
    threads: i32,
}

const HELP: &str = "\
/help              this help
/clear             forget the conversation
/save FILE         save the conversation (JSON) and the KV state (FILE.kv)
/load FILE         load a conversation saved with /save
/history           print the conversation
/set KEY VALUE     temperature, top_p, top_k, min_p, max_tokens, seed, repeat_penalty, system
/quit              exit (also Ctrl-D)
Ctrl-C stops the answer being written.";

/// The handle of the answer being generated, for the SIGINT handler.
static RUNNING: Mutex<Option<AbortHandle>> = Mutex::new(None);

struct Chat {
    seq: Sequence,
    params: GenParams,
    system: Option<String>,
    messages: Vec<ChatMessage>,
}

impl Chat {
    fn conversation(&self) -> Vec<ChatMessage> {
        let mut m = Vec::new();
        if let Some(s) = &self.system {
            m.push(ChatMessage::new("system", s.clone()));
        }
        m.extend(self.messages.iter().cloned());
        m
    }

    /// Stream the reply to `user` to stdout; keeps it in the conversation.
    fn ask(&mut self, user: &str) -> CliResult<StopReason> {
        self.messages.push(ChatMessage::new("user", user));
        let msgs = self.conversation();
        let mut answer = String::new();
        let mut out = std::io::stdout();
        if let Ok(mut r) = RUNNING.lock() {
            *r = Some(self.seq.abort_handle());
        }
        let r = self.seq.chat(&msgs, &self.params, &mut |t: &str| {
            answer.push_str(t);
            let _ = out.write_all(t.as_bytes());
            let _ = out.flush();
            true
        });
        if let Ok(mut r) = RUNNING.lock() {
            *r = None;
        }
        println!();
        match r {
            Ok(res) => {
                self.messages.push(ChatMessage::new("assistant", answer));
                Ok(res.stop_reason)
            }
            Err(e) => {
                self.messages.pop();
                Err(err(e))
            }
        }
    }

    fn save(&self, file: &Path) -> CliResult<String> {
        let v = json!({
            "system": self.system,
            "messages": self.messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect::<Vec<_>>(),
            "settings": {
                "temperature": self.params.temperature,
                "top_p": self.params.top_p,
                "top_k": self.params.top_k,
                "min_p": self.params.min_p,
                "max_tokens": self.params.max_tokens,
                "seed": self.params.seed,
                "repeat_penalty": self.params.repeat_penalty,
            },
        });
        let text = serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?;
        std::fs::write(file, text).map_err(|e| format!("{}: {e}", file.display()))?;
        let kv = kv_path(file);
        Ok(match self.seq.save_state(&kv) {
            Ok(n) => format!(
                "saved {} messages and {n} tokens of KV state",
                self.messages.len()
            ),
            Err(e) => format!(
                "saved {} messages (no KV state: {})",
                self.messages.len(),
                e.message()
            ),
        })
    }

    fn load(&mut self, file: &Path) -> CliResult<String> {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        let msgs = v
            .get("messages")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("{}: no `messages` array", file.display()))?;
        let mut out = Vec::new();
        for m in msgs {
            let role = m.get("role").and_then(Value::as_str);
            let content = m.get("content").and_then(Value::as_str);
            match (role, content) {
                (Some(r), Some(c)) => out.push(ChatMessage::new(r, c)),
                _ => {
                    return Err(format!(
                        "{}: a message lacks role or content",
                        file.display()
                    ))
                }
            }
        }
        self.messages = out;
        self.system = v.get("system").and_then(Value::as_str).map(str::to_string);
        if let Some(s) = v.get("settings").and_then(Value::as_object) {
            for (k, val) in s {
                let _ = self.set(k, &val.to_string());
            }
        }
        let kv = kv_path(file);
        let state = if kv.exists() {
            match self.seq.load_state(&kv) {
                Ok(n) => format!(" and {n} tokens of KV state"),
                Err(e) => format!(" (KV state not restored: {})", e.message()),
            }
        } else {
            self.seq.reset();
            String::new()
        };
        Ok(format!("loaded {} messages{state}", self.messages.len()))
    }

    fn set(&mut self, key: &str, value: &str) -> CliResult<()> {
        let f = || {
            value
                .trim()
                .parse::<f32>()
                .map_err(|_| format!("{key}: not a number: {value}"))
        };
        let i = || {
            value
                .trim()
                .parse::<i64>()
                .map_err(|_| format!("{key}: not an integer: {value}"))
        };
        let p = &mut self.params;
        match key {
            "temperature" => p.temperature = f()?.max(0.0),
            "top_p" => p.top_p = f()?.clamp(0.01, 1.0),
            "top_k" => p.top_k = i()?.clamp(0, i32::MAX as i64) as i32,
            "min_p" => p.min_p = f()?.clamp(0.0, 1.0),
            "max_tokens" => p.max_tokens = i()?.clamp(0, i32::MAX as i64) as i32,
            "seed" => p.seed = (i()? as u64 & 0xffff_ffff) as u32,
            "repeat_penalty" => p.repeat_penalty = f()?.max(0.01),
            "system" => self.system = Some(value.to_string()).filter(|s| !s.is_empty()),
            _ => return Err(format!("unknown setting {key}; /help lists them")),
        }
        Ok(())
    }
}

fn kv_path(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".kv");
    PathBuf::from(s)
}

pub fn run(a: RunArgs) -> CliResult<()> {
    let mut progress = |_: &str, _: u64, _: u64| true;
    let path = common::resolve_model(&a.model, &mut progress)?;
    let model = common::load_model(&path)?;
    let ctx = Context::new(
        model,
        &ContextParams {
            n_ctx: a.ctx_size,
            n_threads: a.threads,
            ..ContextParams::default()
        },
    )
    .map_err(err)?;
    let seq = ctx.new_sequence().map_err(err)?;
    let mut params = GenParams {
        max_tokens: 0,
        ..GenParams::default()
    };
    if let Some(t) = a.temperature {
        params.temperature = t;
    }
    if let Some(t) = a.top_p {
        params.top_p = t;
    }
    if let Some(k) = a.top_k {
        params.top_k = k;
    }
    if let Some(n) = a.max_tokens {
        params.max_tokens = n;
    }
    if let Some(s) = a.seed {
        params.seed = s;
    }
    let mut chat = Chat {
        seq,
        params,
        system: a.system.clone(),
        messages: Vec::new(),
    };
    let interactive = a.prompt.is_none();
    let _ = ctrlc::set_handler(move || {
        let h = RUNNING.lock().ok().and_then(|r| r.clone());
        match h {
            Some(h) => h.cancel(),
            None if interactive => {}
            None => std::process::exit(130),
        }
    });
    if let Some(p) = a.prompt {
        chat.ask(&p)?;
        return Ok(());
    }
    repl(&mut chat)
}

fn repl(chat: &mut Chat) -> CliResult<()> {
    let mut ed = rustyline::DefaultEditor::new().map_err(|e| format!("line editor: {e}"))?;
    eprintln!("tabagent chat; /help for commands, /quit or Ctrl-D to exit");
    loop {
        let line = match ed.readline(">>> ") {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(format!("line editor: {e}")),
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let _ = ed.add_history_entry(line);
        if let Some(cmd) = line.strip_prefix('/') {
            let (name, rest) = cmd.split_once(' ').unwrap_or((cmd, ""));
            let rest = rest.trim();
            let r: CliResult<Option<String>> = match name {
                "help" | "?" => Ok(Some(HELP.to_string())),
                "quit" | "exit" | "bye" => break,
                "clear" => {
                    chat.messages.clear();
                    chat.seq.reset();
                    Ok(Some("conversation cleared".into()))
                }
                "history" => Ok(Some(
                    chat.conversation()
                        .iter()
                        .map(|m| format!("[{}] {}", m.role, m.content))
                        .collect::<Vec<_>>()
                        .join("\n"),
                )),
                "save" if !rest.is_empty() => chat.save(Path::new(rest)).map(Some),
                "load" if !rest.is_empty() => chat.load(Path::new(rest)).map(Some),
                "set" => match rest.split_once(' ') {
                    Some((k, v)) => chat
                        .set(k, v.trim())
                        .map(|_| Some(format!("{k} = {}", v.trim()))),
                    None => Err("usage: /set KEY VALUE".into()),
                },
                _ => Err(format!("unknown command /{name}; /help lists them")),
            };
            match r {
                Ok(Some(msg)) => println!("{msg}"),
                Ok(None) => {}
                Err(e) => println!("error: {e}"),
            }
            continue;
        }
        match chat.ask(line) {
            Ok(StopReason::Cancelled) => println!("[stopped]"),
            Ok(StopReason::ContextFull) => println!("[the context is full: /clear to start over]"),
            Ok(_) => {}
            Err(e) => println!("error: {e}"),
        }
    }
    Ok(())
}
