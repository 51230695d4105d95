/*
 * test_abi.c — exercises every function of peftkit.h, including misuse, through the shared library.
 *
 * Prints one line per check ("ok   ..." or "FAIL ...") and ends with "N passed, M failed". Exits 0 only
 * if every check passed.
 *
 * Usage: test_abi [SCRATCH_DIR]   (adapter files are written below SCRATCH_DIR, default ".")
 */
#define _POSIX_C_SOURCE 200809L

#include "peftkit.h"

#include <math.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

static int n_passed = 0;
static int n_failed = 0;

static const char *status_name(peftkit_status s) {
    switch (s) {
    case PEFTKIT_OK: return "OK";
    case PEFTKIT_ERR_INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case PEFTKIT_ERR_IO: return "IO";
    case PEFTKIT_ERR_FORMAT: return "FORMAT";
    case PEFTKIT_ERR_UNSUPPORTED: return "UNSUPPORTED";
    case PEFTKIT_ERR_NOT_FOUND: return "NOT_FOUND";
    case PEFTKIT_ERR_NUMERICAL: return "NUMERICAL";
    case PEFTKIT_ERR_STATE: return "STATE";
    case PEFTKIT_ERR_OUT_OF_MEMORY: return "OUT_OF_MEMORY";
    case PEFTKIT_ERR_BUFFER_TOO_SMALL: return "BUFFER_TOO_SMALL";
    case PEFTKIT_ERR_INTERNAL: return "INTERNAL";
    case PEFTKIT_ERR_BUSY: return "BUSY";
    case PEFTKIT_ERR_CANCELLED: return "CANCELLED";
    default: return "UNKNOWN";
    }
}

/* A boolean check. */
static void check(int cond, const char *what) {
    if (cond) {
        n_passed++;
        printf("ok   %s\n", what);
    } else {
        n_failed++;
        printf("FAIL %s\n", what);
    }
}

/* A status check: `got` must equal `want`. On a mismatch prints both and the last error. */
static void expect(peftkit_status got, peftkit_status want, const char *what) {
    if (got == want) {
        n_passed++;
        printf("ok   %s -> %s\n", what, status_name(got));
    } else {
        n_failed++;
        printf("FAIL %s -> %s, expected %s (last error: %s)\n", what, status_name(got), status_name(want),
               peftkit_last_error());
    }
}

/* ------------------------------------------------------------------------------------------------- */
/* Checks that need no model.                                                                        */
/* ------------------------------------------------------------------------------------------------- */

static void *thread_last_error(void *arg) {
    const char **out = arg;
    const char *e = peftkit_last_error();
    *out = (e != NULL && e[0] == '\0') ? "empty" : "not empty";
    return NULL;
}

static void test_library(void) {
    printf("# library\n");
    const char *v = peftkit_version();
    check(v != NULL && strcmp(v, PEFTKIT_VERSION_STRING) == 0, "peftkit_version() equals PEFTKIT_VERSION_STRING");
    check(PEFTKIT_VERSION_NUMBER == PEFTKIT_VERSION_MAJOR * 10000 + PEFTKIT_VERSION_MINOR * 100 + PEFTKIT_VERSION_PATCH,
          "PEFTKIT_VERSION_NUMBER is consistent");
    const char *e = peftkit_last_error();
    check(e != NULL && e[0] == '\0', "peftkit_last_error() is \"\" before any failure");

    expect(peftkit_set_num_threads(1), PEFTKIT_OK, "peftkit_set_num_threads(1)");
    expect(peftkit_set_num_threads(-5), PEFTKIT_OK, "peftkit_set_num_threads(-5) (default)");
    expect(peftkit_set_num_threads(0), PEFTKIT_OK, "peftkit_set_num_threads(0) (default)");
    expect(peftkit_set_num_threads(2), PEFTKIT_OK, "peftkit_set_num_threads(2)");

    expect(peftkit_model_config_init_sized(NULL, sizeof(peftkit_model_config)), PEFTKIT_ERR_INVALID_ARGUMENT,
           "model_config_init_sized(NULL)");
    expect(peftkit_train_config_init_sized(NULL, sizeof(peftkit_train_config)), PEFTKIT_ERR_INVALID_ARGUMENT,
           "train_config_init_sized(NULL)");
    expect(peftkit_generate_config_init_sized(NULL, sizeof(peftkit_generate_config)), PEFTKIT_ERR_INVALID_ARGUMENT,
           "generate_config_init_sized(NULL)");
    check(peftkit_version_number() == PEFTKIT_VERSION_NUMBER, "peftkit_version_number() == PEFTKIT_VERSION_NUMBER");
    check(strcmp(peftkit_status_string(PEFTKIT_ERR_CANCELLED), "cancelled") == 0 && PEFTKIT_ERR_CANCELLED == -12,
          "peftkit_status_string(PEFTKIT_ERR_CANCELLED)");
    check(strcmp(peftkit_status_string(PEFTKIT_ERR_BUSY), "model in use by another call") == 0 &&
              strcmp(peftkit_status_string(PEFTKIT_OK), "ok") == 0 &&
              strcmp(peftkit_status_string(-12345), "unknown status") == 0,
          "peftkit_status_string: known codes and an unknown one");
    peftkit_model_free(NULL);
    check(1, "peftkit_model_free(NULL) is a no-op");

    peftkit_model_config mc;
    memset(&mc, 0xAB, sizeof mc);
    peftkit_model_config_init(&mc);
    check(mc.struct_size == sizeof mc, "model config struct_size == sizeof");
    check(mc.architecture == PEFTKIT_ARCH_GPT2 && mc.vocab_size == 256 && mc.hidden_size == 64 && mc.num_layers == 2 &&
              mc.num_heads == 4 && mc.max_positions == 1024,
          "model config defaults: tiny GPT-2 (vocab 256, d 64, 2 layers, 4 heads, 1024 positions)");
    check(mc.num_kv_heads == 0 && mc.head_dim == 0 && mc.intermediate_size == 0 && mc.norm_eps == 0.0f &&
              mc.qkv_bias == -1 && mc.output_bias == -1 && mc.mlp_bias == -1 && mc.tie_word_embeddings == 1 &&
              mc.rope_theta == 10000.0f,
          "model config defaults: derived fields left derived");

    peftkit_train_config tc;
    memset(&tc, 0xAB, sizeof tc);
    peftkit_train_config_init(&tc);
    check(tc.struct_size == sizeof tc, "train config struct_size == sizeof");
    check(tc.learning_rate == 1e-3f && tc.beta1 == 0.9f && tc.beta2 == 0.999f && tc.eps == 1e-8f &&
              tc.weight_decay == 0.01f && tc.schedule == PEFTKIT_SCHEDULE_CONSTANT && tc.warmup_steps == 0 &&
              tc.total_steps == 0 && tc.max_grad_norm == 0.0f && tc.micro_batch_size == 0 &&
              tc.lora_plus_ratio == 0.0f && tc.gradient_checkpointing == 0 &&
              tc.activation_memory == PEFTKIT_ACTIVATIONS_AUTO,
          "train config defaults equal TrainConfig()");

    peftkit_generate_config gc;
    memset(&gc, 0xAB, sizeof gc);
    peftkit_generate_config_init(&gc);
    check(gc.struct_size == sizeof gc, "generate config struct_size == sizeof");
    check(gc.max_new_tokens == 32 && gc.temperature == 0.0f && gc.top_k == 0 && gc.top_p == 1.0f && gc.seed == 0 &&
              gc.stop_tokens == NULL && gc.n_stop_tokens == 0 && gc.repetition_penalty == 1.0f && gc.min_p == 0.0f &&
              gc.n_stop_strings == 0 && gc.reserved0 == 0 && gc.stop_strings == NULL,
          "generate config defaults equal GenerateConfig()");
    check(sizeof(peftkit_generate_config) == 64 && offsetof(peftkit_generate_config, repetition_penalty) == 40,
          "generate config: 0.2 appended 24 bytes after the 40 of 0.1");
    check(sizeof(peftkit_generate_result) == 24, "generate result: 24 bytes, no padding");
}

static void test_create_misuse(void) {
    printf("# model creation misuse\n");
    peftkit_model_config mc;
    peftkit_model *m = (peftkit_model *)&mc; /* any non-NULL value: must be overwritten with NULL */

    peftkit_model_config_init(&mc);
    expect(peftkit_model_create(NULL, 1, &m), PEFTKIT_ERR_INVALID_ARGUMENT, "model_create(config NULL)");
    check(m == NULL, "model_create sets *out = NULL on failure");
    const char *e = peftkit_last_error();
    check(e != NULL && e[0] != '\0', "peftkit_last_error() is set after a failure");
    expect(peftkit_model_create(&mc, 1, NULL), PEFTKIT_ERR_INVALID_ARGUMENT, "model_create(out NULL)");

    mc.struct_size = 0;
    expect(peftkit_model_create(&mc, 1, &m), PEFTKIT_ERR_INVALID_ARGUMENT, "model_create(struct_size 0)");
    check(strstr(peftkit_last_error(), "struct_size") != NULL, "last error names struct_size");
    mc.struct_size = 70000;
    expect(peftkit_model_create(&mc, 1, &m), PEFTKIT_ERR_INVALID_ARGUMENT, "model_create(struct_size 70000)");
    mc.struct_size = 6;
    expect(peftkit_model_create(&mc, 1, &m), PEFTKIT_ERR_INVALID_ARGUMENT, "model_create(struct_size 6: inside a field)");

    /* A failed call on another thread leaves this thread's message alone, and vice versa. */
    char before[512];
    snprintf(before, sizeof before, "%s", peftkit_last_error());
    const char *other = NULL;
    pthread_t t;
    if (pthread_create(&t, NULL, thread_last_error, &other) == 0) {
        pthread_join(t, NULL);
        check(other != NULL && strcmp(other, "empty") == 0, "peftkit_last_error() is per thread (new thread sees \"\")");
    } else {
        check(0, "pthread_create");
    }
    check(strcmp(before, peftkit_last_error()) == 0, "this thread's last error is unchanged by the other thread");

#define BAD_MODEL(stmt, label)                                                                     \
    do {                                                                                            \
        peftkit_model_config_init(&mc);                                                             \
        stmt;                                                                                       \
        m = NULL;                                                                                   \
        expect(peftkit_model_create(&mc, 1, &m), PEFTKIT_ERR_INVALID_ARGUMENT, "model_create(" label ")"); \
        peftkit_model_free(m);                                                                      \
    } while (0)

    BAD_MODEL(mc.architecture = 7, "architecture 7");
    BAD_MODEL(mc.architecture = -1, "architecture -1");
    BAD_MODEL(mc.vocab_size = 0, "vocab_size 0");
    BAD_MODEL(mc.vocab_size = -3, "vocab_size -3");
    BAD_MODEL(mc.hidden_size = -64, "hidden_size -64");
    BAD_MODEL(mc.num_layers = 0, "num_layers 0");
    BAD_MODEL(mc.num_heads = 5, "GPT-2 num_heads 5 not dividing hidden 64");
    BAD_MODEL(mc.num_kv_heads = -1, "num_kv_heads -1");
    BAD_MODEL(mc.num_kv_heads = 2, "GPT-2 num_kv_heads != num_heads");
    BAD_MODEL(mc.head_dim = -16, "head_dim -16");
    BAD_MODEL(mc.intermediate_size = -1, "intermediate_size -1");
    BAD_MODEL(mc.max_positions = 0, "max_positions 0");
    BAD_MODEL(mc.norm_eps = NAN, "norm_eps NaN");
    BAD_MODEL(mc.norm_eps = -1e-5f, "norm_eps negative");
    BAD_MODEL(mc.tie_word_embeddings = 5, "tie_word_embeddings 5");
    BAD_MODEL(mc.qkv_bias = 2, "qkv_bias 2");
    BAD_MODEL(mc.mlp_bias = -2, "mlp_bias -2");
    BAD_MODEL((mc.architecture = PEFTKIT_ARCH_LLAMA, mc.rope_theta = NAN), "llama rope_theta NaN");
    BAD_MODEL((mc.architecture = PEFTKIT_ARCH_LLAMA, mc.num_kv_heads = 3), "llama num_kv_heads 3 not dividing 4");
#undef BAD_MODEL

    m = (peftkit_model *)&mc;
    expect(peftkit_model_load(NULL, &m), PEFTKIT_ERR_INVALID_ARGUMENT, "model_load(path NULL)");
    check(m == NULL, "model_load sets *out = NULL on failure");
    expect(peftkit_model_load("", &m), PEFTKIT_ERR_INVALID_ARGUMENT, "model_load(path \"\")");
    expect(peftkit_model_load("\xff\xfe", &m), PEFTKIT_ERR_INVALID_ARGUMENT, "model_load(path not UTF-8)");
    expect(peftkit_model_load("/nonexistent/peftkit-model", NULL), PEFTKIT_ERR_INVALID_ARGUMENT, "model_load(out NULL)");
    expect(peftkit_model_load("/nonexistent/peftkit-model", &m), PEFTKIT_ERR_IO, "model_load(missing folder)");
}

static void test_null_model(void) {
    printf("# every model function with model NULL\n");
    peftkit_model_config mc;
    peftkit_model_config_init(&mc);
    peftkit_train_config tc;
    peftkit_train_config_init(&tc);
    peftkit_generate_config gc;
    peftkit_generate_config_init(&gc);
    int32_t ids[4] = {1, 2, 3, 4};
    int32_t toks[32];
    int32_t n32 = 0;
    int64_t n64 = 0;
    float loss = 0;
    char buf[64];
    size_t len = 0;
    const peftkit_status bad = PEFTKIT_ERR_INVALID_ARGUMENT;

    expect(peftkit_model_get_config(NULL, &mc), bad, "model_get_config(NULL model)");
    expect(peftkit_adapter_attach_json(NULL, "a", "{\"config\": \"seq_bn\"}"), bad, "adapter_attach_json(NULL model)");
    expect(peftkit_adapter_set_active(NULL, "a"), bad, "adapter_set_active(NULL model)");
    expect(peftkit_adapter_set_active(NULL, NULL), bad, "adapter_set_active(NULL model, NULL name)");
    expect(peftkit_adapter_remove(NULL, "a"), bad, "adapter_remove(NULL model)");
    expect(peftkit_adapter_count(NULL, &n32), bad, "adapter_count(NULL model)");
    expect(peftkit_adapter_name(NULL, 0, buf, sizeof buf, &len), bad, "adapter_name(NULL model)");
    expect(peftkit_adapter_get_active(NULL, buf, sizeof buf, &len), bad, "adapter_get_active(NULL model)");
    expect(peftkit_adapter_num_params(NULL, "a", &n64), bad, "adapter_num_params(NULL model)");
    expect(peftkit_adapter_save(NULL, "a", "/tmp"), bad, "adapter_save(NULL model)");
    expect(peftkit_adapter_load(NULL, "/tmp", NULL, buf, sizeof buf), bad, "adapter_load(NULL model)");
    expect(peftkit_train_step(NULL, ids, NULL, 1, 4, &tc, NULL), bad, "train_step(NULL model)");
    expect(peftkit_forward(NULL, ids, NULL, 1, 4, NULL, 0, &loss, &n64), bad, "forward(NULL model)");
    expect(peftkit_generate(NULL, ids, 4, &gc, toks, 32, &n32, NULL, NULL), bad, "generate(NULL model)");
    peftkit_tokenizer_info ti;
    ti.struct_size = sizeof ti;
    expect(peftkit_tokenizer_get_info(NULL, &ti), bad, "tokenizer_get_info(NULL model)");
    expect(peftkit_tokenizer_load(NULL, "/tmp"), bad, "tokenizer_load(NULL model)");
    expect(peftkit_tokenizer_issue(NULL, buf, sizeof buf, &len), bad, "tokenizer_issue(NULL model)");
    expect(peftkit_tokenize(NULL, "a", 1, 0, 1, toks, 32, &len), bad, "tokenize(NULL model)");
    expect(peftkit_detokenize(NULL, ids, 1, 0, buf, sizeof buf, &len), bad, "detokenize(NULL model)");
    expect(peftkit_chat_template_apply(NULL, NULL, NULL, 0, 1, buf, sizeof buf, &len), bad, "chat_template_apply(NULL model)");
}

