// Type declarations for the `tabagent` package (hand-written; the code is plain ESM
// JavaScript in src/).
import { EventEmitter } from 'node:events';

export declare const STATUS: Readonly<{
  OK: 0; NULL_ARG: 1; INVALID_ARG: 2; IO: 3; NOT_FOUND: 4; BAD_MODEL: 5; NETWORK: 6; CHECKSUM: 7;
  CANCELLED: 8; CONTEXT_FULL: 9; BUSY: 10; UNSUPPORTED: 11; OUT_OF_MEMORY: 12; PANIC: 13;
  BUFFER_TOO_SMALL: 14; UNAUTHORIZED: 15; OFFLINE: 16; BACKEND: 17;
}>;
export type StatusName = keyof typeof STATUS;

/** A failed library call. `message` is the library's own (ta_last_error of the
 * thread the call ran on): it names the function and the file/argument at fault. */
export declare class TabagentError extends Error {
  constructor(status: number, message: string, options?: ErrorOptions);
  readonly status: number;
  readonly statusName: StatusName | string;
}
export declare class NullArgError extends TabagentError {}
export declare class InvalidArgumentError extends TabagentError {}
export declare class IoError extends TabagentError {}
export declare class NotFoundError extends TabagentError {}
export declare class BadModelError extends TabagentError {}
export declare class NetworkError extends TabagentError {}
export declare class ChecksumError extends TabagentError {}
export declare class CancelledError extends TabagentError {
  /** What a cancelled generation did so far (text included). */
  result?: GenResult;
}
export declare class ContextFullError extends TabagentError {}
export declare class BusyError extends TabagentError {}
export declare class UnsupportedError extends TabagentError {}
export declare class OutOfMemoryError extends TabagentError {}
export declare class PanicError extends TabagentError {}
export declare class BufferTooSmallError extends TabagentError {}
export declare class UnauthorizedError extends TabagentError {}
export declare class OfflineError extends TabagentError {}
export declare class BackendError extends TabagentError {}
/** Stopped by an AbortSignal: name "AbortError", code "ABORT_ERR", cause = the
 * signal's reason, result = the partial result (generations). */
export declare class AbortError extends CancelledError {
  constructor(message: string, options?: ErrorOptions);
  readonly code: 'ABORT_ERR';
}

export declare const STOP_REASONS: readonly ['eog', 'max_tokens', 'stop_string', 'cancelled', 'context_full'];
export type StopReason = (typeof STOP_REASONS)[number];
export declare const LOG_DEBUG: 1, LOG_INFO: 2, LOG_WARN: 3, LOG_ERROR: 4;

/** Absolute path of the libtabagent loaded (the package's prebuilds, or $TABAGENT_LIB). */
export declare const libraryPath: string;
export declare const nativeCompanionPath: string;
export declare function version(): string;
export declare function abiVersion(): number;
export declare function llamaVersion(): string;
export declare function systemInfo(): string;
/** Log lines (whole, without the newline) delivered on the JS thread; null = silence. */
export declare function setLogCallback(fn: ((level: number, line: string) => void) | null, minLevel?: number): void;

export interface ModelLoadOptions {
  /** Layers to offload to a GPU; -1 = all (default), 0 = none. */
  gpuLayers?: number;
  mmap?: boolean;
  mlock?: boolean;
  vocabOnly?: boolean;
  /** Check the file in a child process first (untrusted files). */
  checkInChild?: boolean;
  checkTimeoutMs?: number;
  checkMemoryLimit?: number;
  /** Load progress 0..1; return false to cancel. */
  onProgress?: (fraction: number) => boolean | void;
  signal?: AbortSignal;
}

export interface ModelInfo {
  architecture: string; name: string; description: string; quantization: string;
  chatTemplate: string | null;
  nVocab: number; nCtxTrain: number; nEmbd: number; nLayer: number; nHead: number; nHeadKv: number;
  nParams: number; sizeBytes: number; fileSize: number;
  bosToken: number; eosToken: number; eotToken: number; nlToken: number;
}

