//! The batch scheduler behind a context's sequences.
//!
//! One worker thread per context makes every `llama_decode` call. Each step it
//! gathers the next token of every generating sequence and then chunks of prompts
//! still being read, up to `n_batch` tokens, decodes them in one batch, samples each
//! sequence's next token from its own logits row and hands the token to the calling
//! thread, which turns tokens into text and runs the caller's callback. A call that
//! starts while others generate joins at the next step (continuous batching); one
//! that is cancelled or finishes leaves without disturbing the others.
//!
//! Locks (never two of the first three at once, except `out` inside `llama`):
//! `sched` (submissions, wake-ups), `llama` (the llama_context and the token mirror
//! of its KV cache; held for a step or a memory operation), and each job's `out`.

use super::model::Model;
use super::sampler::Sampler;
use super::{shim, sys};
use crate::error::{Error, ErrorKind, Result};
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Instant;

pub(crate) const IDLE: u8 = 0;
pub(crate) const RUNNING: u8 = 1;
pub(crate) const CANCELLED: u8 = 2;

/// Tokens the worker may generate ahead of a caller still busy with earlier ones;
/// bounds the waste when that caller then stops (stop string, cancel).
pub(crate) const LOOKAHEAD: usize = 8;

/// How long the worker waits, after handing out a step's tokens, for their
/// callers to take them before it decodes again. Callers then run while the
/// decode threads are idle instead of preempting them mid-graph (on a machine with
/// as many decode threads as cores that costs more than the wait); a caller slower
/// than this does not hold the others back for longer.
const HANDOFF_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

/// How long the worker spins for its callers before it sleeps on them.
const SPIN: std::time::Duration = std::time::Duration::from_micros(300);

/// Fewer shared tokens than this are re-evaluated rather than copied from another
/// sequence (a cross-stream copy moves a whole KV stream).
const MIN_SHARE: usize = 16;

/// A thread-safe handle that cancels one sequence's running call.
#[derive(Debug, Clone)]
pub struct AbortHandle {
    pub(crate) flag: Arc<AtomicU8>,
    shared: Weak<Shared>,
}

impl AbortHandle {
    pub(crate) fn new(shared: &Arc<Shared>) -> AbortHandle {
        AbortHandle {
            flag: Arc::new(AtomicU8::new(IDLE)),
            shared: Arc::downgrade(shared),
        }
    }

    /// Whether a cancel has taken: the running call's flag reads cancelled.
    pub(crate) fn took(&self) -> bool {
        self.flag.load(Ordering::Acquire) == CANCELLED
    }

    /// Whether a call is in progress on the sequence (its job is queued or running;
    /// it reads true from just before the job is handed to the scheduler).
    pub fn is_running(&self) -> bool {
        self.flag.load(Ordering::Acquire) != IDLE
    }

    /// Cancel the call in progress, if any (a no-op when idle, so a stale cancel never
    /// kills the next call). The call ends at the next step.
    pub fn cancel(&self) {
        if self
            .flag
            .compare_exchange(RUNNING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            if let Some(sh) = self.shared.upgrade() {
                sh.wake();
            }
        }
    }
}

/// Why the worker ended a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Eog,
    MaxTokens,
    ContextFull,
    Cancelled,
}

/// What the worker reports when a job ends.
#[derive(Debug, Clone)]
pub(crate) struct JobEnd {
    pub end: End,
    pub n_reused: u32,
    pub n_shifts: u32,
    pub n_shifted: u32,
    pub prompt_ms: f64,
    /// When the prompt's last chunk was decoded (None: the job ended before).
    pub prompt_done: Option<Instant>,
}

pub(crate) struct JobOut {
    pub tokens: VecDeque<i32>,
    pub end: Option<Result<JobEnd>>,
}

/// One generation call on one sequence, shared by the caller and the worker.
pub(crate) struct Job {
    pub seq: i32,
    pub tokens: Vec<i32>,
    pub max_tokens: u32,
    /// Context shift: tokens kept at the start of the window; None = off.
    pub shift_keep: Option<u32>,
    /// The sequence's run flag: CANCELLED ends the job at the next step.
    pub flag: Arc<AtomicU8>,
    pub sampler: Mutex<Option<Sampler>>,
    pub out: Mutex<JobOut>,
    pub ready: Condvar,
}

impl Job {
    fn cancelled(&self) -> bool {
        self.flag.load(Ordering::Acquire) == CANCELLED
    }

    fn backlog(&self) -> usize {
        self.out.lock().tokens.len()
    }

