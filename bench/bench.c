/* tabagent benchmark: the library against a plain C loop over llama.h, both
 * linked from the same libtabagent.a (so the very same llama.cpp build), same
 * model, same thread count, same process. Prints name=value lines.
 *
 *   bench MODEL.gguf THREADS
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llama.h"
#include "tabagent.h"

#define REPS 5
#define PP_TOKENS 512
#define TG_TOKENS 128

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void die(const char *what, ta_status st) {
    fprintf(stderr, "%s: %s (%s)\n", what, ta_last_error(), ta_status_str(st));
    exit(1);
}

static void quiet_log(enum ggml_log_level level, const char *text, void *ud) {
    (void)level;
    (void)text;
    (void)ud;
}

/* ------------------------------------------------------------ reference */

typedef struct {
    struct llama_model *model;
    struct llama_context *ctx;
    const struct llama_vocab *vocab;
    struct llama_sampler *smpl;
} ref_t;

static ref_t ref_open(const char *path, int threads) {
    ref_t r;
    struct llama_model_params mp = llama_model_default_params();
    r.model = llama_model_load_from_file(path, mp);
    if (!r.model) {
        fprintf(stderr, "reference: cannot load %s\n", path);
        exit(1);
    }
    r.vocab = llama_model_get_vocab(r.model);
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 2048;
    cp.n_batch = 512;
    cp.n_ubatch = 512;
    cp.n_seq_max = 1;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.no_perf = true;
    r.ctx = llama_init_from_model(r.model, cp);
    struct llama_sampler_chain_params sp = llama_sampler_chain_default_params();
    sp.no_perf = true;
    r.smpl = llama_sampler_chain_init(sp);
    llama_sampler_chain_add(r.smpl, llama_sampler_init_greedy());
    return r;
}

static void ref_close(ref_t *r) {
    llama_sampler_free(r->smpl);
    llama_free(r->ctx);
    llama_model_free(r->model);
}

/* Prompt in n_batch chunks; returns ms. */
static double ref_prompt(ref_t *r, llama_token *toks, int n) {
    llama_memory_clear(llama_get_memory(r->ctx), true);
    double t0 = now_ms();
    for (int i = 0; i < n; i += 512) {
        int k = n - i < 512 ? n - i : 512;
        if (llama_decode(r->ctx, llama_batch_get_one(toks + i, k)) != 0) {
            fprintf(stderr, "reference decode failed\n");
            exit(1);
        }
    }
    return now_ms() - t0;
}

/* Generation: sample, render the piece, decode it; n tokens; returns ms. */
static double ref_generate(ref_t *r, int n, size_t *bytes) {
    char piece[256];
    double t0 = now_ms();
    for (int i = 0; i < n; i++) {
        llama_token t = llama_sampler_sample(r->smpl, r->ctx, -1);
        int len = llama_token_to_piece(r->vocab, t, piece, sizeof piece, 0, false);
        if (len > 0) *bytes += (size_t)len;
        if (i + 1 < n && llama_decode(r->ctx, llama_batch_get_one(&t, 1)) != 0) {
            fprintf(stderr, "reference decode failed\n");
            exit(1);
        }
    }
    return now_ms() - t0;
}

/* ------------------------------------------------------------ callbacks */

static bool count_cb(void *ud, const char *text, size_t len) {
    (void)text;
    *(size_t *)ud += len;
    return true;
}

typedef struct {
    double start, first;
} ttft_t;

