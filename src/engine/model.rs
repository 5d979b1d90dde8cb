//! A loaded GGUF model: validated in Rust first, then handed to llama.cpp, which
//! memory-maps it. Read-only after load, so one `Model` is shared (behind an `Arc`)
//! by any number of contexts and threads.

use super::{shim, sys, template};
use crate::error::{Error, ErrorKind, Result};
use crate::gguf::GgufInfo;
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

/// How to load a model.
#[derive(Debug, Clone)]
pub struct ModelParams {
    /// Layers to offload to a GPU; negative = all. Ignored by CPU-only builds.
    pub n_gpu_layers: i32,
    /// Memory-map the file (the default) instead of reading it into the heap.
    pub use_mmap: bool,
    /// Lock the weights in RAM so the OS never pages them out.
    pub use_mlock: bool,
    /// Load only the vocabulary (tokenize/detokenize work; no inference).
    pub vocab_only: bool,
    /// For untrusted files: before loading, have a child process load the file and
    /// decode one token under these limits ([`super::check::check_model`]), so a
    /// file that would crash llama.cpp fails with `BadModel` instead. Costs one
    /// extra load (see the README's figures).
    pub check: Option<super::check::CheckLimits>,
}

impl Default for ModelParams {
    fn default() -> Self {
        ModelParams {
            n_gpu_layers: -1,
            use_mmap: true,
            use_mlock: false,
            vocab_only: false,
            check: None,
        }
    }
}

/// One chat message; roles are free text ("system", "user", "assistant", …). The
/// optional fields reach the template only when set, as keys of the message (the
/// way transformers passes a message dict): `name`, `tool_call_id` (a tool result
/// answering a call), `tool_calls` (a JSON array of OpenAI-style calls),
/// `reasoning_content` (an assistant turn's reasoning, also offered to the
/// template as `thinking`, as transformers does).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    pub name: Option<String>,
    pub tool_call_id: Option<String>,
    pub tool_calls: Option<String>,
    pub reasoning_content: Option<String>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            ..Default::default()
        }
    }
}

/// Extra inputs of a chat template besides the messages.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChatOptions<'a> {
    /// A template text, or a llama.cpp built-in format's name ("chatml", "llama3",
    /// …); None = the model's own `tokenizer.chat_template`.
    pub template: Option<&'a str>,
    /// JSON array of tool definitions, passed to the template as `tools`.
    pub tools: Option<&'a str>,
    /// JSON object of extra template variables (e.g. `{"enable_thinking": false}`).
    pub vars: Option<&'a str>,
}

/// A model's headline metadata, read once at load time.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub architecture: String,
    pub name: String,
    pub description: String,
    pub quantization: String,
    pub chat_template: Option<String>,
    pub n_vocab: i32,
    pub n_ctx_train: i32,
    pub n_embd: i32,
    pub n_layer: i32,
    pub n_head: i32,
    pub n_head_kv: i32,
    pub n_params: u64,
    /// Bytes of tensor data (what inference touches).
    pub size_bytes: u64,
    /// Bytes of the file(s) on disk.
    pub file_size: u64,
    /// Special tokens; -1 when the vocabulary has none.
    pub bos: i32,
    pub eos: i32,
    pub eot: i32,
    pub nl: i32,
}

/// A loaded model.
pub struct Model {
    ptr: NonNull<sys::llama_model>,
    vocab: NonNull<sys::llama_vocab>,
    gguf: GgufInfo,
    info: ModelInfo,
    source: String,
    /// Loaded without weights: tokenizer calls only.
    vocab_only: bool,
    /// Identifies the weights (KV state files carry it), computed on first use
    /// from `fp_source`: loading stays free of it.
    fingerprint: once_cell::sync::OnceCell<Option<[u8; 32]>>,
    fp_source: FpSource,
}

/// Where the fingerprint's bytes come from: the loaded file, held open so a file
/// replaced after loading cannot be mistaken for it, or a buffer's digest taken
/// at load time.
enum FpSource {
    File(Option<std::fs::File>),
    Done,
}

// SAFETY: llama_model and llama_vocab are immutable after load; llama.cpp supports
// using one model from many contexts on many threads at once.
unsafe impl Send for Model {}
// SAFETY: as above — every method takes &self and only reads.
unsafe impl Sync for Model {}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: the pointer came from llama_model_load_from_file and is freed once.
        unsafe { sys::llama_model_free(self.ptr.as_ptr()) }
    }
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("source", &self.source)
            .field("info", &self.info)
            .finish()
    }
}