    fn push(&self, tok: i32) {
        self.out.lock().tokens.push_back(tok);
        self.ready.notify_all();
    }

    fn finish(&self, r: Result<JobEnd>) {
        self.out.lock().end = Some(r);
        self.ready.notify_all();
    }
}

/// The llama_context and the tokens each sequence holds in its KV cache.
pub(crate) struct Llama {
    pub ptr: NonNull<sys::llama_context>,
    batch: sys::llama_batch,
    /// `cached[s]`: exactly the tokens at positions 0.. of sequence `s`.
    pub cached: Vec<Vec<i32>>,
    /// A context shift moved cells; llama.cpp rotates their keys in place at the
    /// start of the next decode, which therefore must not be aborted half-way.
    shift_pending: bool,
    /// Sequences whose cells could not be removed (a crafted state file): their
    /// ids are never handed out again and their calls fail (shared with
    /// `Shared::retired`, readable without this lock).
    pub poisoned: Arc<[AtomicBool]>,
}

// SAFETY: a llama_context may move between threads; every use is under the mutex.
unsafe impl Send for Llama {}

impl Drop for Llama {
    fn drop(&mut self) {
        // SAFETY: both were created in `Shared::new` and are freed once here.
        unsafe {
            sys::llama_batch_free(self.batch);
            sys::llama_free(self.ptr.as_ptr());
        }
    }
}

impl Llama {
    /// Fill the batch with `(token, pos, seq, output)` items (at most n_batch) and
    /// run it through llama_decode, or llama_encode for encoder-only models.
    /// Returns llama's return code.
    pub fn run_batch(
        &mut self,
        what: &str,
        items: impl Iterator<Item = (i32, i32, i32, bool)>,
        n_batch: usize,
        encode: bool,
    ) -> Result<i32> {
        let b = &mut self.batch;
        let mut n = 0;
        for (tok, pos, seq, out) in items {
            assert!(n < n_batch, "batch overflow");
            // SAFETY: n < n_batch, the capacity the batch was allocated with; each
            // token belongs to one sequence.
            unsafe {
                *b.token.add(n) = tok;
                *b.pos.add(n) = pos;
                *b.n_seq_id.add(n) = 1;
                **b.seq_id.add(n) = seq;
                *b.logits.add(n) = out as i8;
            }
            n += 1;
        }
        b.n_tokens = n as i32;
        let (batch, ctx) = (self.batch, self.ptr.as_ptr());
        let mut rc = 0;
        // SAFETY: valid context and a batch holding n tokens.
        shim::guard(ErrorKind::Backend, what, |e, el| unsafe {
            if encode {
                shim::tas_encode(ctx, batch, &mut rc, e, el)
            } else {
                shim::tas_decode(ctx, batch, &mut rc, e, el)
            }
        })?;
        Ok(rc)
    }

    pub fn mem(&self) -> sys::llama_memory_t {
        // SAFETY: valid context.
        unsafe { sys::llama_get_memory(self.ptr.as_ptr()) }
    }

    /// Drop positions [p0, p1) of `seq`; false when the memory cannot cut there.
    pub fn seq_rm(&self, what: &str, seq: i32, p0: i32, p1: i32) -> Result<bool> {
        let mut removed = false;
        let mem = self.mem();
        // SAFETY: valid memory; seq is below n_seq_max.
        shim::guard(ErrorKind::Backend, what, |e, el| unsafe {
            shim::tas_memory_seq_rm(mem, seq, p0, p1, &mut removed, e, el)
        })?;
        Ok(removed)
    }

    /// Forget everything sequence `seq` holds.
    pub fn clear_seq(&mut self, seq: i32) {
        if self.seq_rm("clear", seq, -1, -1).is_err() {
            // SAFETY: clearing all memory is always allowed.
            unsafe { sys::llama_memory_clear(self.mem(), true) };
            self.cached.iter_mut().for_each(Vec::clear);
        }
        self.cached[seq as usize].clear();
        // SAFETY: valid memory.
        if unsafe { sys::llama_memory_seq_pos_min(self.mem(), seq) } != -1 {
            self.purge_stream(seq);
        }
    }

