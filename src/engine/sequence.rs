//! A sequence: one conversation inside a context. Its calls run on the calling
//! thread, which submits a job to the context's batch scheduler and turns the tokens
//! it hands back into text (UTF-8 assembly, stop strings, the caller's callback).

use super::batch::{
    self, AbortHandle, Core, End, Job, JobOut, CANCELLED, IDLE, LOOKAHEAD, RUNNING,
};
use super::context::{GenParams, GenResult, StopReason, SEED_DEFAULT};
use super::model::ChatMessage;
use super::sampler::Sampler;
use super::text::{Flow, TextStream};
use crate::error::{Error, ErrorKind, Result};
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// One conversation in a context: its own KV cells, token history, sampler and
/// result. Sequences of one context may be driven from different threads at once;
/// their decodes share batches. Dropping a sequence frees its cells.
pub struct Sequence {
    core: Arc<Core>,
    id: i32,
    abort: AbortHandle,
    seed: u32,
    piece: Vec<u8>,
}

impl Drop for Sequence {
    fn drop(&mut self) {
        self.core.sh.release(self.id);
    }
}

impl std::fmt::Debug for Sequence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequence").field("id", &self.id).finish()
    }
}

impl Sequence {
    pub(crate) fn new(core: Arc<Core>, abort: AbortHandle, seed: u32) -> Result<Sequence> {
        let id = core.sh.claim()?;
        Ok(Sequence {
            core,
            id,
            abort,
            seed,
            piece: vec![0u8; 64],
        })
    }

    /// The llama.cpp sequence id (0..n_seq_max).
    pub fn id(&self) -> i32 {
        self.id
    }

    /// The window of this sequence in tokens.
    pub fn n_ctx_seq(&self) -> u32 {
        self.core.sh.n_ctx_seq
    }

    /// The tokens this sequence holds in the KV cache (waits for a running step).
    pub fn cached_tokens(&self) -> Vec<i32> {
        self.core.sh.llama.lock().cached[self.id as usize].clone()
    }

    pub fn abort_handle(&self) -> AbortHandle {
        self.abort.clone()
    }