struct ProgressState<'a> {
    cb: &'a mut dyn FnMut(f32) -> bool,
    stopped: bool,
}

unsafe extern "C" fn progress_trampoline(progress: f32, ud: *mut c_void) -> bool {
    // SAFETY: `ud` is the &mut ProgressState passed by `load_inner`, alive for the load.
    let st = unsafe { &mut *(ud as *mut ProgressState) };
    let go = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (st.cb)(progress)))
        .unwrap_or(false);
    if !go {
        st.stopped = true;
    }
    go
}

impl Model {
    /// Load a GGUF file (a split model: give the `-00001-of-0000N` shard).
    pub fn load(path: &Path, params: &ModelParams) -> Result<Model> {
        Self::load_with_progress(path, params, None)
    }

    /// Load with a progress callback (0.0–1.0); returning `false` cancels the load.
    pub fn load_with_progress(
        path: &Path,
        params: &ModelParams,
        progress: Option<&mut dyn FnMut(f32) -> bool>,
    ) -> Result<Model> {
        // Validate every byte llama.cpp will parse before it sees the file: a hostile
        // GGUF can make it abort() the host process.
        let gguf = crate::gguf::open_checked(path, params.vocab_only)?;
        let shown = path.display().to_string();
        if let Some(limits) = &params.check {
            super::check::check_validated(path, &shown, gguf.file_size, params, limits)?;
        }
        load_inner(path, gguf, shown, params, progress)
    }

    /// Load without the semantic validator (structure is still checked), so tests
    /// can reach llama.cpp's own failure paths and prove the shim catches them.
    #[doc(hidden)]
    pub fn load_without_semantic_checks(path: &Path, params: &ModelParams) -> Result<Model> {
        let gguf = crate::gguf::open_model(path)?;
        load_inner(path, gguf, path.display().to_string(), params, None)
    }