    /// `seq_rm` cannot remove cells at negative positions (a crafted state file
    /// can leave some). With one KV stream per sequence, copying an empty
    /// sequence's stream over this one resets it whole.
    fn purge_stream(&mut self, seq: i32) {
        let mem = self.mem();
        let empty = (0..self.cached.len() as i32).find(|&s| {
            // SAFETY (both): valid memory.
            s != seq
                && self.cached[s as usize].is_empty()
                && unsafe { sys::llama_memory_seq_pos_min(mem, s) } == -1
                && unsafe { sys::llama_memory_seq_pos_max(mem, s) } == -1
        });
        if let Some(e) = empty {
            // SAFETY: valid memory; both ids are below n_seq_max; a full-range copy.
            let _ = shim::guard(ErrorKind::Backend, "purge", |er, el| unsafe {
                shim::tas_memory_seq_cp(mem, e, seq, -1, -1, er, el)
            });
        }
        // A whole-stream copy is applied at the next decode and would overwrite
        // whatever is loaded into this stream before then; and without a copy the
        // cells stay. Either way the id is not safe to hand out again.
        self.poisoned[seq as usize].store(true, Ordering::Release);
        crate::log::log(
            crate::log::LogLevel::Error,
            &format!(
                "sequence {seq} held KV cells that cannot be removed (a crafted state file); its slot is retired until the context is freed"
            ),
        );
    }

    /// Re-derive what `seq` holds after a failed decode appended `added` tokens.
    fn rederive(&mut self, seq: i32, added: &[i32]) {
        // SAFETY: valid memory.
        let pos_max = unsafe { sys::llama_memory_seq_pos_max(self.mem(), seq) };
        let kept = (pos_max + 1).max(0) as usize;
        let c = &mut self.cached[seq as usize];
        if kept < c.len() {
            c.truncate(kept);
        } else {
            let extra = (kept - c.len()).min(added.len());
            c.extend_from_slice(&added[..extra]);
        }
    }
}

struct StepAbort {
    shutdown: AtomicBool,
    /// Run flags of the jobs in the batch being decoded.
    flags: Mutex<Vec<Arc<AtomicU8>>>,
}

unsafe extern "C" fn abort_cb(data: *mut c_void) -> bool {
    // SAFETY: data is the StepAbort boxed inside Shared, which outlives the context.
    let a = unsafe { &*(data as *const StepAbort) };
    if a.shutdown.load(Ordering::Acquire) {
        return true;
    }
    // Abort a decode only when every sequence in it was cancelled: the others'
    // tokens must not be lost.
    let flags = a.flags.lock();
    !flags.is_empty() && flags.iter().all(|f| f.load(Ordering::Acquire) == CANCELLED)
}

#[derive(Default)]
struct Sched {
    in_use: Vec<bool>,
    incoming: Vec<Arc<Job>>,
    shutdown: bool,
    /// Set when the worker panicked: every later call fails with it.
    dead: Option<String>,
}

/// The state a context's handles and its worker share.
pub(crate) struct Shared {
    /// Declared first so it drops first: llama_free reads the model.
    pub llama: Mutex<Llama>,
    pub model: Arc<Model>,
    pub n_ctx: u32,
    /// The window of one sequence: n_ctx / n_seq_max, or n_ctx with a unified cache.
    pub n_ctx_seq: u32,
    pub n_batch: u32,
    pub n_seq_max: u32,
    /// Created for embeddings ([`super::embed`]): no generation, no worker jobs.
    pub embeddings: bool,
    pub unified: bool,
    /// The memory supports position shifts (context shift).
    pub can_shift: bool,
    /// A plain attention KV cache: no recurrent state (Mamba, RWKV, hybrids),
    /// whose `seq_cp` copies a whole state and whose state files have another
    /// layout. Prefix copies and the state-file cell check need this.
    pub plain_kv: bool,
    /// See `Llama::poisoned`.
    pub retired: Arc<[AtomicBool]>,
    sched: Mutex<Sched>,
    work: Condvar,
    abort: Box<StepAbort>,
}

/// What a context's handles hold: dropping the last one stops the worker.
pub(crate) struct Core {
    pub sh: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
}

