"""What this machine can run: CPU, memory, GPUs, the build's features, and fit estimates."""

from __future__ import annotations

import json
import os
from ctypes import Structure, byref, c_void_p
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Optional, Tuple, Union

from . import _ffi
from ._params import PathLike
from .errors import check
from .model import Model

__all__ = ["Hardware", "CpuInfo", "MemoryInfo", "GpuInfo", "BuildInfo", "Fit"]


def _struct_dict(st: Structure, split: Iterable[str] = ()) -> Dict[str, Any]:
    d: Dict[str, Any] = {}
    for name, *_ in st._fields_:
        v = getattr(st, name)
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        if name in split:
            v = tuple(v.split()) if v else ()
        d[name] = v
    return d


@dataclass(frozen=True)
class CpuInfo:
    vendor: str
    brand: str
    uarch: str
    features: Tuple[str, ...]
    family: int
    model: int
    stepping: int
    x86_64_level: int
    physical_cores: int
    logical_cores: int
    l1d_kb: int
    l2_kb: int
    l3_kb: int
    recommended_threads: int


@dataclass(frozen=True)
class MemoryInfo:
    total_bytes: int
    available_bytes: int
    host_total_bytes: int
    host_available_bytes: int
    cgroup_limit_bytes: int
    swap_total_bytes: int


@dataclass(frozen=True)
class GpuInfo:
    backend: str
    name: str
    compute_capability: Optional[str]
    device_type: Optional[str]
    driver: Optional[str]
    index: int
    total_bytes: int
    free_bytes: Optional[int]


@dataclass(frozen=True)
class BuildInfo:
    features: Tuple[str, ...]
    best_variant: str
    warning: Optional[str]
    gpu_backends: Tuple[str, ...]
    gpu_offload: bool
    cpu_variant: str
    cpu_variant_reason: str


@dataclass(frozen=True)
class Fit:
    n_ctx: int
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    total_bytes: int
    fits_ram: bool
    fits_vram: bool
    recommended_gpu_layers: int
    recommended_threads: int


@dataclass(frozen=True)
class Hardware:
    """What this machine can run: ``Hardware.detect()`` (a snapshot; plain values)."""

    cpu: CpuInfo
    memory: MemoryInfo
    gpus: Tuple[GpuInfo, ...]
    build: BuildInfo
    json: Dict[str, Any]

    @classmethod
    def detect(cls) -> "Hardware":
        h = c_void_p()
        check(_ffi.hw_detect(byref(h)))
        try:
            c, m, b = _ffi.CpuInfoC(), _ffi.MemoryInfoC(), _ffi.BuildInfoC()
            check(_ffi.hw_cpu(h, byref(c)))
            check(_ffi.hw_memory(h, byref(m)))
            check(_ffi.hw_build(h, byref(b)))
            gpus = []
            for i in range(_ffi.hw_gpu_count(h)):
                g = _ffi.GpuInfoC()
                check(_ffi.hw_gpu(h, i, byref(g)))
                d = _struct_dict(g)
                has = d.pop("has_free_bytes")
                d["free_bytes"] = d["free_bytes"] if has else None
                gpus.append(GpuInfo(**d))
            out = c_void_p()
            check(_ffi.hw_json(h, byref(out)))
            doc = json.loads(_ffi.take_string(out))
            return cls(CpuInfo(**_struct_dict(c, split=("features",))), MemoryInfo(**_struct_dict(m)), tuple(gpus),
                       BuildInfo(**_struct_dict(b, split=("features", "gpu_backends"))), doc)
        finally:
            _ffi.hw_free(h)

    @staticmethod
    def fit(model: Union[PathLike, Model], n_ctx: int = 4096) -> Fit:
        """Memory a model (a loaded one, or a file read from its header only) needs at
        ``n_ctx`` and whether it fits."""
        h = c_void_p()
        check(_ffi.hw_detect(byref(h)))
        try:
            f = _ffi.FitC()
            if isinstance(model, Model):
                check(_ffi.hw_fit_model(h, model._handle(), n_ctx, byref(f)))
            else:
                check(_ffi.hw_fit_file(h, os.fsencode(model), n_ctx, byref(f)))
            return Fit(**_struct_dict(f))
        finally:
            _ffi.hw_free(h)