/* ------------------------------------------------------------------------------------------------- */
/* Checks on a live model (need the engine).                                                         */
/* ------------------------------------------------------------------------------------------------- */

#define VOCAB 256
#define BATCH 2
#define SEQ 16

static void fill_pattern(int32_t *ids, int batch, int seq, int offset) {
    for (int b = 0; b < batch; b++)
        for (int t = 0; t < seq; t++) ids[b * seq + t] = 'a' + (b + t + offset) % 8;
}

static void test_model_config(peftkit_model *m) {
    printf("# model config\n");
    peftkit_model_config c;
    peftkit_model_config_init(&c);
    expect(peftkit_model_get_config(m, &c), PEFTKIT_OK, "model_get_config");
    check(c.architecture == PEFTKIT_ARCH_GPT2 && c.vocab_size == VOCAB && c.hidden_size == 64 && c.num_layers == 2 &&
              c.num_heads == 4 && c.num_kv_heads == 4 && c.head_dim == 16 && c.intermediate_size == 256 &&
              c.max_positions == 1024 && fabsf(c.norm_eps - 1e-5f) < 1e-9f && c.tie_word_embeddings == 1 &&
              c.qkv_bias == 1 && c.output_bias == 1 && c.mlp_bias == 1,
          "model_get_config reports concrete values");
    expect(peftkit_model_get_config(m, NULL), PEFTKIT_ERR_INVALID_ARGUMENT, "model_get_config(out NULL)");
    c.struct_size = 3;
    expect(peftkit_model_get_config(m, &c), PEFTKIT_ERR_INVALID_ARGUMENT, "model_get_config(struct_size 3)");
}

static void test_attach(peftkit_model *m) {
    printf("# adapters: attach, list\n");
    int32_t n = -1;
    char buf[64];
    size_t len = 0;
    const peftkit_status bad = PEFTKIT_ERR_INVALID_ARGUMENT;

    expect(peftkit_adapter_count(m, &n), PEFTKIT_OK, "adapter_count on a new model");
    check(n == 0, "a new model has no adapters");
    expect(peftkit_adapter_count(m, NULL), bad, "adapter_count(out NULL)");
    len = 99;
    memset(buf, 'x', sizeof buf);
    expect(peftkit_adapter_get_active(m, buf, sizeof buf, &len), PEFTKIT_OK, "adapter_get_active with none active");
    check(buf[0] == '\0' && len == 0, "no adapter active: \"\", length 0");

    const char *seq_bn = "{\"config\": \"seq_bn\"}";
    expect(peftkit_adapter_attach_json(m, NULL, seq_bn), bad, "adapter_attach_json(name NULL)");
    expect(peftkit_adapter_attach_json(m, "", seq_bn), bad, "adapter_attach_json(name \"\")");
    expect(peftkit_adapter_attach_json(m, "bad\xc3\x28", seq_bn), bad, "adapter_attach_json(name not UTF-8)");
    expect(peftkit_adapter_attach_json(m, "x", NULL), bad, "adapter_attach_json(config_json NULL)");

    /* Configs the core refuses, each with its status. */
    static const struct { const char *json; peftkit_status status; const char *label; } refused[] = {
        {"", PEFTKIT_ERR_FORMAT, "empty text"},
        {"{\"peft_type\": \"LORA\", \"r\": 8,", PEFTKIT_ERR_FORMAT, "cut JSON"},
        {"[1, 2]", PEFTKIT_ERR_FORMAT, "a JSON array"},
        {"{}", PEFTKIT_ERR_UNSUPPORTED, "an empty object"},
        {"{\"peft_type\": \"LOHA\", \"r\": 8}", PEFTKIT_ERR_UNSUPPORTED, "peft_type LOHA"},
        {"{\"config\": \"prefix_tuning\"}", PEFTKIT_ERR_UNSUPPORTED, "AdapterHub preset prefix_tuning"},
        {"{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": [\"c_attn\"], \"use_qalora\": true}", PEFTKIT_ERR_UNSUPPORTED,
         "use_qalora true"},
        {"{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": [\"c_attn\"], \"loftq\": 1}", PEFTKIT_ERR_UNSUPPORTED,
         "unknown key"},
        {"{\"peft_type\": \"LORA\", \"r\": \"8\", \"target_modules\": [\"c_attn\"]}", PEFTKIT_ERR_FORMAT, "r a string"},
        {"{\"peft_type\": \"LORA\", \"target_modules\": [\"c_attn\"]}", PEFTKIT_ERR_FORMAT, "LoRA without r"},
        {"{\"peft_type\": \"LORA\", \"r\": 0, \"target_modules\": [\"c_attn\"]}", bad, "r 0"},
        {"{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": [\"c_attn\"], \"lora_dropout\": 1.5}", bad,
         "lora_dropout 1.5"},
        {"{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": [\"c_attn\"], \"layers_to_transform\": [5]}", PEFTKIT_ERR_FORMAT,
         "layer 5 of 2"},
        {"{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": [\"nothing\"]}", PEFTKIT_ERR_UNSUPPORTED,
         "targets that match nothing"},
        {"{\"peft_type\": \"PREFIX_TUNING\", \"num_virtual_tokens\": 0}", PEFTKIT_ERR_FORMAT, "num_virtual_tokens 0"},
        {"{\"config\": {\"mh_adapter\": false, \"output_adapter\": true, \"reduction_factor\": 0}}", PEFTKIT_ERR_FORMAT,
         "reduction_factor 0"},
        {"{\"mh_adapter\": false, \"output_adapter\": true, \"reduction_factor\": 16, \"non_linearity\": \"tanhshrink\"}",
         PEFTKIT_ERR_UNSUPPORTED, "non_linearity tanhshrink"},
        {"{\"mh_adapter\": false, \"output_adapter\": true, \"reduction_factor\": 16, \"leave_out\": [0, 1]}",
         PEFTKIT_ERR_FORMAT, "leave_out every layer"},
        {"{\"config\": {\"mh_adapter\": false, \"output_adapter\": true, \"reduction_factor\": 16}, \"hidden_size\": 768}",
         PEFTKIT_ERR_FORMAT, "hidden_size 768 on a d=64 model"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char what[160];
        snprintf(what, sizeof what, "adapter_attach_json(%s)", refused[i].label);
        expect(peftkit_adapter_attach_json(m, "x", refused[i].json), refused[i].status, what);
        check(peftkit_last_error()[0] != '\0', "  ... with a message");
    }
    expect(peftkit_adapter_count(m, &n), PEFTKIT_OK, "adapter_count after rejected attaches");
    check(n == 0, "rejected attaches attach nothing");

    expect(peftkit_adapter_attach_json(m, "a", seq_bn), PEFTKIT_OK, "adapter_attach_json(\"a\", seq_bn preset)");
    expect(peftkit_adapter_attach_json(m, "a", seq_bn), PEFTKIT_ERR_STATE, "adapter_attach_json(\"a\") again: duplicate name");
    /* AdapterHub's DoubleSeqBnConfig on layer 1 only (leave_out 0), bottleneck 64 / 8 = 8, tanh GELU, zero-up
     * init, a LayerNorm before the adapter. */
    expect(peftkit_adapter_attach_json(m, "houlsby-layer1",
                                       "{\"config\": {\"architecture\": \"bottleneck\", \"mh_adapter\": true, "
                                       "\"output_adapter\": true, \"reduction_factor\": 8, \"non_linearity\": \"gelu_new\", "
                                       "\"original_ln_before\": false, \"original_ln_after\": true, \"ln_before\": true, "
                                       "\"init_weights\": \"mam_adapter\", \"leave_out\": [0]}, \"name\": \"h\", "
                                       "\"hidden_size\": 64, \"version\": \"adapters.1.3.0\"}"),
           PEFTKIT_OK, "adapter_attach_json(double_seq_bn, layer 1 only, bottleneck 8, ln_before)");
    expect(peftkit_adapter_count(m, &n), PEFTKIT_OK, "adapter_count");
    check(n == 2, "two adapters attached");

    len = 0;
    expect(peftkit_adapter_name(m, 0, buf, sizeof buf, &len), PEFTKIT_OK, "adapter_name(0)");
    check(strcmp(buf, "a") == 0 && len == 1, "adapter 0 is \"a\" (attach order)");
    expect(peftkit_adapter_name(m, 1, buf, sizeof buf, NULL), PEFTKIT_OK, "adapter_name(1, len_out NULL)");
    check(strcmp(buf, "houlsby-layer1") == 0, "adapter 1 is \"houlsby-layer1\"");
    expect(peftkit_adapter_name(m, 2, buf, sizeof buf, &len), bad, "adapter_name(index 2 of 2)");
    expect(peftkit_adapter_name(m, -1, buf, sizeof buf, &len), bad, "adapter_name(index -1)");
    len = 0;
    expect(peftkit_adapter_name(m, 1, NULL, 0, &len), PEFTKIT_OK, "adapter_name size query (NULL, 0)");
    check(len == strlen("houlsby-layer1"), "size query reports the length");
    expect(peftkit_adapter_name(m, 1, NULL, 8, &len), bad, "adapter_name(buf NULL, cap 8)");
    memset(buf, 'x', sizeof buf);
    len = 0;
    expect(peftkit_adapter_name(m, 1, buf, 14, &len), PEFTKIT_ERR_BUFFER_TOO_SMALL, "adapter_name(cap = length, no room for NUL)");
    check(buf[0] == 'x' && len == 14, "buffer untouched, length still reported");
    expect(peftkit_adapter_name(m, 1, buf, (size_t)-1, &len), bad, "adapter_name(cap SIZE_MAX)");

    int64_t p = -1;
    expect(peftkit_adapter_num_params(m, "a", &p), PEFTKIT_OK, "adapter_num_params(\"a\")");
    /* pfeiffer, every layer, bottleneck 64/16 = 4: down 64*4+4, up 4*64+64 per layer, 2 layers */
    check(p == 2 * (64 * 4 + 4 + 4 * 64 + 64), "adapter \"a\" has 2 * (64*4+4 + 4*64+64) = 1160 parameters");
    expect(peftkit_adapter_num_params(m, "houlsby-layer1", &p), PEFTKIT_OK, "adapter_num_params(houlsby)");
    check(p > 0, "houlsby adapter has parameters");
    expect(peftkit_adapter_num_params(m, "nope", &p), PEFTKIT_ERR_NOT_FOUND, "adapter_num_params(unknown name)");
    expect(peftkit_adapter_num_params(m, NULL, &p), bad, "adapter_num_params(name NULL)");
    expect(peftkit_adapter_num_params(m, "a", NULL), bad, "adapter_num_params(out NULL)");
}

static void test_train(peftkit_model *m) {
    printf("# training\n");
    peftkit_train_config tc;
    peftkit_train_result r;
    int32_t ids[BATCH * SEQ];
    int32_t labels[BATCH * SEQ];
    const peftkit_status bad = PEFTKIT_ERR_INVALID_ARGUMENT;
    fill_pattern(ids, BATCH, SEQ, 0);
    peftkit_train_config_init(&tc);
    tc.learning_rate = 1e-2f;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;

    expect(peftkit_adapter_set_active(m, NULL), PEFTKIT_OK, "adapter_set_active(NULL): base model");
    expect(peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, &r), PEFTKIT_ERR_STATE, "train_step with no active adapter");
    expect(peftkit_adapter_set_active(m, "nope"), PEFTKIT_ERR_NOT_FOUND, "adapter_set_active(unknown name)");
    expect(peftkit_adapter_set_active(m, ""), bad, "adapter_set_active(\"\")");
    expect(peftkit_adapter_set_active(m, "a"), PEFTKIT_OK, "adapter_set_active(\"a\")");
    char buf[16];
    size_t len = 0;
    expect(peftkit_adapter_get_active(m, buf, sizeof buf, &len), PEFTKIT_OK, "adapter_get_active");
    check(strcmp(buf, "a") == 0 && len == 1, "active adapter is \"a\"");
    expect(peftkit_adapter_get_active(m, buf, 1, &len), PEFTKIT_ERR_BUFFER_TOO_SMALL, "adapter_get_active(cap 1)");

    expect(peftkit_train_step(m, NULL, NULL, BATCH, SEQ, &tc, &r), bad, "train_step(input_ids NULL)");
    expect(peftkit_train_step(m, ids, NULL, 0, SEQ, &tc, &r), bad, "train_step(batch 0)");
    expect(peftkit_train_step(m, ids, NULL, BATCH, -1, &tc, &r), bad, "train_step(seq_len -1)");
    expect(peftkit_train_step(m, ids, NULL, BATCH, SEQ, NULL, &r), bad, "train_step(config NULL)");
    ids[5] = VOCAB;
    expect(peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, &r), bad, "train_step(id = vocab_size)");
    ids[5] = -1;
    expect(peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, &r), bad, "train_step(id -1)");
    fill_pattern(ids, BATCH, SEQ, 0);
    memcpy(labels, ids, sizeof ids);
    labels[3] = -5;
    expect(peftkit_train_step(m, ids, labels, BATCH, SEQ, &tc, &r), bad, "train_step(label -5)");
    labels[3] = 1000;
    expect(peftkit_train_step(m, ids, labels, BATCH, SEQ, &tc, &r), bad, "train_step(label 1000)");

#define BAD_TRAIN(stmt, label)                                                                      \
    do {                                                                                            \
        peftkit_train_config_init(&tc);                                                             \
        stmt;                                                                                       \
        expect(peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, &r), bad, "train_step(" label ")"); \
    } while (0)
    BAD_TRAIN(tc.struct_size = 1, "config struct_size 1");
    BAD_TRAIN(tc.learning_rate = NAN, "learning_rate NaN");
    BAD_TRAIN(tc.learning_rate = -1, "learning_rate -1");
    BAD_TRAIN(tc.beta1 = 1.0f, "beta1 1");
    BAD_TRAIN(tc.beta2 = -0.1f, "beta2 -0.1");
    BAD_TRAIN(tc.eps = 0, "eps 0");
    BAD_TRAIN(tc.weight_decay = INFINITY, "weight_decay inf");
    BAD_TRAIN(tc.schedule = 9, "schedule 9");
    BAD_TRAIN(tc.warmup_steps = -1, "warmup_steps -1");
    BAD_TRAIN(tc.total_steps = -1, "total_steps -1");
    BAD_TRAIN(tc.max_grad_norm = NAN, "max_grad_norm NaN");
    BAD_TRAIN(tc.micro_batch_size = -2, "micro_batch_size -2");
#undef BAD_TRAIN
    peftkit_train_config_init(&tc);
    tc.learning_rate = 1e-2f;
    r.struct_size = 0;
    expect(peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, &r), bad, "train_step(result struct_size 0)");
    r.struct_size = sizeof r;
    int32_t long_ids[1025];
    for (int i = 0; i < 1025; i++) long_ids[i] = i % VOCAB;
    expect(peftkit_train_step(m, long_ids, NULL, 1, 1025, &tc, &r), bad, "train_step(seq_len 1025 > max_positions)");

    /* Nothing above may have stepped the optimiser. */
    expect(peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, &r), PEFTKIT_OK, "train_step");
    check(r.step == 1, "first successful step reports step 1");
    check(r.tokens == BATCH * (SEQ - 1), "tokens = batch * (seq_len - 1) (shifted labels)");
    check(isfinite(r.loss) && r.loss > 0 && isfinite(r.grad_norm) && r.grad_norm > 0, "loss and grad norm finite, positive");
    check(fabsf(r.learning_rate - 1e-2f) < 1e-9f, "constant schedule reports the configured learning rate");
    float first = r.loss;
    for (int i = 0; i < 30; i++) peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, &r);
    check(r.step == 31, "step counter advances per step");
    check(r.loss < first, "loss falls over 30 steps on a repeated pattern");
    printf("     (loss %.4f -> %.4f)\n", first, r.loss);
    expect(peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, NULL), PEFTKIT_OK, "train_step(out NULL)");

    for (int i = 0; i < BATCH * SEQ; i++) labels[i] = PEFTKIT_IGNORE_INDEX;
    labels[4] = ids[4];
    expect(peftkit_train_step(m, ids, labels, BATCH, SEQ, &tc, &r), PEFTKIT_OK, "train_step(labels mostly -100)");
    check(r.tokens == 1, "only the one labelled position counts");
}