impl Drop for Core {
    fn drop(&mut self) {
        self.sh.abort.shutdown.store(true, Ordering::Release);
        self.sh.sched.lock().shutdown = true;
        self.sh.work.notify_all();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// The fields of llama_context_params the scheduler sets up.
pub(crate) struct Setup {
    pub params: sys::llama_context_params,
    pub what: String,
}

impl Core {
    pub fn new(model: Arc<Model>, mut setup: Setup) -> Result<Core> {
        let abort = Box::new(StepAbort {
            shutdown: AtomicBool::new(false),
            flags: Mutex::new(Vec::new()),
        });
        setup.params.abort_callback = Some(abort_cb);
        setup.params.abort_callback_data = &*abort as *const StepAbort as *mut c_void;
        crate::log::clear_backend_errors();
        let mut ptr = std::ptr::null_mut();
        let what = &setup.what;
        // SAFETY: the model pointer is valid while `model` (kept in Shared) lives.
        shim::guard(ErrorKind::Backend, what, |e, el| unsafe {
            shim::tas_init_from_model(model.raw(), setup.params, &mut ptr, e, el)
        })?;
        let ptr = NonNull::new(ptr).ok_or_else(|| {
            shim::backend_failure(ErrorKind::Backend, what, "llama.cpp refused the parameters")
        })?;
        // SAFETY (block): valid context; the batch is freed with it (Llama::drop).
        let (n_ctx, n_ctx_seq, n_batch, can_shift, batch) = unsafe {
            let n_batch = sys::llama_n_batch(ptr.as_ptr()).max(1);
            (
                sys::llama_n_ctx(ptr.as_ptr()),
                sys::llama_n_ctx_seq(ptr.as_ptr()),
                n_batch,
                sys::llama_memory_can_shift(sys::llama_get_memory(ptr.as_ptr())),
                sys::llama_batch_init(n_batch as i32, 0, 1),
            )
        };
        let n_seq_max = setup.params.n_seq_max;
        let retired: Arc<[AtomicBool]> = (0..n_seq_max).map(|_| AtomicBool::new(false)).collect();
        let recurrent =
            model.gguf().kv.iter().any(|(k, _)| {
                k.contains(".ssm.") || k.contains(".wkv.") || k.contains(".shortconv.")
            });
        let sh = Arc::new(Shared {
            llama: Mutex::new(Llama {
                ptr,
                batch,
                cached: vec![Vec::new(); n_seq_max as usize],
                shift_pending: false,
                poisoned: retired.clone(),
            }),
            retired,
            model,
            n_ctx,
            n_ctx_seq,
            n_batch,
            n_seq_max,
            unified: setup.params.kv_unified,
            embeddings: setup.params.embeddings,
            can_shift,
            plain_kv: can_shift && !recurrent,
            sched: Mutex::new(Sched {
                in_use: vec![false; n_seq_max as usize],
                ..Default::default()
            }),
            work: Condvar::new(),
            abort,
        });
        let w = sh.clone();
        let worker = std::thread::Builder::new()
            .name("tabagent-batch".into())
            .spawn(move || worker(w))
            .map_err(|e| Error::backend(format!("could not start the batch thread: {e}")))?;
        Ok(Core {
            sh,
            worker: Some(worker),
        })
    }
}

impl Shared {
    pub fn wake(&self) {
        let _g = self.sched.lock();
        self.work.notify_all();
    }

    /// Claim a free sequence id.
    pub fn claim(&self) -> Result<i32> {
        if self.embeddings {
            return Err(Error::invalid_arg(
                "this context was created for embeddings; generation needs a context without ContextParams.embeddings",
            ));
        }
        let mut s = self.sched.lock();
        match s.in_use.iter().position(|u| !u) {
            Some(i) => {
                s.in_use[i] = true;
                Ok(i as i32)
            }
            None => Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "all {} sequences of this context are in use; free one or create the context with a larger n_seq_max",
                    self.n_seq_max
                ),
            )),
        }
    }

    /// Give a sequence id back, forgetting its KV cells (a retired id stays taken).
    pub fn release(&self, seq: i32) {
        let mut l = self.llama.lock();
        l.clear_seq(seq);
        let retired = l.poisoned[seq as usize].load(Ordering::Acquire);
        drop(l);
        if !retired {
            self.sched.lock().in_use[seq as usize] = false;
        }
    }

    pub fn submit(&self, job: Arc<Job>) -> Result<()> {
        let mut s = self.sched.lock();
        if let Some(why) = &s.dead {
            return Err(Error::new(ErrorKind::Panic, why.clone()));
        }
        s.incoming.push(job);
        self.work.notify_all();
        Ok(())
    }
}

enum Phase {
    /// Waiting to be placed: prefix reuse, or a copy from another sequence.
    Admit,
    /// Prompt tokens [next..] still to be decoded.
    Prompt { next: usize },
    /// `tok` was sampled and handed out; it is decoded next.
    Gen { tok: i32 },
}

struct Run {
    job: Arc<Job>,
    sampler: Option<Sampler>,
    phase: Phase,
    n_reused: u32,
    n_gen: u32,
    n_shifts: u32,
    n_shifted: u32,
    t_admit: Instant,
    prompt_ms: f64,
    prompt_done: Option<Instant>,
}