export interface ChatMessage {
  role: string;
  content: string;
  name?: string;
  toolCallId?: string;
  /** OpenAI-style tool calls (an array, or its JSON text). */
  toolCalls?: unknown[] | string;
  reasoningContent?: string;
}

export interface TemplateOptions {
  /** End the prompt where the assistant's reply begins (default true). */
  addAssistant?: boolean;
  /** A built-in template name ("chatml", "llama3", …) or a template text. */
  template?: string;
  tools?: unknown[] | string;
  vars?: Record<string, unknown> | string;
}

declare class Handle {
  /** True once close() was called. */
  readonly closed: boolean;
  /** Free the native handle (after the calls running on it return). Idempotent. */
  close(): void;
  [Symbol.dispose](): void;
}

export declare class Model extends Handle {
  static load(path: string, opts?: ModelLoadOptions): Promise<Model>;
  static fromBuffer(data: Uint8Array, opts?: ModelLoadOptions): Promise<Model>;
  static check(path: string, opts?: ModelLoadOptions): Promise<{ elapsedMs: number; peakRssBytes: number }>;
  readonly info: Readonly<ModelInfo>;
  meta(key: string): string | null;
  metadata(): Record<string, unknown>;
  applyChatTemplate(messages: ChatMessage[], opts?: TemplateOptions): string;
  tokenize(text: string, opts?: { addSpecial?: boolean; parseSpecial?: boolean }): Int32Array;
  detokenize(tokens: ArrayLike<number>, opts?: { removeSpecial?: boolean; unparseSpecial?: boolean }): string;
  createContext(opts?: ContextOptions): Promise<Context>;
}

export interface ContextOptions {
  /** Context window in tokens (default 4096; 0 = the model's training context). */
  nCtx?: number;
  nBatch?: number;
  nUbatch?: number;
  /** Generation threads (0 = physical cores). */
  threads?: number;
  threadsBatch?: number;
  flashAttn?: 'auto' | 'on' | 'off' | boolean | number;
  seed?: number;
  /** Sequences (conversations) served at once (default 1). */
  nSeqMax?: number;
  kvUnified?: boolean;
  /** A context for embed() only. */
  embeddings?: boolean;
  pooling?: 'model' | 'none' | 'mean' | 'cls' | 'last' | 'rank' | number;
}

export interface GenerateOptions {
  maxTokens?: number;
  /** 0 = greedy. Default 0.8. */
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repeatPenalty?: number;
  frequencyPenalty?: number;
  presencePenalty?: number;
  penaltyLastN?: number;
  seed?: number;
  stop?: string | string[];
  /** GBNF grammar with a root rule. */
  grammar?: string;
  contextShift?: boolean;
  nKeep?: number;
  /** Aborting cancels the generation: the iterator throws an AbortError. */
  signal?: AbortSignal;
}

export interface ChatOptions extends GenerateOptions {
  chatTemplate?: string;
  tools?: unknown[] | string;
  vars?: Record<string, unknown> | string;
}

export interface GenResult {
  /** The whole reply (all pieces joined). */
  text: string;
  stopReason: StopReason;
  promptTokens: number;
  reusedTokens: number;
  generatedTokens: number;
  promptMs: number;
  genMs: number;
  shifts: number;
  shiftedTokens: number;
}

/** A running generation: an async iterator of text pieces plus the final result.
 * Abort through `signal` → the iterator throws AbortError (and `result` rejects);
 * cancel() or breaking out of for-await → it just ends, stopReason "cancelled". */
export declare class Generation implements AsyncIterableIterator<string> {
  readonly result: Promise<GenResult>;
  next(): Promise<IteratorResult<string, undefined>>;
  return(): Promise<IteratorResult<string, undefined>>;
  [Symbol.asyncIterator](): Generation;
  cancel(): void;
  /** Awaits the result and returns its text. */
  text(): Promise<string>;
}

