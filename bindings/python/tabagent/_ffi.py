"""The C boundary: where the library is, its constants, structs, callback types and
function declarations. Nothing here owns a handle; the public classes do.

The library is looked for, in order:

1. ``$TABAGENT_LIB`` (a path to ``libtabagent.so``), when set;
2. ``tabagent/_lib/libtabagent.so`` inside this package (what the wheel ships, with
   the llama.cpp/ggml libraries and ``tabagent-probe`` beside it);
3. ``<repo>/target/release/libtabagent.so`` when the package is used from its source
   tree (``bindings/python`` of the repository);
4. the system loader (``libtabagent.so`` on the default search path).

Constants (status codes, stop reasons, pooling types, log levels, the ABI version)
are read from the C header ``tabagent.h`` that ships with the library (in the wheel:
``tabagent/include/tabagent.h``), so Python keeps no copy of those tables; status
texts come from ``ta_status_str``.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_bool,
    c_char,
    c_char_p,
    c_double,
    c_float,
    c_int32,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

#: The ABI the structs below describe; the library must report the same.
ABI = 5

LIBNAME = {"darwin": "libtabagent.dylib", "win32": "tabagent.dll"}.get(sys.platform, "libtabagent.so")
PACKAGE_DIR = Path(__file__).resolve().parent


def _source_root() -> Optional[Path]:
    """The repository root when this package is imported from its source tree
    (``<repo>/bindings/python/tabagent``), else None."""
    parents = PACKAGE_DIR.parents
    if len(parents) > 2 and parents[0].name == "python" and parents[1].name == "bindings" \
            and (parents[2] / "Cargo.toml").is_file():
        return parents[2]
    return None


SOURCE_ROOT = _source_root()


def _library_candidates() -> List[Path]:
    env = os.environ.get("TABAGENT_LIB")
    if env:
        return [Path(env)]
    out = [PACKAGE_DIR / "_lib" / LIBNAME]
    if SOURCE_ROOT is not None:
        out.append(SOURCE_ROOT / "target" / "release" / LIBNAME)
    return out


def _load() -> Tuple[ctypes.CDLL, str]:
    cands = _library_candidates()
    for c in cands:
        if c.is_file():
            return ctypes.CDLL(str(c)), str(c)
    if os.environ.get("TABAGENT_LIB"):
        raise ImportError(f"TABAGENT_LIB={os.environ['TABAGENT_LIB']}: no such file")
    try:
        return ctypes.CDLL(LIBNAME), LIBNAME
    except OSError as e:
        where = ", ".join(str(c) for c in cands)
        raise ImportError(f"libtabagent not found (looked in {where} and the system loader path: {e}); "
                          "install the tabagent wheel, build the repository (cargo build --release) "
                          "or set TABAGENT_LIB") from None


lib, LIBRARY_PATH = _load()


def header_path() -> Path:
    """The C header that describes the loaded library's constants."""
    for c in (PACKAGE_DIR / "include" / "tabagent.h",
              *([SOURCE_ROOT / "include" / "tabagent.h"] if SOURCE_ROOT else [])):
        if c.is_file():
            return c
    raise ImportError(f"tabagent.h not found beside the package ({PACKAGE_DIR / 'include'}) "
                      "nor in a source tree")


def _read_defines() -> Dict[str, int]:
    text = header_path().read_text(encoding="utf-8")
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^#define (TA_[A-Z0-9_]+) (-?\d+)\s*$", text, re.M)}


DEFINES = _read_defines()


def _group(prefix: str) -> Dict[int, str]:
    return {v: k[len(prefix):] for k, v in DEFINES.items() if k.startswith(prefix)}


#: Status code -> name without the prefix ("OK", "NULL_ARG", "BUSY", ...): TA_OK and TA_ERR_*.
STATUS_NAMES: Dict[int, str] = {DEFINES["TA_OK"]: "OK", **_group("TA_ERR_")}
#: Stop reason code -> name as GenResult.stop_reason reports it ("eog", "max_tokens",
#: "stop_string", "cancelled", "context_full"): TA_STOP_* lowercased; TA_STOP_STRING
#: reads "stop_string".
STOP_REASONS: Dict[int, str] = {v: ("stop_" + n if n == "STRING" else n).lower()
                                for v, n in _group("TA_STOP_").items()}