impl Run {
    fn new(job: Arc<Job>) -> Run {
        let sampler = job.sampler.lock().take();
        Run {
            job,
            sampler,
            phase: Phase::Admit,
            n_reused: 0,
            n_gen: 0,
            n_shifts: 0,
            n_shifted: 0,
            t_admit: Instant::now(),
            prompt_ms: 0.0,
            prompt_done: None,
        }
    }

    fn seq(&self) -> usize {
        self.job.seq as usize
    }

    fn runnable(&self) -> bool {
        match self.phase {
            Phase::Gen { .. } => self.job.cancelled() || self.job.backlog() < LOOKAHEAD,
            _ => true,
        }
    }

    fn end(&self, end: End) -> Result<JobEnd> {
        Ok(JobEnd {
            end,
            n_reused: self.n_reused,
            n_shifts: self.n_shifts,
            n_shifted: self.n_shifted,
            prompt_ms: if self.prompt_done.is_some() {
                self.prompt_ms
            } else {
                ms(self.t_admit)
            },
            prompt_done: self.prompt_done,
        })
    }
}

fn worker(sh: Arc<Shared>) {
    let mut runs: Vec<Run> = Vec::new();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker_loop(&sh, &mut runs)));
    if let Err(p) = r {
        let why = format!(
            "the batch thread panicked: {}",
            p.downcast_ref::<&str>()
                .copied()
                .or(p.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("unknown payload")
        );
        let mut s = sh.sched.lock();
        s.dead = Some(why.clone());
        let incoming: Vec<_> = s.incoming.drain(..).collect();
        drop(s);
        for j in runs.iter().map(|r| &r.job).chain(&incoming) {
            j.finish(Err(Error::new(ErrorKind::Panic, why.clone())));
        }
    }
}

fn worker_loop(sh: &Shared, runs: &mut Vec<Run>) {
    loop {
        {
            let mut s = sh.sched.lock();
            loop {
                runs.extend(s.incoming.drain(..).map(Run::new));
                if s.shutdown {
                    drop(s);
                    for r in runs.drain(..) {
                        r.job.finish(Err(Error::cancelled("the context was freed")));
                    }
                    return;
                }
                if runs.iter().any(Run::runnable) {
                    break;
                }
                sh.work.wait(&mut s);
            }
        }
        let mut l = sh.llama.lock();
        let handed = step(sh, &mut l, runs);
        drop(l);
        if handed.is_empty() {
            continue;
        }
        let start = Instant::now();
        let deadline = start + HANDOFF_WAIT;
        let pending = || handed.iter().any(|j| j.backlog() > 0 && !j.cancelled());
        // Spin briefly first: a caller usually takes its token within tens of
        // microseconds, and a worker that sleeps every token is woken on another
        // core, away from what the last decode left in its caches.
        while pending() && start.elapsed() < SPIN {
            std::hint::spin_loop();
        }
        let mut s = sh.sched.lock();
        while !s.shutdown && handed.iter().any(|j| j.backlog() > 0 && !j.cancelled()) {
            if sh.work.wait_until(&mut s, deadline).timed_out() {
                break;
            }
        }
    }
}

