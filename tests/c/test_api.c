/* C tests of the public API, compiled with -Wall -Wextra -Werror against the
 * committed header and run under AddressSanitizer.
 *
 *   test_api MODEL.gguf SCRATCH_DIR
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tabagent.h"

static int failures = 0;
static int checks = 0;
static const char *model_path;
static const char *scratch;

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        checks++;                                                            \
        if (!(cond)) {                                                       \
            failures++;                                                      \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);  \
            fprintf(stderr, __VA_ARGS__);                                    \
            fprintf(stderr, "\n");                                           \
        }                                                                    \
    } while (0)

/* Evaluates the call once: ta_last_error() is only valid until the next call. */
#define CHECK_ST(call, want)                                                       \
    do {                                                                           \
        ta_status st_ = (call);                                                    \
        CHECK(st_ == (want), "status %d (%s), want %d; last error: %s", (int)st_,  \
              ta_status_str(st_), (int)(want), ta_last_error());                   \
    } while (0)

static bool last_error_has(const char *needle) { return strstr(ta_last_error(), needle) != NULL; }

/* ---------------------------------------------------------------- helpers */

typedef struct {
    char buf[16384];
    size_t len;
    int calls;
    int stop_after; /* return false on this call (0 = never) */
    bool all_utf8;
} collector;

static bool valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (k == 0 || i + k > n) return false;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xC0) != 0x80) return false;
        i += k;
    }
    return true;
}

static bool collect_cb(void *ud, const char *text, size_t len) {
    collector *c = ud;
    c->calls++;
    if (!valid_utf8((const unsigned char *)text, len)) c->all_utf8 = false;
    if (c->len + len < sizeof c->buf) {
        memcpy(c->buf + c->len, text, len);
        c->len += len;
        c->buf[c->len] = 0;
    }
    return !(c->stop_after && c->calls >= c->stop_after);
}

static void collector_init(collector *c) {
    memset(c, 0, sizeof *c);
    c->all_utf8 = true;
}

static ta_model *load_model(void) {
    ta_model *m = NULL;
    ta_status st = ta_model_load(model_path, NULL, &m);
    CHECK_ST(st, TA_OK);
    if (!m) {
        fprintf(stderr, "cannot continue without the model\n");
        exit(1);
    }
    return m;
}

static ta_context *new_ctx(const ta_model *m, uint32_t n_ctx) {
    ta_context_params cp = ta_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_threads = 2;
    ta_context *c = NULL;
    ta_status st = ta_context_new(m, &cp, &c);
    CHECK_ST(st, TA_OK);
    if (!c) exit(1);
    return c;
}

static ta_gen_params greedy(int max_tokens) {
    ta_gen_params p = ta_gen_default_params();
    p.temperature = 0.0f;
    p.max_tokens = max_tokens;
    return p;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

static unsigned char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)sz);
    if (fread(b, 1, (size_t)sz, f) != (size_t)sz) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *n = (size_t)sz;
    return b;
}

/* ------------------------------------------------------------------ tests */

static void test_versions(void) {
    CHECK(strcmp(ta_version(), TA_VERSION_STRING) == 0, "%s", ta_version());
    CHECK(ta_abi_version() == TA_ABI_VERSION, "%u", ta_abi_version());
    CHECK(strlen(ta_llama_version()) > 0, "empty llama version");
    CHECK(strstr(ta_system_info(), "CPU") != NULL, "%s", ta_system_info());
    CHECK(strcmp(ta_status_str(TA_OK), "ok") == 0, "%s", ta_status_str(TA_OK));
    CHECK(strcmp(ta_status_str(TA_ERR_BAD_MODEL), "bad model file") == 0, "x");
    CHECK(strcmp(ta_status_str(12345), "unknown status") == 0, "x");
    CHECK(ta_last_error() != NULL, "last error NULL");
}

