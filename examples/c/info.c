/* tabagent-info: what this machine can run, and whether a model fits.
 *
 *   info [MODEL.gguf [N_CTX]]      human-readable report
 *   info --json                     the whole report as JSON
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tabagent.h"

static double gib(uint64_t b) { return (double)b / (1024.0 * 1024.0 * 1024.0); }
static double mib(uint64_t b) { return (double)b / (1024.0 * 1024.0); }

int main(int argc, char **argv) {
    ta_hardware *hw = NULL;
    ta_status st = ta_hardware_detect(&hw);
    if (st != TA_OK) {
        fprintf(stderr, "ta_hardware_detect: %s\n", ta_last_error());
        return 1;
    }
    if (argc > 1 && strcmp(argv[1], "--json") == 0) {
        char *json = NULL;
        if (ta_hardware_json(hw, &json) == TA_OK) printf("%s\n", json);
        ta_string_free(json);
        ta_hardware_free(hw);
        return 0;
    }
    ta_cpu_info cpu;
    ta_memory_info mem;
    ta_build_info build;
    ta_hardware_cpu(hw, &cpu);
    ta_hardware_memory(hw, &mem);
    ta_hardware_build(hw, &build);
    printf("tabagent %s (llama.cpp %s)\n", ta_version(), ta_llama_version());
    printf("CPU      %s\n", cpu.brand);
    printf("         %s family %u model %u stepping %u, uarch %s, x86-64-v%u\n", cpu.vendor, cpu.family,
           cpu.model, cpu.stepping, cpu.uarch, cpu.x86_64_level);
    printf("         %u physical / %u logical cores, caches L1d %u KiB, L2 %u KiB, L3 %u KiB\n",
           cpu.physical_cores, cpu.logical_cores, cpu.l1d_kb, cpu.l2_kb, cpu.l3_kb);
    printf("         features: %s\n", cpu.features);
    printf("Memory   %.1f GiB total, %.1f GiB available", gib(mem.total_bytes), gib(mem.available_bytes));
    if (mem.cgroup_limit_bytes) printf(" (container limit %.1f GiB)", gib(mem.cgroup_limit_bytes));
    printf("\n");
    size_t n = ta_hardware_gpu_count(hw);
    if (n == 0) printf("GPUs     none found\n");
    for (size_t i = 0; i < n; i++) {
        ta_gpu_info g;
        if (ta_hardware_gpu(hw, i, &g) != TA_OK) continue;
        printf("GPU %zu    [%s] %s, %.1f GiB", i, g.backend, g.name, gib(g.total_bytes));
        if (g.has_free_bytes) printf(" (%.1f GiB free)", gib(g.free_bytes));
        if (g.compute_capability) printf(", compute %s", g.compute_capability);
        printf("\n");
    }
    printf("Build    uses: %s\n", build.features);
    printf("         best variant for this CPU: %s; GPU backends: %s\n", build.best_variant,
           build.gpu_backends[0] ? build.gpu_backends : "none (CPU build)");
    printf("         CPU code: %s (%s)\n", build.cpu_variant, build.cpu_variant_reason);
    if (build.warning) printf("WARNING  %s\n", build.warning);
    printf("Threads  recommended: %u\n", cpu.recommended_threads);
    if (argc > 1) {
        unsigned n_ctx = argc > 2 ? (unsigned)atoi(argv[2]) : 4096;
        ta_fit fit;
        st = ta_hardware_fit_file(hw, argv[1], n_ctx, &fit);
        if (st != TA_OK) {
            fprintf(stderr, "ta_hardware_fit_file: %s\n", ta_last_error());
            ta_hardware_free(hw);
            return 1;
        }
        printf("Fit      %s at n_ctx %u: %.1f MiB (weights %.1f + KV %.1f + compute %.1f)\n", argv[1], fit.n_ctx,
               mib(fit.total_bytes), mib(fit.weights_bytes), mib(fit.kv_bytes), mib(fit.compute_bytes));
        printf("         fits in RAM: %s, in VRAM: %s, GPU layers: %d, threads: %u\n", fit.fits_ram ? "yes" : "no",
               fit.fits_vram ? "yes" : "no", fit.recommended_gpu_layers, fit.recommended_threads);
    }
    ta_hardware_free(hw);
    return 0;
}
