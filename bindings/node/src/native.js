// The koffi layer: finds and loads libtabagent and the package's native companion
// (libtabagent_node), declares the C types and functions, and runs blocking calls on
// koffi's worker threads. Nothing here is public API.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const koffi = require('koffi');

const here = path.dirname(fileURLToPath(import.meta.url));
export const PKG_DIR = path.resolve(here, '..');
export const PLATFORM = `${process.platform}-${process.arch}`;
const LIB_NAME = { darwin: 'libtabagent.dylib', win32: 'tabagent.dll' }[process.platform] ?? 'libtabagent.so';
const NODE_LIB_NAME = { darwin: 'libtabagent_node.dylib', win32: 'tabagent_node.dll' }[process.platform] ?? 'libtabagent_node.so';

/** Where the library comes from: $TABAGENT_LIB, the package's prebuilds, then (in a
 * source checkout) build/dist/lib and target/release. */
function findLibrary() {
  if (process.env.TABAGENT_LIB) return path.resolve(process.env.TABAGENT_LIB);
  const repo = path.resolve(PKG_DIR, '..', '..');
  const candidates = [
    path.join(PKG_DIR, 'prebuilds', PLATFORM, LIB_NAME),
    path.join(repo, 'build', 'dist', 'lib', LIB_NAME),
    path.join(repo, 'target', 'release', LIB_NAME),
  ];
  const found = candidates.find((p) => existsSync(p));
  if (!found) {
    throw new Error(`tabagent: no ${LIB_NAME} for ${PLATFORM}; looked in ${candidates.join(', ')} (set TABAGENT_LIB)`);
  }
  return found;
}

function findNodeLib() {
  if (process.env.TABAGENT_NODE_LIB) return path.resolve(process.env.TABAGENT_NODE_LIB);
  const p = path.join(PKG_DIR, 'prebuilds', PLATFORM, NODE_LIB_NAME);
  if (!existsSync(p)) {
    throw new Error(`tabagent: ${p} is missing (in a source checkout run bindings/node/scripts/build-native.sh)`);
  }
  return p;
}

export const LIB_PATH = findLibrary();
export const NODE_LIB_PATH = findNodeLib();
const lib = koffi.load(LIB_PATH);
const nlib = koffi.load(NODE_LIB_PATH);
export { koffi };

// ------------------------------------------------------------------ types

koffi.opaque('ta_model');
koffi.opaque('ta_context');
koffi.opaque('ta_sequence');
koffi.opaque('ta_cache');
koffi.opaque('ta_hardware');
koffi.opaque('tn_stream');

export const ProgressCb = koffi.proto('bool ta_progress_callback(void *ud, float progress)');
export const DownloadCb = koffi.proto('bool ta_download_callback(void *ud, const char *file, uint64_t done, uint64_t total)');
export const LogCb = koffi.proto('void ta_log_callback(void *ud, int32_t level, const void *text, size_t len)');
export const NotifyCb = koffi.proto('void tn_notify_callback(void)');

export const ModelParams = koffi.struct('ta_model_params', {
  n_gpu_layers: 'int32_t',
  use_mmap: 'bool',
  use_mlock: 'bool',
  vocab_only: 'bool',
  progress_callback: 'ta_progress_callback *',
  progress_user_data: 'void *',
  check_in_child: 'bool',
  check_timeout_ms: 'uint32_t',
  check_memory_limit: 'uint64_t',
});

export const CheckReport = koffi.struct('ta_check_report', { elapsed_ms: 'double', peak_rss_bytes: 'uint64_t' });

export const ModelInfo = koffi.struct('ta_model_info', {
  architecture: 'const char *',
  name: 'const char *',
  description: 'const char *',
  quantization: 'const char *',
  chat_template: 'const char *',
  n_vocab: 'int32_t',
  n_ctx_train: 'int32_t',
  n_embd: 'int32_t',
  n_layer: 'int32_t',
  n_head: 'int32_t',
  n_head_kv: 'int32_t',
  n_params: 'uint64_t',
  size_bytes: 'uint64_t',
  file_size: 'uint64_t',
  bos_token: 'int32_t',
  eos_token: 'int32_t',
  eot_token: 'int32_t',
  nl_token: 'int32_t',
});

export const ContextParams = koffi.struct('ta_context_params', {
  n_ctx: 'uint32_t',
  n_batch: 'uint32_t',
  n_ubatch: 'uint32_t',
  n_threads: 'int32_t',
  n_threads_batch: 'int32_t',
  flash_attn: 'int32_t',
  seed: 'uint32_t',
  n_seq_max: 'uint32_t',
  kv_unified: 'bool',
  embeddings: 'bool',
  pooling: 'int32_t',
});

