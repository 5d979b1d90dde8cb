/* The C side of the Node tests' cross-check: a greedy generation straight through
 * the C API, printed to stdout.   greedy MODEL PROMPT MAX_TOKENS THREADS */
#include <stdio.h>
#include <stdlib.h>
#include "tabagent.h"

static bool on_text(void *ud, const char *text, size_t len) {
    (void)ud;
    fwrite(text, 1, len, stdout);
    return true;
}

int main(int argc, char **argv) {
    if (argc != 5) return 2;
    ta_model *m;
    ta_context *c;
    if (ta_model_load(argv[1], NULL, &m) != TA_OK) return fprintf(stderr, "%s\n", ta_last_error()), 1;
    ta_context_params cp = ta_context_default_params();
    cp.n_ctx = 512;
    cp.n_threads = atoi(argv[4]);
    if (ta_context_new(m, &cp, &c) != TA_OK) return fprintf(stderr, "%s\n", ta_last_error()), 1;
    ta_gen_params gp = ta_gen_default_params();
    gp.temperature = 0;
    gp.max_tokens = atoi(argv[3]);
    if (ta_context_generate(c, argv[2], &gp, on_text, NULL, NULL) != TA_OK)
        return fprintf(stderr, "%s\n", ta_last_error()), 1;
    ta_context_free(c);
    ta_model_free(m);
    return 0;
}