#: Pooling name ("model", "none", "mean", "cls", "last", "rank") -> TA_POOLING_* value.
POOLING: Dict[str, int] = {n.lower(): v for v, n in _group("TA_POOLING_").items()}
#: Log level name ("DEBUG", ...) -> TA_LOG_* value.
LOG_LEVELS: Dict[str, int] = {n: v for v, n in _group("TA_LOG_").items()}
TA_OK = DEFINES["TA_OK"]
ERR = {n: v for v, n in STATUS_NAMES.items()}  # "BUSY" -> 10

# ----------------------------------------------------------------------------- structs


class ModelParams(Structure):
    _fields_ = [
        ("n_gpu_layers", c_int32),
        ("use_mmap", c_bool),
        ("use_mlock", c_bool),
        ("vocab_only", c_bool),
        ("progress_callback", c_void_p),
        ("progress_user_data", c_void_p),
        ("check_in_child", c_bool),
        ("check_timeout_ms", c_uint32),
        ("check_memory_limit", c_uint64),
    ]


class CheckReport(Structure):
    _fields_ = [("elapsed_ms", c_double), ("peak_rss_bytes", c_uint64)]


class ModelInfoC(Structure):
    _fields_ = [
        ("architecture", c_char_p),
        ("name", c_char_p),
        ("description", c_char_p),
        ("quantization", c_char_p),
        ("chat_template", c_char_p),
        ("n_vocab", c_int32),
        ("n_ctx_train", c_int32),
        ("n_embd", c_int32),
        ("n_layer", c_int32),
        ("n_head", c_int32),
        ("n_head_kv", c_int32),
        ("n_params", c_uint64),
        ("size_bytes", c_uint64),
        ("file_size", c_uint64),
        ("bos_token", c_int32),
        ("eos_token", c_int32),
        ("eot_token", c_int32),
        ("nl_token", c_int32),
    ]


class ContextParams(Structure):
    _fields_ = [
        ("n_ctx", c_uint32),
        ("n_batch", c_uint32),
        ("n_ubatch", c_uint32),
        ("n_threads", c_int32),
        ("n_threads_batch", c_int32),
        ("flash_attn", c_int32),
        ("seed", c_uint32),
        ("n_seq_max", c_uint32),
        ("kv_unified", c_bool),
        ("embeddings", c_bool),
        ("pooling", c_int32),
    ]


class EmbedParams(Structure):
    _fields_ = [("normalize", c_bool), ("truncate", c_bool)]


class GenParams(Structure):
    _fields_ = [
        ("temperature", c_float),
        ("top_k", c_int32),
        ("top_p", c_float),
        ("min_p", c_float),
        ("repeat_penalty", c_float),
        ("frequency_penalty", c_float),
        ("presence_penalty", c_float),
        ("penalty_last_n", c_int32),
        ("seed", c_uint32),
        ("max_tokens", c_int32),
        ("stop", POINTER(c_char_p)),
        ("n_stop", c_size_t),
        ("grammar", c_char_p),
        ("chat_template", c_char_p),
        ("chat_tools", c_char_p),
        ("chat_vars", c_char_p),
        ("context_shift", c_bool),
        ("n_keep", c_uint32),
    ]


class GenResultC(Structure):
    _fields_ = [
        ("stop_reason", c_int32),
        ("n_prompt_tokens", c_uint32),
        ("n_reused_tokens", c_uint32),
        ("n_generated_tokens", c_uint32),
        ("prompt_ms", c_double),
        ("gen_ms", c_double),
        ("n_shifts", c_uint32),
        ("n_shifted_tokens", c_uint32),
    ]


class ChatMessage(Structure):
    _fields_ = [("role", c_char_p), ("content", c_char_p), ("name", c_char_p), ("tool_call_id", c_char_p),
                ("tool_calls", c_char_p), ("reasoning_content", c_char_p)]