    /// Load from bytes in memory, without a temporary file on disk (Linux: a memfd).
    pub fn load_from_buffer(
        bytes: &[u8],
        params: &ModelParams,
        progress: Option<&mut dyn FnMut(f32) -> bool>,
    ) -> Result<Model> {
        let gguf = GgufInfo::parse(bytes, "<memory buffer>")?;
        crate::gguf::semantic::check(&gguf, "<memory buffer>", params.vocab_only)?;
        memfd::load(bytes, gguf, params, progress)
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// A digest of the file's size, metadata and samples of its weights: what KV
    /// state files are matched against. None when the file could not be read.
    pub fn fingerprint(&self) -> Option<[u8; 32]> {
        *self.fingerprint.get_or_init(|| match &self.fp_source {
            FpSource::File(Some(f)) => {
                use std::os::unix::fs::FileExt;
                super::state::fingerprint(
                    &|at, buf| f.read_at(buf, at),
                    self.gguf.data_offset,
                    self.gguf.file_size,
                )
            }
            _ => None,
        })
    }

    /// Loaded with `vocab_only`: tokenizer calls work, contexts cannot be made.
    pub fn is_vocab_only(&self) -> bool {
        self.vocab_only
    }

    /// The parsed GGUF header (all metadata, tensor table).
    pub fn gguf(&self) -> &GgufInfo {
        &self.gguf
    }

    /// The path (or "<memory buffer>") the model came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// A GGUF metadata value rendered as text, by key.
    pub fn meta(&self, key: &str) -> Option<String> {
        self.gguf.get(key).map(|v| v.to_display_string())
    }

    /// All metadata as one JSON document: headline fields plus every GGUF key
    /// (long arrays such as the vocabulary are summarised).
    pub fn to_json(&self) -> serde_json::Value {
        let i = &self.info;
        serde_json::json!({
            "source": self.source,
            "architecture": i.architecture,
            "name": i.name,
            "description": i.description,
            "quantization": i.quantization,
            "n_vocab": i.n_vocab,
            "n_ctx_train": i.n_ctx_train,
            "n_embd": i.n_embd,
            "n_layer": i.n_layer,
            "n_head": i.n_head,
            "n_head_kv": i.n_head_kv,
            "n_params": i.n_params,
            "size_bytes": i.size_bytes,
            "file_size": i.file_size,
            "tokens": {"bos": i.bos, "eos": i.eos, "eot": i.eot, "nl": i.nl},
            "chat_template": i.chat_template,
            "gguf": self.gguf.to_json(),
        })
    }

    pub(crate) fn raw(&self) -> *mut sys::llama_model {
        self.ptr.as_ptr()
    }

    pub(crate) fn vocab(&self) -> *const sys::llama_vocab {
        self.vocab.as_ptr()
    }

    pub fn is_eog(&self, token: i32) -> bool {
        // SAFETY: vocab is valid for the model's life; any token id is accepted.
        unsafe { sys::llama_vocab_is_eog(self.vocab(), token) }
    }

    /// A model whose tokenizer is "none" has no tokenizer at all: llama.cpp asserts
    /// (`tokenizer && "Tokenizer not initialized"`, `type != LLAMA_VOCAB_TYPE_NONE`)
    /// on any text call, so those calls are refused here.
    pub(crate) fn require_tokenizer(&self) -> Result<()> {
        // SAFETY: plain getter on the model's vocabulary.
        if unsafe { sys::llama_vocab_type(self.vocab()) } == sys::LLAMA_VOCAB_TYPE_NONE {
            return Err(Error::unsupported(format!(
                "{}: the model has no tokenizer (tokenizer.ggml.model is 'none'); it cannot turn text into tokens or back",
                self.source
            )));
        }
        Ok(())
    }

    fn check_token(&self, token: i32) -> Result<()> {
        if token < 0 || token >= self.info.n_vocab {
            return Err(Error::invalid_arg(format!(
                "token {token} is out of range (vocabulary has {} tokens)",
                self.info.n_vocab
            )));
        }
        Ok(())
    }

    /// Text → tokens. `add_special` adds BOS/EOS as the model wants;
    /// `parse_special` turns "<|im_start|>"-style text into control tokens.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<i32>> {
        self.require_tokenizer()?;
        let len = i32::try_from(text.len())
            .map_err(|_| Error::invalid_arg("text is longer than 2 GiB"))?;
        // A token is at least one byte, plus room for BOS/EOS.
        let mut out = vec![0i32; text.len() + 2];
        loop {
            let mut n = 0;
            // SAFETY: text/len describe a valid buffer; out has out.len() slots.
            shim::guard(ErrorKind::BadModel, &self.source, |e, el| unsafe {
                shim::tas_tokenize(
                    self.vocab(),
                    text.as_ptr() as *const c_char,
                    len,
                    out.as_mut_ptr(),
                    out.len() as i32,
                    add_special,
                    parse_special,
                    &mut n,
                    e,
                    el,
                )
            })?;
            if n == i32::MIN {
                return Err(Error::invalid_arg("tokenization overflowed"));
            }
            if n < 0 {
                out.resize((-n) as usize, 0);
                continue;
            }
            out.truncate(n as usize);
            return Ok(out);
        }
    }

    /// A prompt as generation reads it: special-token text parsed, BOS added when
    /// the model asks for it, but never twice — a prompt (or a chat template's
    /// output) that already begins with the BOS text keeps just that one.
    pub fn tokenize_prompt(&self, text: &str) -> Result<Vec<i32>> {
        let mut tokens = self.tokenize(text, true, true)?;
        let bos = self.info.bos;
        if bos >= 0 && tokens.len() >= 2 && tokens[0] == bos && tokens[1] == bos {
            tokens.remove(0);
        }
        Ok(tokens)
    }

    /// One token's bytes (may be part of a UTF-8 character).
    pub fn token_to_piece(&self, token: i32, special: bool) -> Result<Vec<u8>> {
        self.require_tokenizer()?;
        self.check_token(token)?;
        let mut buf = vec![0u8; 64];
        self.token_to_piece_into(token, special, &mut buf).map(|n| {
            buf.truncate(n);
            buf
        })
    }

    /// Write a token's bytes into `buf` (grown when too small); returns the length.
    pub(crate) fn token_to_piece_into(
        &self,
        token: i32,
        special: bool,
        buf: &mut Vec<u8>,
    ) -> Result<usize> {
        loop {
            let mut n = 0;
            // SAFETY: buf has buf.len() writable bytes.
            shim::guard(ErrorKind::BadModel, &self.source, |e, el| unsafe {
                shim::tas_token_to_piece(
                    self.vocab(),
                    token,
                    buf.as_mut_ptr() as *mut c_char,
                    buf.len() as i32,
                    0,
                    special,
                    &mut n,
                    e,
                    el,
                )
            })?;
            if n < 0 {
                buf.resize((-n) as usize, 0);
                continue;
            }
            return Ok(n as usize);
        }
    }

