/*
 * tabagent_node: the Node package's small native companion to libtabagent.
 *
 * Built at pack time (bindings/node/scripts/build-native.sh) into
 * prebuilds/<platform>-<arch>/libtabagent_node.so, loaded by koffi beside
 * libtabagent. It links nothing: tn_init() finds the libtabagent that koffi
 * already loaded (dlopen RTLD_NOLOAD on the same path) and resolves what it calls.
 * It solves two problems of calling the library from koffi's worker threads:
 *
 * 1. ta_last_error() is per thread. A koffi async call runs on a libuv worker
 *    thread, and a later call to ta_last_error() may land on another thread. Each
 *    tn_<fn> wrapper below calls ta_<fn> and, on failure, copies ta_last_error()
 *    into the caller's buffer on the same thread, before anything else can run there.
 *
 * 2. A JS text callback called from a worker thread is marshalled to the main
 *    thread, and the generating thread waits for it (tens of microseconds per
 *    token, and more while the event loop is busy). Instead, the generation
 *    wrappers take a tn_stream: the library's text callback appends each piece to
 *    the stream's queue (a mutex and a memcpy; never waits for JS) and wakes one
 *    notifier thread, which calls a single registered JS function; JS then drains
 *    every stream with tn_stream_take() (synchronous, cheap). Cancellation is a
 *    flag the text callback reads (plus ta_*_cancel from JS for the prompt phase).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tabagent.h"

#if defined(__GNUC__)
#define TN_EXPORT __attribute__((visibility("default")))
#else
#define TN_EXPORT
#endif

#define TN_ABI 1

/* ------------------------------------------------------------------ symbols */

#define TN_FUNCS(X)                  \
    X(ta_last_error)                 \
    X(ta_model_load)                 \
    X(ta_model_load_from_buffer)     \
    X(ta_model_check)                \
    X(ta_context_new)                \
    X(ta_context_generate)           \
    X(ta_context_chat)               \
    X(ta_context_embed)              \
    X(ta_context_state_save)         \
    X(ta_context_state_load)         \
    X(ta_sequence_generate)          \
    X(ta_sequence_chat)              \
    X(ta_sequence_state_save)        \
    X(ta_sequence_state_load)        \
    X(ta_cache_scan)                 \
    X(ta_cache_download_file)        \
    X(ta_cache_download_variant)     \
    X(ta_cache_verify)               \
    X(ta_cache_delete_repo)          \
    X(ta_cache_delete_revision)      \
    X(ta_model_load_from_cache)      \
    X(ta_hardware_detect)            \
    X(ta_hardware_json)              \
    X(ta_hardware_free)              \
    X(ta_hardware_fit_file)          \
    X(ta_hardware_fit_model)         \
    X(ta_debug_stream)               \
    X(ta_set_log_callback)

#define TN_DECLARE(name) static __typeof__(name) *p_##name;
TN_FUNCS(TN_DECLARE)

/* Returns 0, or -1 with a message in err (the library is not loaded at `path`, or
 * lacks a function). */