/* Packed rows through the C ABI: a row holding records of 5 and 11 tokens gives each record the logits
   and loss it gets alone; training on packed rows and with checkpointing and LoRA+ runs. */
static void test_packed(peftkit_model *m) {
    printf("# packed rows\n");
    enum { A = 5, R = SEQ - A };
    int32_t ids[SEQ], seg[SEQ];
    fill_pattern(ids, 1, SEQ, 7);
    for (int t = 0; t < SEQ; t++) seg[t] = t < A ? 3 : 8;
    float *packed = malloc((size_t)SEQ * VOCAB * sizeof(float));
    float *alone = malloc((size_t)SEQ * VOCAB * sizeof(float));
    if (!packed || !alone) {
        check(0, "malloc");
        free(packed);
        free(alone);
        return;
    }
    float loss = 0, la = 0, lb = 0;
    int64_t tokens = 0, ta = 0, tb = 0;
    expect(peftkit_forward_packed(m, ids, NULL, seg, 1, SEQ, packed, (size_t)SEQ * VOCAB, &loss, &tokens), PEFTKIT_OK,
           "forward_packed");
    expect(peftkit_forward(m, ids, NULL, 1, A, alone, (size_t)SEQ * VOCAB, &la, &ta), PEFTKIT_OK, "forward(first record)");
    expect(peftkit_forward(m, ids + A, NULL, 1, R, alone + (size_t)A * VOCAB, (size_t)R * VOCAB, &lb, &tb), PEFTKIT_OK,
           "forward(second record)");
    float worst = 0, scale = 0;
    for (size_t i = 0; i < (size_t)SEQ * VOCAB; i++) {
        float d = fabsf(packed[i] - alone[i]);
        if (d > worst) worst = d;
        if (fabsf(alone[i]) > scale) scale = fabsf(alone[i]);
    }
    check(scale > 0 && worst <= 1e-5f * scale, "packed logits equal each record's alone (<= 1e-5 relative)");
    check(tokens == ta + tb && tokens == SEQ - 2, "packed tokens: no prediction across the record boundary");
    float want = (la * (float)ta + lb * (float)tb) / (float)(ta + tb);
    check(fabsf(loss - want) <= 1e-5f * want, "packed loss = the records' mean loss");
    expect(peftkit_forward_packed(m, ids, NULL, NULL, 1, SEQ, NULL, 0, &loss, &tokens), PEFTKIT_OK,
           "forward_packed(segment_ids NULL)");
    check(tokens == SEQ - 1, "segment_ids NULL: one record per row");

    peftkit_train_config tc;
    peftkit_train_config_init(&tc);
    tc.gradient_checkpointing = 1;
    tc.lora_plus_ratio = 8;
    peftkit_train_result r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    expect(peftkit_train_step_packed(m, ids, NULL, seg, 1, SEQ, &tc, &r), PEFTKIT_OK,
           "train_step_packed (gradient checkpointing, LoRA+ ratio 8)");
    check(r.tokens == SEQ - 2 && r.loss > 0, "train_step_packed counts the tokens of both records");
    float lossc = 0;
    int64_t tokc = 0;
    expect(peftkit_train_compute_gradients_packed(m, ids, NULL, seg, 1, SEQ, &tc, 0, &lossc, &tokc), PEFTKIT_OK,
           "train_compute_gradients_packed");
    check(tokc == SEQ - 2, "train_compute_gradients_packed tokens");
    expect(peftkit_train_apply_gradients(m, &tc, &r), PEFTKIT_OK, "train_apply_gradients after the packed compute");
    free(packed);
    free(alone);
}

static void test_forward(peftkit_model *m) {
    printf("# forward\n");
    int32_t ids[BATCH * SEQ];
    int32_t labels[BATCH * SEQ];
    const size_t n_logits = (size_t)BATCH * SEQ * VOCAB;
    float *logits = malloc(n_logits * sizeof(float));
    float *logits2 = malloc(n_logits * sizeof(float));
    float loss = -1, loss2 = -1;
    int64_t tokens = -1;
    const peftkit_status bad = PEFTKIT_ERR_INVALID_ARGUMENT;
    if (!logits || !logits2) {
        check(0, "malloc");
        return;
    }
    fill_pattern(ids, BATCH, SEQ, 3);

    for (size_t i = 0; i < n_logits; i++) logits[i] = 12345.0f;
    expect(peftkit_forward(m, ids, NULL, BATCH, SEQ, logits, n_logits - 1, &loss, &tokens), PEFTKIT_ERR_BUFFER_TOO_SMALL,
           "forward(logits_capacity one short)");
    int untouched = 1;
    for (size_t i = 0; i < n_logits; i++) untouched &= logits[i] == 12345.0f;
    check(untouched && loss == -1 && tokens == -1, "nothing written on BUFFER_TOO_SMALL");
    check(strstr(peftkit_last_error(), "8192") != NULL, "last error states the size needed (8192)");
    expect(peftkit_forward(m, ids, NULL, BATCH, SEQ, logits, (size_t)-1, &loss, &tokens), bad,
           "forward(logits_capacity SIZE_MAX)");
    expect(peftkit_forward(m, ids, NULL, INT32_MAX, INT32_MAX, logits, n_logits, NULL, NULL), PEFTKIT_ERR_OUT_OF_MEMORY,
           "forward(batch * seq_len * vocab overflows)");
    expect(peftkit_forward(m, NULL, NULL, BATCH, SEQ, NULL, 0, &loss, NULL), bad, "forward(input_ids NULL)");
    expect(peftkit_forward(m, ids, NULL, -1, SEQ, NULL, 0, &loss, NULL), bad, "forward(batch -1)");
    expect(peftkit_forward(m, ids, NULL, BATCH, 0, NULL, 0, &loss, NULL), bad, "forward(seq_len 0)");
    ids[0] = 300;
    expect(peftkit_forward(m, ids, NULL, BATCH, SEQ, NULL, 0, &loss, NULL), bad, "forward(id 300 >= vocab 256)");
    fill_pattern(ids, BATCH, SEQ, 3);
    memcpy(labels, ids, sizeof ids);
    labels[1] = -101;
    expect(peftkit_forward(m, ids, labels, BATCH, SEQ, NULL, 0, &loss, NULL), bad, "forward(label -101)");

    expect(peftkit_forward(m, ids, NULL, BATCH, SEQ, logits, n_logits, &loss, &tokens), PEFTKIT_OK, "forward with logits");
    check(isfinite(loss) && loss > 0 && tokens == BATCH * (SEQ - 1), "forward loss finite, tokens = batch * (seq_len - 1)");
    int finite = 1;
    for (size_t i = 0; i < n_logits; i++) finite &= isfinite(logits[i]) && logits[i] != 12345.0f;
    check(finite, "every logit written and finite");
    expect(peftkit_forward(m, ids, NULL, BATCH, SEQ, logits2, n_logits + 100, &loss2, NULL), PEFTKIT_OK,
           "forward again (larger capacity)");
    check(memcmp(logits, logits2, n_logits * sizeof(float)) == 0 && loss == loss2, "forward is deterministic");
    expect(peftkit_forward(m, ids, NULL, BATCH, SEQ, NULL, 12345, &loss2, NULL), PEFTKIT_OK, "forward(logits NULL)");
    check(loss2 == loss, "loss without logits equals loss with logits");
    expect(peftkit_forward(m, ids, NULL, BATCH, SEQ, NULL, 0, NULL, NULL), PEFTKIT_OK, "forward(every output NULL)");

    for (int i = 0; i < BATCH * SEQ; i++) labels[i] = PEFTKIT_IGNORE_INDEX;
    expect(peftkit_forward(m, ids, labels, BATCH, SEQ, NULL, 0, &loss, &tokens), PEFTKIT_OK, "forward(all labels -100)");
    check(loss == 0 && tokens == 0, "no counted labels: loss 0, tokens 0");

    /* The base model gives other logits than the trained adapter. */
    expect(peftkit_adapter_set_active(m, NULL), PEFTKIT_OK, "adapter_set_active(NULL)");
    expect(peftkit_forward(m, ids, NULL, BATCH, SEQ, logits2, n_logits, &loss2, NULL), PEFTKIT_OK, "forward on base model");
    check(memcmp(logits, logits2, n_logits * sizeof(float)) != 0, "base model logits differ from the adapter's");
    expect(peftkit_adapter_set_active(m, "a"), PEFTKIT_OK, "adapter_set_active(\"a\")");
    free(logits);
    free(logits2);
}

struct cb_state {
    peftkit_model *model;
    int calls;
    int stop_after;
    peftkit_status reentrant;
    peftkit_status listing;
    int32_t seen[64];
};

static int32_t on_token(int32_t token, void *user) {
    struct cb_state *s = user;
    if (s->calls < 64) s->seen[s->calls] = token;
    s->calls++;
    if (s->model != NULL) {
        int32_t n = 0;
        int64_t p = 0;
        s->reentrant = peftkit_adapter_num_params(s->model, "a", &p);
        s->listing = peftkit_adapter_count(s->model, &n);
    }
    return s->stop_after > 0 && s->calls >= s->stop_after;
}

static void test_generate(peftkit_model *m) {
    printf("# generation\n");
    peftkit_generate_config gc;
    int32_t prompt[3] = {'a', 'b', 'c'};
    int32_t out[64], out2[64];
    int32_t n = -1, n2 = -1;
    const peftkit_status bad = PEFTKIT_ERR_INVALID_ARGUMENT;
    peftkit_generate_config_init(&gc);
    gc.max_new_tokens = 8;

    expect(peftkit_generate(m, NULL, 3, &gc, out, 64, &n, NULL, NULL), bad, "generate(prompt NULL)");
    expect(peftkit_generate(m, prompt, 0, &gc, out, 64, &n, NULL, NULL), bad, "generate(n_prompt 0)");
    expect(peftkit_generate(m, prompt, -3, &gc, out, 64, &n, NULL, NULL), bad, "generate(n_prompt -3)");
    expect(peftkit_generate(m, prompt, 3, NULL, out, 64, &n, NULL, NULL), bad, "generate(config NULL)");
    prompt[1] = VOCAB;
    expect(peftkit_generate(m, prompt, 3, &gc, out, 64, &n, NULL, NULL), bad, "generate(prompt id = vocab_size)");
    prompt[1] = 'b';
    expect(peftkit_generate(m, prompt, 3, &gc, out, 7, &n, NULL, NULL), PEFTKIT_ERR_BUFFER_TOO_SMALL,
           "generate(out_capacity 7 < max_new_tokens 8)");
    expect(peftkit_generate(m, prompt, 3, &gc, NULL, 8, &n, NULL, NULL), bad, "generate(out_tokens NULL, capacity 8)");
    expect(peftkit_generate(m, prompt, 3, &gc, out, -1, &n, NULL, NULL), bad, "generate(out_capacity -1)");

    int32_t stops[2] = {1, 2};
    int32_t bad_stops[1] = {VOCAB + 5};
#define BAD_GEN(stmt, label)                                                                        \
    do {                                                                                            \
        peftkit_generate_config_init(&gc);                                                          \
        gc.max_new_tokens = 8;                                                                      \
        stmt;                                                                                       \
        expect(peftkit_generate(m, prompt, 3, &gc, out, 64, &n, NULL, NULL), bad, "generate(" label ")"); \
    } while (0)
    BAD_GEN(gc.struct_size = 0, "config struct_size 0");
    BAD_GEN(gc.max_new_tokens = -1, "max_new_tokens -1");
    BAD_GEN(gc.temperature = NAN, "temperature NaN");
    BAD_GEN(gc.temperature = -1, "temperature -1");
    BAD_GEN(gc.top_k = -1, "top_k -1");
    BAD_GEN(gc.top_p = 0, "top_p 0");
    BAD_GEN(gc.top_p = 1.5f, "top_p 1.5");
    BAD_GEN(gc.n_stop_tokens = -1, "n_stop_tokens -1");
    BAD_GEN((gc.stop_tokens = NULL, gc.n_stop_tokens = 2), "stop_tokens NULL, n_stop_tokens 2");
    BAD_GEN((gc.stop_tokens = bad_stops, gc.n_stop_tokens = 1), "stop token out of range");
#undef BAD_GEN
    (void)stops;

    peftkit_generate_config_init(&gc);
    gc.max_new_tokens = 8;
    n = -1;
    expect(peftkit_generate(m, prompt, 3, &gc, out, 64, &n, NULL, NULL), PEFTKIT_OK, "generate greedy, 8 tokens");
    int in_range = n == 8;
    for (int i = 0; i < n && i < 64; i++) in_range &= out[i] >= 0 && out[i] < VOCAB;
    check(in_range, "8 tokens, all in range");
    expect(peftkit_generate(m, prompt, 3, &gc, out2, 8, &n2, NULL, NULL), PEFTKIT_OK, "generate greedy again (capacity exact)");
    check(n2 == n && memcmp(out, out2, sizeof(int32_t) * (size_t)(n > 0 ? n : 0)) == 0, "greedy generation is deterministic");

    gc.temperature = 1.0f;
    gc.top_k = 20;
    gc.top_p = 0.9f;
    gc.seed = 7;
    expect(peftkit_generate(m, prompt, 3, &gc, out, 64, &n, NULL, NULL), PEFTKIT_OK, "generate sampled (seed 7)");
    expect(peftkit_generate(m, prompt, 3, &gc, out2, 64, &n2, NULL, NULL), PEFTKIT_OK, "generate sampled (seed 7) again");
    check(n == n2 && memcmp(out, out2, sizeof(int32_t) * (size_t)(n > 0 ? n : 0)) == 0, "equal seeds give equal samples");

    peftkit_generate_config_init(&gc);
    gc.max_new_tokens = 8;
    struct cb_state s;
    memset(&s, 0, sizeof s);
    expect(peftkit_generate(m, prompt, 3, &gc, out, 64, &n, on_token, &s), PEFTKIT_OK, "generate with a callback");
    check(s.calls == n && n > 0 && memcmp(s.seen, out, sizeof(int32_t) * (size_t)n) == 0,
          "the callback sees every generated token, in order");
    memset(&s, 0, sizeof s);
    s.stop_after = 3;
    expect(peftkit_generate(m, prompt, 3, &gc, out, 64, &n, on_token, &s), PEFTKIT_OK, "generate, callback stops after 3");
    check(n == 3 && s.calls == 3, "generation stopped at 3 tokens, the last one kept");
    memset(&s, 0, sizeof s);
    expect(peftkit_generate(m, prompt, 3, &gc, NULL, 0, &n, on_token, &s), PEFTKIT_OK, "generate(out_tokens NULL, callback only)");
    check(n == 8 && s.calls == 8, "callback-only generation reports the count");
    memset(&s, 0, sizeof s);
    s.model = m;
    s.reentrant = 12345;
    s.listing = 12345;
    s.stop_after = 1;
    expect(peftkit_generate(m, prompt, 3, &gc, out, 64, &n, on_token, &s), PEFTKIT_OK, "generate, callback calls back into the model");
    expect(s.reentrant, PEFTKIT_ERR_BUSY, "a call overlapping generate on the same model");
    expect(s.listing, PEFTKIT_OK, "adapter_count while the model generates (a read of the adapter list)");

    gc.max_new_tokens = 0;
    expect(peftkit_generate(m, prompt, 3, &gc, NULL, 0, &n, NULL, NULL), PEFTKIT_OK, "generate(max_new_tokens 0)");
    check(n == 0, "max_new_tokens 0 generates nothing");

    /* A stop token ends generation and is included. */
    peftkit_generate_config_init(&gc);
    gc.max_new_tokens = 8;
    expect(peftkit_generate(m, prompt, 3, &gc, out, 64, &n, NULL, NULL), PEFTKIT_OK, "generate (reference)");
    int32_t stop = out[0];
    gc.stop_tokens = &stop;
    gc.n_stop_tokens = 1;
    expect(peftkit_generate(m, prompt, 3, &gc, out2, 64, &n2, NULL, NULL), PEFTKIT_OK, "generate with stop token");
    check(n2 == 1 && out2[0] == stop, "stops after the first token, which is the stop token");

    peftkit_generate_config_init(&gc);
    gc.max_new_tokens = 4;
    int32_t long_prompt[1030];
    for (int i = 0; i < 1030; i++) long_prompt[i] = i % VOCAB;
    expect(peftkit_generate(m, long_prompt, 1030, &gc, out, 64, &n, NULL, NULL), bad,
           "generate(prompt longer than max_positions)");
}