static void test_null_arguments(const ta_model *m, ta_context *c) {
    ta_model *om = (ta_model *)1;
    ta_context *oc = (ta_context *)1;
    char *s = (char *)1;
    int32_t toks[8];
    size_t n = 77;
    char buf[64];
    ta_model_info info;
    ta_chat_message msg = {.role = "user", .content = "hi"};
    ta_chat_message bad_msg = {.role = "user", .content = NULL};

    CHECK_ST(ta_model_load(NULL, NULL, &om), TA_ERR_NULL_ARG);
    CHECK(last_error_has("path"), "%s", ta_last_error());
    CHECK(om == (ta_model *)1, "out param written on failure");
    CHECK_ST(ta_model_load(model_path, NULL, NULL), TA_ERR_NULL_ARG);
    CHECK(last_error_has("out_model"), "%s", ta_last_error());
    CHECK_ST(ta_model_load_from_buffer(NULL, 10, NULL, &om), TA_ERR_NULL_ARG);
    CHECK_ST(ta_model_get_info(NULL, &info), TA_ERR_NULL_ARG);
    CHECK_ST(ta_model_get_info(m, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_model_meta(NULL, "general.name", &s), TA_ERR_NULL_ARG);
    CHECK_ST(ta_model_meta(m, NULL, &s), TA_ERR_NULL_ARG);
    CHECK_ST(ta_model_meta(m, "general.name", NULL), TA_ERR_NULL_ARG);
    CHECK(s == (char *)1, "out param written on failure");
    CHECK_ST(ta_model_json(NULL, &s), TA_ERR_NULL_ARG);
    CHECK_ST(ta_model_json(m, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_model_tokenize(NULL, "a", 1, false, false, toks, 8, &n), TA_ERR_NULL_ARG);
    CHECK_ST(ta_model_tokenize(m, NULL, 1, false, false, toks, 8, &n), TA_ERR_NULL_ARG);
    CHECK_ST(ta_model_tokenize(m, "a", 1, false, false, toks, 8, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_model_tokenize(m, "a", 1, false, false, NULL, 8, &n), TA_ERR_NULL_ARG);
    CHECK_ST(ta_model_detokenize(NULL, toks, 1, false, false, buf, 64, &n), TA_ERR_NULL_ARG);
    CHECK_ST(ta_model_detokenize(m, NULL, 1, false, false, buf, 64, &n), TA_ERR_NULL_ARG);
    CHECK_ST(ta_model_detokenize(m, toks, 0, false, false, buf, 64, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_model_token_to_piece(NULL, 1, false, buf, 64, &n), TA_ERR_NULL_ARG);
    CHECK_ST(ta_model_token_to_piece(m, 1, false, buf, 64, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_model_token_to_piece(m, 1, false, NULL, 64, &n), TA_ERR_NULL_ARG);
    CHECK_ST(ta_model_apply_chat_template(NULL, &msg, 1, true, NULL, NULL, NULL, &s), TA_ERR_NULL_ARG);
    CHECK_ST(ta_model_apply_chat_template(m, NULL, 1, true, NULL, NULL, NULL, &s), TA_ERR_NULL_ARG);
    CHECK_ST(ta_model_apply_chat_template(m, &msg, 1, true, NULL, NULL, NULL, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_model_apply_chat_template(m, &bad_msg, 1, true, NULL, NULL, NULL, &s), TA_ERR_NULL_ARG);
    CHECK(last_error_has("messages[0].content"), "%s", ta_last_error());

    CHECK_ST(ta_context_new(NULL, NULL, &oc), TA_ERR_NULL_ARG);
    CHECK_ST(ta_context_new(m, NULL, NULL), TA_ERR_NULL_ARG);
    CHECK(oc == (ta_context *)1, "out param written on failure");
    CHECK_ST(ta_context_generate(NULL, "x", NULL, NULL, NULL, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_context_generate(c, NULL, NULL, NULL, NULL, NULL), TA_ERR_NULL_ARG);
    CHECK(last_error_has("prompt"), "%s", ta_last_error());
    CHECK_ST(ta_context_chat(NULL, &msg, 1, NULL, NULL, NULL, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_context_chat(c, NULL, 1, NULL, NULL, NULL, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_context_reset(NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_context_tokenize(NULL, "a", 1, false, false, toks, 8, &n), TA_ERR_NULL_ARG);
    CHECK_ST(ta_context_detokenize(NULL, toks, 1, false, false, buf, 64, &n), TA_ERR_NULL_ARG);
    CHECK_ST(ta_context_token_to_piece(NULL, 1, false, buf, 64, &n), TA_ERR_NULL_ARG);
    CHECK(ta_context_n_ctx(NULL) == 0, "n_ctx(NULL)");

    ta_gen_params gp = greedy(4);
    const char *stops[] = {"a", NULL};
    gp.stop = stops;
    gp.n_stop = 2;
    CHECK_ST(ta_context_generate(c, "x", &gp, NULL, NULL, NULL), TA_ERR_NULL_ARG);
    CHECK(last_error_has("stop[1]"), "%s", ta_last_error());
    gp.stop = NULL;
    CHECK_ST(ta_context_generate(c, "x", &gp, NULL, NULL, NULL), TA_ERR_NULL_ARG);

    /* _free(NULL) and cancel(NULL) are no-ops. */
    ta_model_free(NULL);
    ta_context_free(NULL);
    ta_context_cancel(NULL);
    ta_string_free(NULL);
    CHECK_ST(ta_set_log_callback(NULL, NULL, TA_LOG_ERROR), TA_OK);
}

static void test_invalid_arguments(const ta_model *m, ta_context *c) {
    const char bad_utf8[] = {'a', (char)0xC3, 0};
    ta_model *om = NULL;
    CHECK_ST(ta_model_load(bad_utf8, NULL, &om), TA_ERR_INVALID_ARG);
    CHECK(last_error_has("UTF-8"), "%s", ta_last_error());
    CHECK_ST(ta_context_generate(c, bad_utf8, NULL, NULL, NULL, NULL), TA_ERR_INVALID_ARG);
    int32_t toks[4];
    size_t n;
    CHECK_ST(ta_model_tokenize(m, bad_utf8, 2, false, false, toks, 4, &n), TA_ERR_INVALID_ARG);
    char buf[16];
    CHECK_ST(ta_model_token_to_piece(m, -5, false, buf, 16, &n), TA_ERR_INVALID_ARG);
    CHECK_ST(ta_model_token_to_piece(m, 1 << 30, false, buf, 16, &n), TA_ERR_INVALID_ARG);
    ta_gen_params gp = greedy(4);
    gp.top_p = 2.0f;
    CHECK_ST(ta_context_generate(c, "x", &gp, NULL, NULL, NULL), TA_ERR_INVALID_ARG);
    CHECK(last_error_has("top_p"), "%s", ta_last_error());
    gp = greedy(4);
    gp.grammar = "root ::= (";
    CHECK_ST(ta_context_generate(c, "x", &gp, NULL, NULL, NULL), TA_ERR_INVALID_ARG);
    CHECK(last_error_has("grammar") && last_error_has("line 1"), "%s", ta_last_error());
    gp.grammar = "root ::= missing";
    CHECK_ST(ta_context_generate(c, "x", &gp, NULL, NULL, NULL), TA_ERR_INVALID_ARG);
    CHECK(last_error_has("missing"), "%s", ta_last_error());
    /* One rule for every field: out of range is refused, naming the field. */
    gp = greedy(4);
    gp.temperature = -0.5f;
    CHECK_ST(ta_context_generate(c, "x", &gp, NULL, NULL, NULL), TA_ERR_INVALID_ARG);
    CHECK(last_error_has("temperature"), "%s", ta_last_error());
    const char *empty_stop[] = {"ok", ""};
    gp = greedy(4);
    gp.stop = empty_stop;
    gp.n_stop = 2;
    CHECK_ST(ta_context_generate(c, "x", &gp, NULL, NULL, NULL), TA_ERR_INVALID_ARG);
    CHECK(last_error_has("stop[1]"), "%s", ta_last_error());
    /* Chat with a template named for the call. */
    gp = greedy(2);
    gp.chat_template = "chatml";
    ta_chat_message msg = {.role = "user", .content = "Hi"};
    CHECK_ST(ta_context_chat(c, &msg, 1, &gp, NULL, NULL, NULL), TA_OK);
    /* A byte buffer too small says bytes. */
    char tiny[2];
    CHECK_ST(ta_model_token_to_piece(m, 1000, false, tiny, 0, &n), TA_ERR_BUFFER_TOO_SMALL);
    CHECK(last_error_has("bytes"), "%s", ta_last_error());
    ta_context_params cp = ta_context_default_params();
    cp.flash_attn = 7;
    ta_context *oc = NULL;
    CHECK_ST(ta_context_new(m, &cp, &oc), TA_ERR_INVALID_ARG);
    CHECK(oc == NULL, "out param written on failure");
    CHECK_ST(ta_set_log_callback(NULL, NULL, 99), TA_ERR_INVALID_ARG);
}

static void test_bad_model_files(void) {
    char path[4096];
    ta_model *m = NULL;

    snprintf(path, sizeof path, "%s/does-not-exist.gguf", scratch);
    CHECK_ST(ta_model_load(path, NULL, &m), TA_ERR_NOT_FOUND);
    CHECK(last_error_has(path), "%s", ta_last_error());

    snprintf(path, sizeof path, "%s/empty.gguf", scratch);
    write_file(path, "", 0);
    CHECK_ST(ta_model_load(path, NULL, &m), TA_ERR_BAD_MODEL);
    CHECK(last_error_has(path) && last_error_has("empty"), "%s", ta_last_error());

    snprintf(path, sizeof path, "%s/not-gguf.gguf", scratch);
    static const char zip[] = "PK\x03\x04 this is a zip file, not a model";
    write_file(path, zip, sizeof zip - 1);
    CHECK_ST(ta_model_load(path, NULL, &m), TA_ERR_BAD_MODEL);
    CHECK(last_error_has(path) && last_error_has("GGUF"), "%s", ta_last_error());

    size_t n = 0;
    unsigned char *real = read_file(model_path, &n);
    CHECK(real != NULL && n > 1000000, "cannot read model");
    if (!real) return;

    /* Truncated in the metadata, in the tensor table, and in the tensor data. */
    size_t cuts[] = {3, 10, 24, 1000, 200000, n / 2, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        snprintf(path, sizeof path, "%s/truncated-%zu.gguf", scratch, cuts[i]);
        write_file(path, real, cuts[i]);
        m = NULL;
        ta_status st = ta_model_load(path, NULL, &m);
        CHECK_ST(st, TA_ERR_BAD_MODEL);
        CHECK(last_error_has(path), "cut %zu: %s", cuts[i], ta_last_error());
        CHECK(m == NULL, "out param written");
    }

    /* Wrong version. */
    unsigned char *copy = malloc(n);
    memcpy(copy, real, n);
    copy[4] = 99;
    snprintf(path, sizeof path, "%s/version99.gguf", scratch);
    write_file(path, copy, 4096);
    CHECK_ST(ta_model_load(path, NULL, &m), TA_ERR_BAD_MODEL);
    CHECK(last_error_has("version"), "%s", ta_last_error());

    /* Absurd tensor count and metadata count. */
    memcpy(copy, real, 4096);
    memset(copy + 8, 0x7f, 8);
    snprintf(path, sizeof path, "%s/absurd-tensors.gguf", scratch);
    write_file(path, copy, 4096);
    CHECK_ST(ta_model_load(path, NULL, &m), TA_ERR_BAD_MODEL);
    memcpy(copy, real, 4096);
    memset(copy + 16, 0xff, 8);
    snprintf(path, sizeof path, "%s/absurd-kv.gguf", scratch);
    write_file(path, copy, 4096);
    CHECK_ST(ta_model_load(path, NULL, &m), TA_ERR_BAD_MODEL);

    /* Corrupt metadata: the first key's length made huge. */
    memcpy(copy, real, n);
    memset(copy + 24, 0xee, 8);
    snprintf(path, sizeof path, "%s/corrupt-key.gguf", scratch);
    write_file(path, copy, n);
    CHECK_ST(ta_model_load(path, NULL, &m), TA_ERR_BAD_MODEL);

    /* Random byte flips inside the header region never crash the process. */
    srand(1234);
    for (int i = 0; i < 40; i++) {
        memcpy(copy, real, 600000);
        for (int k = 0; k < 4; k++) copy[24 + rand() % 500000] ^= (unsigned char)(1 + rand() % 255);
        snprintf(path, sizeof path, "%s/flipped.gguf", scratch);
        write_file(path, copy, 600000); /* also truncated: data beyond the header is gone */
        m = NULL;
        ta_status st = ta_model_load(path, NULL, &m);
        CHECK(st == TA_ERR_BAD_MODEL, "flip %d: %d %s", i, st, ta_last_error());
        ta_model_free(m);
    }

    /* From a buffer: bad bytes are refused the same way. */
    CHECK_ST(ta_model_load_from_buffer(real, 1000, NULL, &m), TA_ERR_BAD_MODEL);
    CHECK(last_error_has("memory buffer"), "%s", ta_last_error());
    free(copy);
    free(real);
}

static void test_metadata(const ta_model *m) {
    ta_model_info info;
    CHECK_ST(ta_model_get_info(m, &info), TA_OK);
    CHECK(strcmp(info.architecture, "llama") == 0, "%s", info.architecture);
    CHECK(strcmp(info.quantization, "Q4_1") == 0, "%s", info.quantization);
    CHECK(info.n_vocab == 49152, "%d", info.n_vocab);
    CHECK(info.n_layer == 30, "%d", info.n_layer);
    CHECK(info.n_embd == 576, "%d", info.n_embd);
    CHECK(info.n_ctx_train == 8192, "%d", info.n_ctx_train);
    CHECK(info.chat_template && strstr(info.chat_template, "im_start"), "template");
    CHECK(info.eos_token >= 0, "eos");

    char *v = NULL;
    CHECK_ST(ta_model_meta(m, "llama.block_count", &v), TA_OK);
    CHECK(v && strcmp(v, "30") == 0, "%s", v ? v : "(null)");
    ta_string_free(v);
    v = (char *)1;
    CHECK_ST(ta_model_meta(m, "no.such.key", &v), TA_ERR_NOT_FOUND);
    CHECK(v == (char *)1 && last_error_has("no.such.key"), "%s", ta_last_error());
    char *json = NULL;
    CHECK_ST(ta_model_json(m, &json), TA_OK);
    CHECK(json && strstr(json, "\"n_layer\":30") && strstr(json, "general.architecture"), "json");
    ta_string_free(json);
}

static void test_tokenizer(const ta_model *m) {
    const char *text = "Hello, wörld! 你好 🙂";
    size_t need = 0;
    CHECK_ST(ta_model_tokenize(m, text, strlen(text), false, false, NULL, 0, &need), TA_ERR_BUFFER_TOO_SMALL);
    CHECK(need > 3, "need %zu", need);
    int32_t toks[64];
    size_t n = 0;
    CHECK_ST(ta_model_tokenize(m, text, strlen(text), false, false, toks, need - 1, &n), TA_ERR_BUFFER_TOO_SMALL);
    CHECK(n == need, "%zu vs %zu", n, need);
    CHECK_ST(ta_model_tokenize(m, text, strlen(text), false, false, toks, 64, &n), TA_OK);
    CHECK(n == need, "%zu", n);
    char buf[256];
    size_t len = 0;
    CHECK_ST(ta_model_detokenize(m, toks, n, false, false, buf, 4, &len), TA_ERR_BUFFER_TOO_SMALL);
    CHECK(len == strlen(text), "%zu", len);
    CHECK_ST(ta_model_detokenize(m, toks, n, false, false, buf, sizeof buf, &len), TA_OK);
    CHECK(strcmp(buf, text) == 0, "%s", buf);

    /* The emoji spans several tokens whose pieces are not valid UTF-8 alone:
     * that is what the streaming assembler must handle. */
    bool saw_partial = false;
    char joined[256] = {0};
    size_t jl = 0;
    for (size_t i = 0; i < n; i++) {
        char p[64];
        size_t pl = 0;
        CHECK_ST(ta_model_token_to_piece(m, toks[i], false, p, sizeof p, &pl), TA_OK);
        if (!valid_utf8((unsigned char *)p, pl)) saw_partial = true;
        memcpy(joined + jl, p, pl);
        jl += pl;
    }
    CHECK(saw_partial, "expected a token piece that splits a UTF-8 character");
    CHECK(jl == strlen(text) && memcmp(joined, text, jl) == 0, "pieces do not join to the text");
}

/* The streaming text path on its own: every piece size gives whole UTF-8
 * characters, the same joined text, and stop strings cut across pieces. */
static void test_stream_chunking(void) {
    const char *text = "Gr\xc3\xbc\xc3\x9f""e, \xe4\xb8\x96\xe7\x95\x8c! \xf0\x9f\x99\x82\xf0\x9f\x99\x82 end<|STOP|> tail";
    const char *stops[] = {"<|STOP|>"};
    size_t full = strlen(text), cut = (size_t)(strstr(text, "<|STOP|>") - text);
    for (size_t piece = 1; piece <= 9; piece++) {
        collector c;
        size_t calls = 0;
        collector_init(&c);
        CHECK_ST(ta_debug_stream(text, full, piece, NULL, 0, collect_cb, &c, &calls), TA_OK);
        CHECK(c.all_utf8 && c.len == full && memcmp(c.buf, text, full) == 0, "piece %zu", piece);
        CHECK(calls == (size_t)c.calls && calls > 0, "calls %zu", calls);
        collector_init(&c);
        CHECK_ST(ta_debug_stream(text, full, piece, stops, 1, collect_cb, &c, NULL), TA_OK);
        CHECK(c.all_utf8 && c.len == cut && memcmp(c.buf, text, cut) == 0, "piece %zu: '%s'", piece, c.buf);
    }
    /* Invalid bytes become U+FFFD rather than reaching the callback raw. */
    collector c;
    collector_init(&c);
    CHECK_ST(ta_debug_stream("a\xff\xfe", 3, 1, NULL, 0, collect_cb, &c, NULL), TA_OK);
    CHECK(c.all_utf8 && strcmp(c.buf, "a\xef\xbf\xbd\xef\xbf\xbd") == 0, "'%s'", c.buf);
    collector_init(&c);
    c.stop_after = 1;
    CHECK_ST(ta_debug_stream(text, full, 2, NULL, 0, collect_cb, &c, NULL), TA_ERR_CANCELLED);
    CHECK_ST(ta_debug_stream(NULL, 3, 1, NULL, 0, collect_cb, &c, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_debug_stream(text, 3, 0, NULL, 0, collect_cb, &c, NULL), TA_ERR_INVALID_ARG);
}

static void test_generation(const ta_model *m) {
    ta_context *c = new_ctx(m, 1024);
    collector a, b;
    ta_gen_params gp = greedy(16);
    ta_gen_result r;

    collector_init(&a);
    CHECK_ST(ta_context_generate(c, "The capital of France is", &gp, collect_cb, &a, &r), TA_OK);
    CHECK(a.len > 0 && a.all_utf8, "len %zu", a.len);
    CHECK(r.n_generated_tokens > 0 && r.n_generated_tokens <= 16, "%u", r.n_generated_tokens);
    CHECK(r.stop_reason == TA_STOP_MAX_TOKENS || r.stop_reason == TA_STOP_EOG, "%d", r.stop_reason);

    /* Same prompt again: everything but the last prompt token comes from the cache,
     * and greedy output repeats. */
    collector_init(&b);
    CHECK_ST(ta_context_generate(c, "The capital of France is", &gp, collect_cb, &b, &r), TA_OK);
    CHECK(r.n_reused_tokens == r.n_prompt_tokens - 1, "%u/%u", r.n_reused_tokens, r.n_prompt_tokens);
    CHECK(strcmp(a.buf, b.buf) == 0, "'%s' vs '%s'", a.buf, b.buf);

    /* Stop string taken from the real continuation: cut there and never emitted. */
    const char *stops[1];
    char stop[8] = {0};
    const char *p = a.buf;
    while (*p == ' ') p++;
    size_t sl = strlen(p) >= 6 ? 3 : 1;
    memcpy(stop, p + 2, sl);
    stops[0] = stop;
    gp.stop = stops;
    gp.n_stop = 1;
    collector_init(&b);
    CHECK_ST(ta_context_generate(c, "The capital of France is", &gp, collect_cb, &b, &r), TA_OK);
    CHECK(r.stop_reason == TA_STOP_STRING, "reason %d (stop '%s', full '%s')", r.stop_reason, stop, a.buf);
    CHECK(strstr(b.buf, stop) == NULL, "stop string emitted: '%s'", b.buf);
    CHECK(strncmp(a.buf, b.buf, b.len) == 0, "'%s' not a prefix of '%s'", b.buf, a.buf);

    /* Callback returning false: TA_ERR_CANCELLED with the text so far and a result. */
    gp = greedy(64);
    collector_init(&b);
    b.stop_after = 2;
    memset(&r, 0xAB, sizeof r);
    CHECK_ST(ta_context_generate(c, "Once upon a time, in a land far away,", &gp, collect_cb, &b, &r), TA_ERR_CANCELLED);
    CHECK(b.calls == 2 && b.len > 0, "calls %d", b.calls);
    CHECK(r.stop_reason == TA_STOP_CANCELLED, "%d", r.stop_reason);

    /* UTF-8: every chunk is whole characters, even for non-Latin output. */
    ta_chat_message msgs[] = {{.role = "user", .content = "Write the word 'hello' in Chinese, Japanese and as emoji: 你好 こんにちは 👋"}};
    collector_init(&b);
    gp = greedy(48);
    CHECK_ST(ta_context_chat(c, msgs, 1, &gp, collect_cb, &b, &r), TA_OK);
    CHECK(b.all_utf8, "a chunk split a UTF-8 character");

    /* Prompt larger than the context: refused before any work. */
    ta_context *small = new_ctx(m, 256);
    char *big = malloc(20000);
    big[0] = 0;
    for (int i = 0; i < 1000; i++) strcat(big, "word ");
    collector_init(&b);
    CHECK_ST(ta_context_generate(small, big, NULL, collect_cb, &b, NULL), TA_ERR_CONTEXT_FULL);
    CHECK(b.calls == 0, "callback called");
    CHECK(last_error_has("n_ctx"), "%s", ta_last_error());
    free(big);
    ta_context_free(small);
    ta_context_free(c);
}

typedef struct {
    ta_context *ctx;
    int delay_ms;
} cancel_arg;

static void *cancel_thread(void *p) {
    cancel_arg *a = p;
    struct timespec ts = {0, a->delay_ms * 1000000L};
    nanosleep(&ts, NULL);
    ta_context_cancel(a->ctx);
    return NULL;
}

static void test_cancel_from_thread(const ta_model *m) {
    ta_context *c = new_ctx(m, 4096);
    char *big = malloc(40000);
    big[0] = 0;
    for (int i = 0; i < 300; i++) strcat(big, "The quick brown fox jumps over the lazy dog. ");
    /* A cancel while idle is a no-op and does not poison the next call. */
    ta_context_cancel(c);
    pthread_t t;
    cancel_arg a = {c, 150};
    pthread_create(&t, NULL, cancel_thread, &a);
    ta_gen_result r;
    collector col;
    collector_init(&col);
    ta_gen_params gp = greedy(200);
    ta_status st = ta_context_generate(c, big, &gp, collect_cb, &col, &r);
    pthread_join(t, NULL);
    CHECK_ST(st, TA_ERR_CANCELLED);
    CHECK(r.stop_reason == TA_STOP_CANCELLED, "%d", r.stop_reason);
    /* Works normally afterwards, reusing what the cancelled prompt evaluated. */
    gp = greedy(2);
    CHECK_ST(ta_context_generate(c, big, &gp, NULL, NULL, &r), TA_OK);
    free(big);
    ta_context_free(c);
}

typedef struct {
    ta_context *ctx;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started;
    int release;
    ta_status status;
} busy_state;

static bool busy_cb(void *ud, const char *text, size_t len) {
    (void)text;
    (void)len;
    busy_state *s = ud;
    pthread_mutex_lock(&s->mu);
    s->started = 1;
    pthread_cond_broadcast(&s->cv);
    while (!s->release) pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    return false;
}

static void *busy_thread(void *p) {
    busy_state *s = p;
    ta_gen_params gp = greedy(64);
    s->status = ta_context_generate(s->ctx, "Once upon a time", &gp, busy_cb, s, NULL);
    return NULL;
}

static void test_busy(const ta_model *m) {
    busy_state s;
    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    s.ctx = new_ctx(m, 512);
    pthread_t t;
    pthread_create(&t, NULL, busy_thread, &s);
    pthread_mutex_lock(&s.mu);
    while (!s.started) pthread_cond_wait(&s.cv, &s.mu);
    pthread_mutex_unlock(&s.mu);
    /* The other thread is inside generate (blocked in its callback). */
    CHECK_ST(ta_context_generate(s.ctx, "x", NULL, NULL, NULL, NULL), TA_ERR_BUSY);
    CHECK_ST(ta_context_reset(s.ctx), TA_ERR_BUSY);
    CHECK(ta_context_n_ctx(s.ctx) >= 512, "n_ctx works while busy");
    size_t n;
    int32_t toks[8];
    CHECK_ST(ta_context_tokenize(s.ctx, "hi", 2, false, false, toks, 8, &n), TA_OK);
    pthread_mutex_lock(&s.mu);
    s.release = 1;
    pthread_cond_broadcast(&s.cv);
    pthread_mutex_unlock(&s.mu);
    pthread_join(t, NULL);
    CHECK_ST(s.status, TA_ERR_CANCELLED);
    ta_context_free(s.ctx);
}

typedef struct {
    const ta_model *model;
    collector out;
    ta_status st;
} worker;

static void *worker_main(void *p) {
    worker *w = p;
    ta_context *c = new_ctx(w->model, 256);
    ta_gen_params gp = greedy(12);
    collector_init(&w->out);
    w->st = ta_context_generate(c, "The three primary colours are", &gp, collect_cb, &w->out, NULL);
    ta_context_free(c);
    return NULL;
}

static void test_two_threads(const ta_model *m) {
    worker w[2];
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        w[i].model = m;
        pthread_create(&t[i], NULL, worker_main, &w[i]);
    }
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    CHECK_ST(w[0].st, TA_OK);
    CHECK_ST(w[1].st, TA_OK);
    CHECK(w[0].out.len > 0 && strcmp(w[0].out.buf, w[1].out.buf) == 0, "'%s' vs '%s'", w[0].out.buf, w[1].out.buf);
}

static void test_free_orders(void) {
    /* model first, then contexts (in both orders) */
    for (int order = 0; order < 3; order++) {
        ta_model *m = load_model();
        ta_context *c1 = new_ctx(m, 256);
        ta_context *c2 = new_ctx(m, 256);
        if (order == 0) {
            ta_model_free(m);
            ta_context_free(c1);
            ta_context_free(c2);
        } else if (order == 1) {
            ta_context_free(c2);
            ta_model_free(m);
            /* c1 still works after the caller freed the model. */
            ta_gen_params gp = greedy(2);
            CHECK_ST(ta_context_generate(c1, "Hi", &gp, NULL, NULL, NULL), TA_OK);
            ta_context_free(c1);
        } else {
            ta_context_free(c1);
            ta_context_free(c2);
            ta_model_free(m);
        }
    }
}

static void test_load_from_buffer(void) {
    size_t n = 0;
    unsigned char *bytes = read_file(model_path, &n);
    ta_model *m = NULL;
    ta_status st = ta_model_load_from_buffer(bytes, n, NULL, &m);
    free(bytes); /* the library copied what it needs */
    CHECK_ST(st, TA_OK);
    if (!m) return;
    ta_model_info info;
    CHECK_ST(ta_model_get_info(m, &info), TA_OK);
    CHECK(info.n_layer == 30, "%d", info.n_layer);
    ta_context *c = new_ctx(m, 256);
    ta_gen_params gp = greedy(4);
    CHECK_ST(ta_context_generate(c, "Hello", &gp, NULL, NULL, NULL), TA_OK);
    ta_context_free(c);
    ta_model_free(m);
}

static int progress_calls = 0;
static bool progress_stop(void *ud, float p) {
    (void)ud;
    (void)p;
    progress_calls++;
    return false;
}

/* A file without a chat template (the key renamed in a copy of the test model):
 * chat refuses with UNSUPPORTED naming the fix, and works with a named built-in. */
static void test_templateless_file(void) {
    size_t n = 0;
    unsigned char *bytes = read_file(model_path, &n);
    const char key[] = "tokenizer.chat_template";
    size_t klen = sizeof key - 1, renamed = 0;
    for (size_t i = 0; i + klen <= n && !renamed; i++)
        if (memcmp(bytes + i, key, klen) == 0) {
            bytes[i + klen - 1] = 'X';
            renamed = 1;
        }
    CHECK(renamed, "no chat template key in the test model");
    ta_model *m = NULL;
    ta_status st = ta_model_load_from_buffer(bytes, n, NULL, &m);
    free(bytes);
    CHECK_ST(st, TA_OK);
    if (!m) return;
    ta_model_info info;
    CHECK_ST(ta_model_get_info(m, &info), TA_OK);
    CHECK(info.chat_template == NULL, "template still there");
    ta_chat_message msg = {.role = "user", .content = "What is 2+2?"};
    char *s = NULL;
    CHECK_ST(ta_model_apply_chat_template(m, &msg, 1, true, NULL, NULL, NULL, &s), TA_ERR_UNSUPPORTED);
    CHECK(last_error_has("no chat template"), "%s", ta_last_error());
    ta_context *c = new_ctx(m, 256);
    ta_gen_params gp = greedy(8);
    CHECK_ST(ta_context_chat(c, &msg, 1, &gp, NULL, NULL, NULL), TA_ERR_UNSUPPORTED);
    gp.chat_template = "chatml";
    ta_gen_result r;
    CHECK_ST(ta_context_chat(c, &msg, 1, &gp, NULL, NULL, &r), TA_OK);
    CHECK(r.n_generated_tokens > 0, "%u", r.n_generated_tokens);
    ta_context_free(c);
    ta_model_free(m);
}

static void test_progress_cancel(void) {
    ta_model_params mp = ta_model_default_params();
    mp.progress_callback = progress_stop;
    ta_model *m = NULL;
    CHECK_ST(ta_model_load(model_path, &mp, &m), TA_ERR_CANCELLED);
    CHECK(m == NULL && progress_calls >= 1, "calls %d", progress_calls);
    mp = ta_model_default_params();
    mp.vocab_only = true;
    CHECK_ST(ta_model_load(model_path, &mp, &m), TA_OK);
    /* A vocab-only model reports the file's hyperparameters, not zeros. */
    ta_model_info vi;
    CHECK_ST(ta_model_get_info(m, &vi), TA_OK);
    CHECK(vi.n_layer == 30 && vi.n_embd == 576 && vi.n_ctx_train > 0 && vi.description[0] != 0,
          "%d %d %d '%s'", vi.n_layer, vi.n_embd, vi.n_ctx_train, vi.description);
    ta_context *c = NULL;
    CHECK_ST(ta_context_new(m, NULL, &c), TA_ERR_INVALID_ARG);
    ta_model_free(m);
}

static int log_lines = 0;
static void log_cb(void *ud, int32_t level, const char *text, size_t len) {
    (void)text;
    (void)len;
    if (ud == &log_lines && level >= TA_LOG_DEBUG) log_lines++;
}

static void test_log_callback(void) {
    CHECK_ST(ta_set_log_callback(log_cb, &log_lines, TA_LOG_DEBUG), TA_OK);
    ta_model *m = load_model();
    CHECK(log_lines > 0, "no log lines during a load");
    CHECK_ST(ta_set_log_callback(NULL, NULL, TA_LOG_ERROR), TA_OK);
    int before = log_lines;
    ta_model_free(m);
    m = load_model();
    CHECK(log_lines == before, "log after removal");
    ta_model_free(m);
}

static void test_hardware(const ta_model *m) {
    ta_hardware *hw = (ta_hardware *)1;
    CHECK_ST(ta_hardware_detect(NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_hardware_detect(&hw), TA_OK);
    ta_cpu_info cpu;
    ta_memory_info mem;
    ta_build_info build;
    ta_gpu_info gpu;
    ta_fit fit;
    char *json = NULL;
    CHECK_ST(ta_hardware_cpu(NULL, &cpu), TA_ERR_NULL_ARG);
    CHECK_ST(ta_hardware_cpu(hw, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_hardware_memory(NULL, &mem), TA_ERR_NULL_ARG);
    CHECK_ST(ta_hardware_memory(hw, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_hardware_build(NULL, &build), TA_ERR_NULL_ARG);
    CHECK_ST(ta_hardware_build(hw, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_hardware_gpu(NULL, 0, &gpu), TA_ERR_NULL_ARG);
    CHECK_ST(ta_hardware_gpu(hw, 0, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_hardware_json(NULL, &json), TA_ERR_NULL_ARG);
    CHECK_ST(ta_hardware_json(hw, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_hardware_fit_file(NULL, model_path, 512, &fit), TA_ERR_NULL_ARG);
    CHECK_ST(ta_hardware_fit_file(hw, NULL, 512, &fit), TA_ERR_NULL_ARG);
    CHECK_ST(ta_hardware_fit_file(hw, model_path, 512, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_hardware_fit_model(NULL, m, 512, &fit), TA_ERR_NULL_ARG);
    CHECK_ST(ta_hardware_fit_model(hw, NULL, 512, &fit), TA_ERR_NULL_ARG);
    CHECK_ST(ta_hardware_fit_model(hw, m, 512, NULL), TA_ERR_NULL_ARG);
    CHECK(ta_hardware_gpu_count(NULL) == 0, "gpu_count(NULL)");
    ta_hardware_free(NULL);

    CHECK_ST(ta_hardware_cpu(hw, &cpu), TA_OK);
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    CHECK(cpu.logical_cores == (uint32_t)online, "%u vs %ld", cpu.logical_cores, online);
    CHECK(cpu.physical_cores >= 1 && cpu.physical_cores <= cpu.logical_cores, "%u", cpu.physical_cores);
    CHECK(cpu.recommended_threads >= 1 && cpu.recommended_threads <= cpu.logical_cores, "%u", cpu.recommended_threads);
    CHECK(strlen(cpu.vendor) > 0 && strlen(cpu.uarch) > 0, "vendor/uarch");
    /* The features agree with /proc/cpuinfo's flags line. */
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[8192];
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "flags", 5) == 0) break;
        fclose(f);
        bool avx2 = strstr(line, " avx2") != NULL;
        CHECK((strstr(cpu.features, "avx2") != NULL) == avx2, "avx2 %d: %s", avx2, cpu.features);
        if (avx2) CHECK(cpu.x86_64_level >= 3, "level %u", cpu.x86_64_level);
    }
    CHECK_ST(ta_hardware_memory(hw, &mem), TA_OK);
    CHECK(mem.total_bytes > 0 && mem.available_bytes <= mem.total_bytes, "mem");
    CHECK_ST(ta_hardware_build(hw, &build), TA_OK);
    CHECK(build.warning == NULL, "warning on a build that fits this CPU: %s", build.warning);
    CHECK(build.cpu_variant && build.cpu_variant[0] && build.cpu_variant_reason && build.cpu_variant_reason[0],
          "cpu variant '%s': %s", build.cpu_variant, build.cpu_variant_reason);
    CHECK(strcmp(build.gpu_backends, "") == 0 && !build.gpu_offload, "CPU build: '%s'", build.gpu_backends);
    size_t n_gpu = ta_hardware_gpu_count(hw);
    CHECK_ST(ta_hardware_gpu(hw, n_gpu, &gpu), TA_ERR_INVALID_ARG);
    CHECK_ST(ta_hardware_json(hw, &json), TA_OK);
    CHECK(json && strstr(json, "\"cpu\"") && strstr(json, "\"gpus\"") && strstr(json, "\"build\""), "json");
    ta_string_free(json);

    ta_fit a, b;
    CHECK_ST(ta_hardware_fit_file(hw, model_path, 512, &a), TA_OK);
    CHECK_ST(ta_hardware_fit_model(hw, m, 4096, &b), TA_OK);
    CHECK(a.n_ctx == 512 && b.n_ctx == 4096, "%u %u", a.n_ctx, b.n_ctx);
    CHECK(a.weights_bytes == b.weights_bytes && b.kv_bytes == 8 * a.kv_bytes, "kv scales with n_ctx");
    CHECK(a.total_bytes == a.weights_bytes + a.kv_bytes + a.compute_bytes, "sum");
    CHECK((a.fits_ram && !a.fits_vram && a.recommended_gpu_layers == 0) || n_gpu > 0, "advice");
    char path[4096];
    snprintf(path, sizeof path, "%s/not-gguf.gguf", scratch);
    CHECK_ST(ta_hardware_fit_file(hw, path, 512, &fit), TA_ERR_BAD_MODEL);
    ta_hardware_free(hw);
}

/* The cache without a network: argument checks, offline behaviour, empty queries.
 * Downloads against the hub imitation are tested in tests/python/test_cache.py and
 * by the pull example in `make test-examples`. */
static void test_cache_offline(void) {
    char root[4096];
    snprintf(root, sizeof root, "%s/hf-cache", scratch);
    ta_cache_options o = ta_cache_default_options();
    CHECK(!o.durable && o.offline == -1 && o.retries == 5, "default cache options");
    o.root = root;
    o.offline = 1;
    o.endpoint = "http://127.0.0.1:9";
    ta_cache *c = (ta_cache *)1;
    CHECK_ST(ta_cache_open(&o, NULL), TA_ERR_NULL_ARG);
    o.offline = 7;
    CHECK_ST(ta_cache_open(&o, &c), TA_ERR_INVALID_ARG);
    CHECK(c == (ta_cache *)1, "out param written on failure");
    o.offline = 1;
    CHECK_ST(ta_cache_open(&o, &c), TA_OK);
    char *s = (char *)1;
    bool has = true;
    ta_cache_stats st;
    CHECK_ST(ta_cache_root(NULL, &s), TA_ERR_NULL_ARG);
    CHECK_ST(ta_cache_root(c, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_cache_scan(NULL, "a/b", NULL, &s), TA_ERR_NULL_ARG);
    CHECK_ST(ta_cache_scan(c, NULL, NULL, &s), TA_ERR_NULL_ARG);
    CHECK_ST(ta_cache_scan(c, "a/b", NULL, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_cache_manifest(c, NULL, NULL, &s), TA_ERR_NULL_ARG);
    CHECK_ST(ta_cache_download_file(NULL, "a/b", NULL, "x.gguf", NULL, NULL, &s), TA_ERR_NULL_ARG);
    CHECK_ST(ta_cache_download_file(c, NULL, NULL, "x.gguf", NULL, NULL, &s), TA_ERR_NULL_ARG);
    CHECK_ST(ta_cache_download_file(c, "a/b", NULL, NULL, NULL, NULL, &s), TA_ERR_NULL_ARG);
    CHECK_ST(ta_cache_download_file(c, "a/b", NULL, "x.gguf", NULL, NULL, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_cache_download_variant(c, "a/b", NULL, NULL, NULL, NULL, &s), TA_ERR_NULL_ARG);
    CHECK_ST(ta_cache_has_file(c, "a/b", NULL, "x.gguf", NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_cache_snapshot_path(c, "a/b", NULL, NULL, &s), TA_ERR_NULL_ARG);
    CHECK_ST(ta_cache_list_repos(NULL, &s), TA_ERR_NULL_ARG);
    CHECK_ST(ta_cache_delete_repo(c, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_cache_delete_revision(c, "a/b", NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_cache_get_stats(c, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_cache_verify(c, NULL, NULL), TA_ERR_NULL_ARG);
    ta_model *m = (ta_model *)1;
    CHECK_ST(ta_model_load_from_cache(c, "a/b", NULL, NULL, NULL, NULL, NULL, &m), TA_ERR_NULL_ARG);
    CHECK(s == (char *)1 && m == (ta_model *)1, "out params written on failure");

    CHECK_ST(ta_cache_root(c, &s), TA_OK);
    CHECK(strcmp(s, root) == 0, "%s", s);
    ta_string_free(s);
    CHECK_ST(ta_cache_has_file(c, "org/name", NULL, "m.gguf", &has), TA_OK);
    CHECK(!has, "has_file on an empty cache");
    CHECK_ST(ta_cache_snapshot_path(c, "org/name", NULL, "m.gguf", &s), TA_ERR_NOT_FOUND);
    CHECK_ST(ta_cache_download_file(c, "org/name", NULL, "m.gguf", NULL, NULL, &s), TA_ERR_OFFLINE);
    CHECK(last_error_has("org/name"), "%s", ta_last_error());
    CHECK_ST(ta_model_load_from_cache(c, "org/name", NULL, "Q4_0", NULL, NULL, NULL, &m), TA_ERR_OFFLINE);
    CHECK_ST(ta_cache_download_file(c, "../etc", NULL, "m.gguf", NULL, NULL, &s), TA_ERR_INVALID_ARG);
    CHECK_ST(ta_cache_download_file(c, "org/name", NULL, "../../m.gguf", NULL, NULL, &s), TA_ERR_INVALID_ARG);
    CHECK_ST(ta_cache_has_file(c, "org/name", NULL, "/etc/passwd", &has), TA_ERR_INVALID_ARG);
    CHECK_ST(ta_cache_get_stats(c, &st), TA_OK);
    CHECK(st.repos == 0 && st.files == 0 && st.bytes == 0, "stats");
    CHECK_ST(ta_cache_list_repos(c, &s), TA_OK);
    CHECK(strcmp(s, "[]") == 0, "%s", s);
    ta_string_free(s);
    CHECK_ST(ta_cache_verify(c, NULL, &s), TA_OK);
    CHECK(strcmp(s, "[]") == 0, "%s", s);
    ta_string_free(s);
    ta_cache_free(c);
    ta_cache_free(NULL);
}

/* The out-of-process check: a good file passes and reports its cost, a broken
 * one is refused with the file named, arguments are checked, and the check can
 * run as part of ta_model_load. Out-params are written only on success. */
static void test_model_check(void) {
    char path[4096];
    ta_check_report r = {-1.0, 7};
    CHECK_ST(ta_model_check(NULL, NULL, &r), TA_ERR_NULL_ARG);
    CHECK(r.elapsed_ms == -1.0 && r.peak_rss_bytes == 7, "report written on failure");

    snprintf(path, sizeof path, "%s/check-missing.gguf", scratch);
    CHECK_ST(ta_model_check(path, NULL, &r), TA_ERR_NOT_FOUND);
    CHECK(r.elapsed_ms == -1.0, "report written on failure");

    snprintf(path, sizeof path, "%s/check-short.gguf", scratch);
    size_t n = 0;
    unsigned char *real = read_file(model_path, &n);
    CHECK(real != NULL, "cannot read model");
    if (!real) return;
    write_file(path, real, 5000);
    free(real);
    CHECK_ST(ta_model_check(path, NULL, &r), TA_ERR_BAD_MODEL);
    CHECK(last_error_has(path), "%s", ta_last_error());

    CHECK_ST(ta_model_check(model_path, NULL, &r), TA_OK);
    CHECK(r.elapsed_ms > 0 && r.peak_rss_bytes > 1000000, "%f ms, %llu bytes", r.elapsed_ms,
          (unsigned long long)r.peak_rss_bytes);
    CHECK_ST(ta_model_check(model_path, NULL, NULL), TA_OK);

    /* A memory limit too small for the model: the child cannot map it and says so. */
    ta_model_params p = ta_model_default_params();
    CHECK(!p.check_in_child && p.check_timeout_ms == 0 && p.check_memory_limit == 0, "defaults");
    p.check_memory_limit = 64u << 20;
    CHECK_ST(ta_model_check(model_path, &p, NULL), TA_ERR_OUT_OF_MEMORY);
    CHECK(last_error_has(model_path), "%s", ta_last_error());

    /* As part of the load. */
    p = ta_model_default_params();
    p.check_in_child = true;
    ta_model *m = NULL;
    CHECK_ST(ta_model_load(model_path, &p, &m), TA_OK);
    ta_model_free(m);
    m = (ta_model *)1;
    CHECK_ST(ta_model_load(path, &p, &m), TA_ERR_BAD_MODEL);
    CHECK(m == (ta_model *)1, "out param written on failure");
}

/* A context far larger than this machine's memory is refused before llama.cpp
 * allocates, naming the size needed and the size available. */
static void test_context_too_big(const ta_model *m) {
    ta_context_params p = ta_context_default_params();
    p.n_ctx = 10000000;
    ta_context *c = (ta_context *)1;
    CHECK_ST(ta_context_new(m, &p, &c), TA_ERR_OUT_OF_MEMORY);
    CHECK(last_error_has("GiB") && last_error_has("available"), "%s", ta_last_error());
    CHECK(c == (ta_context *)1, "out param written on failure");
}


/* ------------------------------------------------------------ sequences */

typedef struct {
    ta_sequence *seq;
    const char *prompt;
    collector out;
    ta_gen_result res;
    ta_status st;
} seq_job;

static void *seq_main(void *p) {
    seq_job *j = p;
    ta_gen_params gp = greedy(24);
    collector_init(&j->out);
    j->st = ta_sequence_generate(j->seq, j->prompt, &gp, collect_cb, &j->out, &j->res);
    return NULL;
}

typedef struct {
    ta_sequence *seq;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started, release;
    ta_status status;
} seq_busy;

static bool seq_busy_cb(void *ud, const char *text, size_t len) {
    (void)text;
    (void)len;
    seq_busy *s = ud;
    pthread_mutex_lock(&s->mu);
    s->started = 1;
    pthread_cond_broadcast(&s->cv);
    while (!s->release) pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    return false;
}

static void *seq_busy_main(void *p) {
    seq_busy *s = p;
    ta_gen_params gp = greedy(64);
    s->status = ta_sequence_generate(s->seq, "Once upon a time", &gp, seq_busy_cb, s, NULL);
    return NULL;
}

/* Chat templates (issue 12): the model's own template rendered by the Jinja
 * engine, tools and variables reaching it, a raising and a hostile template
 * refused cleanly, a built-in name going to llama.cpp's formats. */
static void test_chat_templates(const ta_model *m) {
    ta_chat_message msgs[] = {
        {.role = "system", .content = "Be brief."},
        {.role = "user", .content = "Weather in Paris?"},
        {.role = "assistant",
         .content = "",
         .tool_calls = "[{\"id\":\"c1\",\"type\":\"function\","
                       "\"function\":{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}}]"},
        {.role = "tool", .content = "18C", .name = "get_weather", .tool_call_id = "c1"},
    };
    char *s = NULL;
    /* SmolLM2's own template: ChatML with its default system prompt. */
    CHECK_ST(ta_model_apply_chat_template(m, msgs + 1, 1, true, NULL, NULL, NULL, &s), TA_OK);
    CHECK(s && strstr(s, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM") &&
              strstr(s, "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n"),
          "%s", s ? s : "(null)");
    ta_string_free(s);
    s = NULL;
    const char *tmpl =
        "{% for m in messages %}[{{ m.role }}{% if m.name is defined %}:{{ m.name }}{% endif %}]"
        "{% if m.tool_calls %}{{ m.tool_calls[0].function.arguments|tojson }}"
        "{% else %}{{ m.content }}{% endif %}{% endfor %}"
        "|{{ tools|map(attribute='name')|join(',') }}|{{ enable_thinking }}|{{ bos_token }}";
    CHECK_ST(ta_model_apply_chat_template(m, msgs, 4, false, tmpl, "[{\"name\":\"get_weather\"}]",
                                          "{\"enable_thinking\": false}", &s),
             TA_OK);
    const char *want = "[system]Be brief.[user]Weather in Paris?[assistant]{\"city\": \"Paris\"}"
                       "[tool:get_weather]18C|get_weather|False|<|im_start|>";
    CHECK(s && strcmp(s, want) == 0, "%s", s ? s : "(null)");
    ta_string_free(s);
    s = (char *)1;
    /* The template's own exception: INVALID_ARG with its message. */
    CHECK_ST(ta_model_apply_chat_template(m, msgs, 1, true, "{{ raise_exception('roles must alternate') }}",
                                          NULL, NULL, &s),
             TA_ERR_INVALID_ARG);
    CHECK(last_error_has("roles must alternate"), "%s", ta_last_error());
    CHECK(s == (char *)1, "out param written on failure");
    /* Hostile: 10^10 iterations end in an error within the budget. */
    CHECK_ST(ta_model_apply_chat_template(
                 m, msgs, 1, true,
                 "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}", NULL,
                 NULL, &s),
             TA_ERR_INVALID_ARG);
    CHECK(last_error_has("budget"), "%s", ta_last_error());
    /* Bad JSON in tools / vars. */
    CHECK_ST(ta_model_apply_chat_template(m, msgs, 1, true, tmpl, "[{", NULL, &s), TA_ERR_INVALID_ARG);
    CHECK(last_error_has("tools"), "%s", ta_last_error());
    CHECK_ST(ta_model_apply_chat_template(m, msgs, 1, true, tmpl, NULL, "[1]", &s), TA_ERR_INVALID_ARG);
    CHECK(last_error_has("variables"), "%s", ta_last_error());
    CHECK_ST(ta_model_apply_chat_template(m, msgs + 2, 1, true, tmpl, NULL, NULL, &s), TA_OK);
    ta_string_free(s);
    {
        ta_chat_message bad = {.role = "assistant", .content = "", .tool_calls = "{\"not\": \"a list\"}"};
        CHECK_ST(ta_model_apply_chat_template(m, &bad, 1, true, tmpl, NULL, NULL, &s), TA_ERR_INVALID_ARG);
        CHECK(last_error_has("tool_calls"), "%s", ta_last_error());
    }
    /* A built-in name: llama.cpp's ChatML, role and content only. */
    s = NULL;
    CHECK_ST(ta_model_apply_chat_template(m, msgs + 1, 1, true, "chatml", NULL, NULL, &s), TA_OK);
    CHECK(s && strcmp(s, "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n") == 0, "%s",
          s ? s : "(null)");
    ta_string_free(s);
    /* Chat through a context with tools and variables in ta_gen_params. */
    ta_context *c = NULL;
    CHECK_ST(ta_context_new(m, NULL, &c), TA_OK);
    ta_gen_params gp = greedy(2);
    gp.chat_template = "{{ raise_exception('no tools given') if tools is none }}{{ messages[0].content }}";
    CHECK_ST(ta_context_chat(c, msgs + 1, 1, &gp, NULL, NULL, NULL), TA_ERR_INVALID_ARG);
    CHECK(last_error_has("no tools given"), "%s", ta_last_error());
    gp.chat_tools = "[]";
    gp.chat_vars = "{\"x\": 1}";
    CHECK_ST(ta_context_chat(c, msgs + 1, 1, &gp, NULL, NULL, NULL), TA_OK);
    ta_context_free(c);
}

/* Embeddings (issue 12) on the test model with mean pooling: sizes, batched vs
 * one at a time, buffer too small before any work, misplaced calls. */
static void test_embeddings(const ta_model *m) {
    ta_context_params cp = ta_context_default_params();
    cp.n_ctx = 256;
    cp.n_threads = 2;
    cp.embeddings = true;
    cp.pooling = TA_POOLING_MEAN;
    ta_context *c = NULL;
    CHECK_ST(ta_context_new(m, &cp, &c), TA_OK);
    if (!c) return;
    size_t dim = 0, len = 0;
    int32_t pooling = -7;
    CHECK_ST(ta_context_embed_dim(c, &dim), TA_OK);
    CHECK(dim == 576, "%zu", dim);
    CHECK_ST(ta_context_pooling(c, &pooling), TA_OK);
    CHECK(pooling == TA_POOLING_MEAN, "%d", pooling);
    const char *texts[] = {"The cat sat on the mat.", "Stock prices fell today.", "Héllo 👋"};
    float *all = calloc(3 * 576, sizeof(float)), *one = calloc(576, sizeof(float));
    ta_embed_params ep = ta_embed_default_params();
    CHECK(ep.normalize && !ep.truncate, "defaults");
    CHECK_ST(ta_context_embed(c, texts, 3, &ep, all, 3 * 576 - 1, &len), TA_ERR_BUFFER_TOO_SMALL);
    CHECK(len == 3 * 576, "%zu", len);
    CHECK_ST(ta_context_embed(c, texts, 3, NULL, all, 3 * 576, &len), TA_OK);
    for (int i = 0; i < 3; i++) {
        CHECK_ST(ta_context_embed(c, texts + i, 1, &ep, one, 576, &len), TA_OK);
        double dot = 0, norm = 0;
        for (size_t k = 0; k < 576; k++) {
            dot += (double)one[k] * all[i * 576 + k];
            norm += (double)one[k] * one[k];
        }
        CHECK(dot > 0.9999 && norm > 0.9999 && norm < 1.0001, "text %d: dot %f norm %f", i, dot, norm);
    }
    /* NULL and misplaced arguments. */
    CHECK_ST(ta_context_embed(NULL, texts, 1, NULL, one, 576, &len), TA_ERR_NULL_ARG);
    CHECK_ST(ta_context_embed(c, NULL, 1, NULL, one, 576, &len), TA_ERR_NULL_ARG);
    CHECK_ST(ta_context_embed(c, texts, 1, NULL, NULL, 576, &len), TA_ERR_NULL_ARG);
    CHECK_ST(ta_context_embed(c, texts, 1, NULL, one, 576, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_context_embed_dim(NULL, &dim), TA_ERR_NULL_ARG);
    CHECK_ST(ta_context_embed_dim(c, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_context_pooling(NULL, &pooling), TA_ERR_NULL_ARG);
    CHECK_ST(ta_context_pooling(c, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_context_generate(c, "x", NULL, NULL, NULL, NULL), TA_ERR_INVALID_ARG);
    CHECK(last_error_has("embeddings"), "%s", ta_last_error());
    ta_context_free(c);
    ta_context *g = new_ctx(m, 256);
    CHECK_ST(ta_context_embed(g, texts, 1, NULL, one, 576, &len), TA_ERR_INVALID_ARG);
    CHECK_ST(ta_context_embed_dim(g, &dim), TA_ERR_INVALID_ARG);
    ta_context_free(g);
    cp.pooling = 9;
    c = (ta_context *)1;
    CHECK_ST(ta_context_new(m, &cp, &c), TA_ERR_INVALID_ARG);
    CHECK(c == (ta_context *)1, "out param written on failure");
    free(all);
    free(one);
}

/* The native-host dispatcher through its C handle (issue 13): messages arrive
 * through the callback; bad requests are error messages, never a bad status. */
typedef struct {
    pthread_mutex_t mu;
    char buf[1 << 16];
    size_t len;
    int n;
} host_log;

static void on_host_msg(void *ud, const char *json, size_t len) {
    host_log *h = ud;
    pthread_mutex_lock(&h->mu);
    if (h->len + len + 2 < sizeof h->buf) {
        memcpy(h->buf + h->len, json, len);
        h->len += len;
        h->buf[h->len++] = '\n';
        h->buf[h->len] = 0;
    }
    h->n++;
    pthread_mutex_unlock(&h->mu);
}

static int host_has(host_log *h, const char *needle) {
    pthread_mutex_lock(&h->mu);
    int r = strstr(h->buf, needle) != NULL;
    pthread_mutex_unlock(&h->mu);
    return r;
}

static int host_wait(host_log *h, const char *needle, int seconds) {
    for (int i = 0; i < seconds * 100; i++) {
        if (host_has(h, needle)) return 1;
        usleep(10000);
    }
    return 0;
}

static void test_host(void) {
    static host_log log = {.mu = PTHREAD_MUTEX_INITIALIZER};
    ta_host *h = (ta_host *)1;
    CHECK_ST(ta_host_new(NULL, on_host_msg, &log, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_host_new(NULL, NULL, &log, &h), TA_ERR_NULL_ARG);
    CHECK(h == (ta_host *)1, "out param written on failure");
    CHECK_ST(ta_host_new("{\"max_running\": \"x\"}", on_host_msg, &log, &h), TA_ERR_INVALID_ARG);
    CHECK_ST(ta_host_new("[", on_host_msg, &log, &h), TA_ERR_INVALID_ARG);
    char cfg[4096];
    char dir[2048];
    snprintf(dir, sizeof dir, "%s", model_path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    snprintf(cfg, sizeof cfg, "{\"model_dirs\": [\"%s\"], \"n_ctx\": 256, \"n_threads\": 2, \"offline\": true}", dir);
    CHECK_ST(ta_host_new(cfg, on_host_msg, &log, &h), TA_OK);
    if (h == (ta_host *)1 || !h) return;
    const char *ping = "{\"id\": 1, \"action\": \"PING\"}";
    CHECK_ST(ta_host_post(NULL, ping, strlen(ping)), TA_ERR_NULL_ARG);
    CHECK_ST(ta_host_post(h, NULL, 3), TA_ERR_NULL_ARG);
    CHECK_ST(ta_host_post(h, ping, strlen(ping)), TA_OK);
    CHECK(host_has(&log, "\"id\":1,\"type\":\"result\""), "%s", log.buf);
    CHECK_ST(ta_host_post(h, "\xff{", 2), TA_OK);
    CHECK(host_has(&log, "\"id\":null,\"type\":\"error\",\"code\":\"INVALID_REQUEST\""), "%s", log.buf);
    CHECK_ST(ta_host_post(h, "", 0), TA_OK);
    char req[4096];
    snprintf(req, sizeof req, "{\"id\": \"l\", \"action\": \"LOAD_MODEL\", \"path\": \"%s\", \"key\": \"m\"}", model_path);
    CHECK_ST(ta_host_post(h, req, strlen(req)), TA_OK);
    CHECK(host_wait(&log, "\"id\":\"l\",\"type\":\"result\"", 60), "%s", log.buf);
    const char *gen = "{\"id\": \"g\", \"action\": \"GENERATE\", \"model\": \"m\", \"prompt\": \"Hello\","
                      " \"params\": {\"max_tokens\": 4, \"temperature\": 0}}";
    CHECK_ST(ta_host_post(h, gen, strlen(gen)), TA_OK);
    CHECK(host_wait(&log, "\"id\":\"g\",\"type\":\"result\"", 60), "%s", log.buf);
    /* Free with work running: it is cancelled and answered before free returns. */
    const char *lng = "{\"id\": \"z\", \"action\": \"GENERATE\", \"model\": \"m\", \"prompt\": \"Count:\","
                      " \"params\": {\"max_tokens\": 100000}}";
    CHECK_ST(ta_host_post(h, lng, strlen(lng)), TA_OK);
    usleep(100000);
    ta_host_free(h);
    CHECK(host_has(&log, "\"id\":\"z\",\"type\":\"result\""), "no final message for z");
    ta_host_free(NULL);
}

static void test_sequences(const ta_model *m) {
    ta_context_params cp = ta_context_default_params();
    CHECK(cp.n_seq_max == 1 && !cp.kv_unified, "defaults %u %d", cp.n_seq_max, cp.kv_unified);
    ta_gen_params dp = ta_gen_default_params();
    CHECK(!dp.context_shift && dp.n_keep == 0, "gen defaults");
    cp.n_ctx = 4096;
    cp.n_seq_max = 4;
    cp.n_threads = 2;
    ta_context *c = NULL;
    CHECK_ST(ta_context_new(m, &cp, &c), TA_OK);
    CHECK(ta_context_n_seq_max(c) == 4, "%u", ta_context_n_seq_max(c));
    CHECK(ta_context_n_ctx_seq(c) == 1024, "%u", ta_context_n_ctx_seq(c));
    CHECK(ta_context_n_ctx(c) == 4096, "%u", ta_context_n_ctx(c));

    /* NULL arguments. */
    ta_sequence *s0 = (ta_sequence *)1;
    CHECK_ST(ta_sequence_new(NULL, &s0), TA_ERR_NULL_ARG);
    CHECK(s0 == (ta_sequence *)1, "out param written on failure");
    CHECK_ST(ta_sequence_new(c, NULL), TA_ERR_NULL_ARG);
    ta_sequence_free(NULL);
    ta_sequence_cancel(NULL);
    CHECK(ta_sequence_id(NULL) == -1, "id(NULL)");
    CHECK(ta_context_n_ctx_seq(NULL) == 0 && ta_context_n_seq_max(NULL) == 0, "n_*(NULL)");
    CHECK_ST(ta_sequence_generate(NULL, "x", NULL, NULL, NULL, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_sequence_chat(NULL, NULL, 0, NULL, NULL, NULL, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_sequence_reset(NULL), TA_ERR_NULL_ARG);
    size_t n = 0;
    CHECK_ST(ta_sequence_n_cached(NULL, &n), TA_ERR_NULL_ARG);
    CHECK_ST(ta_sequence_state_save(NULL, "x", NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_sequence_state_load(NULL, "x", NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_context_state_save(NULL, "x", NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_context_state_load(NULL, "x", NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_context_state_save(c, NULL, NULL), TA_ERR_NULL_ARG);

    /* Four questions at once on four sequences of one context. */
    static const char *Q[4] = {"The capital of France is", "The three primary colours are",
                               "Water boils at", "The largest planet is"};
    seq_job jobs[4];
    memset(jobs, 0, sizeof jobs);
    for (int i = 0; i < 4; i++) {
        CHECK_ST(ta_sequence_new(c, &jobs[i].seq), TA_OK);
        CHECK(ta_sequence_id(jobs[i].seq) >= 0 && ta_sequence_id(jobs[i].seq) < 4, "id");
        jobs[i].prompt = Q[i];
    }
    ta_sequence *extra = (ta_sequence *)1;
    CHECK_ST(ta_sequence_new(c, &extra), TA_ERR_BUSY);
    CHECK(last_error_has("n_seq_max"), "%s", ta_last_error());
    CHECK_ST(ta_sequence_chat(jobs[0].seq, NULL, 1, NULL, NULL, NULL, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_sequence_generate(jobs[0].seq, NULL, NULL, NULL, NULL, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_sequence_n_cached(jobs[0].seq, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_sequence_state_save(jobs[0].seq, NULL, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_sequence_state_load(jobs[0].seq, NULL, NULL), TA_ERR_NULL_ARG);
    pthread_t th[4];
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, seq_main, &jobs[i]);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_ST(jobs[i].st, TA_OK);
        CHECK(jobs[i].out.len > 0 && valid_utf8((unsigned char *)jobs[i].out.buf, jobs[i].out.len),
              "answer %d", i);
        CHECK(jobs[i].res.n_generated_tokens > 0, "generated %d", i);
    }
    /* Each answer again alone: the same first words (see tests/sequences.rs for
     * why concurrent greedy text may differ late). */
    for (int i = 0; i < 4; i++) {
        ta_sequence_reset(jobs[i].seq);
        collector alone;
        collector_init(&alone);
        ta_gen_params gp = greedy(24);
        CHECK_ST(ta_sequence_generate(jobs[i].seq, Q[i], &gp, collect_cb, &alone, NULL), TA_OK);
        size_t k = alone.len < 12 ? alone.len : 12;
        CHECK(jobs[i].out.len >= k && memcmp(jobs[i].out.buf, alone.buf, k) == 0, "answer %d: '%.*s' vs '%.*s'", i,
              (int)jobs[i].out.len, jobs[i].out.buf, (int)alone.len, alone.buf);
    }

    /* BUSY per sequence: seq 0 is held inside its callback; seq 1 still works. */
    seq_busy b;
    memset(&b, 0, sizeof b);
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    b.seq = jobs[0].seq;
    pthread_t bt;
    pthread_create(&bt, NULL, seq_busy_main, &b);
    pthread_mutex_lock(&b.mu);
    while (!b.started) pthread_cond_wait(&b.cv, &b.mu);
    pthread_mutex_unlock(&b.mu);
    CHECK_ST(ta_sequence_generate(b.seq, "x", NULL, NULL, NULL, NULL), TA_ERR_BUSY);
    CHECK_ST(ta_sequence_reset(b.seq), TA_ERR_BUSY);
    CHECK_ST(ta_sequence_n_cached(b.seq, &n), TA_ERR_BUSY);
    CHECK(ta_sequence_id(b.seq) >= 0, "id while busy");
    ta_gen_params gp = greedy(8);
    collector other;
    collector_init(&other);
    CHECK_ST(ta_sequence_generate(jobs[1].seq, "Hello", &gp, collect_cb, &other, NULL), TA_OK);
    CHECK(other.len > 0, "another sequence runs while one is busy");
    pthread_mutex_lock(&b.mu);
    b.release = 1;
    pthread_cond_broadcast(&b.cv);
    pthread_mutex_unlock(&b.mu);
    pthread_join(bt, NULL);
    CHECK_ST(b.status, TA_ERR_CANCELLED);

    /* State files: save one sequence, load it into another. */
    char path[512], bad[512];
    snprintf(path, sizeof path, "%s/seq.kv", scratch);
    snprintf(bad, sizeof bad, "%s/bad.kv", scratch);
    size_t saved = 0, loaded = 0, held = 0;
    CHECK_ST(ta_sequence_state_save(jobs[1].seq, path, &saved), TA_OK);
    CHECK_ST(ta_sequence_n_cached(jobs[1].seq, &held), TA_OK);
    CHECK(saved == held && saved > 0, "%zu %zu", saved, held);
    CHECK_ST(ta_sequence_state_load(jobs[2].seq, path, &loaded), TA_OK);
    CHECK(loaded == saved, "%zu %zu", loaded, saved);
    CHECK_ST(ta_sequence_n_cached(jobs[2].seq, &n), TA_OK);
    CHECK(n == saved, "%zu", n);
    write_file(bad, "TAKVSTAT garbage", 16);
    CHECK_ST(ta_sequence_state_load(jobs[2].seq, bad, &loaded), TA_ERR_INVALID_ARG);
    CHECK(loaded == saved, "out param written on failure");
    CHECK_ST(ta_sequence_n_cached(jobs[2].seq, &n), TA_OK);
    CHECK(n == 0, "a refused state leaves the sequence empty (%zu)", n);
    snprintf(bad, sizeof bad, "%s/missing.kv", scratch);
    CHECK_ST(ta_sequence_state_load(jobs[2].seq, bad, NULL), TA_ERR_NOT_FOUND);
    CHECK(last_error_has("missing.kv"), "%s", ta_last_error());

    /* Free orders: the context first, then use and free its sequences. */
    ta_context_free(c);
    collector after;
    collector_init(&after);
    CHECK_ST(ta_sequence_generate(jobs[3].seq, "Hi", &gp, collect_cb, &after, NULL), TA_OK);
    CHECK(after.len > 0, "a sequence outlives its context handle");
    for (int i = 0; i < 4; i++) ta_sequence_free(jobs[i].seq);
}

/* The text queue: a generation pushes into it on one thread, this thread pops. */
typedef struct {
    ta_context *ctx;
    ta_text_queue *q;
    uint32_t max_tokens;
    ta_gen_result res;
    ta_status st;
} queue_job;

static void *queue_producer(void *arg) {
    queue_job *j = arg;
    ta_gen_params gp = greedy((int)j->max_tokens);
    j->st = ta_context_generate(j->ctx, "The capital of France is", &gp, ta_text_queue_push, j->q, &j->res);
    ta_text_queue_end(j->q);
    return NULL;
}

static void test_text_queue(const ta_model *m) {
    /* NULL arguments and the boundary. */
    ta_text_queue *q = (ta_text_queue *)1;
    CHECK_ST(ta_text_queue_new(NULL), TA_ERR_NULL_ARG);
    char buf[64];
    size_t len = 7;
    bool ended = true;
    CHECK_ST(ta_text_queue_pop(NULL, buf, sizeof buf, 0, &len, &ended), TA_ERR_NULL_ARG);
    CHECK(!ta_text_queue_push(NULL, "x", 1), "push to NULL queue");
    ta_text_queue_end(NULL);
    ta_text_queue_stop(NULL);
    ta_text_queue_free(NULL);
    CHECK_ST(ta_text_queue_new(&q), TA_OK);
    CHECK_ST(ta_text_queue_pop(q, buf, sizeof buf, 0, NULL, &ended), TA_ERR_NULL_ARG);
    CHECK_ST(ta_text_queue_pop(q, buf, sizeof buf, 0, &len, NULL), TA_ERR_NULL_ARG);
    CHECK_ST(ta_text_queue_pop(q, NULL, 8, 0, &len, &ended), TA_ERR_NULL_ARG);
    CHECK(!ta_text_queue_push(q, NULL, 3), "NULL text refused");

    /* Whole pieces, a too-small buffer, a timeout. */
    CHECK_ST(ta_text_queue_pop(q, buf, sizeof buf, 10, &len, &ended), TA_OK);
    CHECK(len == 0 && !ended, "timeout: %zu %d", len, ended);
    CHECK(ta_text_queue_push(q, "ab", 2) && ta_text_queue_push(q, "cdef", 4), "push");
    CHECK_ST(ta_text_queue_pop(q, buf, 3, 0, &len, &ended), TA_OK);
    CHECK(len == 2 && memcmp(buf, "ab", 2) == 0, "first piece only: %zu", len);
    CHECK_ST(ta_text_queue_pop(q, buf, 3, 0, &len, &ended), TA_ERR_BUFFER_TOO_SMALL);
    CHECK(len == 4, "needed %zu", len);
    CHECK_ST(ta_text_queue_pop(q, buf, sizeof buf, 0, &len, &ended), TA_OK);
    CHECK(len == 4 && memcmp(buf, "cdef", 4) == 0, "second piece");
    ta_text_queue_stop(q);
    CHECK(!ta_text_queue_push(q, "x", 1), "push after stop");
    ta_text_queue_free(q);

    /* A generation on another thread feeds it; the text equals a direct call's. */
    ta_context *c = new_ctx(m, 512);
    ta_gen_params gp = greedy(24);
    collector direct;
    collector_init(&direct);
    CHECK_ST(ta_context_generate(c, "The capital of France is", &gp, collect_cb, &direct, NULL), TA_OK);
    CHECK_ST(ta_context_reset(c), TA_OK);
    queue_job j = {.ctx = c, .max_tokens = 24};
    CHECK_ST(ta_text_queue_new(&j.q), TA_OK);
    pthread_t t;
    pthread_create(&t, NULL, queue_producer, &j);
    char got[4096];
    size_t total = 0;
    for (;;) {
        CHECK_ST(ta_text_queue_pop(j.q, got + total, sizeof got - total, -1, &len, &ended), TA_OK);
        if (ended) break;
        CHECK(len > 0, "an infinite wait returns text or the end");
        total += len;
    }
    pthread_join(t, NULL);
    CHECK_ST(j.st, TA_OK);
    CHECK(total == direct.len && memcmp(got, direct.buf, total) == 0, "queued text %.*s vs %s", (int)total, got,
          direct.buf);
    CHECK(j.res.n_generated_tokens > 0, "result written");
    ta_text_queue_free(j.q);

    /* The consumer stops: the generation ends at its next piece, cancelled. */
    CHECK_ST(ta_context_reset(c), TA_OK);
    queue_job k = {.ctx = c, .max_tokens = 400};
    CHECK_ST(ta_text_queue_new(&k.q), TA_OK);
    pthread_create(&t, NULL, queue_producer, &k);
    CHECK_ST(ta_text_queue_pop(k.q, got, sizeof got, -1, &len, &ended), TA_OK);
    CHECK(len > 0 && !ended, "first text");
    ta_text_queue_stop(k.q);
    pthread_join(t, NULL);
    CHECK_ST(k.st, TA_ERR_CANCELLED);
    CHECK(k.res.stop_reason == TA_STOP_CANCELLED, "stop reason %d", (int)k.res.stop_reason);
    CHECK(k.res.n_generated_tokens < 400, "stopped early: %u", k.res.n_generated_tokens);
    ta_text_queue_free(k.q);
    ta_context_free(c);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    model_path = argv[1];
    scratch = argv[2];
    test_versions();
    test_stream_chunking();
    test_cache_offline();
    test_bad_model_files();
    ta_model *m = load_model();
    ta_context *c = new_ctx(m, 512);
    test_null_arguments(m, c);
    test_invalid_arguments(m, c);
    test_metadata(m);
    test_tokenizer(m);
    test_generation(m);
    test_cancel_from_thread(m);
    test_busy(m);
    test_chat_templates(m);
    test_templateless_file();
    test_embeddings(m);
    test_host();
    test_sequences(m);
    test_text_queue(m);
    test_two_threads(m);
    test_hardware(m);
    test_context_too_big(m);
    ta_context_free(c);
    ta_model_free(m);
    test_free_orders();
    test_load_from_buffer();
    test_progress_cancel();
    test_log_callback();
    test_model_check();
    fprintf(stderr, "test_api: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
