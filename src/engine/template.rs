//! Chat templates: a model's own Jinja template rendered the way Hugging Face
//! `transformers` renders it (`apply_chat_template`), with minijinja in a sandbox.
//!
//! What transformers sets up, and what is mirrored here: `trim_blocks` and
//! `lstrip_blocks`, loop controls, a `tojson` that is Python's `json.dumps`
//! (`ensure_ascii=False`), `raise_exception`, `strftime_now`, the `{% generation %}`
//! tag (rendered as its body), Python's string/dict/list methods, and printing of
//! values as Python's `str()` does (`None`, `True`, `{'a': 1}`). A template is
//! untrusted input: rendering runs on its own thread with a known stack, under a
//! fuel budget that bounds both time and memory, and a recursion limit.

use super::model::ChatMessage;
use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error as JError, ErrorKind as JKind, State, Value};
use std::fmt::Write as _;

/// Fuel for one render before the input's own size is added: about a million
/// template instructions or 64 MB of created data (minijinja charges one unit per
/// instruction and per 64 bytes made). Real templates use well under 1% of it.
pub const BASE_FUEL: u64 = 1_000_000;
/// Nesting depth (loops, ifs, macro calls) a template may reach.
pub const RECURSION_LIMIT: usize = 200;
/// Stack of the render thread: minijinja's parser and VM recurse.
const RENDER_STACK: usize = 16 << 20;
/// `strftime_now` formats longer than this are refused (a format is a template's
/// own text; nothing real needs more).
const MAX_STRFTIME_FORMAT: usize = 256;

/// What a template is rendered with, besides its text.
#[derive(Debug, Clone, Default)]
pub struct ChatInput<'a> {
    pub messages: &'a [ChatMessage],
    /// JSON array of tool definitions (OpenAI style), or None.
    pub tools: Option<&'a str>,
    /// JSON object of extra template variables (e.g. `{"enable_thinking": false}`).
    pub vars: Option<&'a str>,
    pub add_generation_prompt: bool,
    /// The clock `strftime_now` reads, as Unix seconds formatted in UTC; None = the
    /// local time now (as transformers does). For reproducible prompts and tests.
    pub now: Option<i64>,
}

/// Why a render did not produce a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// The engine cannot run this template (syntax it does not parse, a filter,
    /// test or method it lacks): a caller may fall back to another formatter.
    Unsupported(String),
    /// The template ran and failed: it raised (`raise_exception`), used an
    /// undefined value, exceeded its budget, or the input was malformed.
    Failed(String),
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenderError::Unsupported(m) | RenderError::Failed(m) => f.write_str(m),
        }
    }
}

/// Marks errors made by the template's own `raise_exception`.
#[derive(Debug)]
struct Raised;
impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("raised by the template")
    }
}
impl std::error::Error for Raised {}

/// True when `name` looks like a template's text rather than a built-in format's
/// name ("chatml", "llama3", …).
pub fn is_template_text(name: &str) -> bool {
    name.contains("{{") || name.contains("{%")
}

/// Render `template` over `input`. `special` are the tokenizer's special tokens by
/// transformers' names (`bos_token`, `eos_token`, …).
pub fn render(
    template: &str,
    input: &ChatInput<'_>,
    special: &[(&str, String)],
) -> Result<String, RenderError> {
    let ctx = context(input, special)?;
    let now = input.now;
    let source = rewrite_generation_tags(template);
    let input_bytes: usize = input
        .messages
        .iter()
        .map(|m| {
            m.content.len()
                + m.tool_calls.as_ref().map_or(0, |t| t.len())
                + m.reasoning_content.as_ref().map_or(0, |t| t.len())
        })
        .sum::<usize>()
        + input.tools.map_or(0, str::len)
        + input.vars.map_or(0, str::len);
    let fuel = BASE_FUEL + input_bytes as u64 / 16;
    // A fresh thread: its stack size is known whatever the caller's is, and a
    // panic inside the engine stays there.
    let worker = std::thread::Builder::new()
        .name("tabagent-template".into())
        .stack_size(RENDER_STACK)
        .spawn(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                render_here(&source, ctx, fuel, now)
            }))
        })
        .map_err(|e| RenderError::Failed(format!("cannot start the template thread: {e}")))?;
    match worker.join() {
        Ok(Ok(r)) => r,
        _ => Err(RenderError::Failed(
            "the template engine failed unexpectedly".into(),
        )),
    }
}