static bool ttft_cb(void *ud, const char *text, size_t len) {
    (void)text;
    (void)len;
    ttft_t *t = ud;
    if (t->first == 0) t->first = now_ms();
    return false; /* only the first token matters */
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf THREADS\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    int threads = atoi(argv[2]);
    llama_log_set(quiet_log, NULL);

    /* Library side. */
    ta_model *m = NULL;
    ta_status st = ta_model_load(path, NULL, &m);
    if (st) die("ta_model_load", st);
    ta_context_params cp = ta_context_default_params();
    cp.n_ctx = 2048;
    cp.n_batch = 512;
    cp.n_ubatch = 512;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.flash_attn = TA_FLASH_ATTN_AUTO; /* llama.cpp's default, as in the reference */
    ta_context *ctx = NULL;
    ref_t ref = ref_open(path, threads);
    st = ta_context_new(m, &cp, &ctx);
    if (st) die("ta_context_new", st);

    /* A prompt of exactly PP_TOKENS tokens (BOS handling identical: the library
     * tokenizes with add_special, so build the text and tokenize it the same way). */
    char *prompt = malloc(200000);
    prompt[0] = 0;
    while (strlen(prompt) < 150000) strcat(prompt, "The quick brown fox jumps over the lazy dog while the cat sleeps. ");
    llama_token *toks = malloc(sizeof(llama_token) * 100000);
    int n_all = llama_tokenize(ref.vocab, prompt, (int)strlen(prompt), toks, 100000, true, true);
    /* Cut the text at a token boundary giving PP_TOKENS tokens. */
    char *pp_text = malloc(200000);
    int n_pp = 0;
    {
        char buf[200000];
        int len = llama_detokenize(ref.vocab, toks, PP_TOKENS, buf, sizeof buf - 1, true, false);
        buf[len > 0 ? len : 0] = 0;
        strcpy(pp_text, buf);
        n_pp = llama_tokenize(ref.vocab, pp_text, (int)strlen(pp_text), toks, 100000, true, true);
    }
    (void)n_all;

    ta_gen_params gp = ta_gen_default_params();
    gp.temperature = 0.0f;
    gp.max_tokens = TG_TOKENS;
    ta_gen_params gp_pp = gp;
    gp_pp.max_tokens = 1;

    double lib_pp[REPS], ref_pp[REPS], lib_tg[REPS], ref_tg[REPS];
    unsigned gen_n = 0;
    /* Warm-up both paths once (page in the weights, spin up threads). */
    ta_context_reset(ctx);
    ta_context_generate(ctx, pp_text, &gp_pp, NULL, NULL, NULL);
    ref_prompt(&ref, toks, n_pp);

    for (int i = 0; i < REPS; i++) {
        ta_gen_result r;
        /* Prompt processing: fresh cache each time. */
        ta_context_reset(ctx);
        st = ta_context_generate(ctx, pp_text, &gp_pp, NULL, NULL, &r);
        if (st) die("generate", st);
        if ((int)r.n_prompt_tokens != n_pp) {
            fprintf(stderr, "token count mismatch %u vs %d\n", r.n_prompt_tokens, n_pp);
            return 1;
        }
        lib_pp[i] = r.n_prompt_tokens * 1000.0 / r.prompt_ms;
        ref_pp[i] = n_pp * 1000.0 / ref_prompt(&ref, toks, n_pp);

        /* Generation from a short prompt; the reference makes exactly as many tokens
         * at the same positions. */
        size_t bytes = 0;
        ta_context_reset(ctx);
        st = ta_context_generate(ctx, "Once upon a time, in a land far away,", &gp, count_cb, &bytes, &r);
        if (st) die("generate", st);
        gen_n = r.n_generated_tokens;
        lib_tg[i] = (r.n_generated_tokens - 1) * 1000.0 / r.gen_ms;
        llama_token p[64];
        int np = llama_tokenize(ref.vocab, "Once upon a time, in a land far away,", 37, p, 64, true, true);
        ref_prompt(&ref, p, np);
        size_t rb = 0;
        ref_tg[i] = (gen_n - 1) * 1000.0 / ref_generate(&ref, (int)gen_n, &rb);
    }
    double lpp = median(lib_pp, REPS), rpp = median(ref_pp, REPS);
    double ltg = median(lib_tg, REPS), rtg = median(ref_tg, REPS);
    printf("threads=%d\n", threads);
    printf("pp_tokens=%d\n", n_pp);
    printf("tg_tokens=%u\n", gen_n);
    printf("pp_lib_tok_s=%.1f\n", lpp);
    printf("pp_ref_tok_s=%.1f\n", rpp);
    printf("pp_ratio=%.3f\n", lpp / rpp);
    printf("tg_lib_tok_s=%.1f\n", ltg);
    printf("tg_ref_tok_s=%.1f\n", rtg);
    printf("tg_ratio=%.3f\n", ltg / rtg);
    /* bench/portable.sh needs only the figures above. */
    if (getenv("BENCH_PP_TG_ONLY")) return 0;

    /* Callback overhead: the library's per-token text path and the crossing into
     * C, over 1M one-token pieces, minus nothing (it is all overhead). */
    {
        size_t n = 1000000, calls = 0, bytes = 0;
        char *text = malloc(n * 4);
        for (size_t i = 0; i < n; i++) memcpy(text + i * 4, "abc ", 4);
        double t0 = now_ms();
        st = ta_debug_stream(text, n * 4, 4, NULL, 0, count_cb, &bytes, &calls);
        double dt = now_ms() - t0;
        if (st || calls != n) die("ta_debug_stream", st);
        printf("cb_overhead_c_us=%.4f\n", dt * 1000.0 / (double)n);
        free(text);
    }

    /* Time to first token of a chat turn after a long history, with and without
     * prefix reuse. */
    {
        enum { TURNS = 12 };
        ta_chat_message msgs[2 * TURNS + 2];
        memset(msgs, 0, sizeof msgs); /* optional fields NULL */
        static char contents[2 * TURNS][800];
        msgs[0].role = "system";
        msgs[0].content = "You are a helpful assistant.";
        for (int t = 0; t < TURNS; t++) {
            snprintf(contents[2 * t], 800,
                     "Question %d: please describe, in detail, the history of the number %d, its "
                     "properties, and why mathematicians find numbers like it interesting. Consider "
                     "primes, divisors and famous theorems that mention it.", t, t * 7 + 3);
            snprintf(contents[2 * t + 1], 800,
                     "Answer %d: The number %d has a long history. It appears in ancient tables, in "
                     "counting systems and in puzzles. Its divisors and residues make it a common example "
                     "in number theory courses, and it shows up in several classic problems.", t, t * 7 + 3);
            msgs[1 + 2 * t].role = "user";
            msgs[1 + 2 * t].content = contents[2 * t];
            msgs[2 + 2 * t].role = "assistant";
            msgs[2 + 2 * t].content = contents[2 * t + 1];
        }
        msgs[1 + 2 * TURNS].role = "user";
        msgs[1 + 2 * TURNS].content = "Thank you. Now summarise everything in one sentence.";
        size_t n_msgs = 2 + 2 * TURNS;
        ta_gen_params g1 = ta_gen_default_params();
        g1.temperature = 0.0f;
        g1.max_tokens = 4;
        double with_reuse[REPS], without[REPS];
        unsigned hist_tokens = 0;
        for (int i = 0; i < REPS; i++) {
            ta_gen_result r;
            /* The previous turn is in the cache (as it is in a live chat). */
            ta_context_reset(ctx);
            ta_context_chat(ctx, msgs, n_msgs - 1, &g1, NULL, NULL, &r);
            ttft_t t = {now_ms(), 0};
            st = ta_context_chat(ctx, msgs, n_msgs, &g1, ttft_cb, &t, &r);
            if (st != TA_ERR_CANCELLED) die("chat", st);
            with_reuse[i] = t.first - t.start;
            hist_tokens = r.n_prompt_tokens;
            ta_context_reset(ctx);
            ttft_t u = {now_ms(), 0};
            st = ta_context_chat(ctx, msgs, n_msgs, &g1, ttft_cb, &u, &r);
            if (st != TA_ERR_CANCELLED) die("chat", st);
            without[i] = u.first - u.start;
        }
        double a = median(with_reuse, REPS), b = median(without, REPS);
        printf("ttft_history_tokens=%u\n", hist_tokens);
        printf("ttft_reuse_ms=%.2f\n", a);
        printf("ttft_full_ms=%.2f\n", b);
        printf("ttft_reuse_ratio=%.3f\n", a / b);
    }

    free(prompt);
    free(pp_text);
    free(toks);
    ref_close(&ref);
    ta_context_free(ctx);
    ta_model_free(m);
    return 0;
}