static int file_exists(const char *dir, const char *name) {
    char path[1024];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static void test_save_load(peftkit_model *m, const char *scratch, uint64_t seed) {
    printf("# save and load\n");
    char dir[1024], garbage_dir[1024], buf[256];
    snprintf(dir, sizeof dir, "%s/test_abi-adapter-a", scratch);
    snprintf(garbage_dir, sizeof garbage_dir, "%s/test_abi-garbage", scratch);
    const peftkit_status bad = PEFTKIT_ERR_INVALID_ARGUMENT;
    int32_t n = 0;

    expect(peftkit_adapter_save(m, NULL, dir), bad, "adapter_save(name NULL)");
    expect(peftkit_adapter_save(m, "a", NULL), bad, "adapter_save(dir NULL)");
    expect(peftkit_adapter_save(m, "a", ""), bad, "adapter_save(dir \"\")");
    expect(peftkit_adapter_save(m, "nope", dir), PEFTKIT_ERR_NOT_FOUND, "adapter_save(unknown name)");
    expect(peftkit_adapter_save(m, "a", "/proc/peftkit-no-such-dir/x"), PEFTKIT_ERR_IO, "adapter_save(unwritable dir)");
    expect(peftkit_adapter_save(m, "a", dir), PEFTKIT_OK, "adapter_save(\"a\")");
    check(file_exists(dir, "adapter_config.json") && file_exists(dir, "adapter.safetensors"),
          "adapter_config.json and adapter.safetensors written");
    expect(peftkit_adapter_save(m, "a", dir), PEFTKIT_OK, "adapter_save(\"a\") again (replaces)");

    expect(peftkit_adapter_load(m, NULL, "b", buf, sizeof buf), bad, "adapter_load(dir NULL)");
    expect(peftkit_adapter_load(m, dir, "", buf, sizeof buf), bad, "adapter_load(name \"\")");
    expect(peftkit_adapter_load(m, "/nonexistent/peftkit", "b", buf, sizeof buf), PEFTKIT_ERR_IO, "adapter_load(missing dir)");
    expect(peftkit_adapter_load(m, dir, NULL, buf, sizeof buf), PEFTKIT_ERR_STATE, "adapter_load(name from file \"a\", already attached)");
    expect(peftkit_adapter_load(m, dir, "a", NULL, 0), PEFTKIT_ERR_STATE, "adapter_load(name \"a\", already attached)");
    expect(peftkit_adapter_load(m, dir, "bb", buf, 2), PEFTKIT_ERR_BUFFER_TOO_SMALL, "adapter_load(name \"bb\", name_cap 2)");
    expect(peftkit_adapter_load(m, dir, "b", buf, (size_t)-1), bad, "adapter_load(name_cap SIZE_MAX)");
    int32_t before = -1;
    peftkit_adapter_count(m, &before);
    memset(buf, 0, sizeof buf);
    expect(peftkit_adapter_load(m, dir, "b", buf, sizeof buf), PEFTKIT_OK, "adapter_load(as \"b\")");
    check(strcmp(buf, "b") == 0, "name_out is \"b\"");
    peftkit_adapter_count(m, &n);
    check(n == before + 1, "one adapter more");

    /* "b" is a copy of "a": equal logits. */
    int32_t ids[SEQ];
    fill_pattern(ids, 1, SEQ, 1);
    float *la = malloc(sizeof(float) * SEQ * VOCAB), *lb = malloc(sizeof(float) * SEQ * VOCAB);
    if (la && lb) {
        peftkit_adapter_set_active(m, "a");
        expect(peftkit_forward(m, ids, NULL, 1, SEQ, la, (size_t)SEQ * VOCAB, NULL, NULL), PEFTKIT_OK, "forward with \"a\"");
        expect(peftkit_adapter_set_active(m, "b"), PEFTKIT_OK, "adapter_set_active(\"b\")");
        expect(peftkit_forward(m, ids, NULL, 1, SEQ, lb, (size_t)SEQ * VOCAB, NULL, NULL), PEFTKIT_OK, "forward with \"b\"");
        check(memcmp(la, lb, sizeof(float) * SEQ * VOCAB) == 0, "a loaded copy gives bit-identical logits");
    }

    /* Into a fresh model of the same shape, under the name stored in the folder. */
    peftkit_model_config mc;
    peftkit_model_config_init(&mc);
    peftkit_model *m2 = NULL;
    expect(peftkit_model_create(&mc, seed, &m2), PEFTKIT_OK, "model_create (same config and seed)");
    if (m2) {
        peftkit_adapter_count(m2, &before);
        expect(peftkit_adapter_load(m2, dir, NULL, buf, 1), PEFTKIT_ERR_BUFFER_TOO_SMALL, "adapter_load(name from file, name_cap 1)");
        peftkit_adapter_count(m2, &n);
        check(n == before, "the load was undone: no adapter attached");
        expect(peftkit_adapter_load(m2, dir, NULL, buf, sizeof buf), PEFTKIT_OK, "adapter_load(name from file)");
        check(strcmp(buf, "a") == 0, "the stored name is \"a\"");
        expect(peftkit_adapter_set_active(m2, "a"), PEFTKIT_OK, "adapter_set_active on the new model");
        if (la && lb) {
            expect(peftkit_forward(m2, ids, NULL, 1, SEQ, lb, (size_t)SEQ * VOCAB, NULL, NULL), PEFTKIT_OK, "forward on the new model");
            check(memcmp(la, lb, sizeof(float) * SEQ * VOCAB) == 0, "same seed + reloaded adapter: bit-identical logits");
        }
        peftkit_model_free(m2);
    }
    free(la);
    free(lb);

    /* Into a model of another shape. */
    mc.hidden_size = 32;
    peftkit_model *m3 = NULL;
    expect(peftkit_model_create(&mc, seed, &m3), PEFTKIT_OK, "model_create (hidden 32)");
    if (m3) {
        expect(peftkit_adapter_load(m3, dir, NULL, buf, sizeof buf), PEFTKIT_ERR_FORMAT, "adapter_load into a model of another shape");
        peftkit_model_free(m3);
    }

    /* A folder with garbage in it. */
    mkdir(garbage_dir, 0755);
    char path[1100];
    snprintf(path, sizeof path, "%s/adapter_config.json", garbage_dir);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("{ this is not json", f);
        fclose(f);
    }
    snprintf(path, sizeof path, "%s/adapter.safetensors", garbage_dir);
    f = fopen(path, "w");
    if (f) {
        fputs("\x05\x00\x00\x00\x00\x00\x00\x00{}", f);
        fclose(f);
    }
    expect(peftkit_adapter_load(m, garbage_dir, "g", buf, sizeof buf), PEFTKIT_ERR_FORMAT, "adapter_load(malformed files)");
}

static void test_remove(peftkit_model *m) {
    printf("# remove\n");
    int32_t before = 0, n = 0;
    char buf[16];
    size_t len = 99;
    peftkit_adapter_count(m, &before);
    expect(peftkit_adapter_remove(m, NULL), PEFTKIT_ERR_INVALID_ARGUMENT, "adapter_remove(name NULL)");
    expect(peftkit_adapter_remove(m, "nope"), PEFTKIT_ERR_NOT_FOUND, "adapter_remove(unknown name)");
    expect(peftkit_adapter_set_active(m, "b"), PEFTKIT_OK, "adapter_set_active(\"b\")");
    expect(peftkit_adapter_remove(m, "b"), PEFTKIT_OK, "adapter_remove(active adapter \"b\")");
    expect(peftkit_adapter_get_active(m, buf, sizeof buf, &len), PEFTKIT_OK, "adapter_get_active after removing it");
    check(len == 0 && buf[0] == '\0', "no adapter active after removing the active one");
    peftkit_adapter_count(m, &n);
    check(n == before - 1, "one adapter fewer");
    expect(peftkit_adapter_remove(m, "b"), PEFTKIT_ERR_NOT_FOUND, "adapter_remove(\"b\") twice");
}

/* Two models trained at the same time from two threads. */
struct worker {
    peftkit_model *model;
    peftkit_status status;
    float first, last;
};

static void *train_worker(void *arg) {
    struct worker *w = arg;
    peftkit_train_config tc;
    peftkit_train_config_init(&tc);
    tc.learning_rate = 1e-2f;
    peftkit_train_result r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    int32_t ids[BATCH * SEQ];
    fill_pattern(ids, BATCH, SEQ, 0);
    w->status = PEFTKIT_OK;
    for (int i = 0; i < 10 && w->status == PEFTKIT_OK; i++) {
        w->status = peftkit_train_step(w->model, ids, NULL, BATCH, SEQ, &tc, &r);
        if (i == 0) w->first = r.loss;
        w->last = r.loss;
    }
    return NULL;
}

static void test_threads(uint64_t seed) {
    printf("# two models on two threads\n");
    peftkit_model_config mc;
    peftkit_model_config_init(&mc);
    struct worker w[2];
    pthread_t t[2];
    int ok = 1;
    memset(w, 0, sizeof w);
    for (int i = 0; i < 2; i++) {
        ok &= peftkit_model_create(&mc, seed, &w[i].model) == PEFTKIT_OK;
        ok &= w[i].model && peftkit_adapter_attach_json(w[i].model, "t", "{\"config\": \"seq_bn\"}") == PEFTKIT_OK;
        ok &= w[i].model && peftkit_adapter_set_active(w[i].model, "t") == PEFTKIT_OK;
    }
    check(ok, "two models with an active adapter each");
    if (ok) {
        for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, train_worker, &w[i]);
        for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
        expect(w[0].status, PEFTKIT_OK, "thread 0 trained");
        expect(w[1].status, PEFTKIT_OK, "thread 1 trained");
        check(w[0].first == w[1].first && w[0].last == w[1].last,
              "equal models trained concurrently give equal losses");
    }
    for (int i = 0; i < 2; i++) peftkit_model_free(w[i].model);
}

static void test_llama(void) {
    printf("# llama shape\n");
    peftkit_model_config mc;
    peftkit_model_config_init(&mc);
    mc.architecture = PEFTKIT_ARCH_LLAMA;
    mc.num_kv_heads = 2;
    mc.intermediate_size = 128;
    mc.tie_word_embeddings = 0;
    peftkit_model *m = NULL;
    expect(peftkit_model_create(&mc, 3, &m), PEFTKIT_OK, "model_create(llama, 4 heads / 2 kv heads)");
    if (!m) return;
    peftkit_model_config c;
    peftkit_model_config_init(&c);
    expect(peftkit_model_get_config(m, &c), PEFTKIT_OK, "model_get_config(llama)");
    check(c.architecture == PEFTKIT_ARCH_LLAMA && c.num_kv_heads == 2 && c.head_dim == 16 && c.intermediate_size == 128 &&
              fabsf(c.norm_eps - 1e-6f) < 1e-12f && c.qkv_bias == 0 && c.output_bias == 0 && c.mlp_bias == 0 &&
              c.tie_word_embeddings == 0,
          "llama defaults: eps 1e-6, no biases, untied as asked");
    expect(peftkit_adapter_attach_json(m, "h", "{\"config\": \"double_seq_bn\"}"), PEFTKIT_OK,
           "adapter_attach_json(double_seq_bn) on llama");
    expect(peftkit_adapter_set_active(m, "h"), PEFTKIT_OK, "adapter_set_active on llama");
    peftkit_train_config tc;
    peftkit_train_config_init(&tc);
    peftkit_train_result r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    int32_t ids[BATCH * SEQ];
    fill_pattern(ids, BATCH, SEQ, 0);
    expect(peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, &r), PEFTKIT_OK, "train_step on llama");
    check(isfinite(r.loss), "llama loss finite");

    /* LoRA in llama.cpp's GGUF adapter format: saved, loaded back under another name, same logits. */
    expect(peftkit_adapter_attach_json(m, "l", "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, "
                                               "\"target_modules\": [\"q_proj\", \"k_proj\", \"down_proj\"]}"),
           PEFTKIT_OK, "adapter_attach_json(LoRA) on llama");
    expect(peftkit_adapter_set_active(m, "l"), PEFTKIT_OK, "adapter_set_active(LoRA)");
    for (int i = 0; i < 3; i++) peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, &r);
    static float want[BATCH * SEQ * VOCAB], got[BATCH * SEQ * VOCAB];
    expect(peftkit_forward(m, ids, NULL, BATCH, SEQ, want, BATCH * SEQ * VOCAB, NULL, NULL), PEFTKIT_OK, "forward(LoRA)");
    char gguf[] = "/tmp/peftkit-test-abi-XXXXXX";
    int fd = mkstemp(gguf);
    if (fd >= 0) close(fd);
    expect(peftkit_adapter_save_as(m, "l", gguf, PEFTKIT_ADAPTER_FORMAT_GGUF), PEFTKIT_OK, "adapter_save_as(GGUF)");
    expect(peftkit_adapter_load(m, gguf, "l2", NULL, 0), PEFTKIT_ERR_IO, "adapter_load(GGUF file without .gguf: a folder path)");
    char named[64];
    snprintf(named, sizeof named, "%s.gguf", gguf);
    expect(rename(gguf, named) == 0 ? PEFTKIT_OK : PEFTKIT_ERR_IO, PEFTKIT_OK, "rename to .gguf");
    expect(peftkit_adapter_load(m, named, "l2", NULL, 0), PEFTKIT_OK, "adapter_load(.gguf)");
    expect(peftkit_adapter_set_active(m, "l2"), PEFTKIT_OK, "adapter_set_active(LoRA from GGUF)");
    expect(peftkit_forward(m, ids, NULL, BATCH, SEQ, got, BATCH * SEQ * VOCAB, NULL, NULL), PEFTKIT_OK, "forward(LoRA from GGUF)");
    float maxdiff = 0;
    for (int i = 0; i < BATCH * SEQ * VOCAB; i++) maxdiff = fmaxf(maxdiff, fabsf(want[i] - got[i]));
    check(maxdiff < 1e-5f, "LoRA from GGUF gives the saved adapter's logits");
    unlink(named);
    peftkit_model_free(m);
}