fn render_here(
    source: &str,
    ctx: Value,
    fuel: u64,
    now: Option<i64>,
) -> Result<String, RenderError> {
    let env = environment(fuel, now);
    let tmpl = env.template_from_str(source).map_err(|e| {
        RenderError::Unsupported(format!("chat template does not parse: {}", describe(&e)))
    })?;
    tmpl.render(ctx).map_err(classify)
}

fn classify(e: JError) -> RenderError {
    use std::error::Error as _;
    let raised = e.source().is_some_and(|s| s.is::<Raised>());
    if raised {
        return RenderError::Failed(format!(
            "chat template raised an error: {}",
            e.detail().unwrap_or("(no message)")
        ));
    }
    match e.kind() {
        JKind::SyntaxError
        | JKind::UnknownFilter
        | JKind::UnknownTest
        | JKind::UnknownFunction
        | JKind::UnknownMethod
        | JKind::InvalidDelimiter => RenderError::Unsupported(format!(
            "chat template uses what the engine lacks: {}",
            describe(&e)
        )),
        JKind::OutOfFuel => RenderError::Failed(format!(
            "chat template exceeded its budget of work and memory ({})",
            describe(&e)
        )),
        _ => RenderError::Failed(format!("chat template failed: {}", describe(&e))),
    }
}

fn describe(e: &JError) -> String {
    let mut s = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        let _ = write!(s, " (line {line})");
    }
    s
}

fn environment(fuel: u64, now: Option<i64>) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .expect("default delimiters are valid"),
    );
    env.set_fuel(Some(fuel));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.set_debug(false);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(|out, _state, value| {
        if value.is_undefined() {
            return Ok(());
        }
        let s = match value.kind() {
            ValueKind::String => return out.write_str(value.as_str().unwrap_or("")).map_err(io),
            _ => py_str(value),
        };
        out.write_str(&s).map_err(io)
    });
    env.add_filter("tojson", tojson);
    env.add_filter("string", |v: &Value| -> Value {
        match v.kind() {
            ValueKind::String => v.clone(),
            ValueKind::Undefined => Value::from(""),
            _ => Value::from(py_str(v)),
        }
    });
    env.add_filter("indent", indent);
    // Python: None is not iterable (minijinja iterates it as empty); Undefined is.
    env.add_test("iterable", |v: &Value| {
        matches!(
            v.kind(),
            ValueKind::Seq
                | ValueKind::Map
                | ValueKind::Iterable
                | ValueKind::String
                | ValueKind::Undefined
        )
    });
    env.add_function(
        "raise_exception",
        |msg: Option<&str>| -> Result<Value, JError> {
            Err(
                JError::new(JKind::InvalidOperation, msg.unwrap_or("").to_owned())
                    .with_source(Raised),
            )
        },
    );
    env.add_function("strftime_now", move |format: &str| {
        strftime_now(format, now)
    });
    env
}

fn io(_: std::fmt::Error) -> JError {
    JError::new(JKind::WriteFailure, "cannot write the output")
}

/// The render context: `messages`, `tools`, `add_generation_prompt`, the special
/// tokens, then the caller's extra variables (which may override any of them, as
/// transformers' `**kwargs` do).
fn context(input: &ChatInput<'_>, special: &[(&str, String)]) -> Result<Value, RenderError> {
    let mut pairs: Vec<(String, Value)> = Vec::new();
    let mut msgs = Vec::with_capacity(input.messages.len());
    for (i, m) in input.messages.iter().enumerate() {
        msgs.push(message_value(m, i)?);
    }
    pairs.push(("messages".into(), Value::from(msgs)));
    // transformers always passes `tools` and `documents` (None when unused), so
    // `tools is defined` holds and `tools is none` tells.
    let mut tools = Value::from(());
    if let Some(t) = input.tools {
        let v: serde_json::Value = serde_json::from_str(t)
            .map_err(|e| RenderError::Failed(format!("tools is not valid JSON: {e}")))?;
        if !v.is_array() && !v.is_null() {
            return Err(RenderError::Failed(
                "tools must be a JSON array of tool definitions".into(),
            ));
        }
        tools = json_to_value(&v, 0)?;
    }
    pairs.push(("tools".into(), tools));
    pairs.push(("documents".into(), Value::from(())));
    pairs.push((
        "add_generation_prompt".into(),
        Value::from(input.add_generation_prompt),
    ));
    for (k, v) in special {
        pairs.push(((*k).to_owned(), Value::from(v.as_str())));
    }
    if let Some(vars) = input.vars {
        let v: serde_json::Value = serde_json::from_str(vars).map_err(|e| {
            RenderError::Failed(format!("template variables are not valid JSON: {e}"))
        })?;
        let Some(obj) = v.as_object() else {
            return Err(RenderError::Failed(
                "template variables must be a JSON object".into(),
            ));
        };
        for (k, v) in obj {
            let val = json_to_value(v, 0)?;
            match pairs.iter_mut().find(|(pk, _)| pk == k) {
                Some(slot) => slot.1 = val,
                None => pairs.push((k.clone(), val)),
            }
        }
    }
    Ok(Value::from_pairs(pairs))
}

