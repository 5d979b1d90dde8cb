/* tabagent benchmark for sequences: N conversations on one context against a
 * plain llama.h loop that decodes the N sequences in one batch per step, both
 * calling the same libllama that libtabagent loads (the very same llama.cpp build
 * and CPU variant), same model, same threads. Each measurement runs in a forked
 * child (fresh contexts, its own peak RSS). Prints name=value lines; the rounds
 * behind parallelN_vs_ref go to stderr.
 *
 *   bench_parallel MODEL.gguf THREADS
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "llama.h"
#include "tabagent.h"

#define TG 128     /* tokens generated per sequence */
#define WINDOW 512 /* tokens per sequence */
#define MAXN 8
#define REPS 5 /* each figure: the median of REPS runs, reference and library interleaved */
#define ROUNDS_N 9 /* rounds of the four measurements behind each parallelN_vs_ref */

static int THREADS;
static bool UNIFIED; /* lib_run: one KV cache for all sequences */
static const char *MODEL;
static ta_model *M;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
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

static long peak_rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld", &v) == 1) break;
    if (f) fclose(f);
    return v;
}

static long rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &v) == 1) break;
    if (f) fclose(f);
    return v;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
/* Sorts v in place. */
static double median_of(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return v[n / 2];
}
typedef void (*measure_fn)(int n, double out[2]);
static void in_child(measure_fn fn, int n, double out[2]) {
    int fd[2];
    if (pipe(fd) != 0) exit(1);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        double r[2] = {0, 0};
        fn(n, r);
        if (write(fd[1], r, sizeof r) != (ssize_t)sizeof r) _exit(1);
        _exit(0);
    }
    close(fd[1]);
    if (read(fd[0], out, 2 * sizeof(double)) != (ssize_t)(2 * sizeof(double))) {
        fprintf(stderr, "measurement child failed\n");
        exit(1);
    }
    close(fd[0]);
    int st;
    waitpid(pid, &st, 0);
}

/* Medians over REPS runs of each of two measurements, interleaved so that a
 * slow spell of the machine hits both sides. */
static void paired(measure_fn a, measure_fn b, int n, double ma[2], double mb[2]) {
    double va[REPS], vb[REPS], ra[REPS], rb[REPS];
    for (int i = 0; i < REPS; i++) {
        double x[2], y[2];
        in_child(a, n, x);
        in_child(b, n, y);
        va[i] = x[0], ra[i] = x[1], vb[i] = y[0], rb[i] = y[1];
    }
    qsort(va, REPS, sizeof *va, cmp_d);
    qsort(vb, REPS, sizeof *vb, cmp_d);
    qsort(ra, REPS, sizeof *ra, cmp_d);
    qsort(rb, REPS, sizeof *rb, cmp_d);
    ma[0] = va[REPS / 2], ma[1] = ra[REPS / 2], mb[0] = vb[REPS / 2], mb[1] = rb[REPS / 2];
}

static const char *PROMPTS[MAXN] = {
    "Write a long story about a dragon who learns to paint.",
    "Describe, in detail, how a steam engine works.",
    "Write a long letter to a friend about your summer.",
    "Explain the history of the printing press at length.",
    "Write a detailed recipe for a three-course dinner.",
    "Describe a journey across a desert in many sentences.",
    "Write a long essay about why people enjoy music.",
    "Tell a long fairy tale about a clever fox and a crow.",
};

static char *chatml(const char *user) {
    static const char *fmt = "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n";
    size_t n = strlen(fmt) + strlen(user);
    char *s = malloc(n);
    snprintf(s, n, fmt, user);
    return s;
}

/* ------------------------------------------------------------ reference */

/* N sequences, one llama_decode per step holding each sequence's next token;
 * greedy, pieces rendered like a streaming loop does. Returns tokens/s. */
