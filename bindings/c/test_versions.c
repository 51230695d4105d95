/*
 * Struct versioning, both ways. This file is compiled twice:
 *
 * - against an OLDER copy of peftkit.h (make_older_header.py: every struct without its last field), as a
 *   program built before those fields existed: the library must fill, read and write only the caller's
 *   bytes (a canary after each struct stays intact) and use the defaults of the fields the caller lacks;
 * - against the current header with -DPEFTKIT_TEST_NEWER, as a program built against a NEWER header whose
 *   structs have 8 more bytes: accepted while those bytes are zero, PEFTKIT_ERR_UNSUPPORTED otherwise,
 *   output tails set to zero, nothing written past them.
 *
 * Either way it also checks that no struct has padding at its end (appending a field must change the size).
 */
#define _POSIX_C_SOURCE 200809L

#include "peftkit.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

static int n_passed = 0;
static int n_failed = 0;

static void check(int cond, const char *what) {
    if (cond) {
        n_passed++;
        printf("ok   %s\n", what);
    } else {
        n_failed++;
        printf("FAIL %s (last error: %s)\n", what, peftkit_last_error());
    }
}

#define CANARY 0x5A
#define EXTRA 8 /* the bytes a newer header added to each struct (-DPEFTKIT_TEST_NEWER) */

/* A struct followed by bytes the library must never touch. With PEFTKIT_TEST_NEWER the first EXTRA of them
 * are the newer header's fields: the caller's struct_size covers them. */
#define WRAP(T)                                                                                                \
    struct {                                                                                                   \
        T s;                                                                                                   \
        unsigned char after[EXTRA + 32];                                                                       \
    }

#ifdef PEFTKIT_TEST_NEWER
#define CALLER_SIZE(w) (sizeof (w).s + EXTRA)
#define GUARD_FROM EXTRA
#else
#define CALLER_SIZE(w) (sizeof (w).s)
#define GUARD_FROM 0
#endif

static int intact(const unsigned char *after, size_t n) {
    for (size_t i = GUARD_FROM; i < n; i++)
        if (after[i] != CANARY) return 0;
    return 1;
}

#ifdef PEFTKIT_TEST_NEWER
static int zero(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0) return 0;
    return 1;
}
#endif

#define PREPARE(w)                                                                                             \
    do {                                                                                                       \
        memset(&(w), 0xAB, sizeof(w));                                                                         \
        memset((w).after, CANARY, sizeof (w).after);                                                           \
    } while (0)

/* No trailing padding: the struct ends where its last field ends. */
#define NO_PADDING(T, last) check(offsetof(T, last) + sizeof(((T *)0)->last) == sizeof(T), #T " has no trailing padding")

