#!/usr/bin/env python3
"""Print what this machine can run (the Python twin of examples/c/info.c)."""
import sys

import tabagent

hw = tabagent.Hardware.detect()
c, m = hw.cpu, hw.memory
print(f"CPU     {c.brand} ({c.vendor} {c.uarch}, x86-64-v{c.x86_64_level}), "
      f"{c.physical_cores}/{c.logical_cores} cores")
print(f"        {' '.join(c.features)}")
print(f"Memory  {m.total_bytes / 2**30:.1f} GiB total, {m.available_bytes / 2**30:.1f} GiB available")
for g in hw.gpus:
    print(f"GPU     [{g.backend}] {g.name} {g.total_bytes / 2**30:.1f} GiB")
if not hw.gpus:
    print("GPU     none found")
print(f"Build   {' '.join(hw.build.features)}; best variant {hw.build.best_variant}")
if hw.build.warning:
    print(f"WARNING {hw.build.warning}")
if len(sys.argv) > 1:
    f = tabagent.Hardware.fit(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 4096)
    print(f"Fit     n_ctx {f.n_ctx}: {f.total_bytes / 2**20:.1f} MiB, fits RAM {f.fits_ram}, "
          f"GPU layers {f.recommended_gpu_layers}, threads {f.recommended_threads}")