static void ref_parallel(int n, double out[2]) {
    llama_log_set(quiet_log, NULL);
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model *model = llama_model_load_from_file(MODEL, mp);
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = WINDOW * n;
    cp.n_batch = 512;
    cp.n_ubatch = 512;
    cp.n_seq_max = n;
    cp.kv_unified = false;
    cp.n_threads = THREADS;
    cp.n_threads_batch = THREADS;
    cp.no_perf = true;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    struct llama_batch b = llama_batch_init(512, 0, 1);
    llama_token last[MAXN];
    int pos[MAXN];
    struct llama_sampler *smpl = llama_sampler_init_greedy();
    /* Prompts, untimed: each sequence's prompt in its own decode. */
    for (int s = 0; s < n; s++) {
        char *p = chatml(PROMPTS[s]);
        llama_token toks[256];
        int k = llama_tokenize(vocab, p, (int)strlen(p), toks, 256, true, true);
        free(p);
        b.n_tokens = 0;
        for (int i = 0; i < k; i++) {
            b.token[i] = toks[i];
            b.pos[i] = i;
            b.n_seq_id[i] = 1;
            b.seq_id[i][0] = s;
            b.logits[i] = i == k - 1;
        }
        b.n_tokens = k;
        if (llama_decode(ctx, b) != 0) exit(1);
        last[s] = llama_sampler_sample(smpl, ctx, k - 1);
        pos[s] = k;
    }
    char piece[256];
    size_t bytes = 0;
    double t0 = now_ms();
    for (int step = 0; step < TG; step++) {
        b.n_tokens = n;
        for (int s = 0; s < n; s++) {
            b.token[s] = last[s];
            b.pos[s] = pos[s]++;
            b.n_seq_id[s] = 1;
            b.seq_id[s][0] = s;
            b.logits[s] = 1;
        }
        if (llama_decode(ctx, b) != 0) exit(1);
        for (int s = 0; s < n; s++) {
            last[s] = llama_sampler_sample(smpl, ctx, s);
            int len = llama_token_to_piece(vocab, last[s], piece, sizeof piece, 0, false);
            if (len > 0) bytes += (size_t)len;
        }
    }
    double ms = now_ms() - t0;
    out[0] = n * TG * 1000.0 / ms;
    out[1] = (double)bytes;
    llama_sampler_free(smpl);
    llama_batch_free(b);
    llama_free(ctx);
    llama_model_free(model);
}

/* ------------------------------------------------------------ library */

typedef struct {
    ta_sequence *seq;
    ta_context *ctx; /* set: run on this context instead */
    const char *prompt;
    ta_gen_params gp;
    ta_gen_result res;
    pthread_barrier_t *go;
    double first, end; /* when the first and the last piece arrived */
    size_t bytes;
} job_t;

static bool count_cb(void *ud, const char *text, size_t len) {
    (void)text;
    job_t *j = ud;
    if (j->first == 0) j->first = now_ms();
    j->bytes += len;
    return true;
}

static void *run_job(void *arg) {
    job_t *j = arg;
    pthread_barrier_wait(j->go);
    ta_status st = j->ctx ? ta_context_generate(j->ctx, j->prompt, &j->gp, count_cb, j, &j->res)
                          : ta_sequence_generate(j->seq, j->prompt, &j->gp, count_cb, j, &j->res);
    if (st != TA_OK) die("generate", st);
    j->end = now_ms();
    return NULL;
}

/* n conversations at once: on n sequences of one context (contexts = 0) or on n
 * contexts. The prompts are read first (untimed). As in the reference, whose
 * clock starts after each prompt's first token, the clock starts when the first
 * token of any sequence arrives and the tokens after it are counted (TG - 1 of the
 * TG per sequence). out: tokens/s, peak RSS growth (MiB). */
