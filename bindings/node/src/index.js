// tabagent for Node: local LLM inference on GGUF models (libtabagent through koffi).
//
// Every call that takes time (model load, context creation, generate/chat, embed,
// cache scan/pull/verify/delete, hardware detection) runs on a koffi worker thread;
// generated text reaches JS through the native companion's queue (see
// native/tabagent_node.c), so the event loop never blocks and the generating
// thread never waits for JS.
import { EventEmitter } from 'node:events';
import {
  koffi, ta, tn, callAsync, takeString, LIB_PATH, NODE_LIB_PATH, ProgressCb, DownloadCb, NotifyCb,
} from './native.js';
import {
  STATUS, TabagentError, makeError, AbortError, CancelledError,
  NullArgError, InvalidArgumentError, IoError, NotFoundError, BadModelError, NetworkError, ChecksumError,
  ContextFullError, BusyError, UnsupportedError, OutOfMemoryError, PanicError, BufferTooSmallError,
  UnauthorizedError, OfflineError, BackendError,
} from './errors.js';

export {
  STATUS, TabagentError, AbortError, CancelledError,
  NullArgError, InvalidArgumentError, IoError, NotFoundError, BadModelError, NetworkError, ChecksumError,
  ContextFullError, BusyError, UnsupportedError, OutOfMemoryError, PanicError, BufferTooSmallError,
  UnauthorizedError, OfflineError, BackendError,
};

/** ABI versions of libtabagent this package knows the structs of. */
const KNOWN_ABI = [4, 5];
const abi = ta.abi_version();
if (!KNOWN_ABI.includes(abi)) {
  throw new Error(`tabagent: ${LIB_PATH} has ABI ${abi}; this package knows ${KNOWN_ABI.join(', ')}`);
}

export const STOP_REASONS = Object.freeze(['eog', 'max_tokens', 'stop_string', 'cancelled', 'context_full']);
export const LOG_DEBUG = 1, LOG_INFO = 2, LOG_WARN = 3, LOG_ERROR = 4;

export const libraryPath = LIB_PATH;
export const nativeCompanionPath = NODE_LIB_PATH;
export const version = () => ta.version();
export const abiVersion = () => ta.abi_version();
export const llamaVersion = () => ta.llama_version();
export const systemInfo = () => ta.system_info();

function check(status, message) {
  if (status !== 0) throw makeError(status, message, ta.status_str(status));
}

/** A synchronous call's failure: ta_last_error() is read on this (the JS) thread,
 * right after the call, so it is the call's own message. */
function checkSync(status) {
  if (status !== 0) throw makeError(status, ta.last_error(), ta.status_str(status));
}

const utf8 = new TextDecoder('utf-8');

// ------------------------------------------------------------------ handles

const registry = new FinalizationRegistry(({ ptr, free }) => {
  try {
    free(ptr);
  } catch {
    // nothing to do at collection time
  }
});

/** An owned library handle: freed once, by close() or (as a safety net) when the
 * object is collected. While calls run on it (use()) the free waits for them. */
class Handle {
  #ptr;
  #free;
  #what;
  #busy = 0;
  #closing = false;

  constructor(ptr, free, what) {
    this.#ptr = ptr;
    this.#free = free;
    this.#what = what;
    registry.register(this, { ptr, free }, this);
  }