fn lcp(a: &[i32], b: &[i32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Finish the runs at `idx` (sorted ascending) with their results.
fn finish_at(runs: &mut Vec<Run>, mut done: Vec<(usize, Result<JobEnd>)>) {
    done.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
    for (i, r) in done {
        let run = runs.remove(i);
        run.job.finish(r);
    }
}

/// One batch step; returns the jobs it handed a token to.
fn step(sh: &Shared, l: &mut Llama, runs: &mut Vec<Run>) -> Vec<Arc<Job>> {
    let src = sh.model.source();
    // llama.cpp cuts a batch over several KV streams into ubatches of consecutive,
    // increasing sequence ids (`split_equal`): in id order a step is one graph
    // compute, in arrival order it can be several.
    runs.sort_by_key(|r| r.job.seq);
    let mut done: Vec<(usize, Result<JobEnd>)> = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        if r.job.cancelled() {
            done.push((i, r.end(End::Cancelled)));
        }
    }
    finish_at(runs, done);

    let mut done = Vec::new();
    for i in 0..runs.len() {
        if matches!(runs[i].phase, Phase::Admit) {
            if let Err(e) = admit(sh, l, runs, i) {
                done.push((i, Err(e)));
            }
        }
    }
    finish_at(runs, done);

    // Plan: (run index, first batch slot, tokens, wants logits).
    let mut plan: Vec<(usize, usize, Vec<i32>, bool)> = Vec::new();
    let mut n = 0usize;
    let mut total: usize = l.cached.iter().map(Vec::len).sum();
    let mut done = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        if let Phase::Gen { tok } = r.phase {
            if r.job.backlog() >= LOOKAHEAD || n >= sh.n_batch as usize {
                continue;
            }
            if sh.unified && total + 1 > sh.n_ctx as usize {
                done.push((i, r.end(End::ContextFull)));
                continue;
            }
            plan.push((i, n, vec![tok], true));
            n += 1;
            total += 1;
        }
    }
    // Prompts share the room left: each gets an equal part first (a long prompt
    // must not hold a short one back for many steps), and what a short one
    // leaves goes to the next in order.
    let prompting: Vec<usize> = (0..runs.len())
        .filter(|&i| matches!(runs[i].phase, Phase::Prompt { .. }))
        .collect();
    let fair = (sh.n_batch as usize - n) / prompting.len().max(1);
    let mut spare = (sh.n_batch as usize - n)
        - prompting
            .iter()
            .map(|&i| match runs[i].phase {
                Phase::Prompt { next } => (runs[i].job.tokens.len() - next).min(fair.max(1)),
                _ => 0,
            })
            .sum::<usize>()
            .min(sh.n_batch as usize - n);
    for (i, r) in runs.iter().enumerate() {
        if let Phase::Prompt { next } = r.phase {
            let room = sh.n_batch as usize - n;
            if room == 0 {
                break;
            }
            let left = r.job.tokens.len() - next;
            let share = left.min(fair.max(1));
            let extra = (left - share).min(spare);
            spare -= extra;
            let mut chunk = (share + extra).min(room);
            if sh.unified {
                chunk = chunk.min((sh.n_ctx as usize).saturating_sub(total));
                if chunk == 0 {
                    done.push((
                        i,
                        Err(Error::new(
                            ErrorKind::ContextFull,
                            format!(
                                "the shared KV cache is full ({} cells in use by all sequences)",
                                sh.n_ctx
                            ),
                        )),
                    ));
                    continue;
                }
            }
            let last = next + chunk == r.job.tokens.len();
            plan.push((i, n, r.job.tokens[next..next + chunk].to_vec(), last));
            n += chunk;
            total += chunk;
        }
    }
    if plan.is_empty() {
        finish_at(runs, done);
        return Vec::new();
    }

    // Fill the batch.
    let b = &mut l.batch;
    for (i, start, toks, logits) in &plan {
        let seq = runs[*i].job.seq;
        let pos0 = l.cached[seq as usize].len();
        for (k, &t) in toks.iter().enumerate() {
            let j = start + k;
            // SAFETY: j < n_batch, the capacity the batch was allocated with; each
            // token belongs to one sequence (seq_id arrays hold 1 entry).
            unsafe {
                *b.token.add(j) = t;
                *b.pos.add(j) = (pos0 + k) as i32;
                *b.n_seq_id.add(j) = 1;
                **b.seq_id.add(j) = seq;
                *b.logits.add(j) = (*logits && k + 1 == toks.len()) as i8;
            }
        }
    }
    b.n_tokens = n as i32;

    // After a context shift the decode starts by rotating keys in place: only
    // shutting down may abort it then.
    if !l.shift_pending {
        *sh.abort.flags.lock() = plan.iter().map(|p| runs[p.0].job.flag.clone()).collect();
    }
    let mut rc = 0;
    let batch = l.batch;
    let ctx = l.ptr.as_ptr();
    // SAFETY: the batch and context are valid; the batch holds n tokens.
    let caught = shim::guard(
        ErrorKind::Backend,
        format_args!("{src}: decode failed"),
        |e, el| unsafe { shim::tas_decode(ctx, batch, &mut rc, e, el) },
    );
    sh.abort.flags.lock().clear();
    if caught.is_ok() && rc == 0 {
        l.shift_pending = false;
    }

    if let Err(e) = caught {
        // What the cache holds after an exception is unknown: forget it all, and
        // fail every job (their cells are gone).
        // SAFETY: clearing memory is always allowed.
        unsafe { sys::llama_memory_clear(l.mem(), true) };
        l.cached.iter_mut().for_each(Vec::clear);
        for r in runs.drain(..) {
            r.job.finish(Err(e.clone()));
        }
        return Vec::new();
    }
    if rc != 0 {
        let err = decode_error(sh, rc);
        for (i, _, toks, _) in &plan {
            l.rederive(runs[*i].job.seq, toks);
            let r = &runs[*i];
            let res = match err.kind() {
                ErrorKind::Cancelled => r.end(End::Cancelled),
                _ => Err(err.clone()),
            };
            done.push((*i, res));
        }
        finish_at(runs, done);
        return Vec::new();
    }

    let mut handed = Vec::with_capacity(plan.len());
    for (i, start, toks, logits) in plan {
        let seq = runs[i].seq();
        l.cached[seq].extend_from_slice(&toks);
        let r = &mut runs[i];
        match r.phase {
            Phase::Prompt { next } => {
                let next = next + toks.len();
                r.phase = Phase::Prompt { next };
                if !logits {
                    continue;
                }
                r.prompt_ms = ms(r.t_admit);
                r.prompt_done = Some(Instant::now());
            }
            Phase::Gen { .. } => {}
            Phase::Admit => unreachable!("admitted runs only are planned"),
        }
        let idx = (start + toks.len() - 1) as i32;
        let mut tok = 0;
        let Some(smpl) = r.sampler.as_ref().map(Sampler::raw) else {
            done.push((i, Err(Error::backend("the job has no sampler"))));
            continue;
        };
        // SAFETY: the decode produced logits for batch index idx; the sampler is
        // this run's own.
        let sampled = shim::guard(ErrorKind::Backend, src, |e, el| unsafe {
            shim::tas_sampler_sample(smpl, ctx, idx, &mut tok, e, el)
        });
        if let Err(e) = sampled {
            done.push((i, Err(e)));
            continue;
        }
        if let Some(end) = on_token(sh, l, r, tok) {
            done.push((i, end));
        }
        handed.push(r.job.clone());
    }
    finish_at(runs, done);
    handed
}