int main(void) {
#ifdef PEFTKIT_TEST_NEWER
    printf("# structs from a NEWER header (%d more bytes each)\n", EXTRA);
#else
    printf("# structs from an OLDER header (each without its last field)\n");
#endif
#ifdef PEFTKIT_TEST_NEWER
    NO_PADDING(peftkit_model_config, mlp_bias);
    NO_PADDING(peftkit_train_config, activation_memory);
    NO_PADDING(peftkit_train_result, tokens);
    NO_PADDING(peftkit_generate_config, stop_strings);
    NO_PADDING(peftkit_generate_result, stop_byte_offset);
    NO_PADDING(peftkit_tokenizer_info, adds_bos);
    NO_PADDING(peftkit_load_config, progress_user);
    NO_PADDING(peftkit_forward_options, row_tokens);
#else
    NO_PADDING(peftkit_model_config, output_bias);
    NO_PADDING(peftkit_train_config, gradient_checkpointing);
    NO_PADDING(peftkit_train_result, step);
    NO_PADDING(peftkit_generate_config, reserved0);
    NO_PADDING(peftkit_generate_result, stop_index);
    NO_PADDING(peftkit_tokenizer_info, eot_id);
    NO_PADDING(peftkit_load_config, progress);
    NO_PADDING(peftkit_forward_options, row_losses);
#endif

    /* Model config: init fills only the caller's bytes; create reads them and defaults the rest. */
    WRAP(peftkit_model_config) mc;
    PREPARE(mc);
    check(peftkit_model_config_init_sized(&mc.s, CALLER_SIZE(mc)) == PEFTKIT_OK, "model_config_init_sized");
    check(mc.s.struct_size == CALLER_SIZE(mc), "model_config_init sets the caller's struct_size");
    check(intact(mc.after, sizeof mc.after), "model_config_init wrote nothing past the caller's struct");
#ifdef PEFTKIT_TEST_NEWER
    check(zero(mc.after, EXTRA), "model_config_init zeroes the newer header's fields");
#endif
    check(mc.s.vocab_size == 256 && mc.s.hidden_size == 64 && mc.s.qkv_bias == -1, "model_config defaults");
    peftkit_model *m = NULL;
    check(peftkit_model_create(&mc.s, 7, &m) == PEFTKIT_OK && m != NULL, "model_create with the caller's struct");
    if (m == NULL) return 1;

    WRAP(peftkit_model_config) got;
    PREPARE(got);
    got.s.struct_size = (uint32_t)CALLER_SIZE(got);
#ifdef PEFTKIT_TEST_NEWER
    memset(got.after, 0xEE, EXTRA);
#endif
    check(peftkit_model_get_config(m, &got.s) == PEFTKIT_OK, "model_get_config into the caller's struct");
    check(got.s.struct_size == CALLER_SIZE(got) && got.s.hidden_size == 64 && got.s.num_kv_heads == 4 &&
              got.s.qkv_bias == 1 && got.s.output_bias == 1,
          "model_get_config: fields the caller has, struct_size unchanged");
    check(intact(got.after, sizeof got.after), "model_get_config wrote nothing past the caller's struct");
#ifdef PEFTKIT_TEST_NEWER
    check(zero(got.after, EXTRA), "model_get_config zeroes the fields it does not know");
#endif

    /* Train config and result. */
    check(peftkit_adapter_attach_json(m, "a", "{\"peft_type\": \"LORA\", \"r\": 2, \"target_modules\": [\"c_attn\"]}") ==
              PEFTKIT_OK && peftkit_adapter_set_active(m, "a") == PEFTKIT_OK,
          "attach a LoRA adapter");
    WRAP(peftkit_train_config) tc;
    PREPARE(tc);
    check(peftkit_train_config_init_sized(&tc.s, CALLER_SIZE(tc)) == PEFTKIT_OK && intact(tc.after, sizeof tc.after),
          "train_config_init_sized: nothing past the caller's struct");
    WRAP(peftkit_train_result) tr;
    PREPARE(tr);
    tr.s.struct_size = (uint32_t)CALLER_SIZE(tr);
    int32_t ids[2 * 8];
    for (int i = 0; i < 16; i++) ids[i] = 'a' + i % 7;
    check(peftkit_train_step(m, ids, NULL, 2, 8, &tc.s, &tr.s) == PEFTKIT_OK, "train_step with the caller's structs");
    check(tr.s.struct_size == CALLER_SIZE(tr) && tr.s.step == 1 && tr.s.loss > 0.0f && tr.s.learning_rate > 0.0f,
          "train_result: fields the caller has");
    check(intact(tr.after, sizeof tr.after), "train_step wrote nothing past the caller's result");
    {
        /* The train config of the layout before lora_plus_ratio and gradient_checkpointing (ending at
           micro_batch_size) stays accepted: the fields after it take their defaults. */
        peftkit_train_config old;
        peftkit_train_config_init(&old);
        size_t old_size = offsetof(peftkit_train_config, micro_batch_size) + sizeof old.micro_batch_size;
        check(peftkit_train_config_init_sized(&old, old_size) == PEFTKIT_OK && old.struct_size == old_size,
              "train_config_init_sized: the pre-LoRA+ size");
        check(peftkit_train_step(m, ids, NULL, 2, 8, &old, NULL) == PEFTKIT_OK, "train_step with the pre-LoRA+ train_config");
    }

    /* Generate config. */
    WRAP(peftkit_generate_config) gc;
    PREPARE(gc);
    check(peftkit_generate_config_init_sized(&gc.s, CALLER_SIZE(gc)) == PEFTKIT_OK && intact(gc.after, sizeof gc.after),
          "generate_config_init_sized: nothing past the caller's struct");
    gc.s.max_new_tokens = 4;
    int32_t out[4], n = 0;
    check(peftkit_generate(m, ids, 3, &gc.s, out, 4, &n, NULL, NULL) == PEFTKIT_OK && n == 4,
          "generate with the caller's config");
    WRAP(peftkit_generate_result) gr;
    PREPARE(gr);
    gr.s.struct_size = (uint32_t)CALLER_SIZE(gr);
#ifdef PEFTKIT_TEST_NEWER
    memset(gr.after, 0xEE, EXTRA);
#endif
    check(peftkit_generate_ex(m, ids, 3, &gc.s, out, 4, &gr.s, NULL, NULL) == PEFTKIT_OK && gr.s.n_tokens == 4 &&
              gr.s.finish_reason == PEFTKIT_FINISH_LENGTH && gr.s.struct_size == CALLER_SIZE(gr),
          "generate_ex into the caller's result struct");
    check(intact(gr.after, sizeof gr.after), "generate_ex wrote nothing past the caller's result");
#ifdef PEFTKIT_TEST_NEWER
    check(zero(gr.after, EXTRA), "generate_ex zeroes the result fields it does not know");
#endif
#ifndef PEFTKIT_TEST_NEWER
    gc.s.n_stop_strings = 1; /* stop_strings is past this caller's struct: the library's default, NULL */
    check(peftkit_generate(m, ids, 3, &gc.s, out, 4, &n, NULL, NULL) == PEFTKIT_ERR_INVALID_ARGUMENT,
          "generate: n_stop_strings 1 without the stop_strings field -> INVALID_ARGUMENT");
#endif

    /* Tokenizer info. */
    WRAP(peftkit_tokenizer_info) ti;
    PREPARE(ti);
    ti.s.struct_size = (uint32_t)CALLER_SIZE(ti);
    check(peftkit_tokenizer_get_info(m, &ti.s) == PEFTKIT_OK && ti.s.has_tokenizer == 0 && ti.s.eos_id == -1,
          "tokenizer_get_info into the caller's struct");
    check(intact(ti.after, sizeof ti.after), "tokenizer_get_info wrote nothing past the caller's struct");

    /* Forward options: init fills only the caller's bytes; forward_ex reads them. */
    WRAP(peftkit_forward_options) fo;
    PREPARE(fo);
    check(peftkit_forward_options_init_sized(&fo.s, CALLER_SIZE(fo)) == PEFTKIT_OK && intact(fo.after, sizeof fo.after) &&
              fo.s.logits_mode == PEFTKIT_LOGITS_ALL && fo.s.logits == NULL,
          "forward_options_init_sized: defaults, nothing past the caller's struct");
    float last[2 * 256], rows[2];
    fo.s.logits_mode = PEFTKIT_LOGITS_LAST;
    fo.s.logits = last;
    fo.s.logits_capacity = 2 * 256;
    fo.s.row_losses = rows;
    float loss = -1;
    check(peftkit_forward_ex(m, ids, NULL, 2, 8, &fo.s, &loss, NULL) == PEFTKIT_OK && loss > 0 && rows[0] > 0,
          "forward_ex with the caller's options");

    /* Load config. */
    WRAP(peftkit_load_config) lc;
    PREPARE(lc);
    check(peftkit_load_config_init_sized(&lc.s, CALLER_SIZE(lc)) == PEFTKIT_OK && intact(lc.after, sizeof lc.after) &&
              lc.s.flags == 0,
          "load_config_init_sized: defaults, nothing past the caller's struct");

#ifdef PEFTKIT_TEST_NEWER
    /* A newer field set to something this library does not know: refused, nothing done. */
    fo.after[1] = 1;
    check(peftkit_forward_ex(m, ids, NULL, 2, 8, &fo.s, &loss, NULL) == PEFTKIT_ERR_UNSUPPORTED,
          "forward_ex: a non-zero newer forward_options field -> UNSUPPORTED");
    lc.after[0] = 1;
    peftkit_model *m3 = NULL;
    check(peftkit_model_load_ex("/nonexistent", &lc.s, &m3) == PEFTKIT_ERR_UNSUPPORTED && m3 == NULL,
          "model_load_ex: a non-zero newer load_config field -> UNSUPPORTED");
    mc.after[0] = 1;
    peftkit_model *m2 = NULL;
    check(peftkit_model_create(&mc.s, 7, &m2) == PEFTKIT_ERR_UNSUPPORTED && m2 == NULL,
          "model_create: a non-zero byte past the library's struct -> UNSUPPORTED");
    tc.after[EXTRA - 1] = 1;
    check(peftkit_train_step(m, ids, NULL, 2, 8, &tc.s, NULL) == PEFTKIT_ERR_UNSUPPORTED,
          "train_step: a non-zero newer train_config field -> UNSUPPORTED");
    gc.after[3] = 0x80;
    check(peftkit_generate(m, ids, 3, &gc.s, out, 4, &n, NULL, NULL) == PEFTKIT_ERR_UNSUPPORTED,
          "generate: a non-zero newer generate_config field -> UNSUPPORTED");
#else
    /* A size inside a field is no version of the struct. */
    mc.s.struct_size = (uint32_t)(offsetof(peftkit_model_config, qkv_bias) + 2);
    peftkit_model *m2 = NULL;
    check(peftkit_model_create(&mc.s, 7, &m2) == PEFTKIT_ERR_INVALID_ARGUMENT && m2 == NULL,
          "model_create: struct_size inside a field -> INVALID_ARGUMENT");
#endif

    peftkit_model_free(m);
    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed == 0 ? 0 : 1;
}