    /// Tokens → bytes (UTF-8 unless the tokens split a character).
    pub fn detokenize(
        &self,
        tokens: &[i32],
        remove_special: bool,
        unparse_special: bool,
    ) -> Result<Vec<u8>> {
        self.require_tokenizer()?;
        for &t in tokens {
            self.check_token(t)?;
        }
        let n_tokens =
            i32::try_from(tokens.len()).map_err(|_| Error::invalid_arg("too many tokens"))?;
        let mut buf = vec![0u8; tokens.len() * 8 + 16];
        loop {
            let mut n = 0;
            // SAFETY: tokens and buf are valid for the lengths given.
            shim::guard(ErrorKind::BadModel, &self.source, |e, el| unsafe {
                shim::tas_detokenize(
                    self.vocab(),
                    tokens.as_ptr(),
                    n_tokens,
                    buf.as_mut_ptr() as *mut c_char,
                    buf.len().min(i32::MAX as usize) as i32,
                    remove_special,
                    unparse_special,
                    &mut n,
                    e,
                    el,
                )
            })?;
            if n < 0 {
                if n == i32::MIN {
                    return Err(Error::invalid_arg("detokenized text is too large"));
                }
                buf.resize((-n) as usize, 0);
                continue;
            }
            buf.truncate(n as usize);
            return Ok(buf);
        }
    }