/* Whole models: a merged LoRA saved as a Hugging Face folder and as GGUF (F32: the same logits bit for bit; F16:
 * close), and a fully fine-tuned model saved and read back. */
static int logits_of(peftkit_model *m, const int32_t *ids, float *out) {
    return peftkit_forward(m, ids, NULL, BATCH, SEQ, out, BATCH * SEQ * VOCAB, NULL, NULL);
}

static void test_model_save(const char *scratch) {
    printf("# model save\n");
    peftkit_model_config mc;
    peftkit_model_config_init(&mc);
    mc.architecture = PEFTKIT_ARCH_LLAMA;
    mc.num_kv_heads = 2;
    peftkit_model *m = NULL;
    expect(peftkit_model_create(&mc, 5, &m), PEFTKIT_OK, "model_create(llama)");
    if (!m) return;
    int32_t ids[BATCH * SEQ];
    fill_pattern(ids, BATCH, SEQ, 0);
    peftkit_train_config tc;
    peftkit_train_config_init(&tc);
    tc.learning_rate = 1e-2f;
    expect(peftkit_adapter_attach_json(m, "l", "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, "
                                               "\"target_modules\": [\"q_proj\", \"k_proj\", \"v_proj\", \"down_proj\"]}"),
           PEFTKIT_OK, "adapter_attach_json(LoRA)");
    expect(peftkit_adapter_set_active(m, "l"), PEFTKIT_OK, "adapter_set_active(LoRA)");
    for (int i = 0; i < 3; i++) peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, NULL);
    expect(peftkit_adapter_merge(m, "l"), PEFTKIT_OK, "adapter_merge(LoRA)");
    static float want[BATCH * SEQ * VOCAB], got[BATCH * SEQ * VOCAB];
    expect(logits_of(m, ids, want), PEFTKIT_OK, "forward(merged)");

    char dir[1100], gguf[1100], gguf16[1100], p[1200];
    snprintf(dir, sizeof dir, "%s/abi-model-hf", scratch);
    snprintf(gguf, sizeof gguf, "%s/abi-model.gguf", scratch);
    snprintf(gguf16, sizeof gguf16, "%s/abi-model-f16.gguf", scratch);
    const char *formats[3] = {dir, gguf, gguf16};
    const int32_t codes[3] = {PEFTKIT_MODEL_FORMAT_HF, PEFTKIT_MODEL_FORMAT_GGUF_F32, PEFTKIT_MODEL_FORMAT_GGUF_F16};
    const char *what[3] = {"Hugging Face folder", "GGUF F32", "GGUF F16"};
    for (int k = 0; k < 3; k++) {
        char label[96];
        snprintf(label, sizeof label, "model_save(merged LoRA, %s)", what[k]);
        expect(peftkit_model_save(m, formats[k], codes[k]), PEFTKIT_OK, label);
        peftkit_model *back = NULL;
        snprintf(label, sizeof label, "model_load(%s)", what[k]);
        expect(peftkit_model_load(formats[k], &back), PEFTKIT_OK, label);
        if (!back) continue;
        expect(logits_of(back, ids, got), PEFTKIT_OK, "forward(saved model)");
        float maxdiff = 0, maxabs = 0;
        for (int i = 0; i < BATCH * SEQ * VOCAB; i++) {
            maxdiff = fmaxf(maxdiff, fabsf(want[i] - got[i]));
            maxabs = fmaxf(maxabs, fabsf(want[i]));
        }
        snprintf(label, sizeof label, "%s read back: %s logits", what[k], k < 2 ? "identical" : "F16-close");
        check(k < 2 ? memcmp(want, got, sizeof want) == 0 : maxdiff > 0 && maxdiff < 1e-2f * maxabs, label);
        peftkit_model_free(back);
    }

    /* Full fine-tuning: the trained weights are what is saved. */
    expect(peftkit_adapter_unmerge(m, "l"), PEFTKIT_OK, "adapter_unmerge(LoRA)");
    expect(peftkit_adapter_set_active(m, NULL), PEFTKIT_OK, "adapter_set_active(NULL)");
    expect(peftkit_model_set_full_finetuning(m, 1), PEFTKIT_OK, "model_set_full_finetuning(1)");
    for (int i = 0; i < 2; i++) peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, NULL);
    expect(logits_of(m, ids, want), PEFTKIT_OK, "forward(fully tuned)");
    expect(peftkit_model_save(m, gguf, PEFTKIT_MODEL_FORMAT_GGUF_F32), PEFTKIT_OK, "model_save(fully tuned, GGUF F32)");
    peftkit_model *back = NULL;
    expect(peftkit_model_load(gguf, &back), PEFTKIT_OK, "model_load(fully tuned GGUF)");
    if (back) {
        logits_of(back, ids, got);
        check(memcmp(want, got, sizeof want) == 0, "fully tuned GGUF F32 read back: identical logits");
        peftkit_model_free(back);
    }
    unlink(gguf);
    unlink(gguf16);
    snprintf(p, sizeof p, "%s/config.json", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);
    rmdir(dir);
    peftkit_model_free(m);
}

/* The train step in two halves: compute + apply equals train_step bit for bit; two half-batches whose gradient
 * buffers are summed (the host's all-reduce) give the whole batch's step; misuse is refused. */
static peftkit_model *split_model(uint64_t seed) {
    peftkit_model_config mc;
    peftkit_model_config_init(&mc);
    peftkit_model *m = NULL;
    if (peftkit_model_create(&mc, seed, &m) != PEFTKIT_OK) return NULL;
    if (peftkit_adapter_attach_json(m, "l", "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8}") != PEFTKIT_OK ||
        peftkit_adapter_set_active(m, "l") != PEFTKIT_OK) {
        peftkit_model_free(m);
        return NULL;
    }
    return m;
}

static void test_split_step(uint64_t seed) {
    printf("# train step in two halves\n");
    peftkit_model *a = split_model(seed), *b = split_model(seed), *r0 = split_model(seed), *r1 = split_model(seed);
    check(a && b && r0 && r1, "four models with a LoRA adapter");
    if (!(a && b && r0 && r1)) goto done;
    peftkit_train_config tc;
    peftkit_train_config_init(&tc);
    tc.learning_rate = 1e-2f;
    int32_t ids[BATCH * SEQ];
    fill_pattern(ids, BATCH, SEQ, 3);
    peftkit_train_result ra, rb;
    memset(&ra, 0, sizeof ra); ra.struct_size = sizeof ra;
    memset(&rb, 0, sizeof rb); rb.struct_size = sizeof rb;
    float loss = 0;
    int64_t tokens = 0;
    expect(peftkit_train_apply_gradients(b, &tc, &rb), PEFTKIT_ERR_STATE, "train_apply_gradients before any compute");
    expect(peftkit_train_step(a, ids, NULL, BATCH, SEQ, &tc, &ra), PEFTKIT_OK, "train_step (reference)");
    expect(peftkit_train_compute_gradients(b, ids, NULL, BATCH, SEQ, &tc, 0, &loss, &tokens), PEFTKIT_OK, "train_compute_gradients");
    expect(peftkit_train_apply_gradients(b, &tc, &rb), PEFTKIT_OK, "train_apply_gradients");
    expect(peftkit_train_apply_gradients(b, &tc, &rb), PEFTKIT_ERR_STATE, "train_apply_gradients twice");
    check(ra.loss == rb.loss && ra.grad_norm == rb.grad_norm && ra.step == rb.step && ra.tokens == rb.tokens && loss == ra.loss &&
              tokens == ra.tokens,
          "compute + apply report what train_step reports");
    float *ga = NULL, *gb = NULL;
    int64_t na = 0, nb = 0;
    expect(peftkit_train_gradients(a, &ga, &na), PEFTKIT_OK, "train_gradients");
    expect(peftkit_train_gradients(b, &gb, &nb), PEFTKIT_OK, "train_gradients (split)");
    int64_t params = 0;
    peftkit_adapter_num_params(a, "l", &params);
    check(ga && na == params && nb == na, "the gradient buffer holds one float per trainable parameter");
    expect(peftkit_train_gradients(a, NULL, &na), PEFTKIT_ERR_INVALID_ARGUMENT, "train_gradients(data NULL)");
    expect(peftkit_train_compute_gradients(b, ids, NULL, BATCH, SEQ, &tc, -1, NULL, NULL), PEFTKIT_ERR_INVALID_ARGUMENT,
           "train_compute_gradients(loss_divisor -1)");

    /* Two ranks with one row each and the global token count as divisor; the host sums the buffers. */
    int64_t total = ra.tokens, t0 = 0, t1 = 0;
    float l0 = 0, l1 = 0;
    expect(peftkit_train_compute_gradients(r0, ids, NULL, 1, SEQ, &tc, total, &l0, &t0), PEFTKIT_OK, "rank 0 computes");
    expect(peftkit_train_compute_gradients(r1, ids + SEQ, NULL, 1, SEQ, &tc, total, &l1, &t1), PEFTKIT_OK, "rank 1 computes");
    check(t0 + t1 == total && fabsf(l0 + l1 - ra.loss) <= 1e-6f * fabsf(ra.loss), "the ranks' losses add up to the batch's");
    float *g0 = NULL, *g1 = NULL;
    int64_t n0 = 0, n1 = 0;
    peftkit_train_gradients(r0, &g0, &n0);
    peftkit_train_gradients(r1, &g1, &n1);
    if (g0 && g1 && n0 == n1) {
        for (int64_t i = 0; i < n0; i++) {
            float s = g0[i] + g1[i];
            g0[i] = s;
            g1[i] = s;
        }
    }
    peftkit_train_result q0, q1;
    memset(&q0, 0, sizeof q0); q0.struct_size = sizeof q0;
    memset(&q1, 0, sizeof q1); q1.struct_size = sizeof q1;
    expect(peftkit_train_apply_gradients(r0, &tc, &q0), PEFTKIT_OK, "rank 0 applies");
    expect(peftkit_train_apply_gradients(r1, &tc, &q1), PEFTKIT_OK, "rank 1 applies");
    check(fabsf(q0.grad_norm - ra.grad_norm) <= 1e-5f * ra.grad_norm && q0.grad_norm == q1.grad_norm,
          "summed gradients have the whole batch's norm, the same on both ranks");
    float la = 0, l0b = 0, l1b = 0;
    expect(peftkit_forward(a, ids, NULL, BATCH, SEQ, NULL, 0, &la, NULL), PEFTKIT_OK, "forward after the step");
    expect(peftkit_forward(r0, ids, NULL, BATCH, SEQ, NULL, 0, &l0b, NULL), PEFTKIT_OK, "rank 0 forward");
    expect(peftkit_forward(r1, ids, NULL, BATCH, SEQ, NULL, 0, &l1b, NULL), PEFTKIT_OK, "rank 1 forward");
    check(l0b == l1b && fabsf(l0b - la) <= 1e-5f * fabsf(la), "both ranks equal each other and the one-process step");
done:
    peftkit_model_free(a);
    peftkit_model_free(b);
    peftkit_model_free(r0);
    peftkit_model_free(r1);
}

/* Training checkpoints: save after 3 steps, resume in a fresh model, 3 more steps equal the uninterrupted run. */
static void test_checkpoints(const char *scratch, uint64_t seed) {
    printf("# checkpoints\n");
    char dir[1024], buf[256];
    snprintf(dir, sizeof dir, "%s/test_abi-checkpoint", scratch);
    const peftkit_status bad = PEFTKIT_ERR_INVALID_ARGUMENT;
    peftkit_model_config mc;
    peftkit_model_config_init(&mc);
    const char *houlsby = "{\"config\": \"houlsby\"}";
    peftkit_train_config tc;
    peftkit_train_config_init(&tc);
    tc.learning_rate = 1e-2f;
    tc.schedule = PEFTKIT_SCHEDULE_LINEAR;
    tc.warmup_steps = 2;
    tc.total_steps = 6;
    peftkit_train_result r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    int32_t ids[BATCH * SEQ];
    float straight[6], resumed[6];

    peftkit_model *a = NULL, *b = NULL, *c = NULL;
    int ok = peftkit_model_create(&mc, seed, &a) == PEFTKIT_OK && peftkit_model_create(&mc, seed, &b) == PEFTKIT_OK &&
             peftkit_model_create(&mc, seed, &c) == PEFTKIT_OK;
    ok = ok && peftkit_adapter_attach_json(a, "ck", houlsby) == PEFTKIT_OK && peftkit_adapter_set_active(a, "ck") == PEFTKIT_OK;
    ok = ok && peftkit_adapter_attach_json(b, "ck", houlsby) == PEFTKIT_OK && peftkit_adapter_set_active(b, "ck") == PEFTKIT_OK;
    check(ok, "three models, adapter \"ck\" on two");
    if (ok) {
        for (int i = 0; i < 6; i++) {
            fill_pattern(ids, BATCH, SEQ, i);
            ok &= peftkit_train_step(a, ids, NULL, BATCH, SEQ, &tc, &r) == PEFTKIT_OK;
            straight[i] = r.loss;
        }
        for (int i = 0; i < 3; i++) {
            fill_pattern(ids, BATCH, SEQ, i);
            ok &= peftkit_train_step(b, ids, NULL, BATCH, SEQ, &tc, &r) == PEFTKIT_OK;
            resumed[i] = r.loss;
        }
        check(ok, "6 + 3 training steps");

        expect(peftkit_checkpoint_save(NULL, "ck", dir), bad, "checkpoint_save(model NULL)");
        expect(peftkit_checkpoint_save(b, NULL, dir), bad, "checkpoint_save(name NULL)");
        expect(peftkit_checkpoint_save(b, "ck", NULL), bad, "checkpoint_save(dir NULL)");
        expect(peftkit_checkpoint_save(b, "ck", ""), bad, "checkpoint_save(dir \"\")");
        expect(peftkit_checkpoint_save(b, "nope", dir), PEFTKIT_ERR_NOT_FOUND, "checkpoint_save(unknown adapter)");
        expect(peftkit_checkpoint_save(b, "ck", "/proc/peftkit-no-such-dir/x"), PEFTKIT_ERR_IO, "checkpoint_save(unwritable dir)");
        expect(peftkit_checkpoint_save(b, "ck", dir), PEFTKIT_OK, "checkpoint_save after 3 steps");
        check(file_exists(dir, "checkpoint.json"), "checkpoint.json written");
        peftkit_model_free(b);
        b = NULL;

        expect(peftkit_checkpoint_load(c, NULL, buf, sizeof buf), bad, "checkpoint_load(dir NULL)");
        expect(peftkit_checkpoint_load(c, "/nonexistent/peftkit-ckpt", buf, sizeof buf), PEFTKIT_ERR_IO,
               "checkpoint_load(missing dir)");
        expect(peftkit_checkpoint_load(c, dir, buf, (size_t)-1), bad, "checkpoint_load(name_cap SIZE_MAX)");
        expect(peftkit_checkpoint_load(c, dir, buf, 2), PEFTKIT_ERR_BUFFER_TOO_SMALL, "checkpoint_load(name_cap 2)");
        int32_t n = -1;
        peftkit_adapter_count(c, &n);
        check(n == 0, "a load that did not fit name_out attached nothing");
        expect(peftkit_checkpoint_load(c, dir, buf, sizeof buf), PEFTKIT_OK, "checkpoint_load");
        check(strcmp(buf, "ck") == 0, "name_out is the stored name");
        expect(peftkit_checkpoint_load(c, dir, NULL, 0), PEFTKIT_ERR_STATE, "checkpoint_load again: name taken");
        expect(peftkit_adapter_set_active(c, "ck"), PEFTKIT_OK, "adapter_set_active(resumed)");
        ok = 1;
        int64_t last_step = 0;
        for (int i = 3; i < 6; i++) {
            fill_pattern(ids, BATCH, SEQ, i);
            ok &= peftkit_train_step(c, ids, NULL, BATCH, SEQ, &tc, &r) == PEFTKIT_OK;
            resumed[i] = r.loss;
            last_step = r.step;
        }
        check(ok && last_step == 6, "3 more steps after resuming; the step count continues to 6");
        check(memcmp(straight, resumed, sizeof straight) == 0, "resumed losses are bit-identical to the uninterrupted run");

        /* A checkpoint is also a loadable adapter for a model of its shape, and refused by another shape. */
        mc.hidden_size = 32;
        peftkit_model *other = NULL;
        if (peftkit_model_create(&mc, seed, &other) == PEFTKIT_OK) {
            expect(peftkit_checkpoint_load(other, dir, buf, sizeof buf), PEFTKIT_ERR_FORMAT,
                   "checkpoint_load into a model of another shape");
            peftkit_model_free(other);
        }
    }
    peftkit_model_free(a);
    peftkit_model_free(b);
    peftkit_model_free(c);
}