fn message_value(m: &ChatMessage, i: usize) -> Result<Value, RenderError> {
    let mut pairs: Vec<(&str, Value)> = Vec::with_capacity(8);
    // transformers (5.x) offers reasoning under both names: `thinking` first,
    // `reasoning_content` last.
    if let Some(r) = &m.reasoning_content {
        pairs.push(("thinking", Value::from(r.as_str())));
    }
    pairs.push(("role", Value::from(m.role.as_str())));
    pairs.push(("content", Value::from(m.content.as_str())));
    if let Some(n) = &m.name {
        pairs.push(("name", Value::from(n.as_str())));
    }
    if let Some(id) = &m.tool_call_id {
        pairs.push(("tool_call_id", Value::from(id.as_str())));
    }
    if let Some(tc) = &m.tool_calls {
        let v: serde_json::Value = serde_json::from_str(tc).map_err(|e| {
            RenderError::Failed(format!("messages[{i}].tool_calls is not valid JSON: {e}"))
        })?;
        if !v.is_array() {
            return Err(RenderError::Failed(format!(
                "messages[{i}].tool_calls must be a JSON array"
            )));
        }
        pairs.push(("tool_calls", json_to_value(&v, 0)?));
    }
    if let Some(r) = &m.reasoning_content {
        pairs.push(("reasoning_content", Value::from(r.as_str())));
    }
    Ok(Value::from_pairs(pairs))
}

/// JSON nested deeper than this is refused before it reaches the engine.
const MAX_JSON_DEPTH: usize = 64;