    /// Format messages with the model's own chat template, rendered by a Jinja
    /// engine as Hugging Face transformers renders it ([`super::template`]). A
    /// built-in format's name ("chatml", …), or a template the engine cannot parse,
    /// goes to llama.cpp's built-in formats instead; the log says which path ran.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_assistant: bool,
        opts: &ChatOptions<'_>,
    ) -> Result<String> {
        let tmpl = match opts.template {
            Some(t) => t,
            None => self.info.chat_template.as_deref().ok_or_else(|| {
                Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "{}: the model has no chat template (tokenizer.chat_template): name one for the call (a built-in such as \"chatml\", or a template text), or format the prompt yourself and call generate",
                        self.source
                    ),
                )
            })?,
        };
        if !template::is_template_text(tmpl) {
            crate::log::log(
                crate::log::LogLevel::Debug,
                &format!("chat template: llama.cpp built-in format {tmpl:?}"),
            );
            return self.builtin_chat_template(tmpl, messages, add_assistant);
        }
        let input = template::ChatInput {
            messages,
            tools: opts.tools,
            vars: opts.vars,
            add_generation_prompt: add_assistant,
            now: None,
        };
        match template::render(tmpl, &input, &self.special_tokens()) {
            Ok(s) => {
                crate::log::log(
                    crate::log::LogLevel::Debug,
                    "chat template: rendered by the Jinja engine",
                );
                Ok(s)
            }
            Err(template::RenderError::Failed(m)) => {
                Err(Error::invalid_arg(format!("{}: {m}", self.source)))
            }
            Err(template::RenderError::Unsupported(why)) => {
                crate::log::log(
                    crate::log::LogLevel::Warn,
                    &format!(
                        "{}: {why}; falling back to llama.cpp's built-in format for this template",
                        self.source
                    ),
                );
                self.builtin_chat_template(tmpl, messages, add_assistant)
                    .map_err(|e| {
                        Error::new(
                            ErrorKind::Unsupported,
                            format!("{}: {why}; and {}", self.source, e.message()),
                        )
                    })
            }
        }
    }

    /// The tokenizer's special tokens under the names transformers gives them,
    /// for templates (`bos_token`, `eos_token`, …); absent ones are left undefined.
    fn special_tokens(&self) -> Vec<(&'static str, String)> {
        let toks = match self.gguf.get("tokenizer.ggml.tokens") {
            Some(crate::gguf::Value::Array(a)) => a,
            _ => return Vec::new(),
        };
        [
            ("bos_token", "bos"),
            ("eos_token", "eos"),
            ("unk_token", "unknown"),
            ("pad_token", "padding"),
            ("sep_token", "seperator"),
            ("cls_token", "cls"),
            ("mask_token", "mask"),
        ]
        .into_iter()
        .filter_map(|(name, key)| {
            let id = self
                .gguf
                .get(&format!("tokenizer.ggml.{key}_token_id"))?
                .as_u64()?;
            match toks.get(usize::try_from(id).ok()?)? {
                crate::gguf::Value::Str(s) => Some((name, s.clone())),
                _ => None,
            }
        })
        .collect()
    }

    /// llama.cpp's `llama_chat_apply_template`: a built-in format picked by name or
    /// guessed from the template's text (no Jinja; role and content only).
    fn builtin_chat_template(
        &self,
        tmpl: &str,
        messages: &[ChatMessage],
        add_assistant: bool,
    ) -> Result<String> {
        let tmpl_c = CString::new(tmpl)
            .map_err(|_| Error::invalid_arg("chat template contains a NUL byte"))?;
        let mut owned = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let role = CString::new(m.role.as_str()).map_err(|_| {
                Error::invalid_arg(format!("messages[{i}].role contains a NUL byte"))
            })?;
            let content = CString::new(m.content.as_str()).map_err(|_| {
                Error::invalid_arg(format!("messages[{i}].content contains a NUL byte"))
            })?;
            owned.push((role, content));
        }
        let msgs: Vec<sys::llama_chat_message> = owned
            .iter()
            .map(|(r, c)| sys::llama_chat_message {
                role: r.as_ptr(),
                content: c.as_ptr(),
            })
            .collect();
        let total: usize = messages
            .iter()
            .map(|m| m.role.len() + m.content.len())
            .sum();
        let mut buf = vec![0u8; total * 2 + 256];
        loop {
            let cap = buf.len().min(i32::MAX as usize) as i32;
            let mut n = 0;
            // SAFETY: every pointer in msgs points into `owned`, alive for the call;
            // buf has `cap` writable bytes.
            shim::guard(ErrorKind::Unsupported, &self.source, |e, el| unsafe {
                shim::tas_chat_apply_template(
                    tmpl_c.as_ptr(),
                    msgs.as_ptr(),
                    msgs.len(),
                    add_assistant,
                    buf.as_mut_ptr() as *mut c_char,
                    cap,
                    &mut n,
                    e,
                    el,
                )
            })?;
            if n < 0 {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "{}: llama.cpp does not support this model's chat template; format the prompt yourself and call generate",
                        self.source
                    ),
                ));
            }
            let n = n as usize;
            if n > buf.len() {
                buf.resize(n, 0);
                continue;
            }
            buf.truncate(n);
            return String::from_utf8(buf)
                .map_err(|_| Error::invalid_arg("chat template produced invalid UTF-8"));
        }
    }
}