TN_EXPORT int32_t tn_init(const char *path, char *err, size_t cap) {
    void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (!h) {
        snprintf(err, cap, "tabagent_node: %s is not loaded: %s", path, dlerror());
        return -1;
    }
#define TN_RESOLVE(name)                                                                 \
    p_##name = (__typeof__(name) *)dlsym(h, #name);                                     \
    if (!p_##name) {                                                                     \
        snprintf(err, cap, "tabagent_node: %s lacks %s (library too old?)", path, #name); \
        return -1;                                                                       \
    }
    TN_FUNCS(TN_RESOLVE)
    return 0;
}

TN_EXPORT uint32_t tn_abi(void) { return TN_ABI; }

static ta_status take_err(ta_status st, char *err, size_t cap) {
    if (st != TA_OK && err && cap) {
        const char *m = p_ta_last_error();
        snprintf(err, cap, "%s", m ? m : "");
    }
    return st;
}

/* tn_<name>(<ta_<name>'s parameters>, char *err, size_t cap) */
#define TN_UNPAREN(...) __VA_ARGS__
#define TN_WRAP(name, params, args)                                         \
    TN_EXPORT ta_status tn_##name(TN_UNPAREN params, char *err, size_t cap) { \
        return take_err(p_ta_##name args, err, cap);                        \
    }

TN_WRAP(model_load, (const char *path, const ta_model_params *p, ta_model **out), (path, p, out))
TN_WRAP(model_load_from_buffer, (const uint8_t *data, size_t size, const ta_model_params *p, ta_model **out),
        (data, size, p, out))
TN_WRAP(model_check, (const char *path, const ta_model_params *p, ta_check_report *out), (path, p, out))
TN_WRAP(context_new, (const ta_model *m, const ta_context_params *p, ta_context **out), (m, p, out))
TN_WRAP(context_embed,
        (ta_context * c, const char *const *texts, size_t n, const ta_embed_params *p, float *out, size_t out_cap,
         size_t *out_len),
        (c, texts, n, p, out, out_cap, out_len))
TN_WRAP(context_state_save, (ta_context * c, const char *path, size_t *n), (c, path, n))
TN_WRAP(context_state_load, (ta_context * c, const char *path, size_t *n), (c, path, n))
TN_WRAP(sequence_state_save, (const ta_sequence *s, const char *path, size_t *n), (s, path, n))
TN_WRAP(sequence_state_load, (ta_sequence * s, const char *path, size_t *n), (s, path, n))
TN_WRAP(cache_scan, (const ta_cache *c, const char *repo, const char *rev, char **out), (c, repo, rev, out))
TN_WRAP(cache_download_file,
        (const ta_cache *c, const char *repo, const char *rev, const char *path, ta_download_callback cb, void *ud,
         char **out),
        (c, repo, rev, path, cb, ud, out))
TN_WRAP(cache_download_variant,
        (const ta_cache *c, const char *repo, const char *rev, const char *quant, ta_download_callback cb, void *ud,
         char **out),
        (c, repo, rev, quant, cb, ud, out))
TN_WRAP(cache_verify, (const ta_cache *c, const char *repo, char **out), (c, repo, out))
TN_WRAP(cache_delete_repo, (const ta_cache *c, const char *repo), (c, repo))
TN_WRAP(cache_delete_revision, (const ta_cache *c, const char *repo, const char *rev), (c, repo, rev))
TN_WRAP(model_load_from_cache,
        (const ta_cache *c, const char *repo, const char *rev, const char *quant, const ta_model_params *p,
         ta_download_callback cb, void *ud, ta_model **out),
        (c, repo, rev, quant, p, cb, ud, out))
TN_WRAP(hardware_fit_file, (const ta_hardware *h, const char *path, uint32_t n_ctx, ta_fit *out),
        (h, path, n_ctx, out))
TN_WRAP(hardware_fit_model, (const ta_hardware *h, const ta_model *m, uint32_t n_ctx, ta_fit *out),
        (h, m, n_ctx, out))

/* Detect the hardware and return its JSON (owned: ta_string_free) in one call. */
TN_EXPORT ta_status tn_hardware_report(char **out_json, char *err, size_t cap) {
    ta_hardware *hw = NULL;
    ta_status st = p_ta_hardware_detect(&hw);
    if (st == TA_OK) {
        st = p_ta_hardware_json(hw, out_json);
        take_err(st, err, cap);
        p_ta_hardware_free(hw);
        return st;
    }
    return take_err(st, err, cap);
}

/* ------------------------------------------------------------------ streams */

typedef struct tn_stream {
    pthread_mutex_t mu;
    uint8_t *buf; /* queued text */
    size_t len, cap;
    uint32_t *pieces; /* queued piece lengths */
    size_t n_pieces, pieces_cap;
    int signalled;  /* the notifier was told since the last take that emptied us */
    atomic_int cancel;
    uint64_t total_pieces;
} tn_stream;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static int g_ready;
static void (*g_notify)(void);
static int g_started;

/* Log lines queued by log_line (any thread), taken by tn_log_take (JS thread). */
static pthread_mutex_t g_log_mu = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *g_log;
static size_t g_log_len, g_log_cap;
static int32_t *g_log_levels;
static uint32_t *g_log_lens;
static size_t g_log_n, g_log_n_cap;
static size_t g_log_dropped;
#define TN_LOG_MAX (1 << 20)

static void *notifier_main(void *arg) {
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&g_mu);
        while (!g_ready) pthread_cond_wait(&g_cv, &g_mu);
        g_ready = 0;
        void (*fn)(void) = g_notify;
        pthread_mutex_unlock(&g_mu);
        if (fn) fn(); /* koffi runs it on the JS thread and waits: only this thread waits */
    }
    return NULL;
}

/* Register the JS function the notifier calls when streams have new text.
 * Returns 0, or -1 when the thread cannot be started. */