export declare class Context extends Handle {
  static create(model: Model, opts?: ContextOptions): Promise<Context>;
  readonly model: Model;
  readonly nCtx: number;
  readonly nCtxSeq: number;
  readonly nSeqMax: number;
  generate(prompt: string, opts?: GenerateOptions): Generation;
  chat(messages: ChatMessage[], opts?: ChatOptions): Generation;
  /** Claim one of the nSeqMax sequences (BusyError when all are taken). */
  sequence(): Sequence;
  cancel(): void;
  reset(): void;
  readonly embedDim: number;
  readonly pooling: string | number;
  embed(text: string, opts?: { normalize?: boolean; truncate?: boolean }): Promise<Float32Array>;
  embed(texts: string[], opts?: { normalize?: boolean; truncate?: boolean }): Promise<Float32Array[]>;
  saveState(path: string): Promise<number>;
  loadState(path: string): Promise<number>;
  tokenize(text: string, opts?: { addSpecial?: boolean; parseSpecial?: boolean }): Int32Array;
  detokenize(tokens: ArrayLike<number>, opts?: { removeSpecial?: boolean; unparseSpecial?: boolean }): string;
}

export declare class Sequence extends Handle {
  readonly context: Context;
  readonly id: number;
  readonly nCached: number;
  generate(prompt: string, opts?: GenerateOptions): Generation;
  chat(messages: ChatMessage[], opts?: ChatOptions): Generation;
  cancel(): void;
  reset(): void;
  saveState(path: string): Promise<number>;
  loadState(path: string): Promise<number>;
}

export interface CacheOptions {
  root?: string;
  endpoint?: string;
  token?: string;
  offline?: boolean;
  retries?: number;
  connectTimeoutMs?: number;
  readTimeoutMs?: number;
  userAgent?: string;
  durable?: boolean;
}

export interface PullProgress {
  /** The file's path in the repo. */
  file: string;
  done: number;
  total: number;
}

export interface PullOptions {
  quant?: string;
  file?: string;
  revision?: string;
  signal?: AbortSignal;
}

/** A download: 'progress' events, an async iterator of them, and a promise of the
 * snapshot path (`result`; the object itself is awaitable). */
export declare class Pull extends EventEmitter implements PromiseLike<string>, AsyncIterable<PullProgress> {
  readonly result: Promise<string>;
  cancel(): void;
  then<A = string, B = never>(onFulfilled?: ((path: string) => A | PromiseLike<A>) | null,
    onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null): Promise<A | B>;
  catch<B = never>(onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null): Promise<string | B>;
  finally(fn?: (() => void) | null): Promise<string>;
  on(event: 'progress', listener: (p: PullProgress) => void): this;
  once(event: 'progress', listener: (p: PullProgress) => void): this;
  [Symbol.asyncIterator](): AsyncIterator<PullProgress>;
}

export declare class Cache extends Handle {
  constructor(opts?: CacheOptions | string);
  readonly root: string;
  scan(repo: string, opts?: { revision?: string }): Promise<Record<string, any>>;
  manifest(repo: string, opts?: { revision?: string }): Record<string, any>;
  pull(repo: string, opts: PullOptions | string): Pull;
  hasFile(repo: string, file: string, opts?: { revision?: string }): boolean;
  snapshotPath(repo: string, file: string, opts?: { revision?: string }): string;
  list(): Array<{ repo_id: string; size_on_disk: number; n_files: number; revisions: unknown; refs: unknown }>;
  delete(repo: string, opts?: { revision?: string }): Promise<void>;
  verify(repo?: string): Promise<Array<{ path: string; expected: string; actual: string }>>;
  stats(): { repos: number; files: number; bytes: number };
}

/** The hardware report (ta_hardware_json): cpu, memory, gpus, build. */
export declare function hardware(): Promise<{
  cpu: Record<string, any> & { logical_cores: number; physical_cores: number; vendor: string };
  memory: Record<string, any> & { total_bytes: number; available_bytes: number };
  gpus: Array<Record<string, any>>;
  build: Record<string, any>;
  [key: string]: any;
}>;

export interface Fit {
  nCtx: number; weightsBytes: number; kvBytes: number; computeBytes: number; totalBytes: number;
  fitsRam: boolean; fitsVram: boolean; recommendedGpuLayers: number; recommendedThreads: number;
}
export declare function fit(model: Model | string, nCtx?: number): Promise<Fit>;