fn json_to_value(v: &serde_json::Value, depth: usize) -> Result<Value, RenderError> {
    if depth > MAX_JSON_DEPTH {
        return Err(RenderError::Failed(format!(
            "JSON input nested deeper than {MAX_JSON_DEPTH} levels"
        )));
    }
    Ok(match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(a) => Value::from(
            a.iter()
                .map(|x| json_to_value(x, depth + 1))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        serde_json::Value::Object(o) => {
            let mut pairs = Vec::with_capacity(o.len());
            for (k, x) in o {
                pairs.push((k.as_str(), json_to_value(x, depth + 1)?));
            }
            Value::from_pairs(pairs)
        }
    })
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent,
/// separators=separators, sort_keys=sort_keys)`; positional arguments in that
/// Python signature's order (the engine passes at most two; the rest by name).
fn tojson(
    state: &State,
    value: &Value,
    ensure_ascii: Option<Value>,
    indent: Option<Value>,
    kwargs: Kwargs,
) -> Result<Value, JError> {
    let pick = |pos: Option<Value>, name: &str| -> Result<Option<Value>, JError> {
        Ok(match kwargs.get::<Option<Value>>(name)? {
            Some(v) => Some(v),
            None => pos,
        })
    };
    let ensure_ascii = pick(ensure_ascii, "ensure_ascii")?.is_some_and(|v| v.is_true());
    let indent = match pick(indent, "indent")? {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => match v.kind() {
            ValueKind::String => Some(v.as_str().unwrap_or("").to_owned()),
            ValueKind::Number => {
                let n = i64::try_from(v.clone()).unwrap_or(0).clamp(0, 64);
                Some(" ".repeat(n as usize))
            }
            _ => {
                return Err(JError::new(
                    JKind::InvalidOperation,
                    "tojson: indent must be a number or a string",
                ))
            }
        },
    };
    let (item_sep, key_sep) = match pick(None, "separators")? {
        Some(v) if !v.is_none() && !v.is_undefined() => {
            let a = v.get_item_by_index(0).ok().filter(|x| !x.is_undefined());
            let b = v.get_item_by_index(1).ok().filter(|x| !x.is_undefined());
            match (
                a.as_ref().and_then(Value::as_str),
                b.as_ref().and_then(Value::as_str),
            ) {
                (Some(a), Some(b)) => (a.to_owned(), b.to_owned()),
                _ => {
                    return Err(JError::new(
                        JKind::InvalidOperation,
                        "tojson: separators must be two strings",
                    ))
                }
            }
        }
        _ if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        _ => (", ".to_owned(), ": ".to_owned()),
    };
    let sort_keys = pick(None, "sort_keys")?.is_some_and(|v| v.is_true());
    kwargs.assert_all_used()?;
    let style = JsonStyle {
        ensure_ascii,
        indent,
        item_sep,
        key_sep,
        sort_keys,
    };
    let mut out = String::new();
    style.write(&mut out, value, 0, state)?;
    state.consume_fuel(out.len() as u64 / 64)?;
    Ok(Value::from(out))
}

struct JsonStyle {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

impl JsonStyle {
    fn newline(&self, out: &mut String, level: usize) {
        if let Some(ind) = &self.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(ind);
            }
        }
    }

    fn write(
        &self,
        out: &mut String,
        v: &Value,
        level: usize,
        state: &State,
    ) -> Result<(), JError> {
        if level > MAX_JSON_DEPTH * 2 {
            return Err(JError::new(
                JKind::BadSerialization,
                "tojson: value nested too deeply",
            ));
        }
        // Containers charge for their items so a huge value cannot be walked free.
        match v.kind() {
            ValueKind::Undefined => {
                return Err(JError::new(
                    JKind::BadSerialization,
                    "tojson: Object of type Undefined is not JSON serializable",
                ))
            }
            ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number => out.push_str(&py_number(v, true)),
            ValueKind::String => json_string(out, v.as_str().unwrap_or(""), self.ensure_ascii),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = v.try_iter()?.collect();
                state.consume_fuel(items.len() as u64)?;
                if items.is_empty() {
                    out.push_str("[]");
                    return Ok(());
                }
                out.push('[');
                for (i, x) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(out, level + 1);
                    self.write(out, x, level + 1, state)?;
                }
                self.newline(out, level);
                out.push(']');
            }
            ValueKind::Map => {
                let mut keys: Vec<Value> = v.try_iter()?.collect();
                state.consume_fuel(keys.len() as u64)?;
                if keys.is_empty() {
                    out.push_str("{}");
                    return Ok(());
                }
                if self.sort_keys {
                    keys.sort_by_key(json_key);
                }
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(out, level + 1);
                    json_string(out, &json_key(k), self.ensure_ascii);
                    out.push_str(&self.key_sep);
                    self.write(out, &v.get_item(k)?, level + 1, state)?;
                }
                self.newline(out, level);
                out.push('}');
            }
            _ => {
                return Err(JError::new(
                    JKind::BadSerialization,
                    format!(
                        "tojson: Object of type {} is not JSON serializable",
                        v.kind()
                    ),
                ))
            }
        }
        Ok(())
    }
}

/// A map key as json.dumps writes it: strings as they are, scalars as JSON text.
fn json_key(k: &Value) -> String {
    match k.kind() {
        ValueKind::String => k.as_str().unwrap_or("").to_owned(),
        ValueKind::None => "null".into(),
        ValueKind::Bool => (if k.is_true() { "true" } else { "false" }).into(),
        ValueKind::Number => py_number(k, true),
        _ => k.to_string(),
    }
}

fn json_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A number as Python writes it: `repr` for floats (`1.0`, `1e-05`, `1e+16`),
/// JSON spellings of the non-finite ones when `json`.
fn py_number(v: &Value, json: bool) -> String {
    if v.is_integer() {
        return v.to_string();
    }
    match f64::try_from(v.clone()) {
        Ok(f) => py_float(f, json),
        Err(_) => v.to_string(),
    }
}