class CpuInfoC(Structure):
    _fields_ = [("vendor", c_char_p), ("brand", c_char_p), ("uarch", c_char_p), ("features", c_char_p),
                ("family", c_uint32), ("model", c_uint32), ("stepping", c_uint32), ("x86_64_level", c_uint32),
                ("physical_cores", c_uint32), ("logical_cores", c_uint32), ("l1d_kb", c_uint32),
                ("l2_kb", c_uint32), ("l3_kb", c_uint32), ("recommended_threads", c_uint32)]


class MemoryInfoC(Structure):
    _fields_ = [("total_bytes", c_uint64), ("available_bytes", c_uint64), ("host_total_bytes", c_uint64),
                ("host_available_bytes", c_uint64), ("cgroup_limit_bytes", c_uint64),
                ("swap_total_bytes", c_uint64)]


class GpuInfoC(Structure):
    _fields_ = [("backend", c_char_p), ("name", c_char_p), ("compute_capability", c_char_p),
                ("device_type", c_char_p), ("driver", c_char_p), ("index", c_uint32), ("total_bytes", c_uint64),
                ("free_bytes", c_uint64), ("has_free_bytes", c_bool)]


class BuildInfoC(Structure):
    _fields_ = [("features", c_char_p), ("best_variant", c_char_p), ("warning", c_char_p),
                ("gpu_backends", c_char_p), ("gpu_offload", c_bool),
                ("cpu_variant", c_char_p), ("cpu_variant_reason", c_char_p)]


class FitC(Structure):
    _fields_ = [("n_ctx", c_uint32), ("weights_bytes", c_uint64), ("kv_bytes", c_uint64),
                ("compute_bytes", c_uint64), ("total_bytes", c_uint64), ("fits_ram", c_bool),
                ("fits_vram", c_bool), ("recommended_gpu_layers", c_int32), ("recommended_threads", c_uint32)]


class CacheOptions(Structure):
    _fields_ = [("root", c_char_p), ("endpoint", c_char_p), ("token", c_char_p), ("offline", c_int32),
                ("retries", c_uint32), ("connect_timeout_ms", c_uint32), ("read_timeout_ms", c_uint32),
                ("user_agent", c_char_p), ("durable", c_bool)]


class CacheStats(Structure):
    _fields_ = [("repos", c_uint64), ("files", c_uint64), ("bytes", c_uint64)]


# ----------------------------------------------------------------------------- callbacks
# A ctypes callback object must stay referenced while the library may call it: the
# callers below keep it in a local (or on the owning object) for the call's duration.

TEXT_CB = CFUNCTYPE(c_bool, c_void_p, POINTER(c_char), c_size_t)
HOST_CB = CFUNCTYPE(None, c_void_p, POINTER(c_char), c_size_t)
PROGRESS_CB = CFUNCTYPE(c_bool, c_void_p, c_float)
LOG_CB = CFUNCTYPE(None, c_void_p, c_int32, POINTER(c_char), c_size_t)
DOWNLOAD_CB = CFUNCTYPE(c_bool, c_void_p, c_char_p, c_uint64, c_uint64)

# ----------------------------------------------------------------------------- functions


def _fn(name: str, restype: Any, *argtypes: Any) -> Any:
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


P = POINTER
VP = c_void_p
status_str = _fn("ta_status_str", c_char_p, c_int32)
last_error = _fn("ta_last_error", c_char_p)
string_free = _fn("ta_string_free", None, VP)
version = _fn("ta_version", c_char_p)
abi_version = _fn("ta_abi_version", c_uint32)
llama_version = _fn("ta_llama_version", c_char_p)
system_info = _fn("ta_system_info", c_char_p)
set_log_callback = _fn("ta_set_log_callback", c_int32, LOG_CB, VP, c_int32)

model_default_params = _fn("ta_model_default_params", ModelParams)
model_load = _fn("ta_model_load", c_int32, c_char_p, P(ModelParams), P(VP))
model_check = _fn("ta_model_check", c_int32, c_char_p, P(ModelParams), P(CheckReport))
model_load_from_buffer = _fn("ta_model_load_from_buffer", c_int32, P(c_uint8), c_size_t, P(ModelParams), P(VP))
model_free = _fn("ta_model_free", None, VP)
model_get_info = _fn("ta_model_get_info", c_int32, VP, P(ModelInfoC))
model_meta = _fn("ta_model_meta", c_int32, VP, c_char_p, P(VP))
model_json = _fn("ta_model_json", c_int32, VP, P(VP))
model_tokenize = _fn("ta_model_tokenize", c_int32, VP, c_char_p, c_size_t, c_bool, c_bool, P(c_int32), c_size_t,
                     P(c_size_t))