/* ------------------------------------------------------------------------------------------------- */
/* Tokenization: the 97-token fixture tokenizer on a random model, and SmolLM2's when                 */
/* PEFTKIT_SMOLLM2_GGUF names its GGUF file.                                                          */
/* ------------------------------------------------------------------------------------------------- */

/* Tests/Fixtures/tokenizer/tiny, seen from bindings/c (make's working directory) unless PEFTKIT_FIXTURES is set. */
static void tiny_tokenizer_path(char *out, size_t cap) {
    const char *fixtures = getenv("PEFTKIT_FIXTURES");
    snprintf(out, cap, "%s/tokenizer/tiny/tokenizer.json", fixtures && fixtures[0] ? fixtures : "../../Tests/Fixtures");
}

struct stream_state {
    peftkit_model *model;
    char text[512];
    size_t len;
    peftkit_status status;
};

/* Decodes each token as it is generated, from inside the callback of the generating model. */
static int32_t stream_token(int32_t token, void *user) {
    struct stream_state *s = user;
    size_t n = 0;
    peftkit_status st = peftkit_detokenize(s->model, &token, 1, 0, s->text + s->len, sizeof s->text - s->len, &n);
    if (st != PEFTKIT_OK) s->status = st;
    else s->len += n;
    return 0;
}

static void test_tokenizer_tiny(void) {
    printf("# tokenization (fixture tokenizer)\n");
    peftkit_model_config mc;
    peftkit_model_config_init(&mc);
    peftkit_model *m = NULL;
    expect(peftkit_model_create(&mc, 5, &m), PEFTKIT_OK, "model_create for the tokenizer tests");
    if (!m) return;
    peftkit_tokenizer_info info;
    memset(&info, 0x55, sizeof info);
    info.struct_size = sizeof info;
    expect(peftkit_tokenizer_get_info(m, &info), PEFTKIT_OK, "tokenizer_get_info(random model)");
    check(info.has_tokenizer == 0 && info.has_chat_template == 0 && info.vocab_size == 0 && info.bos_id == -1 &&
              info.eos_id == -1 && info.eot_id == -1 && info.adds_bos == 0,
          "a random model has no tokenizer and no chat template");
    int32_t ids[64];
    size_t n = 0;
    char text[256];
    expect(peftkit_tokenize(m, "hi", 2, 1, 1, ids, 64, &n), PEFTKIT_ERR_STATE, "tokenize without a tokenizer");
    ids[0] = 1;
    expect(peftkit_detokenize(m, ids, 1, 0, text, sizeof text, &n), PEFTKIT_ERR_STATE, "detokenize without a tokenizer");

    char path[1024];
    tiny_tokenizer_path(path, sizeof path);
    expect(peftkit_tokenizer_load(m, path), PEFTKIT_OK, "tokenizer_load(tiny/tokenizer.json)");
    expect(peftkit_tokenizer_get_info(m, &info), PEFTKIT_OK, "tokenizer_get_info after tokenizer_load");
    check(info.has_tokenizer == 1 && info.has_chat_template == 1 && info.vocab_size == 97 && info.bos_id == -1 &&
              info.eos_id == 96 && info.eot_id == 96 && info.adds_bos == 0,
          "fixture tokenizer: vocab 97, no BOS, EOS = end of turn = 96, ChatML template");

    const char *hello = "Hi there!\n<|im_end|>";
    const int32_t want[11] = {'H' - 0x21, 'i' - 0x21, 94, 't' - 0x21, 'h' - 0x21, 'e' - 0x21, 'r' - 0x21, 'e' - 0x21, 0, 95, 96};
    expect(peftkit_tokenize(m, hello, strlen(hello), 1, 1, NULL, 0, &n), PEFTKIT_OK, "tokenize size query");
    check(n == 11, "size query reports 11 ids");
    n = 0;
    expect(peftkit_tokenize(m, hello, strlen(hello), 1, 1, ids, 4, &n), PEFTKIT_ERR_BUFFER_TOO_SMALL, "tokenize into 4 ids");
    check(n == 11, "a short buffer still reports the 11 ids needed");
    expect(peftkit_tokenize(m, hello, strlen(hello), 1, 1, ids, 64, &n), PEFTKIT_OK, "tokenize");
    check(n == 11 && memcmp(ids, want, sizeof want) == 0, "tokenize gives the fixture ids (special token parsed)");
    size_t n_literal = 0;
    int32_t literal[64];
    expect(peftkit_tokenize(m, hello, strlen(hello), 0, 0, literal, 64, &n_literal), PEFTKIT_OK, "tokenize(parse_special 0)");
    check(n_literal == 10 + strlen("<|im_end|>"), "parse_special 0 spells <|im_end|> out byte by byte");
    expect(peftkit_tokenize(m, NULL, 0, 1, 1, ids, 64, &n), PEFTKIT_OK, "tokenize(NULL, 0) is the empty text");
    check(n == 0, "the empty text has no ids");

    expect(peftkit_tokenize(m, hello, strlen(hello), 1, 1, ids, 64, &n), PEFTKIT_OK, "tokenize again");
    size_t len = 0;
    expect(peftkit_detokenize(m, ids, n, 0, NULL, 0, &len), PEFTKIT_OK, "detokenize size query");
    check(len == strlen(hello), "detokenize size query: the text's length");
    expect(peftkit_detokenize(m, ids, n, 0, text, len, &len), PEFTKIT_ERR_BUFFER_TOO_SMALL, "detokenize without room for the NUL");
    expect(peftkit_detokenize(m, ids, n, 0, text, sizeof text, &len), PEFTKIT_OK, "detokenize");
    check(len == strlen(hello) && strcmp(text, hello) == 0, "detokenize(tokenize(text)) == text");
    expect(peftkit_detokenize(m, ids, n, 1, text, sizeof text, &len), PEFTKIT_OK, "detokenize(skip_special)");
    check(strcmp(text, "Hi there!\n") == 0, "skip_special drops <|im_end|>");

    const char *roles[2] = {"system", "user"};
    const char *contents[2] = {"Be brief.", "hi"};
    const char *chat = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n";
    expect(peftkit_chat_template_apply(m, roles, contents, 2, 1, NULL, 0, &len), PEFTKIT_OK, "chat_template_apply size query");
    check(len == strlen(chat), "chat size query: the rendering's length");
    expect(peftkit_chat_template_apply(m, roles, contents, 2, 1, text, sizeof text, &len), PEFTKIT_OK, "chat_template_apply");
    check(strcmp(text, chat) == 0, "ChatML rendering of a system + user conversation");
    expect(peftkit_chat_template_apply(m, NULL, NULL, 0, 0, text, sizeof text, &len), PEFTKIT_OK, "chat_template_apply(no messages)");
    check(len == 0 && text[0] == '\0', "no messages, no generation prompt: empty text");

    /* Decoding from inside the generation callback of the same model is allowed. */
    peftkit_generate_config gc;
    peftkit_generate_config_init(&gc);
    gc.max_new_tokens = 6;
    int32_t prompt[2] = {'H' - 0x21, 'i' - 0x21};
    int32_t out[6];
    int32_t n_out = 0;
    /* Random weights produce ids up to 255, beyond the tokenizer's 97: restrict to a model of vocab 97. */
    peftkit_model *m97 = NULL;
    mc.vocab_size = 97;
    expect(peftkit_model_create(&mc, 6, &m97), PEFTKIT_OK, "model_create(vocab 97)");
    if (m97) {
        expect(peftkit_tokenizer_load(m97, path), PEFTKIT_OK, "tokenizer_load on the vocab-97 model");
        struct stream_state st;
        memset(&st, 0, sizeof st);
        st.model = m97;
        expect(peftkit_generate(m97, prompt, 2, &gc, out, 6, &n_out, stream_token, &st), PEFTKIT_OK, "generate with a decoding callback");
        check(st.status == PEFTKIT_OK, "detokenize inside the callback of the generating model succeeds");
        size_t whole = 0;
        char all[512];
        expect(peftkit_detokenize(m97, out, (size_t)n_out, 0, all, sizeof all, &whole), PEFTKIT_OK, "detokenize the generated ids");
        check(whole == st.len && memcmp(all, st.text, whole) == 0, "streamed pieces equal the whole decoding (ASCII)");
        peftkit_model_free(m97);
    }
    peftkit_model_free(m);
}

/* peftkit_generate_ex / _mixed_ex, finish reasons, sampling options, stop strings, token_to_piece: on a model of
 * vocab 97 with the fixture tokenizer (one character per token, except <|im_end|>). */
