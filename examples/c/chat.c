/* Stream a chat reply from a GGUF model.
 *
 *   chat MODEL.gguf "your question" [max_tokens]
 *
 * The reply goes to stdout as it is generated; errors go to stderr with the
 * library's message. Build: make -C examples/c (after cargo build --release). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tabagent.h"

static bool on_text(void *user_data, const char *text, size_t len) {
    (void)user_data;
    fwrite(text, 1, len, stdout); /* text is not NUL-terminated */
    fflush(stdout);
    return true; /* false would stop generation (TA_ERR_CANCELLED) */
}

static int fail(const char *what, ta_status st) {
    fprintf(stderr, "%s failed: %s (%s)\n", what, ta_last_error(), ta_status_str(st));
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf PROMPT [MAX_TOKENS]\n", argv[0]);
        return 2;
    }
    if (ta_abi_version() != TA_ABI_VERSION) {
        fprintf(stderr, "library ABI %u, header ABI %u\n", ta_abi_version(), TA_ABI_VERSION);
        return 1;
    }

    ta_model *model = NULL;
    ta_status st = ta_model_load(argv[1], NULL, &model);
    if (st != TA_OK) return fail("ta_model_load", st);

    ta_context_params cp = ta_context_default_params();
    cp.n_ctx = 2048;
    ta_context *ctx = NULL;
    st = ta_context_new(model, &cp, &ctx);
    if (st != TA_OK) {
        ta_model_free(model);
        return fail("ta_context_new", st);
    }
    /* The context keeps the model alive; our reference can go now. */
    ta_model_free(model);

    ta_chat_message msgs[] = {
        {.role = "system", .content = "You are a helpful assistant. Answer briefly."},
        {.role = "user", .content = argv[2]},
    };
    ta_gen_params gp = ta_gen_default_params();
    gp.temperature = 0.0f; /* greedy: reproducible output */
    gp.max_tokens = argc > 3 ? atoi(argv[3]) : 128;

    ta_gen_result res;
    st = ta_context_chat(ctx, msgs, 2, &gp, on_text, NULL, &res);
    printf("\n");
    fflush(stdout); /* the reply's last line before the stats on stderr */
    if (st != TA_OK) {
        ta_context_free(ctx);
        return fail("ta_context_chat", st);
    }
    fprintf(stderr, "[%u prompt tokens in %.0f ms, %u generated in %.0f ms (%.1f tok/s)]\n",
            res.n_prompt_tokens, res.prompt_ms, res.n_generated_tokens, res.gen_ms,
            res.gen_ms > 0 ? res.n_generated_tokens * 1000.0 / res.gen_ms : 0.0);
    ta_context_free(ctx);
    return 0;
}
