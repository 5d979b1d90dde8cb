// A thin C++ layer around the llama.cpp calls that can throw. A C++ exception that
// unwinds into Rust aborts the process ("Rust cannot catch foreign exceptions"), so
// each call here catches everything and returns a status with the message instead.
//
// Every function returns 0 on success, 1 when a C++ exception was caught and 2 when
// that exception was std::bad_alloc; on failure `err` (capacity `err_len`, always
// NUL-terminated) holds the exception's text and the out-parameters are untouched.

#include "llama.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <stdexcept>

namespace {

void set_err(char *err, size_t err_len, const char *what) {
    if (err == nullptr || err_len == 0) {
        return;
    }
    std::snprintf(err, err_len, "%s", what != nullptr ? what : "unknown C++ exception");
}

template <typename F> int guarded(char *err, size_t err_len, F &&f) {
    try {
        f();
        return 0;
    } catch (const std::bad_alloc &e) {
        set_err(err, err_len, e.what());
        return 2;
    } catch (const std::exception &e) {
        set_err(err, err_len, e.what());
        return 1;
    } catch (...) {
        set_err(err, err_len, "a C++ exception that is not a std::exception");
        return 1;
    }
}

} // namespace

extern "C" {

int tas_model_load(const char *path, llama_model_params params, llama_model **out, char *err,
                   size_t err_len) {
    return guarded(err, err_len, [&] { *out = llama_model_load_from_file(path, params); });
}

int tas_init_from_model(llama_model *model, llama_context_params params, llama_context **out,
                        char *err, size_t err_len) {
    return guarded(err, err_len, [&] { *out = llama_init_from_model(model, params); });
}

int tas_tokenize(const llama_vocab *vocab, const char *text, int32_t text_len, llama_token *tokens,
                 int32_t n_tokens_max, bool add_special, bool parse_special, int32_t *ret,
                 char *err, size_t err_len) {
    return guarded(err, err_len, [&] {
        *ret = llama_tokenize(vocab, text, text_len, tokens, n_tokens_max, add_special,
                              parse_special);
    });
}

int tas_token_to_piece(const llama_vocab *vocab, llama_token token, char *buf, int32_t length,
                       int32_t lstrip, bool special, int32_t *ret, char *err, size_t err_len) {
    return guarded(err, err_len, [&] {
        *ret = llama_token_to_piece(vocab, token, buf, length, lstrip, special);
    });
}

int tas_detokenize(const llama_vocab *vocab, const llama_token *tokens, int32_t n_tokens,
                   char *text, int32_t text_len_max, bool remove_special, bool unparse_special,
                   int32_t *ret, char *err, size_t err_len) {
    return guarded(err, err_len, [&] {
        *ret = llama_detokenize(vocab, tokens, n_tokens, text, text_len_max, remove_special,
                                unparse_special);
    });
}

int tas_chat_apply_template(const char *tmpl, const llama_chat_message *chat, size_t n_msg,
                            bool add_ass, char *buf, int32_t length, int32_t *ret, char *err,
                            size_t err_len) {
    return guarded(err, err_len, [&] {
        *ret = llama_chat_apply_template(tmpl, chat, n_msg, add_ass, buf, length);
    });
}

int tas_decode(llama_context *ctx, llama_batch batch, int32_t *ret, char *err, size_t err_len) {
    return guarded(err, err_len, [&] { *ret = llama_decode(ctx, batch); });
}

int tas_encode(llama_context *ctx, llama_batch batch, int32_t *ret, char *err, size_t err_len) {
    return guarded(err, err_len, [&] { *ret = llama_encode(ctx, batch); });
}

int tas_sampler_sample(llama_sampler *smpl, llama_context *ctx, int32_t idx, llama_token *out,
                       char *err, size_t err_len) {
    return guarded(err, err_len, [&] { *out = llama_sampler_sample(smpl, ctx, idx); });
}

int tas_sampler_init_grammar(const llama_vocab *vocab, const char *grammar, const char *root,
                             llama_sampler **out, char *err, size_t err_len) {
    return guarded(err, err_len,
                   [&] { *out = llama_sampler_init_grammar(vocab, grammar, root); });
}

int tas_memory_seq_rm(llama_memory_t mem, llama_seq_id seq, llama_pos p0, llama_pos p1, bool *ret,
                      char *err, size_t err_len) {
    return guarded(err, err_len, [&] { *ret = llama_memory_seq_rm(mem, seq, p0, p1); });
}

int tas_memory_seq_cp(llama_memory_t mem, llama_seq_id src, llama_seq_id dst, llama_pos p0,
                      llama_pos p1, char *err, size_t err_len) {
    return guarded(err, err_len, [&] { llama_memory_seq_cp(mem, src, dst, p0, p1); });
}

int tas_memory_seq_add(llama_memory_t mem, llama_seq_id seq, llama_pos p0, llama_pos p1,
                       llama_pos delta, char *err, size_t err_len) {
    return guarded(err, err_len, [&] { llama_memory_seq_add(mem, seq, p0, p1, delta); });
}

int tas_state_seq_get_data(llama_context *ctx, llama_seq_id seq, uint8_t *dst, size_t size,
                           size_t *ret, char *err, size_t err_len) {
    return guarded(err, err_len, [&] {
        *ret = dst == nullptr ? llama_state_seq_get_size(ctx, seq)
                              : llama_state_seq_get_data(ctx, dst, size, seq);
    });
}

int tas_state_seq_set_data(llama_context *ctx, llama_seq_id seq, const uint8_t *src, size_t size,
                           size_t *ret, char *err, size_t err_len) {
    return guarded(err, err_len, [&] { *ret = llama_state_seq_set_data(ctx, src, size, seq); });
}

// Used by a test to prove that an exception ends as a status, not an abort.
int tas_debug_throw(int what, char *err, size_t err_len) {
    return guarded(err, err_len, [&] {
        if (what == 2) {
            throw std::bad_alloc();
        }
        throw std::out_of_range("tas_debug_throw");
    });
}

} // extern "C"