static void test_generate_ex(void) {
    printf("# generation: finish reasons, stop strings, pieces\n");
    const peftkit_status bad = PEFTKIT_ERR_INVALID_ARGUMENT;
    peftkit_model_config mc;
    peftkit_model_config_init(&mc);
    mc.vocab_size = 97;
    mc.max_positions = 40;
    peftkit_model *m = NULL, *bare = NULL;
    expect(peftkit_model_create(&mc, 9, &m), PEFTKIT_OK, "model_create(vocab 97, 40 positions)");
    expect(peftkit_model_create(&mc, 9, &bare), PEFTKIT_OK, "model_create(vocab 97, no tokenizer)");
    if (!m || !bare) return;
    char path[1024];
    tiny_tokenizer_path(path, sizeof path);
    expect(peftkit_tokenizer_load(m, path), PEFTKIT_OK, "tokenizer_load(tiny)");
    int32_t prompt[2] = {'H' - 0x21, 'i' - 0x21};
    int32_t out[64], all[64];
    peftkit_generate_config gc;
    peftkit_generate_result r;

    /* Length, and the same tokens as peftkit_generate. */
    peftkit_generate_config_init(&gc);
    gc.max_new_tokens = 24;
    int32_t n_all = 0;
    expect(peftkit_generate(m, prompt, 2, &gc, all, 64, &n_all, NULL, NULL), PEFTKIT_OK, "generate (reference, 24 tokens)");
    memset(&r, 0x55, sizeof r);
    r.struct_size = sizeof r;
    expect(peftkit_generate_ex(m, prompt, 2, &gc, out, 64, &r, NULL, NULL), PEFTKIT_OK, "generate_ex");
    check(r.finish_reason == PEFTKIT_FINISH_LENGTH && r.n_tokens == 24 && r.n_generated == 24 && r.stop_index == -1 &&
              r.stop_byte_offset == -1 && memcmp(out, all, sizeof(int32_t) * 24) == 0,
          "generate_ex: LENGTH, the tokens of generate");

    /* Pieces: their bytes concatenate to the detokenized text. */
    char text[1024], piece[64];
    size_t text_len = 0, plen = 0, off = 0;
    size_t ends[64];
    expect(peftkit_detokenize(m, all, 24, 0, text, sizeof text, &text_len), PEFTKIT_OK, "detokenize the reference");
    char joined[1024];
    int pieces_ok = 1;
    for (int i = 0; i < 24; i++) {
        size_t need = 0;
        pieces_ok &= peftkit_token_to_piece(m, all[i], NULL, 0, &need) == PEFTKIT_OK;
        pieces_ok &= peftkit_token_to_piece(m, all[i], piece, sizeof piece, &plen) == PEFTKIT_OK && plen == need;
        memcpy(joined + off, piece, plen);
        off += plen;
        ends[i] = off;
    }
    check(pieces_ok && off == text_len && memcmp(joined, text, off) == 0, "token_to_piece: pieces concatenate to the text");
    expect(peftkit_token_to_piece(m, all[0], piece, 0, &plen), PEFTKIT_ERR_BUFFER_TOO_SMALL, "token_to_piece(out given, capacity 0)");
    expect(peftkit_token_to_piece(m, 96, piece, 3, &plen), PEFTKIT_ERR_BUFFER_TOO_SMALL, "token_to_piece(capacity 3 < 10)");
    check(plen == 10, "token_to_piece reports the size needed (<|im_end|>: 10 bytes)");
    expect(peftkit_token_to_piece(m, 97, piece, sizeof piece, &plen), bad, "token_to_piece(id 97 of 97)");
    expect(peftkit_token_to_piece(m, -1, piece, sizeof piece, &plen), bad, "token_to_piece(id -1)");
    expect(peftkit_token_to_piece(m, 5, NULL, 4, &plen), bad, "token_to_piece(out NULL, capacity 4)");
    expect(peftkit_token_to_piece(m, 5, piece, sizeof piece, NULL), bad, "token_to_piece(n_out NULL)");
    expect(peftkit_token_to_piece(NULL, 5, piece, sizeof piece, &plen), bad, "token_to_piece(model NULL)");
    expect(peftkit_token_to_piece(bare, 5, piece, sizeof piece, &plen), PEFTKIT_ERR_STATE, "token_to_piece(no tokenizer)");

    /* A stop string: two bytes from the middle of the text; the output ends before its first occurrence. */
    char stop[3] = {text[8], text[9], 0};
    const char *stops[2] = {"~never~", stop};
    size_t first = 0;
    while (first + 2 <= text_len && memcmp(text + first, stop, 2) != 0) first++;
    int kept = 0, last = 0;
    while (kept < 24 && ends[kept] <= first) kept++;
    while (last < 24 && ends[last] < first + 2) last++;
    gc.stop_strings = stops;
    gc.n_stop_strings = 2;
    expect(peftkit_generate_ex(m, prompt, 2, &gc, out, 64, &r, NULL, NULL), PEFTKIT_OK, "generate_ex with stop strings");
    check(r.finish_reason == PEFTKIT_FINISH_STOP_STRING && r.stop_index == 1 && r.n_tokens == kept &&
              r.n_generated == last + 1 && r.stop_byte_offset == (int32_t)first &&
              memcmp(out, all, sizeof(int32_t) * (size_t)r.n_generated) == 0,
          "stop string: tokens before it kept, the rest reported as dropped, its byte offset");
    int32_t n = -1;
    expect(peftkit_generate(m, prompt, 2, &gc, out, 64, &n, NULL, NULL), PEFTKIT_OK, "generate with stop strings");
    check(n == kept, "generate: the output ends before the stop string");
    int32_t n_bare = 0;
    expect(peftkit_generate(bare, prompt, 2, &gc, out, 64, &n_bare, NULL, NULL), PEFTKIT_ERR_STATE,
           "generate(stop strings, model without a tokenizer)");

    /* Stop token, cancelled, context full. */
    peftkit_generate_config_init(&gc);
    gc.max_new_tokens = 24;
    int32_t st[2] = {96, all[5]};
    gc.stop_tokens = st;
    gc.n_stop_tokens = 2;
    expect(peftkit_generate_ex(m, prompt, 2, &gc, out, 64, &r, NULL, NULL), PEFTKIT_OK, "generate_ex with stop tokens");
    check(r.finish_reason == PEFTKIT_FINISH_STOP_TOKEN && r.stop_index >= 0 && r.n_tokens <= 6 &&
              out[r.n_tokens - 1] == st[r.stop_index],
          "STOP_TOKEN: the stop token is the last one, stop_index names it");
    peftkit_generate_config_init(&gc);
    gc.max_new_tokens = 24;
    struct cb_state cs;
    memset(&cs, 0, sizeof cs);
    cs.stop_after = 2;
    expect(peftkit_generate_ex(m, prompt, 2, &gc, out, 64, &r, on_token, &cs), PEFTKIT_OK, "generate_ex, callback stops at 2");
    check(r.finish_reason == PEFTKIT_FINISH_CANCELLED && r.n_tokens == 2, "CANCELLED after 2 tokens");
    gc.max_new_tokens = 60;
    expect(peftkit_generate_ex(m, prompt, 2, &gc, out, 64, &r, NULL, NULL), PEFTKIT_OK, "generate_ex past max_positions");
    check(r.finish_reason == PEFTKIT_FINISH_CONTEXT_FULL && r.n_tokens == 38, "CONTEXT_FULL after 40 - 2 tokens");

    /* Repetition penalty and min-p change nothing at 1 / 0; a penalty changes this model's greedy output. */
    peftkit_generate_config_init(&gc);
    gc.max_new_tokens = 24;
    gc.repetition_penalty = 0; /* 0 means off, as 1 */
    expect(peftkit_generate(m, prompt, 2, &gc, out, 64, &n, NULL, NULL), PEFTKIT_OK, "generate(repetition_penalty 0 = off)");
    check(n == 24 && memcmp(out, all, sizeof(int32_t) * 24) == 0, "repetition_penalty 0: the reference tokens");
    gc.repetition_penalty = 3;
    gc.min_p = 0.5f;
    expect(peftkit_generate(m, prompt, 2, &gc, out, 64, &n, NULL, NULL), PEFTKIT_OK, "generate(repetition_penalty 3)");
    check(n == 24 && memcmp(out, all, sizeof(int32_t) * 24) != 0, "repetition_penalty 3 changes the greedy tokens");

    /* The 0.1 layout of the config (40 bytes) is still accepted, with the new fields' defaults. */
    peftkit_generate_config old;
    memset(&old, 0x7F, sizeof old);
    expect(peftkit_generate_config_init_sized(&old, offsetof(peftkit_generate_config, repetition_penalty)), PEFTKIT_OK,
           "generate_config_init_sized(0.1 size, 40)");
    old.max_new_tokens = 24;
    expect(peftkit_generate(m, prompt, 2, &old, out, 64, &n, NULL, NULL), PEFTKIT_OK, "generate with a 0.1 config");
    check(n == 24 && memcmp(out, all, sizeof(int32_t) * 24) == 0, "0.1 config: the new fields take their defaults");

    /* Mixed, with finish reasons. */
    peftkit_generate_config_init(&gc);
    gc.max_new_tokens = 24;
    const int32_t *rows[2] = {prompt, prompt};
    int32_t lens[2] = {2, 2}, nrow[2] = {0, 0}, reasons[2] = {0, 0}, mixed[48];
    const char *ads[2] = {NULL, NULL};
    gc.stop_strings = stops;
    gc.n_stop_strings = 2;
    expect(peftkit_generate_mixed_ex(m, rows, lens, ads, 2, &gc, mixed, 48, nrow, reasons), PEFTKIT_OK, "generate_mixed_ex");
    check(nrow[0] == kept && nrow[1] == kept && reasons[0] == PEFTKIT_FINISH_STOP_STRING &&
              reasons[1] == PEFTKIT_FINISH_STOP_STRING && memcmp(mixed + 24, all, sizeof(int32_t) * (size_t)kept) == 0,
          "generate_mixed_ex: each row's tokens and finish reason");
    expect(peftkit_generate_mixed_ex(m, rows, lens, ads, 2, &gc, mixed, 48, nrow, NULL), bad,
           "generate_mixed_ex(finish_reasons NULL)");

    /* Bad arguments. */
    expect(peftkit_generate_ex(m, prompt, 2, &gc, out, 64, NULL, NULL, NULL), bad, "generate_ex(result NULL)");
    r.struct_size = 0;
    expect(peftkit_generate_ex(m, prompt, 2, &gc, out, 64, &r, NULL, NULL), bad, "generate_ex(result struct_size 0)");
    r.struct_size = sizeof r;
    expect(peftkit_generate_ex(NULL, prompt, 2, &gc, out, 64, &r, NULL, NULL), bad, "generate_ex(model NULL)");
    expect(peftkit_generate_ex(m, prompt, 2, &gc, out, 23, &r, NULL, NULL), PEFTKIT_ERR_BUFFER_TOO_SMALL,
           "generate_ex(out_capacity 23 < 24)");
    const char *null_entry[2] = {"a", NULL};
    const char *empty_entry[1] = {""};
    const char *not_utf8[1] = {"\xff\xfe"};
#define BAD_GEN_EX(stmt, label)                                                                         \
    do {                                                                                                \
        peftkit_generate_config_init(&gc);                                                              \
        gc.max_new_tokens = 4;                                                                          \
        stmt;                                                                                           \
        expect(peftkit_generate_ex(m, prompt, 2, &gc, out, 64, &r, NULL, NULL), bad, "generate_ex(" label ")"); \
    } while (0)
    BAD_GEN_EX(gc.repetition_penalty = -1, "repetition_penalty -1");
    BAD_GEN_EX(gc.repetition_penalty = NAN, "repetition_penalty NaN");
    BAD_GEN_EX(gc.repetition_penalty = INFINITY, "repetition_penalty inf");
    BAD_GEN_EX(gc.min_p = -0.5f, "min_p -0.5");
    BAD_GEN_EX(gc.min_p = 1.5f, "min_p 1.5");
    BAD_GEN_EX(gc.min_p = NAN, "min_p NaN");
    BAD_GEN_EX(gc.n_stop_strings = -1, "n_stop_strings -1");
    BAD_GEN_EX(gc.n_stop_strings = 1025, "n_stop_strings 1025");
    BAD_GEN_EX(gc.n_stop_strings = 2, "stop_strings NULL, n_stop_strings 2");
    BAD_GEN_EX((gc.stop_strings = null_entry, gc.n_stop_strings = 2), "stop_strings[1] NULL");
    BAD_GEN_EX((gc.stop_strings = empty_entry, gc.n_stop_strings = 1), "stop_strings[0] empty");
    BAD_GEN_EX((gc.stop_strings = not_utf8, gc.n_stop_strings = 1), "stop_strings[0] not UTF-8");
    BAD_GEN_EX(gc.reserved0 = 1, "reserved0 1");
#undef BAD_GEN_EX
    peftkit_model_free(m);
    peftkit_model_free(bare);
}

static void test_tokenizer_smollm2(void) {
    const char *gguf = getenv("PEFTKIT_SMOLLM2_GGUF");
    if (!gguf || !gguf[0]) {
        printf("# tokenization (SmolLM2): skipped, PEFTKIT_SMOLLM2_GGUF is not set\n");
        if (getenv("CI")) check(0, "PEFTKIT_SMOLLM2_GGUF must be set under CI");
        return;
    }
    printf("# tokenization (SmolLM2 GGUF)\n");
    peftkit_model *m = NULL;
    expect(peftkit_model_load(gguf, &m), PEFTKIT_OK, "model_load(SmolLM2 GGUF)");
    if (!m) return;
    peftkit_tokenizer_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    expect(peftkit_tokenizer_get_info(m, &info), PEFTKIT_OK, "tokenizer_get_info(SmolLM2)");
    check(info.has_tokenizer == 1 && info.has_chat_template == 1 && info.vocab_size == 49152 && info.bos_id == 1 &&
              info.eos_id == 2 && info.eot_id == 2 && info.adds_bos == 0,
          "SmolLM2: vocab 49152, BOS 1 not added, EOS = <|im_end|> = 2, chat template");
    char issue[256];
    size_t issue_len = 1;
    expect(peftkit_tokenizer_issue(m, issue, sizeof issue, &issue_len), PEFTKIT_OK, "tokenizer_issue(SmolLM2)");
    check(issue_len == 0, "SmolLM2: nothing was left out");

    /* llama.cpp's own check for this vocabulary. */
    const int32_t want[7] = {19556, 905, 17, 216, 33, 34, 35};
    int32_t ids[256];
    size_t n = 0;
    expect(peftkit_tokenize(m, "Hello world! 123", 16, 1, 1, ids, 256, &n), PEFTKIT_OK, "tokenize(\"Hello world! 123\")");
    check(n == 7 && memcmp(ids, want, sizeof want) == 0, "SmolLM2 ids of \"Hello world! 123\" match llama.cpp's");

    const char *text = "Grüße, 東京! 🙂 x = 42;\n\tdone";
    expect(peftkit_tokenize(m, text, strlen(text), 1, 1, ids, 256, &n), PEFTKIT_OK, "tokenize non-ASCII text");
    char back[512];
    size_t len = 0;
    expect(peftkit_detokenize(m, ids, n, 0, back, sizeof back, &len), PEFTKIT_OK, "detokenize it");
    check(len == strlen(text) && memcmp(back, text, len) == 0, "round trip of non-ASCII text is byte-exact");

    const char *roles[1] = {"user"};
    const char *contents[1] = {"Hello!"};
    const char *chat = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                       "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n";
    char rendered[1024];
    expect(peftkit_chat_template_apply(m, roles, contents, 1, 1, rendered, sizeof rendered, &len), PEFTKIT_OK,
           "chat_template_apply(SmolLM2)");
    check(strcmp(rendered, chat) == 0, "SmolLM2 template adds its default system message, as transformers does");
    const int32_t chat_ids[32] = {1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411,
                                  407, 19712, 8182, 2, 198, 1, 4093, 198, 19556, 17, 2, 198, 1, 520, 9531, 198};
    expect(peftkit_tokenize(m, rendered, len, info.adds_bos, 1, ids, 256, &n), PEFTKIT_OK, "tokenize the rendering");
    check(n == 32 && memcmp(ids, chat_ids, sizeof chat_ids) == 0, "rendering ids equal transformers' (Tests/Fixtures/tokenizer)");
    peftkit_model_free(m);
}

/* Preference tuning: DPO steps raise the reward margin; the stats agree with the result struct; ORPO runs. */
static void test_preference(uint64_t seed) {
    printf("# preference steps (DPO, ORPO)\n");
    peftkit_model *m = split_model(seed);
    check(m != NULL, "model with a LoRA adapter");
    if (!m) return;
    enum { P = 2, T = 8 };
    int32_t chosen[P * T], rejected[P * T], cm[P * T], rm[P * T];
    fill_pattern(chosen, P, T, 0);
    fill_pattern(rejected, P, T, 0);
    for (int i = 0; i < P * T; i++) {
        int t = i % T;
        cm[i] = t >= 4;
        rm[i] = t >= 4 && t < 7;
        if (t >= 4) rejected[i] = (chosen[i] + 7) % 100;
    }
    peftkit_train_config tc;
    peftkit_train_config_init(&tc);
    tc.learning_rate = 2e-2f;
    tc.schedule = PEFTKIT_SCHEDULE_CONSTANT;
    peftkit_train_result r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    float st[PEFTKIT_PREFERENCE_STATS], first = 0, last = 0;
    for (int s = 0; s < 5; s++) {
        expect(peftkit_train_preference_step(m, PEFTKIT_OBJECTIVE_DPO, 0.5f, chosen, cm, rejected, rm, P, T, &tc, &r, st,
                                             PEFTKIT_PREFERENCE_STATS), PEFTKIT_OK, "train_preference_step(DPO)");
        if (s == 0) first = st[3];
        last = st[3];
        check(st[0] == r.loss && r.step == s + 1 && r.tokens == 4 * 2 + 3 * 2, "stats[0] = out.loss, step and tokens counted");
        check(fabsf(st[3] - (st[1] - st[2])) <= 1e-5f * (1 + fabsf(st[3])) && st[4] >= 0 && st[4] <= 1,
              "margin = chosen - rejected reward, accuracy in [0, 1]");
    }
    printf("     DPO margin %g -> %g\n", first, last);
    check(last > first, "the reward margin grows over 5 DPO steps");
    expect(peftkit_train_preference_step(m, PEFTKIT_OBJECTIVE_ORPO, 0.1f, chosen, cm, rejected, rm, P, T, &tc, &r, st,
                                         PEFTKIT_PREFERENCE_STATS), PEFTKIT_OK, "train_preference_step(ORPO)");
    check(st[7] > 0 && st[0] > st[7], "ORPO: loss = NLL - lambda * log sigmoid(...) > NLL > 0");
    peftkit_model_free(m);
}

/* Encoders (BERT): padding changes nothing in the real positions, embeddings have unit norm, the head's
   outputs have the documented shape, and an adapter + classification head learn a separable task. */