export const GenParams = koffi.struct('ta_gen_params', {
  temperature: 'float',
  top_k: 'int32_t',
  top_p: 'float',
  min_p: 'float',
  repeat_penalty: 'float',
  frequency_penalty: 'float',
  presence_penalty: 'float',
  penalty_last_n: 'int32_t',
  seed: 'uint32_t',
  max_tokens: 'int32_t',
  stop: 'const char **',
  n_stop: 'size_t',
  grammar: 'const char *',
  chat_template: 'const char *',
  chat_tools: 'const char *',
  chat_vars: 'const char *',
  context_shift: 'bool',
  n_keep: 'uint32_t',
});

export const GenResult = koffi.struct('ta_gen_result', {
  stop_reason: 'int32_t',
  n_prompt_tokens: 'uint32_t',
  n_reused_tokens: 'uint32_t',
  n_generated_tokens: 'uint32_t',
  prompt_ms: 'double',
  gen_ms: 'double',
  n_shifts: 'uint32_t',
  n_shifted_tokens: 'uint32_t',
});

export const ChatMessage = koffi.struct('ta_chat_message', {
  role: 'const char *',
  content: 'const char *',
  name: 'const char *',
  tool_call_id: 'const char *',
  tool_calls: 'const char *',
  reasoning_content: 'const char *',
});

export const EmbedParams = koffi.struct('ta_embed_params', { normalize: 'bool', truncate: 'bool' });

export const CacheOptions = koffi.struct('ta_cache_options', {
  root: 'const char *',
  endpoint: 'const char *',
  token: 'const char *',
  offline: 'int32_t',
  retries: 'uint32_t',
  connect_timeout_ms: 'uint32_t',
  read_timeout_ms: 'uint32_t',
  user_agent: 'const char *',
  durable: 'bool',
});

export const CacheStats = koffi.struct('ta_cache_stats', { repos: 'uint64_t', files: 'uint64_t', bytes: 'uint64_t' });

export const Fit = koffi.struct('ta_fit', {
  n_ctx: 'uint32_t',
  weights_bytes: 'uint64_t',
  kv_bytes: 'uint64_t',
  compute_bytes: 'uint64_t',
  total_bytes: 'uint64_t',
  fits_ram: 'bool',
  fits_vram: 'bool',
  recommended_gpu_layers: 'int32_t',
  recommended_threads: 'uint32_t',
});

// ------------------------------------------------------------------ functions

const f = (proto) => lib.func(proto);
const n = (proto) => nlib.func(proto);
const ERR = 'uint8_t *err, size_t cap';