static void lib_run(int n, int contexts, double out[2]) {
    long rss0 = rss_kib();
    ta_context_params cp = ta_context_default_params();
    cp.n_threads = THREADS;
    ta_context *ctxs[MAXN] = {0};
    ta_context *one = NULL;
    job_t jobs[MAXN];
    memset(jobs, 0, sizeof jobs);
    ta_status st;
    if (!contexts) {
        cp.n_ctx = WINDOW * n;
        cp.n_seq_max = n;
        cp.kv_unified = UNIFIED;
        if ((st = ta_context_new(M, &cp, &one)) != TA_OK) die("context", st);
    } else {
        /* The cores shared out: more decode threads than cores make ggml's
         * spinning threads fight (4 contexts x 2 threads on 2 cores ran at a few
         * tokens/s). */
        cp.n_ctx = WINDOW;
        cp.n_threads = THREADS / n > 0 ? THREADS / n : 1;
    }
    for (int s = 0; s < n; s++) {
        jobs[s].gp = ta_gen_default_params();
        jobs[s].gp.temperature = 0;
        jobs[s].gp.max_tokens = 1;
        jobs[s].prompt = chatml(PROMPTS[s]);
        if (contexts) {
            if ((st = ta_context_new(M, &cp, &ctxs[s])) != TA_OK) die("context", st);
            jobs[s].ctx = ctxs[s];
            st = ta_context_generate(ctxs[s], jobs[s].prompt, &jobs[s].gp, NULL, NULL, NULL);
        } else {
            if ((st = ta_sequence_new(one, &jobs[s].seq)) != TA_OK) die("sequence", st);
            st = ta_sequence_generate(jobs[s].seq, jobs[s].prompt, &jobs[s].gp, NULL, NULL, NULL);
        }
        if (st != TA_OK) die("prompt", st);
        jobs[s].gp.max_tokens = TG;
    }
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, (unsigned)n + 1);
    pthread_t th[MAXN];
    for (int s = 0; s < n; s++) {
        jobs[s].go = &go;
        pthread_create(&th[s], NULL, run_job, &jobs[s]);
    }
    pthread_barrier_wait(&go);
    double t0 = 0, end = 0;
    unsigned tokens = 0;
    for (int s = 0; s < n; s++) {
        pthread_join(th[s], NULL);
        tokens += jobs[s].res.n_generated_tokens - 1;
        if (jobs[s].end > end) end = jobs[s].end;
        if (t0 == 0 || jobs[s].first < t0) t0 = jobs[s].first;
    }
    out[0] = tokens * 1000.0 / (end - t0);
    out[1] = (peak_rss_kib() - rss0) / 1024.0;
    if (tokens != (unsigned)(n * (TG - 1))) fprintf(stderr, "note: %u of %d tokens (an end-of-generation came first)\n", tokens, n * TG);
    for (int s = 0; s < n; s++) {
        ta_sequence_free(jobs[s].seq);
        ta_context_free(ctxs[s]);
        free((void *)jobs[s].prompt);
    }
    ta_context_free(one);
}

static void lib_seqs(int n, double out[2]) { lib_run(n, 0, out); }
static void lib_unified(int n, double out[2]) {
    UNIFIED = true;
    lib_run(n, 0, out);
}
static void lib_ctxs(int n, double out[2]) { lib_run(n, 1, out); }

/* ------------------------------------------------------------ state and prefix */

typedef struct {
    double first;
} ttft_t;

static bool ttft_cb(void *ud, const char *text, size_t len) {
    (void)text;
    (void)len;
    ttft_t *t = ud;
    if (t->first == 0) t->first = now_ms();
    return true;
}

static char *long_conversation(void) {
    const char *para = "The museum's archive keeps letters, maps and photographs from three centuries; "
                       "each item has a catalogue number, a date, a short description and a shelf. ";
    size_t n = strlen(para) * 60 + 256;
    char *doc = malloc(n);
    doc[0] = 0;
    for (int i = 0; i < 60; i++) strcat(doc, para);
    char *conv = malloc(n + 256);
    snprintf(conv, n + 256,
             "<|im_start|>user\n%s\nWhat does the archive keep?<|im_end|>\n<|im_start|>assistant\n"
             "Letters, maps and photographs.<|im_end|>\n",
             doc);
    free(doc);
    return conv;
}

static const char *NEXT_TURN = "<|im_start|>user\nHow is each item described?<|im_end|>\n<|im_start|>assistant\n";

static char STATE_FILE[256];

/* Save the conversation's state (untimed); out[0] = its token count. */
static void state_save(int n, double out[2]) {
    (void)n;
    ta_context_params cp = ta_context_default_params();
    cp.n_threads = THREADS;
    ta_context *c;
    ta_status st;
    if ((st = ta_context_new(M, &cp, &c)) != TA_OK) die("context", st);
    char *conv = long_conversation();
    ta_gen_params gp = ta_gen_default_params();
    gp.max_tokens = 1;
    gp.temperature = 0;
    if ((st = ta_context_generate(c, conv, &gp, NULL, NULL, NULL)) != TA_OK) die("generate", st);
    size_t nt = 0;
    if ((st = ta_context_state_save(c, STATE_FILE, &nt)) != TA_OK) die("save", st);
    out[0] = (double)nt;
    free(conv);
    ta_context_free(c);
}

/* Time to the first token of the next turn in a fresh context: restoring the
 * state file (restore = 1) or reading the whole conversation (restore = 0). */
static void next_turn(int restore, double out[2]) {
    ta_context_params cp = ta_context_default_params();
    cp.n_threads = THREADS;
    ta_context *c;
    ta_status st;
    char *conv = long_conversation();
    size_t n = strlen(conv) + strlen(NEXT_TURN) + 1;
    char *prompt = malloc(n);
    snprintf(prompt, n, "%s%s", conv, NEXT_TURN);
    double t0 = now_ms();
    if ((st = ta_context_new(M, &cp, &c)) != TA_OK) die("context", st);
    if (restore && (st = ta_context_state_load(c, STATE_FILE, NULL)) != TA_OK) die("load", st);
    ta_gen_params gp = ta_gen_default_params();
    gp.max_tokens = 1;
    gp.temperature = 0;
    ttft_t t = {0};
    ta_gen_result r;
    if ((st = ta_context_generate(c, prompt, &gp, ttft_cb, &t, &r)) != TA_OK) die("generate", st);
    out[0] = t.first - t0;
    out[1] = r.n_reused_tokens;
    free(conv);
    free(prompt);
    ta_context_free(c);
}