fn load_inner(
    path: &Path,
    gguf: GgufInfo,
    shown: String,
    params: &ModelParams,
    progress: Option<&mut dyn FnMut(f32) -> bool>,
) -> Result<Model> {
    super::init();
    let b = super::backends::report();
    if b.cpu_variant.is_empty() && !params.vocab_only {
        return Err(Error::new(
            ErrorKind::Backend,
            format!("cannot run a model: {}", b.reason),
        ));
    }
    let cpath = path_cstring(path)?;
    // SAFETY: plain struct returned by value.
    let mut mp = unsafe { sys::llama_model_default_params() };
    mp.n_gpu_layers = params.n_gpu_layers;
    // Misaligned tensor data would trip ggml's alignment assert when mapped; read
    // into (aligned) buffers instead, which llama.cpp handles.
    let use_mmap = match &gguf.unmappable {
        Some(why) if params.use_mmap && !params.vocab_only => {
            crate::log::log(
                crate::log::LogLevel::Warn,
                &format!("{why}; reading the file into memory instead of mapping it"),
            );
            false
        }
        _ => params.use_mmap,
    };
    mp.load_mode = match (use_mmap, params.use_mlock) {
        (true, false) => sys::LLAMA_LOAD_MODE_MMAP,
        (true, true) => sys::LLAMA_LOAD_MODE_MMAP_MLOCK,
        (false, true) => sys::LLAMA_LOAD_MODE_MLOCK,
        (false, false) => sys::LLAMA_LOAD_MODE_NONE,
    };
    mp.vocab_only = params.vocab_only;
    let mut always = |_: f32| true;
    let has_cb = progress.is_some();
    let mut state = ProgressState {
        cb: progress.unwrap_or(&mut always),
        stopped: false,
    };
    if has_cb {
        mp.progress_callback = Some(progress_trampoline);
        mp.progress_callback_user_data = &mut state as *mut ProgressState as *mut c_void;
    }
    crate::log::clear_backend_errors();
    let mut ptr = std::ptr::null_mut();
    // SAFETY: cpath is NUL-terminated; mp's callback data outlives the call.
    shim::guard(ErrorKind::BadModel, &shown, |e, el| unsafe {
        shim::tas_model_load(cpath.as_ptr(), mp, &mut ptr, e, el)
    })?;
    let Some(ptr) = NonNull::new(ptr) else {
        if state.stopped {
            return Err(Error::cancelled(format!(
                "{shown}: loading cancelled by the progress callback"
            )));
        }
        return Err(shim::backend_failure(
            ErrorKind::BadModel,
            &shown,
            "llama.cpp could not load it",
        ));
    };
    // SAFETY: a loaded model always has a vocabulary.
    let vocab =
        NonNull::new(unsafe { sys::llama_model_get_vocab(ptr.as_ptr()) } as *mut sys::llama_vocab);
    let Some(vocab) = vocab else {
        // SAFETY: freeing the model we just loaded.
        unsafe { sys::llama_model_free(ptr.as_ptr()) };
        return Err(Error::bad_model(format!(
            "{shown}: model has no vocabulary"
        )));
    };
    let mut info = read_info(ptr.as_ptr(), vocab.as_ptr(), &gguf);
    if params.vocab_only {
        // llama.cpp reads no hyperparameters in vocab-only mode and reports zeros;
        // the file has them, so report those.
        let arch = |k: &str| {
            gguf.arch_u64(k)
                .map_or(0, |v| v.min(i32::MAX as u64) as i32)
        };
        info.n_ctx_train = arch("context_length");
        info.n_embd = arch("embedding_length");
        info.n_layer = arch("block_count");
        if info.description.trim().is_empty() {
            info.description = format!("{} (vocabulary only)", info.architecture);
        }
    }
    let fp_source = FpSource::File(std::fs::File::open(path).ok());
    Ok(Model {
        ptr,
        vocab,
        gguf,
        info,
        source: shown,
        vocab_only: params.vocab_only,
        fingerprint: once_cell::sync::OnceCell::new(),
        fp_source,
    })
}

fn path_cstring(path: &Path) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid_arg(format!("path {} contains a NUL byte", path.display())))
}

fn read_info(m: *mut sys::llama_model, v: *const sys::llama_vocab, g: &GgufInfo) -> ModelInfo {
    let s = |k: &str| g.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
    let mut desc = vec![0u8; 256];
    // SAFETY: desc has desc.len() writable bytes; the result is NUL-terminated.
    let n = unsafe { sys::llama_model_desc(m, desc.as_mut_ptr() as *mut c_char, desc.len()) };
    desc.truncate(n.clamp(0, 255) as usize);
    // SAFETY: NULL name asks for the default template; the returned string lives as
    // long as the model, and is copied at once.
    let tmpl = unsafe { sys::llama_model_chat_template(m, std::ptr::null()) };
    let chat_template = if tmpl.is_null() {
        None
    } else {
        // SAFETY: non-NULL NUL-terminated string owned by the model.
        Some(
            unsafe { CStr::from_ptr(tmpl) }
                .to_string_lossy()
                .into_owned(),
        )
    };
    let tok = |t: i32| if t < 0 { -1 } else { t };
    // SAFETY: plain getter.
    let n_layer = unsafe { sys::llama_model_n_layer(m) };
    // llama.cpp aborts on per-layer queries of a vocab-only model (no layers), so
    // head counts come from the GGUF metadata then.
    let heads = |suffix: &str, f: unsafe extern "C" fn(*const sys::llama_model) -> i32| {
        if n_layer > 0 {
            // SAFETY: the model has layers, so the per-layer query is in range.
            unsafe { f(m) }
        } else {
            g.arch_u64(suffix)
                .map_or(0, |v| v.min(i32::MAX as u64) as i32)
        }
    };
    // SAFETY: plain getters on a loaded model and its vocabulary.
    unsafe {
        ModelInfo {
            architecture: s("general.architecture"),
            name: s("general.name"),
            description: String::from_utf8_lossy(&desc).into_owned(),
            quantization: g.quant_label().unwrap_or_default(),
            chat_template,
            n_vocab: sys::llama_vocab_n_tokens(v),
            n_ctx_train: sys::llama_model_n_ctx_train(m),
            n_embd: sys::llama_model_n_embd(m),
            n_layer,
            n_head: heads("attention.head_count", sys::llama_model_n_head),
            n_head_kv: heads("attention.head_count_kv", sys::llama_model_n_head_kv),
            n_params: sys::llama_model_n_params(m),
            size_bytes: sys::llama_model_size(m),
            file_size: g.file_size,
            bos: tok(sys::llama_vocab_bos(v)),
            eos: tok(sys::llama_vocab_eos(v)),
            eot: tok(sys::llama_vocab_eot(v)),
            nl: tok(sys::llama_vocab_nl(v)),
        }
    }
}

