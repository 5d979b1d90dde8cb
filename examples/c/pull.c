/* Pull a GGUF variant from a Hugging Face repo into the shared cache (the same
 * layout huggingface_hub uses), with a progress bar, then load it.
 *
 *   pull REPO QUANT [REVISION]        e.g. pull bartowski/SmolLM2-135M-Instruct-GGUF Q4_K_M
 *
 * HF_ENDPOINT, HF_TOKEN, HF_HUB_CACHE / HF_HOME and HF_HUB_OFFLINE are honoured. */
#include <stdio.h>
#include <string.h>

#include "tabagent.h"

static bool progress(void *ud, const char *file, uint64_t done, uint64_t total) {
    int *last = ud; /* redraw only when the bar moves */
    int width = 40, filled = total ? (int)(done * width / total) : 0;
    if (filled == *last && done != total) return true;
    *last = filled;
    fprintf(stderr, "\r%-32.32s [", file);
    for (int i = 0; i < width; i++) fputc(i < filled ? '#' : ' ', stderr);
    fprintf(stderr, "] %6.1f / %.1f MiB", done / 1048576.0, total / 1048576.0);
    if (done == total) fputc('\n', stderr);
    return true; /* false cancels; a later pull resumes where it stopped */
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s REPO QUANT [REVISION]\n", argv[0]);
        return 2;
    }
    const char *rev = argc > 3 ? argv[3] : "main";
    ta_cache *cache = NULL;
    ta_status st = ta_cache_open(NULL, &cache);
    if (st != TA_OK) {
        fprintf(stderr, "ta_cache_open: %s\n", ta_last_error());
        return 1;
    }
    char *path = NULL;
    int last = -1;
    st = ta_cache_download_variant(cache, argv[1], rev, argv[2], progress, &last, &path);
    if (st != TA_OK) {
        fprintf(stderr, "\ndownload failed: %s (%s)\n", ta_last_error(), ta_status_str(st));
        ta_cache_free(cache);
        return 1;
    }
    printf("%s\n", path);
    ta_model *model = NULL;
    st = ta_model_load(path, NULL, &model);
    ta_string_free(path);
    if (st != TA_OK) {
        fprintf(stderr, "ta_model_load: %s\n", ta_last_error());
        ta_cache_free(cache);
        return 1;
    }
    ta_model_info info;
    ta_model_get_info(model, &info);
    fprintf(stderr, "loaded %s (%s, %.0fM params)\n", info.name, info.quantization, info.n_params / 1e6);
    ta_model_free(model);
    ta_cache_free(cache);
    return 0;
}