static void test_bert(void) {
    printf("# bert\n");
    enum { B = 2, T = 5, C = 64 };
    peftkit_model_config mc;
    peftkit_model_config_init(&mc);
    mc.architecture = PEFTKIT_ARCH_BERT;
    peftkit_model *m = NULL;
    expect(peftkit_model_create(&mc, 11, &m), PEFTKIT_OK, "model_create(bert)");
    if (!m) return;
    int32_t ids[B * T] = {5, 9, 12, 0, 0, 7, 7, 8, 9, 10}, types[B * T] = {0, 0, 1, 0, 0, 0, 1, 1, 1, 1};
    int32_t mask[B * T] = {1, 1, 1, 0, 0, 1, 1, 1, 1, 1};
    static float padded[B * T * C], alone[3 * C], again[B * T * C];
    expect(peftkit_encoder_hidden_states(m, ids, types, mask, B, T, padded, B * T * C), PEFTKIT_OK, "encoder_hidden_states(padded batch)");
    expect(peftkit_encoder_hidden_states(m, ids, types, NULL, 1, 3, alone, 3 * C), PEFTKIT_OK, "encoder_hidden_states(row 0 alone)");
    float worst = 0;
    for (int i = 0; i < 3 * C; i++) worst = fmaxf(worst, fabsf(padded[i] - alone[i]));
    check(worst < 1e-5f, "padding changes nothing in row 0's real positions");
    int32_t other[B * T];
    memcpy(other, ids, sizeof other);
    other[3] = 200; other[4] = 100;
    expect(peftkit_encoder_hidden_states(m, other, types, mask, B, T, again, B * T * C), PEFTKIT_OK, "encoder_hidden_states(other padding ids)");
    check(memcmp(again, padded, 3 * C * sizeof(float)) == 0, "the padding's ids do not matter");
    static float emb[B * C];
    expect(peftkit_encoder_embed(m, ids, types, mask, B, T, 1, emb, B * C), PEFTKIT_OK, "encoder_embed(normalize)");
    double n0 = 0, n1 = 0;
    for (int i = 0; i < C; i++) { n0 += emb[i] * emb[i]; n1 += emb[C + i] * emb[C + i]; }
    check(fabs(n0 - 1) < 1e-5 && fabs(n1 - 1) < 1e-5, "embeddings have unit L2 norm");
    /* Unnormalised: the mean of row 0's three real hidden states. */
    expect(peftkit_encoder_embed(m, ids, types, mask, B, T, 0, emb, B * C), PEFTKIT_OK, "encoder_embed(mean only)");
    float mean_err = 0;
    for (int i = 0; i < C; i++) mean_err = fmaxf(mean_err, fabsf(emb[i] - (padded[i] + padded[C + i] + padded[2 * C + i]) / 3));
    check(mean_err < 1e-5f, "embed without normalisation is the mean over the mask");

    expect(peftkit_adapter_attach_json(m, "bn", "{\"config\": \"double_seq_bn\"}"), PEFTKIT_OK,
           "adapter_attach_json(houlsby on bert)");
    peftkit_adapter_set_active(m, "bn");
    expect(peftkit_head_attach(m, PEFTKIT_HEAD_CLASSIFICATION, 2, 3), PEFTKIT_OK, "head_attach(classification, 2)");
    int32_t kind = 0, outputs = 0;
    expect(peftkit_head_get(m, &kind, &outputs), PEFTKIT_OK, "head_get");
    check(kind == PEFTKIT_HEAD_CLASSIFICATION && outputs == 2, "head_get reports the attached head");
    float *grad = NULL;
    int64_t count = 0;
    expect(peftkit_train_gradients(m, &grad, &count), PEFTKIT_OK, "train_gradients(adapter + head)");
    check(count > 2 * C + 2, "one gradient block holds the adapter's and the head's parameters");
    int32_t labels[B] = {1, 0};
    peftkit_train_config tc;
    peftkit_train_config_init(&tc);
    tc.learning_rate = 1e-2f;
    tc.weight_decay = 0;
    peftkit_train_result r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    float first = 0;
    peftkit_status st = PEFTKIT_OK;
    for (int i = 0; i < 25 && st == PEFTKIT_OK; i++) {
        st = peftkit_head_train_step(m, ids, types, mask, B, T, labels, NULL, &tc, &r);
        if (i == 0) first = r.loss;
    }
    expect(st, PEFTKIT_OK, "head_train_step x 25");
    check(r.step == 25 && r.tokens == 2 && r.loss < 0.5f * first, "adapter + head learn two rows (loss halves in 25 steps)");
    float logits[B * 2], loss = -1;
    expect(peftkit_head_forward(m, ids, types, mask, B, T, labels, NULL, logits, B * 2, &loss), PEFTKIT_OK, "head_forward(labels)");
    check(logits[1] > logits[0] && logits[2] > logits[3] && loss >= 0 && loss < first, "head_forward: the trained classes win");
    expect(peftkit_head_attach(m, PEFTKIT_HEAD_TOKENS, 3, 1), PEFTKIT_OK, "head_attach(tokens, 3)");
    static float tok[B * T * 3];
    expect(peftkit_head_forward(m, ids, types, mask, B, T, NULL, NULL, tok, B * T * 3, NULL), PEFTKIT_OK, "head_forward(tokens)");
    expect(peftkit_head_forward(m, ids, types, mask, B, T, NULL, NULL, tok, B * T * 3 - 1, NULL), PEFTKIT_ERR_BUFFER_TOO_SMALL,
           "head_forward(tokens, out one short of batch * seq_len * outputs)");
    peftkit_model_free(m);
}

/* Host capabilities: adapter tensors, forward outputs, progress and cancellation. */
static int64_t progress_done[64];
static int progress_n;
static int32_t record_progress(int64_t done, int64_t total, void *user) {
    int32_t stop_at = user ? *(int32_t *)user : 0;
    if (progress_n < 64) progress_done[progress_n] = done;
    progress_n++;
    (void)total;
    return stop_at == 0 || progress_n < stop_at;
}

static void test_host(const char *scratch) {
    printf("# host capabilities\n");
    peftkit_model_config mc;
    peftkit_model_config_init(&mc);
    peftkit_model *m = NULL, *m2 = NULL;
    if (peftkit_model_create(&mc, 77, &m) != PEFTKIT_OK || peftkit_model_create(&mc, 78, &m2) != PEFTKIT_OK) {
        check(0, "host: create models");
        return;
    }
    const char *lora = "{\"peft_type\": \"LORA\", \"r\": 2, \"target_modules\": [\"c_attn\"]}";
    expect(peftkit_adapter_attach_json(m, "t", lora), PEFTKIT_OK, "attach LoRA for tensor access");
    peftkit_adapter_set_active(m, "t");
    int32_t count = 0;
    expect(peftkit_adapter_tensor_count(m, "t", &count), PEFTKIT_OK, "adapter_tensor_count");
    check(count == 4, "LoRA on c_attn of 2 layers has 4 tensors");
    char name[256];
    size_t len = 0;
    int64_t shape[4];
    int32_t nd = 0, wr = 0;
    expect(peftkit_adapter_tensor_info(m, "t", 1, NULL, 0, &len, NULL, 0, &nd, NULL), PEFTKIT_ERR_BUFFER_TOO_SMALL,
           "adapter_tensor_info size query with shape_cap 0");
    check(nd == 2, "the size query reports ndim");
    expect(peftkit_adapter_tensor_info(m, "t", 1, name, sizeof name, &len, shape, 4, &nd, &wr), PEFTKIT_OK,
           "adapter_tensor_info");
    check(strcmp(name, "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight") == 0 && len == strlen(name),
          "tensor 1 is PEFT's name for layer 0's lora_B");
    check(nd == 2 && shape[0] == 192 && shape[1] == 2 && wr == 1, "lora_B of c_attn is [192, 2], writable");
    float v[192 * 2], back[192 * 2];
    for (int i = 0; i < 384; i++) v[i] = 0.001f * (float)(i % 17) - 0.004f;
    expect(peftkit_adapter_tensor_write(m, "t", name, v, 384), PEFTKIT_OK, "adapter_tensor_write");
    size_t n = 0;
    expect(peftkit_adapter_tensor_read(m, "t", name, back, 384, &n), PEFTKIT_OK, "adapter_tensor_read");
    check(n == 384 && memcmp(v, back, sizeof v) == 0, "read returns what was written");
    /* The saved file holds the written values: another model loads them. */
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/host-adapter", scratch);
    expect(peftkit_adapter_save(m, "t", dir), PEFTKIT_OK, "adapter_save after a write");
    expect(peftkit_adapter_load(m2, dir, "u", NULL, 0), PEFTKIT_OK, "adapter_load into another model");
    memset(back, 0, sizeof back);
    expect(peftkit_adapter_tensor_read(m2, "u", name, back, 384, &n), PEFTKIT_OK, "adapter_tensor_read of the loaded adapter");
    check(memcmp(v, back, sizeof v) == 0, "the saved file holds the written tensor");

    /* Forward outputs against the full logits. */
    enum { B = 2, T = 6, V = 256 };
    int32_t ids[B * T], labels[B * T];
    for (int i = 0; i < B * T; i++) ids[i] = labels[i] = 'a' + (i * 5) % 23;
    labels[3] = PEFTKIT_IGNORE_INDEX;
    static float full[B * T * V];
    float loss = 0, loss_ex = 0, lp[B * T], rl[B], last[B * V];
    int64_t tokens = 0, tokens_ex = 0, rt[B];
    expect(peftkit_forward(m, ids, labels, B, T, full, B * T * V, &loss, &tokens), PEFTKIT_OK, "forward (full logits)");
    peftkit_forward_options fo;
    peftkit_forward_options_init(&fo);
    check(fo.struct_size == sizeof fo && fo.logits_mode == PEFTKIT_LOGITS_ALL && fo.logits == NULL && fo.row_tokens == NULL,
          "forward options defaults");
    fo.logits_mode = PEFTKIT_LOGITS_LAST;
    fo.logits = last;
    fo.logits_capacity = B * V;
    fo.token_logprobs = lp;
    fo.row_losses = rl;
    fo.row_tokens = rt;
    expect(peftkit_forward_ex(m, ids, labels, B, T, &fo, &loss_ex, &tokens_ex), PEFTKIT_OK, "forward_ex");
    check(loss_ex == loss && tokens_ex == tokens, "forward_ex: the same loss and tokens as forward");
    double worst = 0, weighted = 0;
    for (int b = 0; b < B; b++) {
        for (int t = 1; t < T; t++) {
            if (labels[b * T + t] == PEFTKIT_IGNORE_INDEX) {
                if (lp[b * T + t] != 0) worst = 1;
                continue;
            }
            const float *row = full + (size_t)(b * T + t - 1) * V;
            float mx = row[0];
            for (int j = 1; j < V; j++) mx = row[j] > mx ? row[j] : mx;
            double se = 0;
            for (int j = 0; j < V; j++) se += exp((double)(row[j] - mx));
            double want = (double)row[labels[b * T + t]] - mx - log(se);
            double d = fabs(want - lp[b * T + t]);
            worst = d > worst ? d : worst;
        }
        if (lp[b * T] != 0) worst = 1;
        weighted += (double)rl[b] * (double)rt[b];
        for (int j = 0; j < V; j++) {
            double d = fabs((double)last[b * V + j] - full[(size_t)(b * T + T - 1) * V + j]);
            worst = d > worst ? d : worst;
        }
    }
    check(worst < 1e-5, "token log-probabilities = log_softmax of the full logits; last logits = the last rows");
    check(rt[0] + rt[1] == tokens && rt[0] == T - 2 && fabs(weighted / (double)tokens - loss) < 1e-5,
          "row losses weighted by row tokens give the batch loss");
    fo.token_logprobs = NULL;
    fo.row_losses = NULL;
    fo.row_tokens = NULL;
    float last2[B * V];
    fo.logits = last2;
    expect(peftkit_forward_ex(m, ids, NULL, B, T, &fo, NULL, &tokens_ex), PEFTKIT_OK, "forward_ex(LAST only, no loss)");
    worst = 0;
    for (int i = 0; i < B * V; i++) worst = fabs((double)last2[i] - last[i]) > worst ? fabs((double)last2[i] - last[i]) : worst;
    check(worst < 1e-5 && tokens_ex == B * (T - 1), "last logits without loss equal those with it");

    /* Progress: a train step reports and cancels without changing the adapter. */
    peftkit_train_config tc;
    peftkit_train_config_init(&tc);
    tc.learning_rate = 1e-2f;
    expect(peftkit_model_set_progress_callback(m, record_progress, NULL), PEFTKIT_OK, "model_set_progress_callback");
    progress_n = 0;
    expect(peftkit_train_step(m, ids, NULL, B, T, &tc, NULL), PEFTKIT_OK, "train_step with a progress callback");
    int increasing = progress_n == 3;
    for (int i = 1; i < progress_n && i < 64; i++) increasing &= progress_done[i] > progress_done[i - 1];
    check(increasing, "train_step reported forward + 2 layers, increasing");
    float before[384], after[384];
    peftkit_adapter_tensor_read(m, "t", name, before, 384, NULL);
    int32_t stop_at = 2;
    peftkit_model_set_progress_callback(m, record_progress, &stop_at);
    progress_n = 0;
    expect(peftkit_train_step(m, ids, NULL, B, T, &tc, NULL), PEFTKIT_ERR_CANCELLED, "train_step cancelled by its callback");
    peftkit_adapter_tensor_read(m, "t", name, after, 384, NULL);
    check(memcmp(before, after, sizeof before) == 0, "a cancelled step leaves the adapter's weights unchanged");
    peftkit_model_set_progress_callback(m, NULL, NULL);

    /* Load with progress, then cancelled. */
    char folder[1024];
    const char *fixtures = getenv("PEFTKIT_FIXTURES");
    snprintf(folder, sizeof folder, "%s/gpt2/model", fixtures && fixtures[0] ? fixtures : "../../Tests/Fixtures");
    peftkit_load_config lc;
    peftkit_load_config_init(&lc);
    lc.progress = record_progress;
    lc.progress_user = NULL;
    progress_n = 0;
    peftkit_model *loaded = NULL;
    expect(peftkit_model_load_ex(folder, &lc, &loaded), PEFTKIT_OK, "model_load_ex with progress");
    check(loaded != NULL && progress_n > 1, "the load reported per tensor");
    peftkit_model_free(loaded);
    stop_at = 3;
    lc.progress_user = &stop_at;
    progress_n = 0;
    loaded = (peftkit_model *)(void *)&lc;
    expect(peftkit_model_load_ex(folder, &lc, &loaded), PEFTKIT_ERR_CANCELLED, "model_load_ex cancelled");
    check(loaded == NULL && progress_n == 3, "a cancelled load returns no model, at the third report");
    expect(peftkit_model_load_ex(folder, NULL, &loaded), PEFTKIT_OK, "model_load_ex(config NULL)");
    peftkit_model_free(loaded);
    peftkit_model_free(m);
    peftkit_model_free(m2);
}

int main(int argc, char **argv) {
    const char *scratch = argc > 1 ? argv[1] : ".";
    const uint64_t seed = 1234;

    test_library();
    test_create_misuse();
    test_null_model();

    printf("# model\n");
    peftkit_model_config mc;
    peftkit_model_config_init(&mc);
    peftkit_model *m = NULL;
    peftkit_status s = peftkit_model_create(&mc, seed, &m);
    expect(s, PEFTKIT_OK, "model_create(tiny GPT-2 defaults)");
    if (m != NULL) {
        test_model_config(m);
        test_attach(m);
        test_train(m);
        test_forward(m);
        test_packed(m);
        test_generate(m);
        test_save_load(m, scratch, seed);
        test_remove(m);
        peftkit_model_free(m);
        check(1, "model_free");
        test_threads(seed);
        test_llama();
        test_model_save(scratch);
        test_bert();
        test_split_step(seed);
        test_preference(seed);
        test_checkpoints(scratch, seed);
        test_tokenizer_tiny();
        test_generate_ex();
        test_tokenizer_smollm2();
        test_host(scratch);
    } else {
        n_failed++;
        printf("FAIL every check that needs a model was skipped: %s\n", peftkit_last_error());
    }

    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed == 0 ? 0 : 1;
}