/* Four sequences answer four questions about one document, started at once:
 * shared = 1 puts the document first (a common 1000-token prefix), 0 puts each
 * question first (nothing in common). out[0] = ms until all have answered. */
static void four_answers(int shared, double out[2]) {
    const char *para = "Chapter notes: the river town grew around a mill, a bridge and a market square; "
                       "its families traded wool, grain and timber with the villages upstream. ";
    size_t plen = strlen(para);
    int reps = 1;
    /* ~1000 tokens of document. */
    ta_context_params cp = ta_context_default_params();
    cp.n_threads = THREADS;
    cp.n_ctx = 4 * 2048;
    cp.n_seq_max = 4;
    ta_context *c;
    ta_status st;
    if ((st = ta_context_new(M, &cp, &c)) != TA_OK) die("context", st);
    char *doc = NULL;
    for (;; reps++) {
        free(doc);
        doc = malloc(plen * reps + 1);
        doc[0] = 0;
        for (int i = 0; i < reps; i++) strcat(doc, para);
        size_t nt = 0;
        ta_model_tokenize(M, doc, strlen(doc), false, false, NULL, 0, &nt);
        if (nt >= 1000) break;
    }
    static const char *Q[4] = {"What did the town grow around?", "What did families trade?",
                               "Where were the villages?", "Summarise the notes."};
    job_t jobs[4];
    memset(jobs, 0, sizeof jobs);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 5);
    pthread_t th[4];
    for (int s = 0; s < 4; s++) {
        size_t n = strlen(doc) + 256;
        char *p = malloc(n);
        if (shared)
            snprintf(p, n, "<|im_start|>user\n%s\n%s<|im_end|>\n<|im_start|>assistant\n", doc, Q[s]);
        else
            snprintf(p, n, "<|im_start|>user\n%s\n%s<|im_end|>\n<|im_start|>assistant\n", Q[s], doc);
        jobs[s].prompt = p;
        jobs[s].gp = ta_gen_default_params();
        jobs[s].gp.temperature = 0;
        jobs[s].gp.max_tokens = 16;
        jobs[s].go = &go;
        if ((st = ta_sequence_new(c, &jobs[s].seq)) != TA_OK) die("sequence", st);
        pthread_create(&th[s], NULL, run_job, &jobs[s]);
    }
    pthread_barrier_wait(&go);
    double t0 = now_ms(), end = t0;
    unsigned reused = 0;
    for (int s = 0; s < 4; s++) {
        pthread_join(th[s], NULL);
        if (jobs[s].end > end) end = jobs[s].end;
        reused += jobs[s].res.n_reused_tokens;
        ta_sequence_free(jobs[s].seq);
        free((void *)jobs[s].prompt);
    }
    out[0] = end - t0;
    out[1] = reused;
    free(doc);
    ta_context_free(c);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf THREADS\n", argv[0]);
        return 2;
    }
    MODEL = argv[1];
    THREADS = atoi(argv[2]);
    ta_status st;
    ta_model_params mp = ta_model_default_params();
    if ((st = ta_model_load(MODEL, &mp, &M)) != TA_OK) die("load", st);
    printf("threads=%d\ntg_tokens_per_sequence=%d\n", THREADS, TG);

    /* parallelN_vs_ref is a ratio of ratios, (libN/lib1) / (refN/ref1): four
     * measurements, so the machine's drift between them moves it directly. Each
     * round therefore measures all four back to back, alternating the order
     * (ref1 lib1 libN refN, then lib1 ref1 refN libN) so that a steady drift
     * favours each side equally, and the figure is the median of the rounds'
     * ratios. ROUNDS_N rounds per N. */
    double ref1_all[ROUNDS_N * 3], lib1_all[ROUNDS_N * 3];
    int n1 = 0;
    static const int NS[3] = {2, 4, 8};
    for (int i = 0; i < 3; i++) {
        int n = NS[i];
        double vs[ROUNDS_N], tps_vs[ROUNDS_N], refn[ROUNDS_N], libn[ROUNDS_N];
        for (int r = 0; r < ROUNDS_N; r++) {
            double r1[2], l1[2], rn[2], ln[2];
            if (r % 2 == 0) {
                in_child(ref_parallel, 1, r1);
                in_child(lib_seqs, 1, l1);
                in_child(lib_seqs, n, ln);
                in_child(ref_parallel, n, rn);
            } else {
                in_child(lib_seqs, 1, l1);
                in_child(ref_parallel, 1, r1);
                in_child(ref_parallel, n, rn);
                in_child(lib_seqs, n, ln);
            }
            vs[r] = (ln[0] / l1[0]) / (rn[0] / r1[0]);
            tps_vs[r] = ln[0] / rn[0];
            refn[r] = rn[0], libn[r] = ln[0];
            ref1_all[n1] = r1[0], lib1_all[n1++] = l1[0];
            fprintf(stderr, "round %d, %d seq: ref1 %.1f lib1 %.1f ref%d %.1f lib%d %.1f -> vs_ref %.3f\n", r, n, r1[0],
                    l1[0], n, rn[0], n, ln[0], vs[r]);
        }
        qsort(vs, ROUNDS_N, sizeof *vs, cmp_d);
        qsort(tps_vs, ROUNDS_N, sizeof *tps_vs, cmp_d);
        qsort(refn, ROUNDS_N, sizeof *refn, cmp_d);
        qsort(libn, ROUNDS_N, sizeof *libn, cmp_d);
        printf("ref_%dseq_tps=%.1f\nlib_%dseq_tps=%.1f\n", n, refn[ROUNDS_N / 2], n, libn[ROUNDS_N / 2]);
        printf("parallel%d_ratio=%.3f\nparallel%d_ref_ratio=%.3f\n", n,
               libn[ROUNDS_N / 2] / median_of(lib1_all + n1 - ROUNDS_N, ROUNDS_N), n,
               refn[ROUNDS_N / 2] / median_of(ref1_all + n1 - ROUNDS_N, ROUNDS_N));
        printf("parallel%d_vs_ref=%.3f\nparallel%d_vs_ref_min=%.3f\nparallel%d_vs_ref_max=%.3f\n", n,
               vs[ROUNDS_N / 2], n, vs[0], n, vs[ROUNDS_N - 1]);
        printf("parallel%d_tps_vs_ref=%.3f\n", n, tps_vs[ROUNDS_N / 2]);
    }
    double lib1[2] = {median_of(lib1_all, n1), 0};
    printf("ref_1seq_tps=%.1f\nlib_1seq_tps=%.1f\n", median_of(ref1_all, n1), lib1[0]);
    /* The other KV layout, for the record: one cache that every sequence attends over. */
    for (int i = 1; i < 3; i++) {
        int n = NS[i];
        double split[2], unified[2];
        paired(lib_seqs, lib_unified, n, split, unified);
        printf("parallel%d_unified_ratio=%.3f\n", n, unified[0] / lib1[0]);
    }
    double seqs[2], ctxs[2];
    paired(lib_seqs, lib_ctxs, 4, seqs, ctxs);
    printf("four_sequences_tps=%.1f\nfour_sequences_rss_mib=%.1f\nfour_contexts_tps=%.1f\nfour_contexts_rss_mib=%.1f\n",
           seqs[0], seqs[1], ctxs[0], ctxs[1]);
    printf("parallel4_vs_contexts=%.3f\n", seqs[0] / ctxs[0]);

    snprintf(STATE_FILE, sizeof STATE_FILE, "/tmp/tabagent-bench-%d.kv", (int)getpid());
    double saved[2], warm[2], cold[2];
    in_child(state_save, 0, saved);
    in_child(next_turn, 1, warm);
    in_child(next_turn, 0, cold);
    unlink(STATE_FILE);
    printf("state_tokens=%.0f\nstate_ttft_ms=%.1f\nreread_ttft_ms=%.1f\nstate_reused_tokens=%.0f\n", saved[0],
           warm[0], cold[0], warm[1]);
    printf("state_ttft_ratio=%.3f\n", warm[0] / cold[0]);

    double sh[2], nosh[2];
    in_child(four_answers, 1, sh);
    in_child(four_answers, 0, nosh);
    printf("shared_prefix_ms=%.1f\nunshared_prefix_ms=%.1f\nshared_prefix_reused_tokens=%.0f\n", sh[0], nosh[0], sh[1]);
    printf("shared_prefix_ratio=%.3f\n", sh[0] / nosh[0]);
    ta_model_free(M);
    return 0;
}