/// Hand out a sampled token; Some(end) when the run ends here.
fn on_token(sh: &Shared, l: &mut Llama, r: &mut Run, tok: i32) -> Option<Result<JobEnd>> {
    if sh.model.is_eog(tok) {
        return Some(r.end(End::Eog));
    }
    r.n_gen += 1;
    r.job.push(tok);
    if r.n_gen >= r.job.max_tokens {
        return Some(r.end(End::MaxTokens));
    }
    // Room to decode `tok`: the window of this sequence, and with a unified cache
    // the cells all sequences share.
    let seq = r.seq();
    let total: usize = l.cached.iter().map(Vec::len).sum();
    let full = l.cached[seq].len() + 1 >= sh.n_ctx_seq as usize
        || (sh.unified && total + 1 > sh.n_ctx as usize);
    if full {
        match r.job.shift_keep {
            Some(keep) if sh.can_shift => {
                if let Err(e) = shift(sh, l, r, keep as usize) {
                    return Some(e);
                }
            }
            _ => return Some(r.end(End::ContextFull)),
        }
    }
    r.phase = Phase::Gen { tok };
    None
}

/// Context shift: keep the first `keep` tokens, drop half of the rest (the oldest),
/// and move what follows down so generation continues.
fn shift(
    sh: &Shared,
    l: &mut Llama,
    r: &mut Run,
    keep: usize,
) -> std::result::Result<(), Result<JobEnd>> {
    let seq = r.job.seq;
    let n = l.cached[seq as usize].len();
    let keep = keep.min(n);
    let discard = (n - keep) / 2;
    if discard == 0 {
        return Err(r.end(End::ContextFull));
    }
    // In one shared stream, a prefix copied to or from another sequence is the
    // same cells: moving them would move that sequence's too.
    if sh.unified {
        let mine = &l.cached[seq as usize];
        let shares = l
            .cached
            .iter()
            .enumerate()
            .any(|(s, c)| s as i32 != seq && lcp(c, mine) > keep);
        if shares {
            return Err(r.end(End::ContextFull));
        }
    }
    let what = format!("{}: context shift", sh.model.source());
    let mem = l.mem();
    let moved = l
        .seq_rm(&what, seq, keep as i32, (keep + discard) as i32)
        .and_then(|ok| {
            // SAFETY: valid memory; shifting a range of this sequence's positions.
            shim::guard(ErrorKind::Backend, &what, |e, el| unsafe {
                shim::tas_memory_seq_add(
                    mem,
                    seq,
                    (keep + discard) as i32,
                    n as i32,
                    -(discard as i32),
                    e,
                    el,
                )
            })
            .map(|_| ok)
        });
    match moved {
        Ok(true) => {}
        Ok(false) | Err(_) => {
            l.clear_seq(seq);
            return Err(moved.and_then(|_| {
                Err(Error::new(
                    ErrorKind::ContextFull,
                    "the context is full and its memory cannot shift",
                ))
            }));
        }
    }
    l.cached[seq as usize].drain(keep..keep + discard);
    l.shift_pending = true;
    r.n_shifts += 1;
    r.n_shifted += discard as u32;
    crate::log::log(
        crate::log::LogLevel::Debug,
        &format!("sequence {seq}: context shift dropped {discard} tokens after the first {keep}"),
    );
    Ok(())
}