export const ta = {
  status_str: f('const char *ta_status_str(int32_t status)'),
  last_error: f('const char *ta_last_error(void)'),
  string_free: f('void ta_string_free(void *s)'),
  version: f('const char *ta_version(void)'),
  abi_version: f('uint32_t ta_abi_version(void)'),
  llama_version: f('const char *ta_llama_version(void)'),
  system_info: f('const char *ta_system_info(void)'),
  set_log_callback: f('int32_t ta_set_log_callback(ta_log_callback *cb, void *ud, int32_t min_level)'),

  model_default_params: f('ta_model_params ta_model_default_params(void)'),
  model_free: f('void ta_model_free(ta_model *m)'),
  model_get_info: f('int32_t ta_model_get_info(const ta_model *m, _Out_ ta_model_info *out)'),
  model_meta: f('int32_t ta_model_meta(const ta_model *m, const char *key, _Out_ void **out)'),
  model_json: f('int32_t ta_model_json(const ta_model *m, _Out_ void **out)'),
  model_tokenize: f('int32_t ta_model_tokenize(const ta_model *m, const uint8_t *text, size_t len, bool add_special, bool parse_special, int32_t *tokens, size_t cap, _Out_ size_t *n)'),
  model_detokenize: f('int32_t ta_model_detokenize(const ta_model *m, const int32_t *tokens, size_t n, bool remove_special, bool unparse_special, uint8_t *buf, size_t cap, _Out_ size_t *len)'),
  model_apply_chat_template: f('int32_t ta_model_apply_chat_template(const ta_model *m, const ta_chat_message *msgs, size_t n, bool add_assistant, const char *tmpl, const char *tools, const char *vars, _Out_ void **out)'),

  context_default_params: f('ta_context_params ta_context_default_params(void)'),
  gen_default_params: f('ta_gen_params ta_gen_default_params(void)'),
  embed_default_params: f('ta_embed_params ta_embed_default_params(void)'),
  context_free: f('void ta_context_free(ta_context *c)'),
  context_cancel: f('void ta_context_cancel(const ta_context *c)'),
  context_reset: f('int32_t ta_context_reset(ta_context *c)'),
  context_n_ctx: f('uint32_t ta_context_n_ctx(const ta_context *c)'),
  context_n_ctx_seq: f('uint32_t ta_context_n_ctx_seq(const ta_context *c)'),
  context_n_seq_max: f('uint32_t ta_context_n_seq_max(const ta_context *c)'),
  context_embed_dim: f('int32_t ta_context_embed_dim(const ta_context *c, _Out_ size_t *out)'),
  context_pooling: f('int32_t ta_context_pooling(const ta_context *c, _Out_ int32_t *out)'),

  sequence_new: f('int32_t ta_sequence_new(const ta_context *c, _Out_ ta_sequence **out)'),
  sequence_free: f('void ta_sequence_free(ta_sequence *s)'),
  sequence_cancel: f('void ta_sequence_cancel(const ta_sequence *s)'),
  sequence_reset: f('int32_t ta_sequence_reset(ta_sequence *s)'),
  sequence_id: f('int32_t ta_sequence_id(const ta_sequence *s)'),
  sequence_n_cached: f('int32_t ta_sequence_n_cached(const ta_sequence *s, _Out_ size_t *out)'),

  cache_default_options: f('ta_cache_options ta_cache_default_options(void)'),
  cache_open: f('int32_t ta_cache_open(const ta_cache_options *o, _Out_ ta_cache **out)'),
  cache_free: f('void ta_cache_free(ta_cache *c)'),
  cache_root: f('int32_t ta_cache_root(const ta_cache *c, _Out_ void **out)'),
  cache_manifest: f('int32_t ta_cache_manifest(const ta_cache *c, const char *repo, const char *rev, _Out_ void **out)'),
  cache_has_file: f('int32_t ta_cache_has_file(const ta_cache *c, const char *repo, const char *rev, const char *path, _Out_ bool *out)'),
  cache_snapshot_path: f('int32_t ta_cache_snapshot_path(const ta_cache *c, const char *repo, const char *rev, const char *path, _Out_ void **out)'),
  cache_list_repos: f('int32_t ta_cache_list_repos(const ta_cache *c, _Out_ void **out)'),
  hardware_detect: f('int32_t ta_hardware_detect(_Out_ ta_hardware **out)'),
  hardware_free: f('void ta_hardware_free(ta_hardware *h)'),
  cache_get_stats: f('int32_t ta_cache_get_stats(const ta_cache *c, _Out_ ta_cache_stats *out)'),
};