    /// Forget this sequence's KV cells (the next call evaluates its whole prompt).
    pub fn reset(&mut self) {
        self.core.sh.llama.lock().clear_seq(self.id);
    }

    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Continue `prompt` (raw text, special tokens parsed), streaming text to `on_text`;
    /// returning false from it stops generation.
    pub fn generate(
        &mut self,
        prompt: &str,
        params: &GenParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenResult> {
        params.validate()?;
        let tokens = self.core.sh.model.tokenize_prompt(prompt)?;
        self.run(&tokens, params, on_text)
    }

    /// Format `messages` with the model's chat template and generate the reply.
    pub fn chat(
        &mut self,
        messages: &[ChatMessage],
        params: &GenParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenResult> {
        params.validate()?;
        if messages.is_empty() {
            return Err(Error::invalid_arg("messages must not be empty"));
        }
        let model = &self.core.sh.model;
        let opts = super::model::ChatOptions {
            template: params.chat_template.as_deref(),
            tools: params.chat_tools.as_deref(),
            vars: params.chat_vars.as_deref(),
        };
        let prompt = model.apply_chat_template(messages, true, &opts)?;
        let tokens = model.tokenize_prompt(&prompt)?;
        self.run(&tokens, params, on_text)
    }

    /// Generate from already-tokenized input.
    pub fn run(
        &mut self,
        tokens: &[i32],
        params: &GenParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenResult> {
        params.validate()?;
        let sh = &self.core.sh;
        // Generated tokens become text: a model without a tokenizer cannot do that.
        sh.model.require_tokenizer()?;
        if tokens.is_empty() {
            return Err(Error::invalid_arg("the prompt is empty (no tokens)"));
        }
        let n_vocab = sh.model.info().n_vocab;
        if let Some(t) = tokens.iter().find(|&&t| t < 0 || t >= n_vocab) {
            return Err(Error::invalid_arg(format!(
                "token {t} is out of range (vocabulary has {n_vocab})"
            )));
        }
        // Room for the prompt and at least one generated token, checked before any work.
        if tokens.len() >= sh.n_ctx_seq as usize {
            return Err(Error::new(
                ErrorKind::ContextFull,
                format!(
                    "the prompt is {} tokens but a sequence holds {} (including one token for the reply); create the context with a larger n_ctx{}",
                    tokens.len(),
                    sh.n_ctx_seq,
                    if sh.n_seq_max > 1 && !sh.unified {
                        " (each of its n_seq_max sequences gets n_ctx / n_seq_max) or kv_unified"
                    } else {
                        ""
                    }
                ),
            ));
        }
        let seed = if params.seed != SEED_DEFAULT {
            params.seed
        } else {
            self.seed
        };
        let sampler = Sampler::new(&sh.model, params, seed)?;
        let job = Arc::new(Job {
            seq: self.id,
            tokens: tokens.to_vec(),
            max_tokens: if params.max_tokens > 0 {
                params.max_tokens as u32
            } else {
                u32::MAX
            },
            shift_keep: params.context_shift.then_some(params.n_keep),
            flag: self.abort.flag.clone(),
            sampler: Mutex::new(Some(sampler)),
            out: Mutex::new(JobOut {
                tokens: VecDeque::new(),
                end: None,
            }),
            ready: Condvar::new(),
        });
        if sh.retired[self.id as usize].load(Ordering::Acquire) {
            return Err(Error::invalid_arg(
                "this sequence was retired after a damaged state file; use a new sequence",
            ));
        }
        self.abort.flag.store(RUNNING, Ordering::Release);
        if let Err(e) = sh.submit(job.clone()) {
            self.abort.flag.store(IDLE, Ordering::Release);
            return Err(e);
        }
        // A Rust callback that panics unwinds through consume(): stop the job and
        // wait for the worker to let go of it before the sequence can be reused.
        struct Unwinding<'a>(&'a Job, &'a batch::Shared, bool);
        impl Drop for Unwinding<'_> {
            fn drop(&mut self) {
                if self.2 {
                    stop(self.0, self.1);
                    wait_end(self.0);
                }
            }
        }
        let sh = self.core.sh.clone();
        let mut guard = Unwinding(&job, &sh, true);
        let out = self.consume(&job, tokens.len(), params, on_text);
        guard.2 = false;
        self.abort.flag.store(IDLE, Ordering::Release);
        out
    }

    /// Take the job's tokens as the worker hands them out, until it ends.
    fn consume(
        &mut self,
        job: &Job,
        n_prompt: usize,
        params: &GenParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenResult> {
        let sh = &self.core.sh;
        let mut stream = TextStream::new(params.stop.clone());
        let mut n_generated = 0u32;
        let mut stopped: Option<StopReason> = None;
        let end = loop {
            let item = {
                let mut o = job.out.lock();
                loop {
                    if let Some(t) = o.tokens.pop_front() {
                        // The worker may wait for this: the queue is drained (the
                        // step's hand-off) or was full (lookahead).
                        break Ok((t, o.tokens.is_empty() || o.tokens.len() + 1 >= LOOKAHEAD));
                    }
                    if let Some(e) = o.end.take() {
                        break Err(e);
                    }
                    job.ready.wait(&mut o);
                }
            };
            let (tok, wake) = match item {
                Ok(x) => x,
                Err(end) => break end,
            };
            if stopped.is_some() {
                if wake {
                    sh.wake();
                }
                continue; // generated ahead of a stop: not the caller's
            }
            n_generated += 1;
            let mut piece = std::mem::take(&mut self.piece);
            let n = sh.model.token_to_piece_into(tok, false, &mut piece);
            let flow = match n {
                Ok(n) => stream.push(&piece[..n], on_text),
                Err(e) => {
                    self.piece = piece;
                    stop(job, sh);
                    wait_end(job);
                    return Err(e);
                }
            };
            self.piece = piece;
            // After the callback, so it ran while the worker waited, not beside a decode.
            if wake {
                sh.wake();
            }
            match flow {
                Flow::Continue => {}
                Flow::Stopped => stopped = Some(StopReason::StopString),
                Flow::Cancelled => stopped = Some(StopReason::Cancelled),
            }
            if stopped.is_some() {
                stop(job, sh);
            }
        };
        let mut res = GenResult {
            stop_reason: StopReason::Eog,
            n_prompt: n_prompt as u32,
            n_reused: 0,
            n_generated,
            prompt_ms: 0.0,
            gen_ms: 0.0,
            n_shifts: 0,
            n_shifted: 0,
        };
        let je = match (end, stopped) {
            (Ok(je), _) => je,
            // Stopped by the caller while the worker failed: the caller's stop wins.
            (Err(_), Some(r)) => {
                res.stop_reason = r;
                return Ok(res);
            }
            (Err(e), None) => return Err(e),
        };
        res.n_reused = je.n_reused;
        res.n_shifts = je.n_shifts;
        res.n_shifted = je.n_shifted;
        res.prompt_ms = je.prompt_ms;
        res.gen_ms = je.prompt_done.map_or(0.0, batch::ms);
        res.stop_reason = match (stopped, je.end) {
            (Some(r), _) => r,
            (None, End::Cancelled) => StopReason::Cancelled,
            (None, e) => {
                let r = match e {
                    End::Eog => StopReason::Eog,
                    End::MaxTokens => StopReason::MaxTokens,
                    _ => StopReason::ContextFull,
                };
                match stream.finish(on_text) {
                    Flow::Cancelled => StopReason::Cancelled,
                    Flow::Stopped => StopReason::StopString,
                    Flow::Continue => r,
                }
            }
        };
        Ok(res)
    }
}

/// Ask the worker to end the job at its next step.
fn stop(job: &Job, sh: &batch::Shared) {
    job.flag.store(CANCELLED, Ordering::Release);
    sh.wake();
}

/// Wait until the worker has let go of the job.
fn wait_end(job: &Job) {
    let mut o = job.out.lock();
    while o.end.is_none() {
        job.ready.wait(&mut o);
    }
}