model_detokenize = _fn("ta_model_detokenize", c_int32, VP, P(c_int32), c_size_t, c_bool, c_bool, c_char_p,
                       c_size_t, P(c_size_t))
model_token_to_piece = _fn("ta_model_token_to_piece", c_int32, VP, c_int32, c_bool, c_char_p, c_size_t,
                           P(c_size_t))
model_apply_chat_template = _fn("ta_model_apply_chat_template", c_int32, VP, P(ChatMessage), c_size_t, c_bool,
                                c_char_p, c_char_p, c_char_p, P(VP))
model_load_from_cache = _fn("ta_model_load_from_cache", c_int32, VP, c_char_p, c_char_p, c_char_p,
                            P(ModelParams), DOWNLOAD_CB, VP, P(VP))

context_default_params = _fn("ta_context_default_params", ContextParams)
gen_default_params = _fn("ta_gen_default_params", GenParams)
context_new = _fn("ta_context_new", c_int32, VP, P(ContextParams), P(VP))
context_free = _fn("ta_context_free", None, VP)
context_generate = _fn("ta_context_generate", c_int32, VP, c_char_p, P(GenParams), TEXT_CB, VP, P(GenResultC))
context_chat = _fn("ta_context_chat", c_int32, VP, P(ChatMessage), c_size_t, P(GenParams), TEXT_CB, VP,
                   P(GenResultC))
context_cancel = _fn("ta_context_cancel", None, VP)
context_reset = _fn("ta_context_reset", c_int32, VP)
context_n_ctx = _fn("ta_context_n_ctx", c_uint32, VP)
context_n_ctx_seq = _fn("ta_context_n_ctx_seq", c_uint32, VP)
context_n_seq_max = _fn("ta_context_n_seq_max", c_uint32, VP)
context_state_save = _fn("ta_context_state_save", c_int32, VP, c_char_p, P(c_size_t))
context_state_load = _fn("ta_context_state_load", c_int32, VP, c_char_p, P(c_size_t))
embed_default_params = _fn("ta_embed_default_params", EmbedParams)
context_embed = _fn("ta_context_embed", c_int32, VP, P(c_char_p), c_size_t, P(EmbedParams), P(c_float), c_size_t,
                    P(c_size_t))
context_embed_dim = _fn("ta_context_embed_dim", c_int32, VP, P(c_size_t))
context_pooling = _fn("ta_context_pooling", c_int32, VP, P(c_int32))

text_queue_new = _fn("ta_text_queue_new", c_int32, P(VP))
text_queue_pop = _fn("ta_text_queue_pop", c_int32, VP, c_char_p, c_size_t, c_int32, P(c_size_t), P(c_bool))
text_queue_end = _fn("ta_text_queue_end", None, VP)
text_queue_stop = _fn("ta_text_queue_stop", None, VP)
text_queue_free = _fn("ta_text_queue_free", None, VP)
#: ta_text_queue_push as a text callback: the generating thread never enters Python.
TEXT_QUEUE_PUSH = TEXT_CB(ctypes.cast(lib.ta_text_queue_push, c_void_p).value or 0)

sequence_new = _fn("ta_sequence_new", c_int32, VP, P(VP))
sequence_free = _fn("ta_sequence_free", None, VP)
sequence_generate = _fn("ta_sequence_generate", c_int32, VP, c_char_p, P(GenParams), TEXT_CB, VP, P(GenResultC))
sequence_chat = _fn("ta_sequence_chat", c_int32, VP, P(ChatMessage), c_size_t, P(GenParams), TEXT_CB, VP,
                    P(GenResultC))
