/* Loads every model file named on the command line in this one process (the
 * in-process path: validator, then llama.cpp), and for those that load, creates
 * a context and generates two tokens. Built with AddressSanitizer by `make
 * test-corpus` and run over a sample of the hostile-model corpus: any crash,
 * abort or sanitizer report fails the run. Nothing may be printed by the library.
 *
 *   test_corpus FILE.gguf...
 */
#include <stdio.h>
#include <string.h>

#include "tabagent.h"

static bool ignore(void *ud, const char *text, size_t len) {
    (void)ud;
    (void)text;
    (void)len;
    return true;
}

int main(int argc, char **argv) {
    int loaded = 0, refused = 0, unnamed = 0;
    for (int i = 1; i < argc; i++) {
        ta_model *m = NULL;
        ta_status st = ta_model_load(argv[i], NULL, &m);
        if (st != TA_OK) {
            refused++;
            /* The message must name the file. */
            if (strstr(ta_last_error(), argv[i]) == NULL) {
                fprintf(stderr, "%s: message does not name the file: %s\n", argv[i], ta_last_error());
                unnamed++;
            }
            continue;
        }
        loaded++;
        ta_context_params cp = ta_context_default_params();
        cp.n_ctx = 128;
        cp.n_threads = 1;
        ta_context *c = NULL;
        if (ta_context_new(m, &cp, &c) == TA_OK) {
            ta_gen_params gp = ta_gen_default_params();
            gp.temperature = 0;
            gp.max_tokens = 2;
            ta_gen_result r;
            (void)ta_context_generate(c, "Hello", &gp, ignore, NULL, &r);
            ta_context_free(c);
        }
        ta_model_free(m);
    }
    fprintf(stderr, "test_corpus: %d files: %d loaded, %d refused; %d passed, %d failed\n", argc - 1,
            loaded, refused, argc - 1 - unnamed, unnamed);
    return unnamed ? 1 : 0;
}
