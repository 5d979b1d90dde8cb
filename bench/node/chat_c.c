/* The C side of bench/node: one chat turn through the C API, timed per piece as
 * the Node and node-llama-cpp sides time theirs. Prints one JSON line.
 *
 *   chat_c MODEL.gguf THREADS MAX_TOKENS "USER MESSAGE"
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tabagent.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

typedef struct {
    double first, last;
    unsigned pieces;
} timing_t;

static bool on_text(void *ud, const char *text, size_t len) {
    (void)text;
    (void)len;
    timing_t *t = ud;
    double n = now_ms();
    if (!t->pieces++) t->first = n;
    t->last = n;
    return true;
}

static bool count_cb(void *ud, const char *text, size_t len) {
    (void)text;
    *(size_t *)ud += len;
    return true;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s MODEL.gguf THREADS MAX_TOKENS MESSAGE\n", argv[0]);
        return 2;
    }
    ta_model *m;
    ta_context *c;
    if (ta_model_load(argv[1], NULL, &m)) return fprintf(stderr, "%s\n", ta_last_error()), 1;
    ta_context_params cp = ta_context_default_params();
    cp.n_ctx = 2048;
    cp.n_threads = cp.n_threads_batch = atoi(argv[2]);
    if (ta_context_new(m, &cp, &c)) return fprintf(stderr, "%s\n", ta_last_error()), 1;
    ta_chat_message msg = {.role = "user", .content = argv[4]};
    ta_gen_params gp = ta_gen_default_params();
    gp.temperature = 0;
    gp.max_tokens = atoi(argv[3]);
    ta_gen_result r;
    /* warm-up: page the weights in, start the threads */
    ta_gen_params warm = gp;
    warm.max_tokens = 2;
    ta_context_chat(c, &msg, 1, &warm, NULL, NULL, NULL);
    ta_context_reset(c);
    timing_t t = {0, 0, 0};
    double t0 = now_ms();
    if (ta_context_chat(c, &msg, 1, &gp, on_text, &t, &r)) return fprintf(stderr, "%s\n", ta_last_error()), 1;
    double t1 = now_ms();
    /* the library's per-piece text path and callback crossing, no model */
    size_t n = 200000, calls = 0, bytes = 0;
    char *text = malloc(n * 4);
    for (size_t i = 0; i < n; i++) memcpy(text + i * 4, "abc ", 4);
    double d0 = now_ms();
    ta_debug_stream(text, n * 4, 4, NULL, 0, count_cb, &bytes, &calls);
    double d1 = now_ms();
    printf("{\"engine\":\"c\",\"tokens\":%u,\"prompt_tokens\":%u,\"pieces\":%u,\"decode_ms\":%.3f,"
           "\"total_ms\":%.3f,\"cb_us\":%.4f}\n",
           r.n_generated_tokens, r.n_prompt_tokens, t.pieces, t.last - t.first, t1 - t0, (d1 - d0) * 1000.0 / calls);
    free(text);
    ta_context_free(c);
    ta_model_free(m);
    return 0;
}