#[cfg(target_os = "linux")]
mod memfd {
    use super::*;
    use std::io::Write;
    use std::os::fd::FromRawFd;

    pub(super) fn load(
        bytes: &[u8],
        gguf: GgufInfo,
        params: &ModelParams,
        progress: Option<&mut dyn FnMut(f32) -> bool>,
    ) -> Result<Model> {
        // SAFETY: the name is a NUL-terminated literal; memfd_create has no other inputs.
        let fd = unsafe { libc::memfd_create(c"tabagent-model".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::io(
                "memfd_create",
                "<memory buffer>",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: fd is a fresh descriptor that the File now owns (closed on drop).
        let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
        file.write_all(bytes)
            .map_err(|e| Error::io("write", "<memory buffer> (memfd)", e))?;
        if let Some(limits) = &params.check {
            check_buffer_in_child(fd, gguf.file_size, params, limits)?;
        }
        // llama.cpp opens by path: /proc/self/fd/N reaches the anonymous file. Its
        // mmap keeps the pages alive after the descriptor is closed.
        let path = PathBuf::from(format!("/proc/self/fd/{fd}"));
        let (offset, size) = (gguf.data_offset, gguf.file_size);
        let mut m = load_inner(&path, gguf, "<memory buffer>".into(), params, progress)?;
        m.source = "<memory buffer>".into();
        // The memfd is closed below (a handle kept for later would keep its pages
        // when the model was read rather than mapped): take the digest now.
        let fp = crate::engine::state::fingerprint(
            &|at, buf: &mut [u8]| {
                let b = bytes.get(at as usize..).unwrap_or(&[]);
                let n = b.len().min(buf.len());
                buf[..n].copy_from_slice(&b[..n]);
                Ok(n)
            },
            offset,
            size,
        );
        let _ = m.fingerprint.set(fp);
        m.fp_source = FpSource::Done;
        drop(file);
        Ok(m)
    }

    /// The out-of-process check of an in-memory model: the child inherits a
    /// duplicate of the memfd (without close-on-exec) and reads it as its own
    /// /proc/self/fd/N, which also works for hosts that are not dumpable.
    fn check_buffer_in_child(
        fd: i32,
        size: u64,
        params: &ModelParams,
        limits: &crate::engine::check::CheckLimits,
    ) -> Result<()> {
        // SAFETY: duplicating a descriptor this function's caller owns.
        let dup = unsafe { libc::dup(fd) };
        if dup < 0 {
            return Err(Error::io(
                "dup",
                "<memory buffer>",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: `dup` is a fresh descriptor owned (and closed) by this value.
        let _owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(dup) };
        let theirs = PathBuf::from(format!("/proc/self/fd/{dup}"));
        crate::engine::check::check_validated(&theirs, "<memory buffer>", size, params, limits)
            .map(|_| ())
    }
}

#[cfg(not(target_os = "linux"))]
mod memfd {
    use super::*;

    pub(super) fn load(
        _bytes: &[u8],
        _gguf: GgufInfo,
        _params: &ModelParams,
        _progress: Option<&mut dyn FnMut(f32) -> bool>,
    ) -> Result<Model> {
        let _ = PathBuf::new();
        Err(Error::unsupported(
            "loading a model from memory needs memfd_create (Linux); load it from a file instead",
        ))
    }
}