fn py_float(f: f64, json: bool) -> String {
    if f.is_nan() {
        return if json { "NaN" } else { "nan" }.into();
    }
    if f.is_infinite() {
        return match (f > 0.0, json) {
            (true, true) => "Infinity".into(),
            (false, true) => "-Infinity".into(),
            (true, false) => "inf".into(),
            (false, false) => "-inf".into(),
        };
    }
    // Shortest round-trip digits, then Python's layout: scientific below 1e-4
    // and from 1e16, else positional with at least one decimal.
    let sci = format!("{f:e}");
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let neg = mant.starts_with('-');
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    let mut s = String::new();
    if neg {
        s.push('-');
    }
    if !(-4..16).contains(&exp) {
        s.push_str(&digits[..1]);
        if digits.len() > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        let _ = write!(s, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    } else if exp < 0 {
        s.push_str("0.");
        for _ in 0..(-exp - 1) {
            s.push('0');
        }
        s.push_str(&digits);
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            s.push_str(&digits);
            for _ in digits.len()..int_len {
                s.push('0');
            }
            s.push_str(".0");
        } else {
            s.push_str(&digits[..int_len]);
            s.push('.');
            s.push_str(&digits[int_len..]);
        }
    }
    s
}

/// A value as Python's `str()` prints it (Jinja2 prints with `str`).
fn py_str(v: &Value) -> String {
    match v.kind() {
        ValueKind::String => v.as_str().unwrap_or("").to_owned(),
        _ => {
            let mut s = String::new();
            py_repr(&mut s, v, 0);
            s
        }
    }
}

fn py_repr(out: &mut String, v: &Value, depth: usize) {
    if depth > MAX_JSON_DEPTH * 2 {
        out.push_str("...");
        return;
    }
    match v.kind() {
        ValueKind::Undefined => {}
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if v.is_true() { "True" } else { "False" }),
        ValueKind::Number => out.push_str(&py_number(v, false)),
        ValueKind::String => py_str_repr(out, v.as_str().unwrap_or("")),
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            if let Ok(it) = v.try_iter() {
                for (i, x) in it.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    py_repr(out, &x, depth + 1);
                }
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            if let Ok(it) = v.try_iter() {
                for (i, k) in it.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    py_repr(out, &k, depth + 1);
                    out.push_str(": ");
                    py_repr(out, &v.get_item(&k).unwrap_or_default(), depth + 1);
                }
            }
            out.push('}');
        }
        _ => out.push_str(&v.to_string()),
    }
}

/// Python's `repr(str)`: single quotes unless the text holds a single quote and
/// no double quote.
fn py_str_repr(out: &mut String, s: &str) {
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(q);
}

/// jinja2's `indent(width=4, first=False, blank=False)`: unlike minijinja's, it
/// keeps a trailing newline and splits lines as Python's `splitlines` does.
fn indent(
    state: &State,
    value: &Value,
    width: Option<Value>,
    first: Option<bool>,
    kwargs: Kwargs,
) -> Result<Value, JError> {
    let width = match width {
        Some(w) => Some(w),
        None => kwargs.get::<Option<Value>>("width")?,
    };
    let first = match first {
        Some(f) => f,
        None => kwargs.get::<Option<bool>>("first")?.unwrap_or(false),
    };
    let blank = kwargs.get::<Option<bool>>("blank")?.unwrap_or(false);
    kwargs.assert_all_used()?;
    let pad = match &width {
        None => "    ".to_owned(),
        Some(w) if w.kind() == ValueKind::String => w.as_str().unwrap_or("").to_owned(),
        Some(w) => " ".repeat(usize::try_from(w.clone())?.min(1 << 16)),
    };
    let mut text = py_str(value);
    text.push('\n'); // jinja2's own quirk, so that a trailing newline survives
    let lines = py_splitlines(&text);
    state.consume_fuel(((pad.len() + 1) * lines.len() + text.len()) as u64 / 64)?;
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.push('\n');
            if blank || !line.is_empty() {
                out.push_str(&pad);
            }
        }
        out.push_str(line);
    }
    if first {
        out.insert_str(0, &pad);
    }
    Ok(Value::from(out))
}