sequence_cancel = _fn("ta_sequence_cancel", None, VP)
sequence_reset = _fn("ta_sequence_reset", c_int32, VP)
sequence_id = _fn("ta_sequence_id", c_int32, VP)
sequence_n_cached = _fn("ta_sequence_n_cached", c_int32, VP, P(c_size_t))
sequence_state_save = _fn("ta_sequence_state_save", c_int32, VP, c_char_p, P(c_size_t))
sequence_state_load = _fn("ta_sequence_state_load", c_int32, VP, c_char_p, P(c_size_t))

hw_detect = _fn("ta_hardware_detect", c_int32, P(VP))
hw_free = _fn("ta_hardware_free", None, VP)
hw_cpu = _fn("ta_hardware_cpu", c_int32, VP, P(CpuInfoC))
hw_memory = _fn("ta_hardware_memory", c_int32, VP, P(MemoryInfoC))
hw_gpu_count = _fn("ta_hardware_gpu_count", c_size_t, VP)
hw_gpu = _fn("ta_hardware_gpu", c_int32, VP, c_size_t, P(GpuInfoC))
hw_build = _fn("ta_hardware_build", c_int32, VP, P(BuildInfoC))
hw_json = _fn("ta_hardware_json", c_int32, VP, P(VP))
hw_fit_file = _fn("ta_hardware_fit_file", c_int32, VP, c_char_p, c_uint32, P(FitC))
hw_fit_model = _fn("ta_hardware_fit_model", c_int32, VP, VP, c_uint32, P(FitC))

cache_default_options = _fn("ta_cache_default_options", CacheOptions)
cache_open = _fn("ta_cache_open", c_int32, P(CacheOptions), P(VP))
cache_free = _fn("ta_cache_free", None, VP)
cache_root = _fn("ta_cache_root", c_int32, VP, P(VP))
cache_scan = _fn("ta_cache_scan", c_int32, VP, c_char_p, c_char_p, P(VP))
cache_manifest = _fn("ta_cache_manifest", c_int32, VP, c_char_p, c_char_p, P(VP))
cache_download_file = _fn("ta_cache_download_file", c_int32, VP, c_char_p, c_char_p, c_char_p, DOWNLOAD_CB, VP,
                          P(VP))
cache_download_variant = _fn("ta_cache_download_variant", c_int32, VP, c_char_p, c_char_p, c_char_p, DOWNLOAD_CB,
                             VP, P(VP))
cache_has_file = _fn("ta_cache_has_file", c_int32, VP, c_char_p, c_char_p, c_char_p, P(c_bool))
cache_snapshot_path = _fn("ta_cache_snapshot_path", c_int32, VP, c_char_p, c_char_p, c_char_p, P(VP))
cache_list_repos = _fn("ta_cache_list_repos", c_int32, VP, P(VP))
cache_delete_repo = _fn("ta_cache_delete_repo", c_int32, VP, c_char_p)
cache_delete_revision = _fn("ta_cache_delete_revision", c_int32, VP, c_char_p, c_char_p)
cache_stats = _fn("ta_cache_get_stats", c_int32, VP, P(CacheStats))
cache_verify = _fn("ta_cache_verify", c_int32, VP, c_char_p, P(VP))

host_new = _fn("ta_host_new", c_int32, c_char_p, HOST_CB, VP, P(VP))
host_post = _fn("ta_host_post", c_int32, VP, c_char_p, c_size_t)
host_free = _fn("ta_host_free", None, VP)

# The structs above must match the library. (The header's constants need not be the
# newest: status codes, stop reasons and the like are only ever added, never renumbered.)
_abi = abi_version()
if _abi != ABI:
    raise ImportError(f"libtabagent at {LIBRARY_PATH} has ABI {_abi}; this package was written for ABI {ABI}")

# ----------------------------------------------------------------------------- helpers


def take_string(p: c_void_p) -> str:
    """Decode a string the library allocated (an owned ``char *`` out-parameter) and free it."""
    try:
        return ctypes.string_at(p.value).decode("utf-8", "replace") if p.value else ""
    finally:
        string_free(p)


def enc(s: Any) -> Optional[bytes]:
    """None, a str or an os.PathLike as bytes for a ``const char *`` argument."""
    if s is None:
        return None
    if isinstance(s, bytes):
        return s
    if isinstance(s, os.PathLike):
        return os.fsencode(s)
    return str(s).encode()