  /** The native pointer; throws NullArgError once closed. */
  get _ptr() {
    if (!this.#ptr || this.#closing) throw new NullArgError(STATUS.NULL_ARG, `the ${this.#what} is closed`);
    return this.#ptr;
  }

  get closed() {
    return this.#closing || !this.#ptr;
  }

  /** Run fn(ptr) (sync or async) keeping the handle alive until it settles. */
  _use(fn) {
    const ptr = this._ptr;
    this.#busy++;
    let r;
    try {
      r = fn(ptr);
    } catch (e) {
      this._unuse();
      throw e;
    }
    if (r && typeof r.then === 'function') {
      return r.finally(() => this._unuse());
    }
    this._unuse();
    return r;
  }

  _hold() {
    const ptr = this._ptr;
    this.#busy++;
    return ptr;
  }

  _unuse() {
    if (--this.#busy === 0 && this.#closing) this.#release();
  }

  /** Called by close() before the free (subclasses cancel running work). */
  _onClose() {}

  #release() {
    const p = this.#ptr;
    this.#ptr = null;
    if (p) this.#free(p);
  }

  /** Free the handle (when the calls running on it have returned). Idempotent. */
  close() {
    if (this.#closing || !this.#ptr) return;
    this.#closing = true;
    registry.unregister(this);
    this._onClose();
    if (this.#busy === 0) this.#release();
  }

  [Symbol.dispose]() {
    this.close();
  }
}

// ------------------------------------------------------------------ streams

/** Streams with text queued in the native companion, drained when its notifier
 * thread calls us (and once more when their call returns). */
const activeStreams = new Set();
let logFn = null;

const notify = koffi.register(() => {
  for (const s of activeStreams) s.drain();
  if (logFn) drainLog();
}, koffi.pointer(NotifyCb));
if (tn.set_notify(notify) !== 0) throw new Error('tabagent: cannot start the notifier thread');

const TAKE_BYTES = 64 * 1024;
const TAKE_PIECES = 4096;
const outBytes = [0];

class Stream {
  constructor(onPiece) {
    this.ptr = tn.stream_new();
    if (!this.ptr) throw new OutOfMemoryError(STATUS.OUT_OF_MEMORY, 'tn_stream_new failed');
    this.onPiece = onPiece;
    activeStreams.add(this);
  }

  static buf = Buffer.alloc(TAKE_BYTES);
  static lens = new Uint32Array(TAKE_PIECES);

  drain() {
    if (!this.ptr) return;
    for (;;) {
      let buf = Stream.buf;
      let n = tn.stream_take(this.ptr, buf, buf.length, Stream.lens, TAKE_PIECES, outBytes);
      if (n === 0 && outBytes[0] > 0) {
        buf = Buffer.alloc(outBytes[0]);
        n = tn.stream_take(this.ptr, buf, buf.length, Stream.lens, TAKE_PIECES, outBytes);
      }
      if (n === 0) return;
      let off = 0;
      const lens = Stream.lens;
      for (let i = 0; i < n; i++) {
        const len = lens[i];
        this.onPiece(utf8.decode(buf.subarray(off, off + len)));
        off += len;
      }
      if (n < TAKE_PIECES && off + 64 < buf.length) return;
    }
  }

  cancel() {
    if (this.ptr) tn.stream_cancel(this.ptr);
  }

  finish() {
    this.drain();
    activeStreams.delete(this);
    tn.stream_free(this.ptr);
    this.ptr = null;
  }
}

// ------------------------------------------------------------------ logging

const LOG_BUF = Buffer.alloc(256 * 1024);
const LOG_LEVELS = new Int32Array(4096);
const LOG_LENS = new Uint32Array(4096);
const logDropped = [0];

function drainLog() {
  for (;;) {
    const n = tn.log_take(LOG_BUF, LOG_BUF.length, LOG_LEVELS, LOG_LENS, 4096, outBytes, logDropped);
    if (n === 0) return;
    let off = 0;
    for (let i = 0; i < n; i++) {
      const text = utf8.decode(LOG_BUF.subarray(off, off + LOG_LENS[i])).replace(/\n$/, '');
      off += LOG_LENS[i];
      try {
        logFn?.(LOG_LEVELS[i], text);
      } catch {
        // a throwing logger must not break the library
      }
    }
  }
}

/**
 * Receive the library's and llama.cpp's log lines at `minLevel` (LOG_*) or above as
 * fn(level, line). Lines are queued natively and delivered on the JS thread (the
 * logging thread never waits for JS). `null` restores silence.
 */
export function setLogCallback(fn, minLevel = LOG_WARN) {
  if (fn == null) {
    check(tn.log_enable(0, minLevel));
    if (logFn) drainLog();
    logFn = null;
    return;
  }
  logFn = fn;
  check(tn.log_enable(1, minLevel));
}

// ------------------------------------------------------------------ params

const DEFAULT_MODEL_PARAMS = ta.model_default_params();
const DEFAULT_CONTEXT_PARAMS = ta.context_default_params();
const DEFAULT_GEN_PARAMS = ta.gen_default_params();
const DEFAULT_EMBED_PARAMS = ta.embed_default_params();

function setIf(obj, key, value, conv = (x) => x) {
  if (value !== undefined && value !== null) obj[key] = conv(value);
}

function modelParams(opts = {}) {
  const p = { ...DEFAULT_MODEL_PARAMS, progress_callback: null, progress_user_data: null };
  setIf(p, 'n_gpu_layers', opts.gpuLayers);
  setIf(p, 'use_mmap', opts.mmap, Boolean);
  setIf(p, 'use_mlock', opts.mlock, Boolean);
  setIf(p, 'vocab_only', opts.vocabOnly, Boolean);
  setIf(p, 'check_in_child', opts.checkInChild, Boolean);
  setIf(p, 'check_timeout_ms', opts.checkTimeoutMs);
  setIf(p, 'check_memory_limit', opts.checkMemoryLimit);
  return p;
}

const FLASH = { auto: -1, off: 0, on: 1 };
const POOLING = { model: -1, none: 0, mean: 1, cls: 2, last: 3, rank: 4 };
const POOLING_NAMES = Object.fromEntries(Object.entries(POOLING).map(([k, v]) => [v, k]));

function contextParams(opts = {}) {
  const p = { ...DEFAULT_CONTEXT_PARAMS };
  setIf(p, 'n_ctx', opts.nCtx);
  setIf(p, 'n_batch', opts.nBatch);
  setIf(p, 'n_ubatch', opts.nUbatch);
  setIf(p, 'n_threads', opts.threads);
  setIf(p, 'n_threads_batch', opts.threadsBatch);
  setIf(p, 'flash_attn', opts.flashAttn, (v) => (typeof v === 'boolean' ? (v ? 1 : 0) : typeof v === 'string' ? FLASH[v] ?? -1 : v));
  setIf(p, 'seed', opts.seed);
  setIf(p, 'n_seq_max', opts.nSeqMax);
  setIf(p, 'kv_unified', opts.kvUnified, Boolean);
  setIf(p, 'embeddings', opts.embeddings, Boolean);
  setIf(p, 'pooling', opts.pooling, (v) => (typeof v === 'string' ? POOLING[v] : v));
  return p;
}

const json = (v) => (v == null ? null : typeof v === 'string' ? v : JSON.stringify(v));

function genParams(opts = {}) {
  const p = { ...DEFAULT_GEN_PARAMS, stop: null, n_stop: 0, grammar: null, chat_template: null, chat_tools: null, chat_vars: null };
  setIf(p, 'temperature', opts.temperature);
  setIf(p, 'top_k', opts.topK);
  setIf(p, 'top_p', opts.topP);
  setIf(p, 'min_p', opts.minP);
  setIf(p, 'repeat_penalty', opts.repeatPenalty);
  setIf(p, 'frequency_penalty', opts.frequencyPenalty);
  setIf(p, 'presence_penalty', opts.presencePenalty);
  setIf(p, 'penalty_last_n', opts.penaltyLastN);
  setIf(p, 'seed', opts.seed);
  setIf(p, 'max_tokens', opts.maxTokens);
  if (opts.stop != null) {
    const stop = typeof opts.stop === 'string' ? [opts.stop] : [...opts.stop];
    p.stop = stop.length ? stop : null;
    p.n_stop = stop.length;
  }
  setIf(p, 'grammar', opts.grammar);
  setIf(p, 'chat_template', opts.chatTemplate);
  p.chat_tools = json(opts.tools);
  p.chat_vars = json(opts.vars);
  setIf(p, 'context_shift', opts.contextShift, Boolean);
  setIf(p, 'n_keep', opts.nKeep);
  return p;
}

function chatMessages(messages) {
  if (!Array.isArray(messages)) throw new InvalidArgumentError(STATUS.INVALID_ARG, 'messages must be an array');
  return messages.map((m, i) => {
    if (!m || typeof m.role !== 'string' || typeof m.content !== 'string') {
      throw new InvalidArgumentError(STATUS.INVALID_ARG, `messages[${i}] needs string role and content`);
    }
    return {
      role: m.role,
      content: m.content,
      name: m.name ?? null,
      tool_call_id: m.toolCallId ?? m.tool_call_id ?? null,
      tool_calls: json(m.toolCalls ?? m.tool_calls),
      reasoning_content: m.reasoningContent ?? m.reasoning_content ?? null,
    };
  });
}

function genResult(r, text) {
  return {
    text,
    stopReason: STOP_REASONS[r.stop_reason] ?? String(r.stop_reason),
    promptTokens: r.n_prompt_tokens,
    reusedTokens: r.n_reused_tokens,
    generatedTokens: r.n_generated_tokens,
    promptMs: r.prompt_ms,
    genMs: r.gen_ms,
    shifts: r.n_shifts,
    shiftedTokens: r.n_shifted_tokens,
  };
}

function abortError(signal, what) {
  const reason = signal.reason;
  const msg = reason instanceof Error ? reason.message : reason !== undefined ? String(reason) : 'aborted';
  return new AbortError(`${what}: aborted (${msg})`, { cause: reason });
}

// ------------------------------------------------------------------ generation

/**
 * One running generate/chat call: an async iterator of text pieces (whole UTF-8
 * characters, one per generated token as the library delivers them), and
 * `result`, a promise of the final GenResult (text, stop reason, token counts,
 * timings). It starts at once; iterate it, await `result`, or both.
 *
 * Stopping: `signal` (an AbortSignal) aborting → the call is cancelled through the
 * library, the iterator throws an AbortError (a CancelledError named "AbortError",
 * with `.result` the partial result) and `result` rejects with it. `cancel()` or
 * leaving a for-await loop early → the iterator just ends and `result` resolves
 * with stopReason "cancelled". Either way the context/sequence is free again once
 * the iterator has ended.
 */
export class Generation {
  #queue = [];
  #head = 0;
  #waiter = null;
  #ended = false;
  #error = null;
  #text = [];
  #stream;
  #cancelNative;
  #signal;
  #onAbort;
  #aborted = false;
  #settled;
  /** @type {Promise<object>} */
  result;

  constructor(what, start, cancelNative, signal) {
    this.#cancelNative = cancelNative;
    this.#signal = signal;
    if (signal?.aborted) {
      const err = abortError(signal, what);
      this.#finish(err);
      this.result = Promise.reject(err);
      this.result.catch(() => {});
      this.#settled = Promise.resolve();
      return;
    }
    this.#stream = new Stream((piece) => this.#push(piece));
    if (signal) {
      this.#onAbort = () => {
        this.#aborted = true;
        this.cancel();
      };
      signal.addEventListener('abort', this.#onAbort, { once: true });
    }
    let call;
    try {
      call = start(this.#stream.ptr);
    } catch (e) {
      call = Promise.reject(e);
    }
    this.result = call.then(
      ({ status, message, res }) => {
        this.#stream.finish();
        const text = this.#text.join('');
        if (status === 0) {
          const r = genResult(res, text);
          this.#finish(null);
          return r;
        }
        let err;
        if (status === STATUS.CANCELLED && this.#aborted) {
          err = abortError(signal, what);
          err.result = genResult(res, text);
        } else if (status === STATUS.CANCELLED && !this.#aborted) {
          const r = genResult(res, text);
          this.#finish(null);
          return r;
        } else {
          err = makeError(status, message, ta.status_str(status));
        }
        this.#finish(err);
        throw err;
      },
      (e) => {
        this.#stream.finish();
        this.#finish(e);
        throw e;
      },
    ).finally(() => {
      if (this.#onAbort) signal.removeEventListener('abort', this.#onAbort);
    });
    this.result.catch(() => {}); // surfaced through next() or an awaited result
    this.#settled = this.result.then(() => {}, () => {});
  }

  #push(piece) {
    this.#text.push(piece);
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = null;
      w.resolve({ value: piece, done: false });
    } else {
      this.#queue.push(piece);
    }
  }

  #finish(err) {
    this.#ended = true;
    this.#error = err;
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = null;
      if (err) w.reject(err);
      else w.resolve({ value: undefined, done: true });
    }
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  /** @returns {Promise<IteratorResult<string>>} */
  next() {
    if (this.#head < this.#queue.length) {
      const value = this.#queue[this.#head++];
      if (this.#head === this.#queue.length) {
        this.#queue.length = 0;
        this.#head = 0;
      } else if (this.#head >= 4096 && this.#head * 2 >= this.#queue.length) {
        this.#queue = this.#queue.slice(this.#head);
        this.#head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.#ended) {
      if (this.#error) {
        const e = this.#error;
        this.#error = null; // thrown once; later next() calls just say done
        return Promise.reject(e);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  /** Leaving a for-await loop early: cancel, and resolve once the call returned. */
  async return() {
    this.cancel();
    await this.#settled;
    this.#queue.length = 0;
    this.#head = 0;
    this.#error = null;
    return { value: undefined, done: true };
  }

  /** Stop the generation (from anywhere, any time); the iterator then ends. */
  cancel() {
    if (this.#ended) return;
    this.#stream?.cancel();
    this.#cancelNative?.();
  }

  /** The whole reply: awaits the result and returns its text. */
  async text() {
    return (await this.result).text;
  }
}

function genCall(fn, handlePtr, args) {
  const res = {};
  return callAsync(fn, handlePtr, ...args, res).then(({ status, message }) => ({ status, message, res }));
}

// ------------------------------------------------------------------ model

function modelInfo(i) {
  return {
    architecture: i.architecture,
    name: i.name,
    description: i.description,
    quantization: i.quantization,
    chatTemplate: i.chat_template,
    nVocab: i.n_vocab,
    nCtxTrain: i.n_ctx_train,
    nEmbd: i.n_embd,
    nLayer: i.n_layer,
    nHead: i.n_head,
    nHeadKv: i.n_head_kv,
    nParams: Number(i.n_params),
    sizeBytes: Number(i.size_bytes),
    fileSize: Number(i.file_size),
    bosToken: i.bos_token,
    eosToken: i.eos_token,
    eotToken: i.eot_token,
    nlToken: i.nl_token,
  };
}

/** Wrap onProgress(fraction) → boolean|void and a signal into a registered
 * ta_progress_callback (or null). */
function progressCallback(onProgress, signal) {
  if (!onProgress && !signal) return null;
  return koffi.register((_ud, frac) => {
    if (signal?.aborted) return false;
    try {
      return onProgress ? onProgress(frac) !== false : true;
    } catch {
      return false;
    }
  }, koffi.pointer(ProgressCb));
}

export class Model extends Handle {
  #info;

  constructor(ptr) {
    super(ptr, ta.model_free, 'model');
  }

  /**
   * Load a GGUF file (on a worker thread). opts: gpuLayers, mmap, mlock, vocabOnly,
   * checkInChild, checkTimeoutMs, checkMemoryLimit, onProgress(fraction) (return
   * false to cancel), signal.
   * @returns {Promise<Model>}
   */
  static async load(path, opts = {}) {
    if (typeof path !== 'string') throw new InvalidArgumentError(STATUS.INVALID_ARG, 'path must be a string');
    if (opts.signal?.aborted) throw abortError(opts.signal, 'ta_model_load');
    const p = modelParams(opts);
    const cb = progressCallback(opts.onProgress, opts.signal);
    p.progress_callback = cb;
    const out = [null];
    try {
      const { status, message } = await callAsync(tn.model_load, path, p, out);
      if (status === STATUS.CANCELLED && opts.signal?.aborted) throw abortError(opts.signal, 'ta_model_load');
      check(status, message);
    } finally {
      if (cb) koffi.unregister(cb);
    }
    return new Model(out[0]);
  }

  /** Load a model from bytes in memory (Linux: a memfd, no temporary file). */
  static async fromBuffer(data, opts = {}) {
    const p = modelParams(opts);
    const out = [null];
    const { status, message } = await callAsync(tn.model_load_from_buffer, data, data.length, p, out);
    check(status, message);
    return new Model(out[0]);
  }

  /** Load and decode one token in a child process under limits: { elapsedMs, peakRssBytes }. */
  static async check(path, opts = {}) {
    const p = modelParams(opts);
    const out = {};
    const { status, message } = await callAsync(tn.model_check, path, p, out);
    check(status, message);
    return { elapsedMs: out.elapsed_ms, peakRssBytes: Number(out.peak_rss_bytes) };
  }

  /** Headline metadata (architecture, name, quantization, chatTemplate, nCtxTrain, …). */
  get info() {
    if (!this.#info) {
      const out = {};
      this._use((p) => checkSync(ta.model_get_info(p, out)));
      this.#info = Object.freeze(modelInfo(out));
    }
    return this.#info;
  }

  /** One GGUF metadata value as text, or null when the key is absent. */
  meta(key) {
    return this._use((p) => {
      const out = [null];
      const st = ta.model_meta(p, key, out);
      if (st === STATUS.NOT_FOUND) return null;
      checkSync(st);
      return takeString(out[0]);
    });
  }

  /** All metadata (headline fields and every GGUF key) as an object. */
  metadata() {
    return this._use((p) => {
      const out = [null];
      checkSync(ta.model_json(p, out));
      return JSON.parse(takeString(out[0]));
    });
  }

  /**
   * Format messages with the model's chat template (or opts.template: a built-in
   * name such as "chatml" or a template text). opts: addAssistant (default true),
   * template, tools, vars.
   */
  applyChatTemplate(messages, opts = {}) {
    const msgs = chatMessages(messages);
    return this._use((p) => {
      const out = [null];
      checkSync(ta.model_apply_chat_template(p, msgs, msgs.length, opts.addAssistant ?? true,
        opts.template ?? null, json(opts.tools), json(opts.vars), out));
      return takeString(out[0]);
    });
  }

  /** Token ids of `text` (Int32Array). opts: addSpecial (true), parseSpecial (true). */
  tokenize(text, opts = {}) {
    const bytes = Buffer.from(text, 'utf8');
    const add = opts.addSpecial ?? true, parse = opts.parseSpecial ?? true;
    return this._use((p) => {
      const n = [0];
      let cap = bytes.length + 8;
      let toks = new Int32Array(cap);
      let st = ta.model_tokenize(p, bytes, bytes.length, add, parse, toks, cap, n);
      if (st === STATUS.BUFFER_TOO_SMALL) {
        cap = Number(n[0]);
        toks = new Int32Array(cap);
        st = ta.model_tokenize(p, bytes, bytes.length, add, parse, toks, cap, n);
      }
      checkSync(st);
      return toks.slice(0, Number(n[0]));
    });
  }

  /** Text of token ids. opts: removeSpecial (false), unparseSpecial (false). */
  detokenize(tokens, opts = {}) {
    const toks = Int32Array.from(tokens);
    const rm = opts.removeSpecial ?? false, un = opts.unparseSpecial ?? false;
    return this._use((p) => {
      const len = [0];
      let buf = Buffer.alloc(toks.length * 8 + 16);
      let st = ta.model_detokenize(p, toks, toks.length, rm, un, buf, buf.length, len);
      if (st === STATUS.BUFFER_TOO_SMALL) {
        buf = Buffer.alloc(Number(len[0]) + 1);
        st = ta.model_detokenize(p, toks, toks.length, rm, un, buf, buf.length, len);
      }
      checkSync(st);
      return buf.toString('utf8', 0, Number(len[0]));
    });
  }

  /** A context on this model (see Context.create). */
  createContext(opts = {}) {
    return Context.create(this, opts);
  }
}

// ------------------------------------------------------------------ conversation

/** What a context's own calls and a sequence share: generation, cancel, reset and
 * state files. `kind` ('context' or 'sequence') names the ta_<kind>_* functions. */
class Conversation extends Handle {
  #gens = new Set();
  #kind;

  constructor(ptr, free, kind) {
    super(ptr, free, kind);
    this.#kind = kind;
  }

  #track(gen) {
    this.#gens.add(gen);
    gen.result.then(() => this.#gens.delete(gen), () => this.#gens.delete(gen));
    return gen;
  }

  #stream(call, args, signal) {
    const k = this.#kind;
    return this.#track(new Generation(`ta_${k}_${call}`, (s) => {
      const h = this._hold();
      return genCall(tn[`${k}_${call}`], h, [...args, s]).finally(() => this._unuse());
    }, () => !this.closed && ta[`${k}_cancel`](this._ptr), signal));
  }

  /**
   * Continue `prompt` and stream the reply: a Generation (async iterator of text
   * pieces, `.result` promise). opts: maxTokens, temperature (0 = greedy), topK,
   * topP, minP, repeatPenalty, frequencyPenalty, presencePenalty, penaltyLastN,
   * seed, stop (string[]), grammar, contextShift, nKeep, signal (AbortSignal).
   */
  generate(prompt, opts = {}) {
    return this.#stream('generate', [prompt, genParams(opts)], opts.signal);
  }

  /** Chat: format `messages` ({role, content, …}) with the chat template and stream
   * the assistant's reply. Options as generate(), plus chatTemplate, tools, vars. */
  chat(messages, opts = {}) {
    const msgs = chatMessages(messages);
    return this.#stream('chat', [msgs, msgs.length, genParams(opts)], opts.signal);
  }

  /** Stop whatever runs (on a context: its own sequence). */
  cancel() {
    for (const g of this.#gens) g.cancel();
    if (!this.closed) ta[`${this.#kind}_cancel`](this._ptr);
  }

  /** Forget the KV cells: the next call evaluates its whole prompt. */
  reset() {
    this._use((p) => checkSync(ta[`${this.#kind}_reset`](p)));
  }

  /** Save the tokens and KV cells (a context: its own sequence's) to a file; returns the token count. */
  async saveState(path) {
    return this.#state('save', path);
  }

  /** Load a file written by saveState; returns the token count. */
  async loadState(path) {
    return this.#state('load', path);
  }

  async #state(op, path) {
    const n = [0];
    const { status, message } = await this._use((h) => callAsync(tn[`${this.#kind}_state_${op}`], h, path, n));
    check(status, message);
    return Number(n[0]);
  }

  _onClose() {
    for (const g of this.#gens) g.cancel();
  }
}

// ------------------------------------------------------------------ context

export class Context extends Conversation {
  /** @type {Model} */
  model;

  constructor(ptr, model) {
    super(ptr, ta.context_free, 'context');
    this.model = model;
  }

  /**
   * Create a context (on a worker thread). opts: nCtx (4096), nBatch, nUbatch,
   * threads (0 = physical cores), threadsBatch, flashAttn ('auto'|'on'|'off'),
   * seed, nSeqMax (sequences served at once), kvUnified, embeddings, pooling
   * ('model'|'none'|'mean'|'cls'|'last'|'rank').
   * @returns {Promise<Context>}
   */
  static async create(model, opts = {}) {
    const p = contextParams(opts);
    const out = [null];
    const { status, message } = await model._use((m) => callAsync(tn.context_new, m, p, out));
    check(status, message);
    return new Context(out[0], model);
  }

  get nCtx() {
    return this._use((p) => ta.context_n_ctx(p));
  }

  get nCtxSeq() {
    return this._use((p) => ta.context_n_ctx_seq(p));
  }

  get nSeqMax() {
    return this._use((p) => ta.context_n_seq_max(p));
  }

  /** Claim one of the context's nSeqMax sequences: an independent conversation that
   * may generate at the same time as the others. BusyError when all are taken. */
  sequence() {
    return this._use((c) => {
      const out = [null];
      checkSync(ta.sequence_new(c, out));
      return new Sequence(out[0], this);
    });
  }

  /** Length of each embedding vector (embedding contexts only). */
  get embedDim() {
    return this._use((p) => {
      const out = [0];
      checkSync(ta.context_embed_dim(p, out));
      return Number(out[0]);
    });
  }

  /** The pooling an embedding context uses ('mean', 'cls', …). */
  get pooling() {
    return this._use((p) => {
      const out = [0];
      checkSync(ta.context_pooling(p, out));
      return POOLING_NAMES[out[0]] ?? out[0];
    });
  }

  /**
   * Embed texts (on a worker thread; context created with embeddings: true). One
   * string → one Float32Array; an array → an array of them. opts: normalize (true),
   * truncate (false).
   */
  async embed(texts, opts = {}) {
    const single = typeof texts === 'string';
    const list = single ? [texts] : [...texts];
    const dim = this.embedDim;
    const out = new Float32Array(list.length * dim);
    const ep = { ...DEFAULT_EMBED_PARAMS };
    setIf(ep, 'normalize', opts.normalize, Boolean);
    setIf(ep, 'truncate', opts.truncate, Boolean);
    const outLen = [0];
    const { status, message } = await this._use((c) =>
      callAsync(tn.context_embed, c, list, list.length, ep, out, out.length, outLen));
    check(status, message);
    const vecs = list.map((_, i) => out.subarray(i * dim, (i + 1) * dim));
    return single ? vecs[0] : vecs;
  }

  tokenize(text, opts) {
    return this.model.tokenize(text, opts);
  }

  detokenize(tokens, opts) {
    return this.model.detokenize(tokens, opts);
  }

}

// ------------------------------------------------------------------ sequence

/** One conversation of a context (ta_sequence): its own KV cells, history and
 * sampler; sequences of one context generate concurrently (their decodes share
 * batches). One call at a time per sequence (BusyError otherwise). */
export class Sequence extends Conversation {
  /** @type {Context} */
  context;

  constructor(ptr, context) {
    super(ptr, ta.sequence_free, 'sequence');
    this.context = context;
  }

  get id() {
    return this._use((p) => ta.sequence_id(p));
  }

  /** Tokens the sequence holds in the KV cache (BusyError while a call runs). */
  get nCached() {
    return this._use((p) => {
      const out = [0];
      checkSync(ta.sequence_n_cached(p, out));
      return Number(out[0]);
    });
  }

}

// ------------------------------------------------------------------ cache

/**
 * A download in progress (Cache.pull): an EventEmitter of 'progress' events
 * ({file, done, total} in bytes), also an async iterator of the same objects, and
 * a promise (`result`, and `then` — so `await cache.pull(…)` gives the path) of
 * the snapshot path of the file (or the first shard of a variant). Aborting
 * `signal` or calling cancel() stops it (AbortError / CancelledError); a later
 * pull resumes where it stopped.
 */
export class Pull extends EventEmitter {
  #events = [];
  #waiter = null;
  #ended = false;
  #error = null;
  #cancelled = false;
  /** @type {Promise<string>} */
  result;

  constructor(start, signal, what) {
    super();
    if (signal?.aborted) {
      this.result = Promise.reject(abortError(signal, what));
      this.result.catch(() => {});
      this.#end(null);
      return;
    }
    const cb = koffi.register((_ud, file, done, total) => {
      if (this.#cancelled || signal?.aborted) return false;
      const ev = { file, done: Number(done), total: Number(total) };
      try {
        this.emit('progress', ev);
      } catch {
        return false;
      }
      if (this.#waiter) {
        const w = this.#waiter;
        this.#waiter = null;
        w.resolve({ value: ev, done: false });
      } else if (this.#events.length < 10000) {
        this.#events.push(ev);
      }
      return !this.#cancelled;
    }, koffi.pointer(DownloadCb));
    const onAbort = () => this.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    this.result = start(cb).then(
      ({ status, message, path }) => {
        if (status === STATUS.CANCELLED && signal?.aborted) throw abortError(signal, what);
        check(status, message);
        this.#end(null);
        return path;
      },
    ).catch((e) => {
      this.#end(e);
      throw e;
    }).finally(() => {
      koffi.unregister(cb);
      signal?.removeEventListener('abort', onAbort);
    });
    this.result.catch(() => {});
  }

  #end(err) {
    this.#ended = true;
    this.#error = err;
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = null;
      if (err) w.reject(err);
      else w.resolve({ value: undefined, done: true });
    }
  }

  cancel() {
    this.#cancelled = true;
  }

  then(onFulfilled, onRejected) {
    return this.result.then(onFulfilled, onRejected);
  }

  catch(onRejected) {
    return this.result.catch(onRejected);
  }

  finally(fn) {
    return this.result.finally(fn);
  }

  [Symbol.asyncIterator]() {
    return {
      next: () => {
        if (this.#events.length) return Promise.resolve({ value: this.#events.shift(), done: false });
        if (this.#ended) {
          if (this.#error) {
            const e = this.#error;
            this.#error = null;
            return Promise.reject(e);
          }
          return Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve, reject) => {
          this.#waiter = { resolve, reject };
        });
      },
      return: async () => {
        this.cancel();
        await this.result.catch(() => {});
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }
}

/**
 * A Hugging Face–compatible model store (the huggingface_hub layout, so files are
 * shared with it). opts: root (HF_HUB_CACHE / HF_HOME/hub / ~/.cache/huggingface/hub),
 * endpoint (HF_ENDPOINT), token (HF_TOKEN), offline (HF_HUB_OFFLINE), retries,
 * connectTimeoutMs, readTimeoutMs, userAgent, durable.
 */
export class Cache extends Handle {
  constructor(opts = {}) {
    if (typeof opts === 'string') opts = { root: opts };
    const o = { ...ta.cache_default_options() };
    o.root = opts.root ?? null;
    o.endpoint = opts.endpoint ?? null;
    o.token = opts.token ?? null;
    o.user_agent = opts.userAgent ?? null;
    o.offline = opts.offline == null ? -1 : opts.offline ? 1 : 0;
    setIf(o, 'retries', opts.retries);
    setIf(o, 'connect_timeout_ms', opts.connectTimeoutMs);
    setIf(o, 'read_timeout_ms', opts.readTimeoutMs);
    setIf(o, 'durable', opts.durable, Boolean);
    const out = [null];
    checkSync(ta.cache_open(o, out));
    super(out[0], ta.cache_free, 'cache');
  }

  get root() {
    return this._use((c) => {
      const out = [null];
      checkSync(ta.cache_root(c, out));
      return takeString(out[0]);
    });
  }

  async #json(fn, ...args) {
    const out = [null];
    const { status, message } = await this._use((c) => callAsync(fn, c, ...args, out));
    check(status, message);
    return JSON.parse(takeString(out[0]));
  }

  /** List the repo's files through the hub and group its GGUFs by quantisation. */
  scan(repo, opts = {}) {
    return this.#json(tn.cache_scan, repo, opts.revision ?? 'main');
  }

  /** The manifest with current statuses, without the network. */
  manifest(repo, opts = {}) {
    return this._use((c) => {
      const out = [null];
      checkSync(ta.cache_manifest(c, repo, opts.revision ?? 'main', out));
      return JSON.parse(takeString(out[0]));
    });
  }

  /**
   * Download a repo's `quant` variant (all shards) or one `file` unless cached;
   * returns a Pull (progress events; awaitable for the snapshot path).
   * opts: quant | file, revision ('main'), signal.
   */
  pull(repo, opts = {}) {
    if (typeof opts === 'string') opts = { quant: opts };
    const rev = opts.revision ?? 'main';
    const byFile = opts.file != null;
    if (!byFile && opts.quant == null) throw new InvalidArgumentError(STATUS.INVALID_ARG, 'pull needs quant or file');
    const fn = byFile ? tn.cache_download_file : tn.cache_download_variant;
    const what = byFile ? 'ta_cache_download_file' : 'ta_cache_download_variant';
    return new Pull((cb) => {
      const out = [null];
      return this._use((c) => callAsync(fn, c, repo, rev, byFile ? opts.file : opts.quant, cb, null, out))
        .then(({ status, message }) => ({ status, message, path: status === 0 ? takeString(out[0]) : null }));
    }, opts.signal, what);
  }

  hasFile(repo, file, opts = {}) {
    return this._use((c) => {
      const out = [false];
      checkSync(ta.cache_has_file(c, repo, opts.revision ?? 'main', file, out));
      return Boolean(out[0]);
    });
  }

  snapshotPath(repo, file, opts = {}) {
    return this._use((c) => {
      const out = [null];
      checkSync(ta.cache_snapshot_path(c, repo, opts.revision ?? 'main', file, out));
      return takeString(out[0]);
    });
  }

  /** The cached repos: [{repo_id, size_on_disk, n_files, revisions, refs}]. */
  list() {
    return this._use((c) => {
      const out = [null];
      checkSync(ta.cache_list_repos(c, out));
      return JSON.parse(takeString(out[0]));
    });
  }

  /** Delete a repo (all revisions), or one revision with opts.revision. */
  async delete(repo, opts = {}) {
    const { status, message } = await this._use((c) =>
      opts.revision != null
        ? callAsync(tn.cache_delete_revision, c, repo, opts.revision)
        : callAsync(tn.cache_delete_repo, c, repo));
    check(status, message);
  }

  /** Re-hash blobs of `repo` (or all): the mismatches ([] when intact). */
  verify(repo) {
    return this.#json(tn.cache_verify, repo ?? null);
  }

  stats() {
    return this._use((c) => {
      const out = {};
      checkSync(ta.cache_get_stats(c, out));
      return { repos: Number(out.repos), files: Number(out.files), bytes: Number(out.bytes) };
    });
  }
}

// ------------------------------------------------------------------ hardware

/** What this machine is and can run (ta_hardware_json): cpu, memory, gpus, build. */
export async function hardware() {
  const out = [null];
  const { status, message } = await callAsync(tn.hardware_report, out);
  check(status, message);
  return JSON.parse(takeString(out[0]));
}

/**
 * Memory a model (a Model or a file path) needs with an nCtx-token context, whether
 * it fits, and the advised threads and GPU layers — without loading a file.
 */
export async function fit(model, nCtx = 4096) {
  const hw = [null];
  const st = await new Promise((res, rej) => ta.hardware_detect.async(hw, (e, r) => (e ? rej(e) : res(r))));
  check(st, ta.status_str(st));
  try {
    const out = {};
    const { status, message } = model instanceof Model
      ? await model._use((m) => callAsync(tn.hardware_fit_model, hw[0], m, nCtx, out))
      : await callAsync(tn.hardware_fit_file, hw[0], String(model), nCtx, out);
    check(status, message);
    return {
      nCtx: out.n_ctx,
      weightsBytes: Number(out.weights_bytes),
      kvBytes: Number(out.kv_bytes),
      computeBytes: Number(out.compute_bytes),
      totalBytes: Number(out.total_bytes),
      fitsRam: out.fits_ram,
      fitsVram: out.fits_vram,
      recommendedGpuLayers: out.recommended_gpu_layers,
      recommendedThreads: out.recommended_threads,
    };
  } finally {
    ta.hardware_free(hw[0]);
  }
}

// ------------------------------------------------------------------ benchmarks

/**
 * Internal (benchmarks): run the library's streaming text path without a model
 * (ta_debug_stream) over `text` cut into `pieceLen`-byte pieces, through the same
 * queue and notifier a generation uses. A Generation whose result has `calls`.
 */
export function _debugStream(text, pieceLen = 4) {
  const bytes = Buffer.byteLength(text);
  const calls = [0];
  return new Generation('ta_debug_stream', (s) =>
    callAsync(tn.debug_stream, text, bytes, pieceLen, s, calls).then(({ status, message }) => ({
      status, message, res: { stop_reason: 0, n_generated_tokens: Number(calls[0]) },
    })), null, undefined);
}