TN_EXPORT int32_t tn_set_notify(void (*fn)(void)) {
    pthread_mutex_lock(&g_mu);
    g_notify = fn;
    int rc = 0;
    if (!g_started) {
        pthread_t t;
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&a, 256 * 1024);
        if (pthread_create(&t, &a, notifier_main, NULL) == 0)
            g_started = 1;
        else
            rc = -1;
        pthread_attr_destroy(&a);
    }
    pthread_mutex_unlock(&g_mu);
    return rc;
}

TN_EXPORT tn_stream *tn_stream_new(void) {
    tn_stream *s = calloc(1, sizeof *s);
    if (s) pthread_mutex_init(&s->mu, NULL);
    return s;
}

TN_EXPORT void tn_stream_free(tn_stream *s) {
    if (!s) return;
    pthread_mutex_destroy(&s->mu);
    free(s->buf);
    free(s->pieces);
    free(s);
}

TN_EXPORT void tn_stream_cancel(tn_stream *s) {
    if (s) atomic_store(&s->cancel, 1);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 1;
    size_t n = *cap ? *cap : 256;
    while (n < need) n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q) return 0;
    *p = q;
    *cap = n;
    return 1;
}

static void wake_notifier(void) {
    pthread_mutex_lock(&g_mu);
    if (!g_ready) {
        g_ready = 1;
        pthread_cond_signal(&g_cv);
    }
    pthread_mutex_unlock(&g_mu);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem);

/* The ta_log_callback: queue the line (never waits for JS), wake the notifier. */
static void log_line(void *ud, int32_t level, const char *text, size_t len) {
    (void)ud;
    pthread_mutex_lock(&g_log_mu);
    size_t cap2 = g_log_n_cap;
    if (g_log_len + len > TN_LOG_MAX || !grow((void **)&g_log, &g_log_cap, g_log_len + len, 1) ||
        !grow((void **)&g_log_levels, &cap2, g_log_n + 1, sizeof(int32_t)) ||
        !grow((void **)&g_log_lens, &g_log_n_cap, g_log_n + 1, sizeof(uint32_t))) {
        g_log_dropped++;
        pthread_mutex_unlock(&g_log_mu);
        return;
    }
    memcpy(g_log + g_log_len, text, len);
    g_log_len += len;
    g_log_levels[g_log_n] = level;
    g_log_lens[g_log_n++] = (uint32_t)len;
    pthread_mutex_unlock(&g_log_mu);
    wake_notifier();
}

/* Route the library's log at min_level or above into the queue (enable != 0), or
 * back to silence. */
TN_EXPORT ta_status tn_log_enable(int32_t enable, int32_t min_level) {
    return p_ta_set_log_callback(enable ? log_line : NULL, NULL, min_level);
}

/* Move queued log lines into buf/levels/lens as tn_stream_take does; *dropped
 * receives (and clears) the count of lines lost to a full queue. */
TN_EXPORT size_t tn_log_take(uint8_t *buf, size_t cap, int32_t *levels, uint32_t *lens, size_t lens_cap,
                             size_t *out_bytes, size_t *dropped) {
    size_t n = 0, bytes = 0;
    pthread_mutex_lock(&g_log_mu);
    while (n < g_log_n && n < lens_cap && bytes + g_log_lens[n] <= cap) {
        lens[n] = g_log_lens[n];
        levels[n] = g_log_levels[n];
        bytes += g_log_lens[n];
        n++;
    }
    if (n == 0 && g_log_n > 0) {
        /* a line longer than the buffer: drop it rather than stall the queue */
        bytes = g_log_lens[0];
        n = 1;
        g_log_dropped++;
        memmove(g_log, g_log + bytes, g_log_len - bytes);
        g_log_len -= bytes;
        memmove(g_log_lens, g_log_lens + 1, (g_log_n - 1) * sizeof(uint32_t));
        memmove(g_log_levels, g_log_levels + 1, (g_log_n - 1) * sizeof(int32_t));
        g_log_n--;
        *out_bytes = 0;
        *dropped = g_log_dropped;
        g_log_dropped = 0;
        pthread_mutex_unlock(&g_log_mu);
        return 0;
    }
    memcpy(buf, g_log, bytes);
    memmove(g_log, g_log + bytes, g_log_len - bytes);
    g_log_len -= bytes;
    memmove(g_log_lens, g_log_lens + n, (g_log_n - n) * sizeof(uint32_t));
    memmove(g_log_levels, g_log_levels + n, (g_log_n - n) * sizeof(int32_t));
    g_log_n -= n;
    *dropped = g_log_dropped;
    g_log_dropped = 0;
    pthread_mutex_unlock(&g_log_mu);
    *out_bytes = bytes;
    return n;
}