/// Python's `str.splitlines()`: every line boundary Python knows, no empty
/// piece after a final one.
fn py_splitlines(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut it = s.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        let end = match c {
            '\r' => {
                if let Some((_, '\n')) = it.peek() {
                    it.next();
                    i + 2
                } else {
                    i + 1
                }
            }
            '\n' | '\u{b}' | '\u{c}' | '\u{1c}' | '\u{1d}' | '\u{1e}' | '\u{85}' | '\u{2028}'
            | '\u{2029}' => i + c.len_utf8(),
            _ => continue,
        };
        out.push(&s[start..i]);
        start = end;
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

/// `strftime_now(format)`: the local time (or `fixed`, in UTC), formatted by the C
/// library.
fn strftime_now(format: &str, fixed: Option<i64>) -> Result<Value, JError> {
    if format.len() > MAX_STRFTIME_FORMAT || format.contains('\0') {
        return Err(JError::new(
            JKind::InvalidOperation,
            "strftime_now: format too long or contains NUL",
        ));
    }
    let fmt = std::ffi::CString::new(format).expect("checked for NUL");
    let mut buf = vec![0u8; 1024];
    // SAFETY: time/localtime_r write into locals; strftime writes at most buf.len()
    // bytes into buf and reads a NUL-terminated format.
    let n = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        let ok = match fixed {
            Some(t) => !libc::gmtime_r(&(t as libc::time_t), &mut tm).is_null(),
            None => !libc::localtime_r(&libc::time(std::ptr::null_mut()), &mut tm).is_null(),
        };
        if !ok {
            return Err(JError::new(
                JKind::InvalidOperation,
                "strftime_now: no local time",
            ));
        }
        libc::strftime(
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
            fmt.as_ptr(),
            &tm,
        )
    };
    buf.truncate(n);
    Ok(Value::from(String::from_utf8_lossy(&buf).into_owned()))
}

