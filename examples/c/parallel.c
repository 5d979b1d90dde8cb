/* Answer several questions at once on one model and one context: each question
 * gets a sequence of the context and a thread; their decodes share batches.
 *
 *   parallel MODEL.gguf "question 1" "question 2" ... (up to 8)
 *
 * Each answer is printed whole when it is done, with its timings. Build:
 * make -C examples/c (after cargo build --release). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tabagent.h"

#define MAX_Q 8

typedef struct {
    ta_sequence *seq;
    const char *question;
    char answer[8192];
    size_t len;
    ta_gen_result res;
    ta_status st;
} job;

static bool on_text(void *user_data, const char *text, size_t len) {
    job *j = user_data;
    if (j->len + len < sizeof j->answer) {
        memcpy(j->answer + j->len, text, len); /* text is not NUL-terminated */
        j->len += len;
    }
    return true;
}

static void *answer(void *arg) {
    job *j = arg;
    ta_chat_message msg = {.role = "user", .content = j->question};
    ta_gen_params gp = ta_gen_default_params();
    gp.temperature = 0; /* greedy */
    gp.max_tokens = 128;
    j->st = ta_sequence_chat(j->seq, &msg, 1, &gp, on_text, j, &j->res);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3 || argc - 2 > MAX_Q) {
        fprintf(stderr, "usage: %s MODEL.gguf QUESTION... (1 to %d questions)\n", argv[0], MAX_Q);
        return 2;
    }
    int n = argc - 2;
    ta_model *model;
    ta_status st = ta_model_load(argv[1], NULL, &model);
    if (st != TA_OK) {
        fprintf(stderr, "load failed: %s\n", ta_last_error());
        return 1;
    }
    ta_context_params cp = ta_context_default_params();
    cp.n_seq_max = (uint32_t)n;
    cp.n_ctx = 2048 * (uint32_t)n; /* 2048 tokens per conversation */
    ta_context *ctx;
    if ((st = ta_context_new(model, &cp, &ctx)) != TA_OK) {
        fprintf(stderr, "context failed: %s\n", ta_last_error());
        return 1;
    }
    job *jobs = calloc((size_t)n, sizeof *jobs);
    pthread_t threads[MAX_Q];
    for (int i = 0; i < n; i++) {
        jobs[i].question = argv[i + 2];
        if ((st = ta_sequence_new(ctx, &jobs[i].seq)) != TA_OK) {
            fprintf(stderr, "sequence failed: %s\n", ta_last_error());
            return 1;
        }
        pthread_create(&threads[i], NULL, answer, &jobs[i]);
    }
    int failed = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(threads[i], NULL);
        job *j = &jobs[i];
        if (j->st != TA_OK) {
            fprintf(stderr, "question %d failed: %s\n", i + 1, ta_status_str(j->st));
            failed = 1;
        }
        printf("Q%d: %s\nA%d: %.*s\n   (%u tokens, %.0f ms)\n\n", i + 1, j->question, i + 1, (int)j->len,
               j->answer, j->res.n_generated_tokens, j->res.prompt_ms + j->res.gen_ms);
        ta_sequence_free(j->seq);
    }
    free(jobs);
    ta_context_free(ctx);
    ta_model_free(model);
    return failed;
}