/* The ta_text_callback given to the library: runs on the generating thread. */
static bool stream_text(void *ud, const char *text, size_t len) {
    tn_stream *s = ud;
    if (atomic_load(&s->cancel)) return false;
    int wake = 0;
    pthread_mutex_lock(&s->mu);
    if (grow((void **)&s->buf, &s->cap, s->len + len, 1) &&
        grow((void **)&s->pieces, &s->pieces_cap, s->n_pieces + 1, sizeof(uint32_t))) {
        memcpy(s->buf + s->len, text, len);
        s->len += len;
        s->pieces[s->n_pieces++] = (uint32_t)len;
        s->total_pieces++;
        if (!s->signalled) {
            s->signalled = 1;
            wake = 1;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (wake) wake_notifier();
    return !atomic_load(&s->cancel);
}

/* Move queued pieces into buf (cap bytes) and their lengths into lens (lens_cap).
 * Returns the number of pieces moved; *out_bytes the bytes. When the first queued
 * piece alone does not fit, returns 0 with *out_bytes = its length (grow and
 * retry). Whole pieces only, in order; what does not fit stays queued. */
TN_EXPORT size_t tn_stream_take(tn_stream *s, uint8_t *buf, size_t cap, uint32_t *lens, size_t lens_cap,
                                size_t *out_bytes) {
    size_t n = 0, bytes = 0;
    pthread_mutex_lock(&s->mu);
    while (n < s->n_pieces && n < lens_cap && bytes + s->pieces[n] <= cap) {
        lens[n] = s->pieces[n];
        bytes += s->pieces[n];
        n++;
    }
    if (n == 0 && s->n_pieces > 0 && lens_cap > 0) {
        *out_bytes = s->pieces[0];
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    memcpy(buf, s->buf, bytes);
    memmove(s->buf, s->buf + bytes, s->len - bytes);
    s->len -= bytes;
    memmove(s->pieces, s->pieces + n, (s->n_pieces - n) * sizeof(uint32_t));
    s->n_pieces -= n;
    if (s->n_pieces == 0) s->signalled = 0;
    pthread_mutex_unlock(&s->mu);
    *out_bytes = bytes;
    return n;
}

TN_EXPORT uint64_t tn_stream_total_pieces(tn_stream *s) {
    pthread_mutex_lock(&s->mu);
    uint64_t n = s->total_pieces;
    pthread_mutex_unlock(&s->mu);
    return n;
}

#define TN_CB(s) ((s) ? stream_text : NULL), (s)

TN_EXPORT ta_status tn_context_generate(ta_context *c, const char *prompt, const ta_gen_params *p, tn_stream *s,
                                        ta_gen_result *res, char *err, size_t cap) {
    return take_err(p_ta_context_generate(c, prompt, p, TN_CB(s), res), err, cap);
}

TN_EXPORT ta_status tn_context_chat(ta_context *c, const ta_chat_message *m, size_t n, const ta_gen_params *p,
                                    tn_stream *s, ta_gen_result *res, char *err, size_t cap) {
    return take_err(p_ta_context_chat(c, m, n, p, TN_CB(s), res), err, cap);
}

TN_EXPORT ta_status tn_sequence_generate(ta_sequence *q, const char *prompt, const ta_gen_params *p, tn_stream *s,
                                         ta_gen_result *res, char *err, size_t cap) {
    return take_err(p_ta_sequence_generate(q, prompt, p, TN_CB(s), res), err, cap);
}

TN_EXPORT ta_status tn_sequence_chat(ta_sequence *q, const ta_chat_message *m, size_t n, const ta_gen_params *p,
                                     tn_stream *s, ta_gen_result *res, char *err, size_t cap) {
    return take_err(p_ta_sequence_chat(q, m, n, p, TN_CB(s), res), err, cap);
}

/* The library's streaming path without a model (ta_debug_stream) through a stream:
 * measures what one piece costs on the generating thread. */
TN_EXPORT ta_status tn_debug_stream(const char *text, size_t len, size_t piece_len, tn_stream *s, size_t *calls,
                                    char *err, size_t cap) {
    return take_err(p_ta_debug_stream(text, len, piece_len, NULL, 0, TN_CB(s), calls), err, cap);
}