/// transformers registers a `{% generation %}…{% endgeneration %}` block that
/// renders its body (it only marks assistant text for masks); minijinja has no
/// such tag, so it becomes an always-true `if` with the same whitespace control.
fn rewrite_generation_tags(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(at) = rest.find("{%") {
        out.push_str(&rest[..at]);
        let tag = &rest[at..];
        let body = &tag[2..];
        let (ws_open, body) = match body.as_bytes().first() {
            Some(b'-') | Some(b'+') => (&body[..1], &body[1..]),
            _ => ("", body),
        };
        let trimmed = body.trim_start();
        let word_end = trimmed
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .unwrap_or(trimmed.len());
        let word = &trimmed[..word_end];
        let replacement = match word {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(r) => {
                let after = trimmed[word_end..].trim_start();
                let (ws_close, after) = match after.as_bytes().first() {
                    Some(b'-') | Some(b'+') => (&after[..1], &after[1..]),
                    _ => ("", after),
                };
                if let Some(close) = after.strip_prefix("%}") {
                    let _ = write!(out, "{{%{ws_open} {r} {ws_close}%}}");
                    rest = close;
                    continue;
                }
                out.push_str("{%");
                rest = &tag[2..];
            }
            None => {
                out.push_str("{%");
                rest = &tag[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Héllo 👋"),
        ]
    }

    fn run(t: &str) -> Result<String, RenderError> {
        let m = msgs();
        render(
            t,
            &ChatInput {
                messages: &m,
                add_generation_prompt: true,
                ..Default::default()
            },
            &[("bos_token", "<s>".into())],
        )
    }

    #[test]
    fn chatml_with_trim_and_lstrip() {
        let t = "{{ bos_token }}{% for m in messages %}\n  {{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}\n{% endfor %}\n{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        assert_eq!(
            run(t).unwrap(),
            // jinja2 gives the same: the newline before `{% endfor %}` survives.
            "<s><|im_start|>system\nBe brief.<|im_end|>\n\n<|im_start|>user\nHéllo 👋<|im_end|>\n\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_printing_and_tojson() {
        let t = "{{ none }}|{{ true }}|{{ {'a': [1, 2.5, none, 'x\\'y']} }}|{{ {'b': 'é\"', 'a': 1.0}|tojson }}|{{ [1]|tojson(indent=2) }}|{{ {'z':1,'a':2}|tojson(sort_keys=true) }}";
        assert_eq!(
            run(t).unwrap(),
            "None|True|{'a': [1, 2.5, None, \"x'y\"]}|{\"b\": \"é\\\"\", \"a\": 1.0}|[\n  1\n]|{\"a\": 2, \"z\": 1}"
        );
    }

    #[test]
    fn py_float_layout() {
        for (f, s) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e-5, "1e-05"),
            (1e16, "1e+16"),
            (123.456, "123.456"),
            (-2.5e-7, "-2.5e-07"),
            (1234567890123456.0, "1234567890123456.0"),
        ] {
            assert_eq!(py_float(f, true), s);
        }
    }

    #[test]
    fn pycompat_methods_and_loop_controls() {
        let t = "{% for m in messages %}{% if loop.first %}{% continue %}{% endif %}{{ m.content.strip().upper() }}{% for k, v in {'a': 1}.items() %}{{ k }}{{ v }}{% endfor %}{% endfor %}";
        assert_eq!(run(t).unwrap(), "HÉLLO 👋a1");
    }

    #[test]
    fn raise_exception_is_failed_with_its_message() {
        let e = run("{{ raise_exception('Roles must alternate') }}").unwrap_err();
        assert!(
            matches!(&e, RenderError::Failed(m) if m.contains("Roles must alternate")),
            "{e:?}"
        );
    }

    #[test]
    fn unsupported_syntax_and_filters() {
        assert!(matches!(run("{% foo %}"), Err(RenderError::Unsupported(_))));
        assert!(matches!(
            run("{{ 1|nosuchfilter }}"),
            Err(RenderError::Unsupported(_))
        ));
    }

    #[test]
    fn indent_as_jinja2() {
        assert_eq!(
            run("{{ '{\\n'|indent(4, first=true) }}|{{ 'a\\n\\nb'|indent(2) }}|{{ 'a\\nb'|indent(width='> ', blank=true) }}")
                .unwrap(),
            "    {\n|a\n\n  b|a\n> b"
        );
        assert_eq!(py_splitlines("a\r\nb\rc\u{2028}d\n"), ["a", "b", "c", "d"]);
    }

    #[test]
    fn generation_tag_renders_its_body() {
        assert_eq!(
            rewrite_generation_tags(
                "a{%- generation -%} b {% endgeneration %}c{% if x %}{% endif %}"
            ),
            "a{%- if true -%} b {% endif %}c{% if x %}{% endif %}"
        );
        assert_eq!(run("{% generation %}x{% endgeneration %}").unwrap(), "x");
    }

    #[test]
    fn hostile_templates_end_within_budget() {
        for t in [
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            "{{ 'x' * 1000000000 }}",
            "{% set s = namespace(v='x') %}{% for i in range(100) %}{% set s.v = s.v ~ s.v %}{% endfor %}{{ s.v|length }}",
            &format!("{}1{}", "{{ ".to_owned() + &"(".repeat(100000), ")".repeat(100000) + " }}"),
            "{{ strftime_now('%c' * 1000) }}",
        ] {
            let t0 = std::time::Instant::now();
            let r = run(t);
            assert!(r.is_err(), "{} → {:?}", &t[..60.min(t.len())], r.map(|s| s.len()));
            assert!(t0.elapsed().as_secs() < 10, "took {:?}", t0.elapsed());
        }
    }

    #[test]
    fn tools_vars_and_tool_calls() {
        let mut m = msgs();
        m.push(ChatMessage {
            tool_calls: Some(
                r#"[{"type":"function","function":{"name":"f","arguments":{"x":1}}}]"#.into(),
            ),
            ..ChatMessage::new("assistant", "")
        });
        let out = render(
            "{{ tools[0].name }}|{{ enable_thinking }}|{{ messages[2].tool_calls[0].function.arguments|tojson }}|{{ messages[0].tool_calls is defined }}",
            &ChatInput {
                messages: &m,
                tools: Some(r#"[{"name":"get_weather"}]"#),
                vars: Some(r#"{"enable_thinking": false}"#),
                add_generation_prompt: false,
                now: None,
            },
            &[],
        )
        .unwrap();
        assert_eq!(out, "get_weather|False|{\"x\": 1}|False");
        let bad = render(
            "x",
            &ChatInput {
                messages: &m,
                tools: Some("{not json"),
                ..Default::default()
            },
            &[],
        );
        assert!(matches!(bad, Err(RenderError::Failed(_))));
    }
}