// Calls that take time: each runs on a koffi worker thread (tn.<name>.async) and
// copies ta_last_error() on that same thread into `err`.
export const tn = {
  init: n('int32_t tn_init(const char *path, uint8_t *err, size_t cap)'),
  abi: n('uint32_t tn_abi(void)'),
  set_notify: n('int32_t tn_set_notify(tn_notify_callback *cb)'),
  stream_new: n('tn_stream *tn_stream_new(void)'),
  stream_free: n('void tn_stream_free(tn_stream *s)'),
  stream_cancel: n('void tn_stream_cancel(tn_stream *s)'),
  stream_take: n('size_t tn_stream_take(tn_stream *s, uint8_t *buf, size_t cap, uint32_t *lens, size_t lens_cap, _Out_ size_t *bytes)'),
  stream_total_pieces: n('uint64_t tn_stream_total_pieces(tn_stream *s)'),

  log_enable: n('int32_t tn_log_enable(int32_t enable, int32_t min_level)'),
  log_take: n('size_t tn_log_take(uint8_t *buf, size_t cap, int32_t *levels, uint32_t *lens, size_t lens_cap, _Out_ size_t *bytes, _Out_ size_t *dropped)'),

  model_load: n(`int32_t tn_model_load(const char *path, const ta_model_params *p, _Out_ ta_model **out, ${ERR})`),
  model_load_from_buffer: n(`int32_t tn_model_load_from_buffer(const uint8_t *data, size_t size, const ta_model_params *p, _Out_ ta_model **out, ${ERR})`),
  model_check: n(`int32_t tn_model_check(const char *path, const ta_model_params *p, _Out_ ta_check_report *out, ${ERR})`),
  context_new: n(`int32_t tn_context_new(const ta_model *m, const ta_context_params *p, _Out_ ta_context **out, ${ERR})`),
  context_generate: n(`int32_t tn_context_generate(ta_context *c, const char *prompt, const ta_gen_params *p, tn_stream *s, _Out_ ta_gen_result *res, ${ERR})`),
  context_chat: n(`int32_t tn_context_chat(ta_context *c, const ta_chat_message *m, size_t n, const ta_gen_params *p, tn_stream *s, _Out_ ta_gen_result *res, ${ERR})`),
  sequence_generate: n(`int32_t tn_sequence_generate(ta_sequence *q, const char *prompt, const ta_gen_params *p, tn_stream *s, _Out_ ta_gen_result *res, ${ERR})`),
  sequence_chat: n(`int32_t tn_sequence_chat(ta_sequence *q, const ta_chat_message *m, size_t n, const ta_gen_params *p, tn_stream *s, _Out_ ta_gen_result *res, ${ERR})`),
  context_embed: n(`int32_t tn_context_embed(ta_context *c, const char **texts, size_t n, const ta_embed_params *p, float *out, size_t out_cap, _Out_ size_t *out_len, ${ERR})`),
  context_state_save: n(`int32_t tn_context_state_save(ta_context *c, const char *path, _Out_ size_t *n, ${ERR})`),
  context_state_load: n(`int32_t tn_context_state_load(ta_context *c, const char *path, _Out_ size_t *n, ${ERR})`),
  sequence_state_save: n(`int32_t tn_sequence_state_save(ta_sequence *s, const char *path, _Out_ size_t *n, ${ERR})`),
  sequence_state_load: n(`int32_t tn_sequence_state_load(ta_sequence *s, const char *path, _Out_ size_t *n, ${ERR})`),
  cache_scan: n(`int32_t tn_cache_scan(const ta_cache *c, const char *repo, const char *rev, _Out_ void **out, ${ERR})`),
  cache_download_file: n(`int32_t tn_cache_download_file(const ta_cache *c, const char *repo, const char *rev, const char *path, ta_download_callback *cb, void *ud, _Out_ void **out, ${ERR})`),
  cache_download_variant: n(`int32_t tn_cache_download_variant(const ta_cache *c, const char *repo, const char *rev, const char *quant, ta_download_callback *cb, void *ud, _Out_ void **out, ${ERR})`),
  cache_verify: n(`int32_t tn_cache_verify(const ta_cache *c, const char *repo, _Out_ void **out, ${ERR})`),
  cache_delete_repo: n(`int32_t tn_cache_delete_repo(const ta_cache *c, const char *repo, ${ERR})`),
  cache_delete_revision: n(`int32_t tn_cache_delete_revision(const ta_cache *c, const char *repo, const char *rev, ${ERR})`),
  model_load_from_cache: n(`int32_t tn_model_load_from_cache(const ta_cache *c, const char *repo, const char *rev, const char *quant, const ta_model_params *p, ta_download_callback *cb, void *ud, _Out_ ta_model **out, ${ERR})`),
  hardware_report: n(`int32_t tn_hardware_report(_Out_ void **out, ${ERR})`),
  hardware_fit_file: n(`int32_t tn_hardware_fit_file(const ta_hardware *h, const char *path, uint32_t n_ctx, _Out_ ta_fit *out, ${ERR})`),
  hardware_fit_model: n(`int32_t tn_hardware_fit_model(const ta_hardware *h, const ta_model *m, uint32_t n_ctx, _Out_ ta_fit *out, ${ERR})`),
  debug_stream: n(`int32_t tn_debug_stream(const char *text, size_t len, size_t piece_len, tn_stream *s, _Out_ size_t *calls, ${ERR})`),
};

{
  const err = Buffer.alloc(1024);
  if (tn.init(LIB_PATH, err, err.length) !== 0) {
    throw new Error(cString(err));
  }
}

export function cString(buf) {
  const end = buf.indexOf(0);
  return buf.toString('utf8', 0, end < 0 ? buf.length : end);
}

/** An owned library string (void * out-parameter): decoded, then freed. */
export function takeString(ptr) {
  if (!ptr) return null;
  try {
    return koffi.decode(ptr, 'char', -1);
  } finally {
    ta.string_free(ptr);
  }
}

export const ERR_CAP = 4096;

/**
 * Run tn.<name> on a koffi worker thread. Resolves with { status, message } where
 * message is ta_last_error() read on that thread (empty on success).
 */
export function callAsync(fn, ...args) {
  const err = Buffer.alloc(ERR_CAP);
  return new Promise((resolve, reject) => {
    fn.async(...args, err, ERR_CAP, (e, status) => {
      if (e) reject(e);
      else resolve({ status, message: status === 0 ? '' : cString(err) });
    });
  });
}
