/* The library never writes to stdout or stderr on its own: this program drives
 * loads (good and bad), generation, a bad grammar and a cancelled load without a
 * log callback. The Makefile runs it and fails if anything appears on either
 * stream; the program itself prints nothing unless a check fails (exit code). */
#include <stdio.h>
#include <string.h>

#include "tabagent.h"

static bool count_cb(void *ud, const char *text, size_t len) {
    (void)text;
    *(size_t *)ud += len;
    return true;
}

static bool stop_load(void *ud, float p) {
    (void)ud;
    (void)p;
    return false;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int bad = 0;
    ta_model *m = NULL;
    if (ta_model_load(argv[2], NULL, &m) != TA_ERR_BAD_MODEL) bad |= 1;
    ta_model_params mp = ta_model_default_params();
    mp.progress_callback = stop_load;
    if (ta_model_load(argv[1], &mp, &m) != TA_ERR_CANCELLED) bad |= 2;
    if (ta_model_load(argv[1], NULL, &m) != TA_OK) return 3;
    ta_context *c = NULL;
    if (ta_context_new(m, NULL, &c) != TA_OK) return 4;
    size_t n = 0;
    ta_gen_params gp = ta_gen_default_params();
    gp.max_tokens = 8;
    if (ta_context_generate(c, "Hello", &gp, count_cb, &n, NULL) != TA_OK || n == 0) bad |= 8;
    gp.grammar = "root ::= (";
    if (ta_context_generate(c, "Hello", &gp, count_cb, &n, NULL) != TA_ERR_INVALID_ARG) bad |= 16;
    gp.grammar = "root ::= undefined-rule";
    if (ta_context_generate(c, "Hello", &gp, count_cb, &n, NULL) != TA_ERR_INVALID_ARG) bad |= 32;
    ta_context_free(c);
    ta_model_free(m);
    return bad ? 10 + bad : 0;
}