/// Place a new run: reuse what its sequence holds, or copy a longer common prefix
/// from another sequence, or wait for one that is reading that prefix now.
fn admit(sh: &Shared, l: &mut Llama, runs: &mut [Run], i: usize) -> Result<()> {
    let src = sh.model.source();
    let seq = runs[i].job.seq;
    let toks = &runs[i].job.tokens;
    // At least the last prompt token is evaluated again: its logits give the first sample.
    let cap = toks.len() - 1;
    let own = lcp(&l.cached[seq as usize], toks).min(cap);
    let mut best: Option<(i32, usize)> = None;
    if sh.plain_kv {
        for (s, c) in l.cached.iter().enumerate() {
            let got = lcp(c, toks).min(cap);
            if s as i32 != seq && got >= own + MIN_SHARE && got > best.map_or(0, |b| b.1) {
                best = Some((s as i32, got));
            }
        }
        // A sequence reading the same prefix right now: wait for it rather than
        // read the prefix twice.
        let have = best.map_or(own, |b| b.1);
        let soon = runs.iter().enumerate().any(|(j, r)| {
            j != i
                && matches!(r.phase, Phase::Prompt { next } if next < lcp(&r.job.tokens, toks).min(cap))
                && lcp(&r.job.tokens, toks).min(cap) >= have + MIN_SHARE
        });
        if soon {
            return Ok(());
        }
    }
    let what = format!("{src}: sequence {seq}");
    let mut reused = own;
    if let Some((donor, n)) = best {
        l.seq_rm(&what, seq, -1, -1)?;
        let mem = l.mem();
        // Within one stream a copy only tags cells; across streams it must copy
        // the whole stream, then the tail past the prefix is cut.
        let (p0, p1) = if sh.unified { (0, n as i32) } else { (-1, -1) };
        // SAFETY: valid memory; both ids are below n_seq_max.
        shim::guard(ErrorKind::Backend, &what, |e, el| unsafe {
            shim::tas_memory_seq_cp(mem, donor, seq, p0, p1, e, el)
        })?;
        if !sh.unified {
            l.seq_rm(&what, seq, n as i32, -1)?;
        }
        l.cached[seq as usize] = toks[..n].to_vec();
        reused = n;
    } else if !l.seq_rm(&what, seq, own as i32, -1)? {
        l.clear_seq(seq);
        reused = 0;
    } else {
        l.cached[seq as usize].truncate(own);
    }
    // Sliding-window caches keep only recent cells: a prefix whose start is gone
    // cannot be reused.
    // SAFETY: valid memory.
    if reused > 0 && unsafe { sys::llama_memory_seq_pos_min(l.mem(), seq) } > 0 {
        l.clear_seq(seq);
        reused = 0;
    }
    let r = &mut runs[i];
    r.n_reused = reused as u32;
    r.phase = Phase::Prompt { next: reused };
    Ok(())
}

/// llama_decode's return code as an error: 2 aborted, 1 no KV slot, -2
/// allocation failed, others a failure explained in the log.
fn decode_error(sh: &Shared, rc: i32) -> Error {
    let what = format!("{}: decode failed", sh.model.source());
    match rc {
        2 => Error::cancelled("decode aborted"),
        1 => Error::new(
            ErrorKind::ContextFull,
            format!("no room left in the KV cache (n_ctx {})", sh.n_ctx),
        ),
        -2 => shim::backend_failure(
            ErrorKind::OutOfMemory,
            &what,
            "llama.cpp could not allocate the batch",
        ),
        _ => shim::backend_failure(
            ErrorKind::Backend,
            &what,
            &format!("llama_decode returned {rc}"),
        ),
    }
}

pub(crate) fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abort_handle_is_a_noop_when_idle() {
        let h = AbortHandle {
            flag: Arc::new(AtomicU8::new(IDLE)),
            shared: Weak::new(),
        };
        h.cancel();
        assert_eq!(h.flag.load(Ordering::Acquire), IDLE);
        h.flag.store(RUNNING, Ordering::Release);
        h.cancel();
        assert_eq!(h.flag.load(Ordering::Acquire), CANCELLED);
    }
}
