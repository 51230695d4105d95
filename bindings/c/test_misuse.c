/*
 * test_misuse.c — the misuse matrix of peftkit.h: every way a caller can get a call wrong (NULL pointers,
 * sizes, token ids, lengths, hyper-parameters, names, states, hostile or truncated files, freed models),
 * numerical failures, and concurrent use. Each case must return its documented status with a message naming
 * the function; nothing may crash the process.
 *
 * Prints one line per check ("ok   ..." or "FAIL ...") and ends with "N passed, M failed". Exits 0 only if
 * every check passed. With --markdown, also prints the matrix as a markdown table (docs/RELIABILITY.md).
 *
 * Usage: test_misuse [--markdown] [SCRATCH_DIR]
 */
#define _DEFAULT_SOURCE
#define _POSIX_C_SOURCE 200809L

#include "peftkit.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
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

static void check(int cond, const char *what) {
    if (cond) {
        n_passed++;
        printf("ok   %s\n", what);
    } else {
        n_failed++;
        printf("FAIL %s\n", what);
    }
}

/* ------------------------------------------------------------------------------------------------- */
/* The matrix                                                                                        */
/* ------------------------------------------------------------------------------------------------- */

struct row {
    const char *group;
    char what[200];
    const char *got;
};
static struct row rows[600];
static int n_rows = 0;
static const char *group = "";
static char sentinel_message[512];
static int markdown = 0;

/* Sets the thread's last error to a known message, so that a failing case can be seen to set its own. */
static void sentinel(void) { peftkit_model_get_config(NULL, NULL); }

static void record(const char *what, peftkit_status want, peftkit_status got) {
    const char *e = peftkit_last_error();
    /* A failure must leave a message of its own that names the function. */
    int msg_ok = got == PEFTKIT_OK ||
                 (e != NULL && strncmp(e, "peftkit_", 8) == 0 && strcmp(e, sentinel_message) != 0 && strlen(e) > 24);
    if (got == want && msg_ok) {
        n_passed++;
        printf("ok   [%s] %s -> %s\n", group, what, status_name(got));
    } else {
        n_failed++;
        printf("FAIL [%s] %s -> %s, expected %s%s (last error: %s)\n", group, what, status_name(got), status_name(want),
               msg_ok ? "" : ", without a message of its own", e ? e : "(null)");
    }
    if (n_rows < (int)(sizeof rows / sizeof rows[0])) {
        rows[n_rows].group = group;
        snprintf(rows[n_rows].what, sizeof rows[n_rows].what, "%s", what);
        rows[n_rows].got = status_name(got);
        n_rows++;
    }
}

#define CASE(want, call, ...)                                                                                          \
    do {                                                                                                               \
        char what_[200];                                                                                               \
        snprintf(what_, sizeof what_, __VA_ARGS__);                                                                    \
        sentinel();                                                                                                    \
        peftkit_status got_ = (call);                                                                                  \
        record(what_, (want), got_);                                                                                   \
    } while (0)

/* A case whose call returns nothing (free): it passes by not crashing. */
static void record_void(const char *what) {
    n_passed++;
    printf("ok   [%s] %s -> (no status; did not crash)\n", group, what);
    if (n_rows < (int)(sizeof rows / sizeof rows[0])) {
        rows[n_rows].group = group;
        snprintf(rows[n_rows].what, sizeof rows[n_rows].what, "%s", what);
        rows[n_rows].got = "no-op";
        n_rows++;
    }
}

static void print_markdown(void) {
    printf("\n| Group | Case | Status |\n| --- | --- | --- |\n");
    for (int i = 0; i < n_rows; i++) {
        printf("| %s | ", rows[i].group);
        for (const char *c = rows[i].what; *c; c++) {
            if (*c == '|') fputs("\\|", stdout);
            else putchar(*c);
        }
        printf(" | %s |\n", rows[i].got);
    }
}

/* ------------------------------------------------------------------------------------------------- */
/* Helpers                                                                                           */
/* ------------------------------------------------------------------------------------------------- */

enum { BATCH = 2, SEQ = 8, VOCAB = 256 };

static void fill(int32_t *ids, int n, int offset) {
    for (int i = 0; i < n; i++) ids[i] = 'a' + (i * 7 + offset) % 19;
}

static peftkit_model *new_model(uint64_t seed) {
    peftkit_model_config mc;
    peftkit_model_config_init(&mc);
    peftkit_model *m = NULL;
    if (peftkit_model_create(&mc, seed, &m) != PEFTKIT_OK) {
        printf("FAIL model_create: %s\n", peftkit_last_error());
        n_failed++;
    }
    return m;
}

/* AdapterHub's Pfeiffer (seq_bn) bottleneck adapter, as peftkit_adapter_attach_json reads it. */
static const char PFEIFFER[] = "{\"config\": \"seq_bn\"}";

/* A model with a Pfeiffer adapter `name`, active. */
static peftkit_model *new_model_with_adapter(uint64_t seed, const char *name) {
    peftkit_model *m = new_model(seed);
    if (m && (peftkit_adapter_attach_json(m, name, PFEIFFER) != PEFTKIT_OK || peftkit_adapter_set_active(m, name) != PEFTKIT_OK)) {
        printf("FAIL attach: %s\n", peftkit_last_error());
        n_failed++;
    }
    return m;
}

static peftkit_train_config train_config(void) {
    peftkit_train_config tc;
    peftkit_train_config_init(&tc);
    tc.learning_rate = 1e-2f;
    return tc;
}

static peftkit_train_result result(void) {
    peftkit_train_result r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    return r;
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static unsigned char *read_file(const char *path, long *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(n > 0 ? (size_t)n : 1);
    if (b && n > 0 && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *size = n;
    return b;
}

static int write_file(const char *path, const void *data, long n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    int ok = n == 0 || fwrite(data, 1, (size_t)n, f) == (size_t)n;
    return fclose(f) == 0 && ok;
}

static int copy_file(const char *from, const char *to, long keep) {
    long n = 0;
    unsigned char *b = read_file(from, &n);
    if (!b) return 0;
    int ok = write_file(to, b, keep >= 0 && keep < n ? keep : n);
    free(b);
    return ok;
}

/* A copy of adapter folder `from` in `to`, with adapter.safetensors cut to `keep` bytes (-1: whole). */
static void copy_adapter(const char *from, const char *to, long keep_weights, long keep_config) {
    char a[1200], b[1200];
    mkdir(to, 0755);
    snprintf(a, sizeof a, "%s/adapter.safetensors", from);
    snprintf(b, sizeof b, "%s/adapter.safetensors", to);
    copy_file(a, b, keep_weights);
    snprintf(a, sizeof a, "%s/adapter_config.json", from);
    snprintf(b, sizeof b, "%s/adapter_config.json", to);
    copy_file(a, b, keep_config);
}

/* The name of the one file in `dir` starting with `prefix`, into out. */
static int find_file(const char *dir, const char *prefix, char *out, size_t cap) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int found = 0;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
            snprintf(out, cap, "%s/%s", dir, e->d_name);
            found++;
        }
    }
    closedir(d);
    return found == 1;
}

static uint64_t fnv1a64(const unsigned char *p, long n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (long i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* Sets every float of a safetensors file's data section to v. */
static int poison_safetensors(unsigned char *b, long n, float v) {
    if (n < 8) return 0;
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | b[i];
    for (long off = 8 + (long)hl; off + 4 <= n; off += 4) memcpy(b + off, &v, 4);
    return 1;
}

/* Replaces the first occurrence of `from` by `to` (same length) in a text buffer. */
static int replace_same_length(char *text, const char *from, const char *to) {
    char *p = strstr(text, from);
    if (!p || strlen(from) != strlen(to)) return 0;
    memcpy(p, to, strlen(to));
    return 1;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------------------------------------------- */
/* Groups of the matrix                                                                              */
/* ------------------------------------------------------------------------------------------------- */

static const peftkit_status BAD = PEFTKIT_ERR_INVALID_ARGUMENT;

static void null_pointers(peftkit_model *m) {
    group = "NULL pointers";
    peftkit_model_config mc;
    peftkit_model_config_init(&mc);
    peftkit_train_config tc = train_config();
    peftkit_generate_config gc;
    peftkit_generate_config_init(&gc);
    peftkit_model *out = NULL;
    int32_t ids[BATCH * SEQ], toks[64], n32 = 0;
    int64_t n64 = 0;
    float loss = 0;
    char buf[64];
    size_t len = 0;
    fill(ids, BATCH * SEQ, 0);

    CASE(BAD, peftkit_model_create(NULL, 1, &out), "model_create(config NULL)");
    CASE(BAD, peftkit_model_create(&mc, 1, NULL), "model_create(out NULL)");
    CASE(BAD, peftkit_model_load(NULL, &out), "model_load(path NULL)");
    CASE(BAD, peftkit_model_load("/tmp", NULL), "model_load(out NULL)");
    CASE(BAD, peftkit_model_get_config(m, NULL), "model_get_config(out NULL)");
    CASE(BAD, peftkit_adapter_attach_json(m, NULL, PFEIFFER), "adapter_attach_json(name NULL)");
    CASE(BAD, peftkit_adapter_attach_json(m, "x", NULL), "adapter_attach_json(config_json NULL)");
    CASE(BAD, peftkit_adapter_count(m, NULL), "adapter_count(out NULL)");
    CASE(BAD, peftkit_adapter_name(m, 0, NULL, 8, &len), "adapter_name(buf NULL, cap 8)");
    CASE(BAD, peftkit_adapter_get_active(m, NULL, 8, &len), "adapter_get_active(buf NULL, cap 8)");
    CASE(BAD, peftkit_adapter_num_params(m, "a", NULL), "adapter_num_params(out NULL)");
    CASE(BAD, peftkit_adapter_num_params(m, NULL, &n64), "adapter_num_params(name NULL)");
    CASE(BAD, peftkit_adapter_remove(m, NULL), "adapter_remove(name NULL)");
    CASE(BAD, peftkit_adapter_save(m, "a", NULL), "adapter_save(dir NULL)");
    CASE(BAD, peftkit_adapter_save(m, NULL, "/tmp/x"), "adapter_save(name NULL)");
    CASE(BAD, peftkit_adapter_save_as(NULL, "a", "/tmp/x.gguf", PEFTKIT_ADAPTER_FORMAT_GGUF), "adapter_save_as(model NULL)");
    CASE(BAD, peftkit_adapter_save_as(m, NULL, "/tmp/x.gguf", PEFTKIT_ADAPTER_FORMAT_GGUF), "adapter_save_as(name NULL)");
    CASE(BAD, peftkit_adapter_save_as(m, "a", NULL, PEFTKIT_ADAPTER_FORMAT_GGUF), "adapter_save_as(path NULL)");
    CASE(BAD, peftkit_adapter_save_as(m, "a", "", PEFTKIT_ADAPTER_FORMAT_GGUF), "adapter_save_as(path \"\")");
    CASE(BAD, peftkit_adapter_save_as(m, "a", "/tmp/x.gguf", 3), "adapter_save_as(format 3)");
    CASE(BAD, peftkit_adapter_save_as(m, "a", "/tmp/x.gguf", -1), "adapter_save_as(format -1)");
    CASE(BAD, peftkit_adapter_load(m, NULL, NULL, buf, sizeof buf), "adapter_load(dir NULL)");
    CASE(BAD, peftkit_train_step(m, NULL, NULL, BATCH, SEQ, &tc, NULL), "train_step(input_ids NULL)");
    CASE(BAD, peftkit_train_step(m, ids, NULL, BATCH, SEQ, NULL, NULL), "train_step(config NULL)");
    CASE(BAD, peftkit_train_compute_gradients(m, NULL, NULL, BATCH, SEQ, &tc, 0, NULL, NULL), "train_compute_gradients(input_ids NULL)");
    CASE(BAD, peftkit_train_compute_gradients(m, ids, NULL, BATCH, SEQ, NULL, 0, NULL, NULL), "train_compute_gradients(config NULL)");
    CASE(BAD, peftkit_train_compute_gradients(m, ids, NULL, BATCH, SEQ, &tc, -5, NULL, NULL), "train_compute_gradients(loss_divisor -5)");
    CASE(BAD, peftkit_train_apply_gradients(m, NULL, NULL), "train_apply_gradients(config NULL)");
    {
        float *gp = NULL;
        int64_t gn = 0;
        CASE(BAD, peftkit_train_gradients(m, NULL, &gn), "train_gradients(data NULL)");
        CASE(BAD, peftkit_train_gradients(m, &gp, NULL), "train_gradients(count NULL)");
        CASE(BAD, peftkit_train_gradients(NULL, &gp, &gn), "train_gradients(model NULL)");
    }
    CASE(BAD, peftkit_forward(m, NULL, NULL, BATCH, SEQ, NULL, 0, &loss, NULL), "forward(input_ids NULL)");
    CASE(BAD, peftkit_generate(m, NULL, 3, &gc, toks, 64, &n32, NULL, NULL), "generate(prompt NULL)");
    CASE(BAD, peftkit_generate(m, ids, 3, NULL, toks, 64, &n32, NULL, NULL), "generate(config NULL)");
    CASE(BAD, peftkit_generate(m, ids, 3, &gc, NULL, 8, &n32, NULL, NULL), "generate(out_tokens NULL, out_capacity 8)");
    {
        const int32_t *rows[2] = {ids, ids + 4};
        int32_t lens[2] = {3, 2}, nrow[2] = {0, 0};
        const char *ads[2] = {NULL, "a"};
        CASE(BAD, peftkit_generate_mixed(m, NULL, lens, ads, 2, &gc, toks, 64, nrow), "generate_mixed(prompts NULL)");
        CASE(BAD, peftkit_generate_mixed(m, rows, NULL, ads, 2, &gc, toks, 64, nrow), "generate_mixed(n_prompts NULL)");
        CASE(BAD, peftkit_generate_mixed(m, rows, lens, NULL, 2, &gc, toks, 64, nrow), "generate_mixed(adapters NULL)");
        CASE(BAD, peftkit_generate_mixed(m, rows, lens, ads, 2, NULL, toks, 64, nrow), "generate_mixed(config NULL)");
        CASE(BAD, peftkit_generate_mixed(m, rows, lens, ads, 2, &gc, NULL, 64, nrow), "generate_mixed(out_tokens NULL)");
        CASE(BAD, peftkit_generate_mixed(m, rows, lens, ads, 2, &gc, toks, 64, NULL), "generate_mixed(n_out NULL)");
        CASE(BAD, peftkit_generate_mixed(m, rows, lens, ads, 0, &gc, toks, 64, nrow), "generate_mixed(batch 0)");
        CASE(BAD, peftkit_generate_mixed(NULL, rows, lens, ads, 2, &gc, toks, 64, nrow), "generate_mixed(model NULL)");
        rows[1] = NULL;
        CASE(BAD, peftkit_generate_mixed(m, rows, lens, ads, 2, &gc, toks, 64, nrow), "generate_mixed(prompts[1] NULL)");
        rows[1] = ids + 4;
        lens[1] = 0;
        CASE(BAD, peftkit_generate_mixed(m, rows, lens, ads, 2, &gc, toks, 64, nrow), "generate_mixed(n_prompts[1] 0)");
        lens[1] = 2;
        CASE(PEFTKIT_ERR_BUFFER_TOO_SMALL, peftkit_generate_mixed(m, rows, lens, ads, 2, &gc, toks, 2 * gc.max_new_tokens - 1, nrow),
             "generate_mixed(out_capacity < batch * max_new_tokens)");
        ads[1] = "no-such-adapter";
        CASE(PEFTKIT_ERR_NOT_FOUND, peftkit_generate_mixed(m, rows, lens, ads, 2, &gc, toks, 64, nrow), "generate_mixed(unknown adapter)");
        ads[1] = "a";
        CASE(PEFTKIT_OK, peftkit_generate_mixed(m, rows, lens, ads, 2, &gc, toks, 64, nrow), "generate_mixed(valid)");
    }
    gc.n_stop_tokens = 2;
    CASE(BAD, peftkit_generate(m, ids, 3, &gc, toks, 64, &n32, NULL, NULL), "generate(stop_tokens NULL, n_stop_tokens 2)");
    peftkit_generate_config_init(&gc);
    gc.max_new_tokens = 4;
    {
        peftkit_generate_result gr;
        gr.struct_size = sizeof gr;
        const int32_t *rows[2] = {ids, ids + 4};
        int32_t lens[2] = {3, 2}, nrow[2] = {0, 0}, reasons[2] = {0, 0};
        const char *ads[2] = {NULL, "a"};
        CASE(BAD, peftkit_generate_ex(m, ids, 3, &gc, toks, 64, NULL, NULL, NULL), "generate_ex(result NULL)");
        CASE(BAD, peftkit_generate_ex(m, NULL, 3, &gc, toks, 64, &gr, NULL, NULL), "generate_ex(prompt NULL)");
        CASE(BAD, peftkit_generate_ex(m, ids, 3, NULL, toks, 64, &gr, NULL, NULL), "generate_ex(config NULL)");
        CASE(BAD, peftkit_generate_ex(m, ids, 3, &gc, NULL, 8, &gr, NULL, NULL), "generate_ex(out_tokens NULL, out_capacity 8)");
        CASE(BAD, peftkit_generate_ex(NULL, ids, 3, &gc, toks, 64, &gr, NULL, NULL), "generate_ex(model NULL)");
        CASE(PEFTKIT_OK, peftkit_generate_ex(m, ids, 3, &gc, NULL, 0, &gr, NULL, NULL), "generate_ex(out_tokens NULL, out_capacity 0)");
        CASE(BAD, peftkit_generate_mixed_ex(m, rows, lens, ads, 2, &gc, toks, 64, nrow, NULL), "generate_mixed_ex(finish_reasons NULL)");
        CASE(BAD, peftkit_generate_mixed_ex(m, rows, lens, ads, 2, &gc, toks, 64, NULL, reasons), "generate_mixed_ex(n_out NULL)");
        CASE(BAD, peftkit_generate_mixed_ex(m, NULL, lens, ads, 2, &gc, toks, 64, nrow, reasons), "generate_mixed_ex(prompts NULL)");
        CASE(BAD, peftkit_generate_mixed_ex(NULL, rows, lens, ads, 2, &gc, toks, 64, nrow, reasons), "generate_mixed_ex(model NULL)");
        CASE(PEFTKIT_OK, peftkit_generate_mixed_ex(m, rows, lens, ads, 2, &gc, toks, 64, nrow, reasons), "generate_mixed_ex(valid)");
        gc.n_stop_strings = 2;
        CASE(BAD, peftkit_generate_ex(m, ids, 3, &gc, toks, 64, &gr, NULL, NULL), "generate_ex(stop_strings NULL, n_stop_strings 2)");
    }
    peftkit_generate_config_init(&gc);
    CASE(BAD, peftkit_checkpoint_save(m, "a", NULL), "checkpoint_save(dir NULL)");
    CASE(BAD, peftkit_checkpoint_save(m, NULL, "/tmp/x"), "checkpoint_save(name NULL)");
    CASE(BAD, peftkit_checkpoint_load(m, NULL, buf, sizeof buf), "checkpoint_load(dir NULL)");
    CASE(BAD, peftkit_train_step(NULL, ids, NULL, BATCH, SEQ, &tc, NULL), "train_step(model NULL)");
    CASE(BAD, peftkit_train_compute_gradients(NULL, ids, NULL, BATCH, SEQ, &tc, 0, NULL, NULL), "train_compute_gradients(model NULL)");
    CASE(BAD, peftkit_train_apply_gradients(NULL, &tc, NULL), "train_apply_gradients(model NULL)");
    CASE(BAD, peftkit_model_set_full_finetuning(NULL, 1), "model_set_full_finetuning(model NULL)");
    CASE(BAD, peftkit_forward(NULL, ids, NULL, BATCH, SEQ, NULL, 0, NULL, NULL), "forward(model NULL)");
    CASE(BAD, peftkit_adapter_attach_json(NULL, "x", PFEIFFER), "adapter_attach_json(model NULL)");
    CASE(BAD, peftkit_checkpoint_load(NULL, "/tmp", NULL, 0), "checkpoint_load(model NULL)");
    peftkit_model_free(NULL);
    record_void("model_free(NULL)");
}

static void sizes(peftkit_model *m) {
    group = "sizes and capacities";
    int32_t ids[BATCH * SEQ], toks[64], n32 = 0;
    float loss = 0, logits[8];
    char buf[64];
    size_t len = 0;
    fill(ids, BATCH * SEQ, 0);
    peftkit_train_config tc = train_config();
    peftkit_train_result r = result();
    peftkit_generate_config gc;
    peftkit_generate_config_init(&gc);
    gc.max_new_tokens = 4;

    CASE(BAD, peftkit_train_step(m, ids, NULL, 0, SEQ, &tc, &r), "train_step(batch 0)");
    CASE(BAD, peftkit_train_step(m, ids, NULL, -1, SEQ, &tc, &r), "train_step(batch -1)");
    CASE(BAD, peftkit_train_step(m, ids, NULL, BATCH, 0, &tc, &r), "train_step(seq_len 0)");
    CASE(BAD, peftkit_train_step(m, ids, NULL, BATCH, INT32_MIN, &tc, &r), "train_step(seq_len INT32_MIN)");
    CASE(BAD, peftkit_train_step(m, ids, NULL, 1, 1, &tc, &r), "train_step(seq_len 1: no label to predict)");
    CASE(PEFTKIT_ERR_STATE, peftkit_train_apply_gradients(m, &tc, &r), "train_apply_gradients(no compute before it)");
    CASE(BAD, peftkit_train_compute_gradients(m, ids, NULL, 0, SEQ, &tc, 0, NULL, NULL), "train_compute_gradients(batch 0)");
    r.struct_size = 3;
    CASE(BAD, peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, &r), "train_step(result struct_size 3)");
    r.struct_size = sizeof r;

    /* Struct versions: the caller's struct_size is the authority (peftkit.h, "Structs and versions"). */
    {
        struct { peftkit_train_config c; uint32_t newer[2]; } big;
        peftkit_model_config mc2;
        peftkit_generate_config gc2;
        CASE(BAD, peftkit_model_config_init_sized(NULL, sizeof mc2), "model_config_init_sized(config NULL)");
        CASE(BAD, peftkit_model_config_init_sized(&mc2, 0), "model_config_init_sized(size 0)");
        CASE(BAD, peftkit_model_config_init_sized(&mc2, 4), "model_config_init_sized(size 4: struct_size alone)");
        CASE(BAD, peftkit_model_config_init_sized(&mc2, 10), "model_config_init_sized(size 10: inside a field)");
        CASE(BAD, peftkit_model_config_init_sized(&mc2, 1u << 20), "model_config_init_sized(size 1 MiB)");
        CASE(PEFTKIT_OK, peftkit_model_config_init_sized(&mc2, 8), "model_config_init_sized(size 8: the first field only)");
        CASE(BAD, peftkit_train_config_init_sized(NULL, sizeof tc), "train_config_init_sized(config NULL)");
        CASE(BAD, peftkit_train_config_init_sized(&tc, 7), "train_config_init_sized(size 7)");
        CASE(PEFTKIT_OK, peftkit_train_config_init_sized(&big.c, sizeof big), "train_config_init_sized(a newer header's larger struct)");
        CASE(PEFTKIT_OK, peftkit_train_step(m, ids, NULL, BATCH, SEQ, &big.c, NULL), "train_step(newer config, unknown tail zero)");
        big.newer[1] = 1;
        CASE(PEFTKIT_ERR_UNSUPPORTED, peftkit_train_step(m, ids, NULL, BATCH, SEQ, &big.c, NULL),
             "train_step(newer config, unknown tail not zero)");
        CASE(BAD, peftkit_generate_config_init_sized(NULL, sizeof gc2), "generate_config_init_sized(config NULL)");
        CASE(BAD, peftkit_generate_config_init_sized(&gc2, sizeof gc2 - 1), "generate_config_init_sized(sizeof - 1)");
        tc = train_config();
    }
    tc.micro_batch_size = -1;
    CASE(BAD, peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, NULL), "train_step(micro_batch_size -1)");
    tc = train_config();
    tc.warmup_steps = -1;
    CASE(BAD, peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, NULL), "train_step(warmup_steps -1)");
    tc = train_config();
    tc.total_steps = -5;
    CASE(BAD, peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, NULL), "train_step(total_steps -5)");
    tc = train_config();
    tc.struct_size = 0;
    CASE(BAD, peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, NULL), "train_step(config struct_size 0)");

    CASE(BAD, peftkit_forward(m, ids, NULL, 0, SEQ, NULL, 0, &loss, NULL), "forward(batch 0)");
    CASE(BAD, peftkit_forward(m, ids, NULL, BATCH, -1, NULL, 0, &loss, NULL), "forward(seq_len -1)");
    CASE(PEFTKIT_ERR_BUFFER_TOO_SMALL, peftkit_forward(m, ids, NULL, BATCH, SEQ, logits, 8, &loss, NULL),
         "forward(logits_capacity 8 < batch*seq*vocab)");
    CASE(BAD, peftkit_forward(m, ids, NULL, BATCH, SEQ, logits, (size_t)-1, &loss, NULL), "forward(logits_capacity SIZE_MAX)");
    CASE(PEFTKIT_ERR_OUT_OF_MEMORY, peftkit_forward(m, ids, NULL, INT32_MAX, INT32_MAX, logits, 8, &loss, NULL),
         "forward(batch*seq*vocab overflows, logits given)");

    {
        peftkit_generate_result gr;
        gr.struct_size = 0;
        CASE(BAD, peftkit_generate_ex(m, ids, 3, &gc, toks, 64, &gr, NULL, NULL), "generate_ex(result struct_size 0)");
        gr.struct_size = 6;
        CASE(BAD, peftkit_generate_ex(m, ids, 3, &gc, toks, 64, &gr, NULL, NULL), "generate_ex(result struct_size 6, inside a field)");
        gr.struct_size = 1u << 20;
        CASE(BAD, peftkit_generate_ex(m, ids, 3, &gc, toks, 64, &gr, NULL, NULL), "generate_ex(result struct_size 1 MiB)");
        gr.struct_size = sizeof gr;
        CASE(PEFTKIT_ERR_BUFFER_TOO_SMALL, peftkit_generate_ex(m, ids, 3, &gc, toks, 3, &gr, NULL, NULL),
             "generate_ex(out_capacity 3 < max_new_tokens 4)");
        CASE(BAD, peftkit_generate_ex(m, ids, 0, &gc, toks, 64, &gr, NULL, NULL), "generate_ex(n_prompt 0)");
        CASE(BAD, peftkit_generate_ex(m, ids, 3, &gc, toks, -1, &gr, NULL, NULL), "generate_ex(out_capacity -1)");
        char piece[4];
        size_t plen = 0;
        CASE(BAD, peftkit_token_to_piece(m, 1, piece, (size_t)-1, &plen), "token_to_piece(capacity SIZE_MAX)");
    }
    CASE(BAD, peftkit_generate(m, ids, 0, &gc, toks, 64, &n32, NULL, NULL), "generate(n_prompt 0)");
    CASE(BAD, peftkit_generate(m, ids, -1, &gc, toks, 64, &n32, NULL, NULL), "generate(n_prompt -1)");
    CASE(BAD, peftkit_generate(m, ids, 3, &gc, toks, -1, &n32, NULL, NULL), "generate(out_capacity -1)");
    CASE(PEFTKIT_ERR_BUFFER_TOO_SMALL, peftkit_generate(m, ids, 3, &gc, toks, 3, &n32, NULL, NULL),
         "generate(out_capacity 3 < max_new_tokens 4)");
    gc.max_new_tokens = -1;
    CASE(BAD, peftkit_generate(m, ids, 3, &gc, toks, 64, &n32, NULL, NULL), "generate(max_new_tokens -1)");
    peftkit_generate_config_init(&gc);
    gc.n_stop_tokens = -1;
    CASE(BAD, peftkit_generate(m, ids, 3, &gc, toks, 64, &n32, NULL, NULL), "generate(n_stop_tokens -1)");
    peftkit_generate_config_init(&gc);
    gc.top_k = -1;
    CASE(BAD, peftkit_generate(m, ids, 3, &gc, toks, 64, &n32, NULL, NULL), "generate(top_k -1)");

    CASE(PEFTKIT_ERR_BUFFER_TOO_SMALL, peftkit_adapter_name(m, 0, buf, 0, &len), "adapter_name(buf given, cap 0)");
    CASE(BAD, peftkit_adapter_name(m, 0, buf, (size_t)-1, &len), "adapter_name(cap SIZE_MAX)");
    CASE(BAD, peftkit_adapter_name(m, -1, buf, sizeof buf, &len), "adapter_name(index -1)");
    CASE(BAD, peftkit_adapter_name(m, 1000, buf, sizeof buf, &len), "adapter_name(index past the count)");
    CASE(PEFTKIT_ERR_BUFFER_TOO_SMALL, peftkit_adapter_get_active(m, buf, 1, &len), "adapter_get_active(cap 1)");
    CASE(BAD, peftkit_adapter_load(m, "/tmp", "x", buf, (size_t)-1), "adapter_load(name_cap SIZE_MAX)");
    CASE(BAD, peftkit_checkpoint_load(m, "/tmp", buf, (size_t)-1), "checkpoint_load(name_cap SIZE_MAX)");

    peftkit_model_config mc;
    peftkit_model *out = NULL;
#define MODEL_CASE(field, value)                                                                                       \
    peftkit_model_config_init(&mc);                                                                                    \
    mc.field = value;                                                                                                  \
    CASE(BAD, peftkit_model_create(&mc, 1, &out), "model_create(" #field " " #value ")");
    MODEL_CASE(vocab_size, 0)
    MODEL_CASE(vocab_size, 1 << 25)
    MODEL_CASE(hidden_size, -1)
    MODEL_CASE(hidden_size, 100000)
    MODEL_CASE(num_layers, 0)
    MODEL_CASE(num_heads, 0)
    MODEL_CASE(num_heads, 3)
    MODEL_CASE(num_kv_heads, -2)
    MODEL_CASE(head_dim, -1)
    MODEL_CASE(intermediate_size, -1)
    MODEL_CASE(max_positions, 0)
    MODEL_CASE(max_positions, INT32_MAX)
    MODEL_CASE(struct_size, 13)
    MODEL_CASE(architecture, 7)
    MODEL_CASE(tie_word_embeddings, 2)
    MODEL_CASE(qkv_bias, 5)

}

/* Adapter configs as JSON text (peftkit_adapter_attach_json): the core reads and judges them, with one message. */
static void adapter_configs(peftkit_model *m) {
    group = "adapter configs (JSON)";
#define JSON_CASE(want, json, label) CASE(want, peftkit_adapter_attach_json(m, "x", json), "adapter_attach_json(" label ")")
    JSON_CASE(BAD, "{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": [\"c_\xc3\x28" "attn\"]}", "invalid UTF-8");
    JSON_CASE(PEFTKIT_ERR_FORMAT, "peft_type = LORA", "not JSON");
    JSON_CASE(PEFTKIT_ERR_FORMAT, "", "empty text");
    JSON_CASE(PEFTKIT_ERR_FORMAT, "{\"peft_type\": \"LORA\", \"r\": 8", "cut off");
    JSON_CASE(PEFTKIT_ERR_FORMAT, "[{\"peft_type\": \"LORA\", \"r\": 8}]", "JSON array at top level");
    JSON_CASE(PEFTKIT_ERR_FORMAT, "\"seq_bn\"", "JSON string at top level");
    JSON_CASE(PEFTKIT_ERR_UNSUPPORTED, "{\"peft_type\": \"VERA\", \"r\": 8}", "unknown peft_type VERA");
    JSON_CASE(PEFTKIT_ERR_UNSUPPORTED, "{\"r\": 8, \"lora_alpha\": 16}", "no peft_type, not a bottleneck config");
    JSON_CASE(PEFTKIT_ERR_UNSUPPORTED, "{\"config\": \"lora\"}", "unknown AdapterHub preset");
    JSON_CASE(PEFTKIT_ERR_UNSUPPORTED, "{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": [\"c_attn\"], \"use_qalora\": true}",
              "unsupported key use_qalora true");
    JSON_CASE(PEFTKIT_ERR_UNSUPPORTED, "{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": [\"c_attn\"], \"loftq_config\": {\"bits\": 4}}",
              "unknown key loftq_config");
    JSON_CASE(PEFTKIT_ERR_UNSUPPORTED, "{\"mh_adapter\": false, \"output_adapter\": true, \"reduction_factor\": 16, \"is_parallel\": true}",
              "bottleneck is_parallel true");
    JSON_CASE(PEFTKIT_ERR_FORMAT, "{\"peft_type\": \"LORA\", \"r\": \"eight\", \"target_modules\": [\"c_attn\"]}", "r of wrong type");
    JSON_CASE(PEFTKIT_ERR_FORMAT, "{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": [\"c_attn\"], \"use_rslora\": \"yes\"}",
              "use_rslora of wrong type");
    JSON_CASE(PEFTKIT_ERR_FORMAT, "{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": 7}", "LoRA with target_modules not a list or pattern");
    JSON_CASE(BAD, "{\"peft_type\": \"LORA\", \"r\": 0, \"target_modules\": [\"c_attn\"]}", "rank 0");
    JSON_CASE(BAD, "{\"peft_type\": \"LORA\", \"r\": -4, \"target_modules\": [\"c_attn\"]}", "rank -4");
    JSON_CASE(PEFTKIT_ERR_UNSUPPORTED, "{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": [\"nothing_here\"]}",
              "targets that match nothing");
    JSON_CASE(PEFTKIT_ERR_FORMAT, "{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": \"^nothing.*$\"}",
              "target regex that matches nothing");
    JSON_CASE(PEFTKIT_ERR_FORMAT, "{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": [\"c_attn\"], \"layers_to_transform\": [5]}",
              "layers_to_transform [5] of 2 layers");
    JSON_CASE(BAD, "{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": [\"c_attn\"], \"lora_dropout\": 1.0}", "lora_dropout 1.0");
    JSON_CASE(PEFTKIT_ERR_FORMAT, "{\"peft_type\": \"PROMPT_TUNING\", \"num_virtual_tokens\": 0}", "num_virtual_tokens 0");
    JSON_CASE(PEFTKIT_ERR_STATE, "{\"peft_type\": \"PROMPT_TUNING\", \"num_virtual_tokens\": 4, \"prompt_tuning_init\": \"TEXT\", "
              "\"prompt_tuning_init_text\": \"Classify:\"}", "TEXT init on a model without tokenizer");
    JSON_CASE(PEFTKIT_ERR_FORMAT, "{\"mh_adapter\": false, \"output_adapter\": true, \"reduction_factor\": 0}", "reduction_factor 0");
    JSON_CASE(PEFTKIT_ERR_FORMAT, "{\"mh_adapter\": false, \"output_adapter\": true, \"reduction_factor\": -4}", "reduction_factor -4");
    JSON_CASE(PEFTKIT_ERR_FORMAT, "{\"mh_adapter\": false, \"output_adapter\": true, \"reduction_factor\": 1e-300}",
              "reduction_factor 1e-300");
    JSON_CASE(PEFTKIT_ERR_FORMAT, "{\"mh_adapter\": false, \"output_adapter\": true, \"reduction_factor\": 16, \"leave_out\": [0, 1]}",
              "leave_out every layer");
    /* A string longer than 1 MiB is refused before it is copied. */
    size_t huge_len = (1u << 20) + 16;
    char *huge = malloc(huge_len + 1);
    if (huge) {
        memset(huge, ' ', huge_len);
        memcpy(huge, PFEIFFER, strlen(PFEIFFER));
        huge[huge_len] = 0;
        JSON_CASE(BAD, huge, "1 MiB + 16 bytes");
        free(huge);
    }
#undef JSON_CASE
}

static void token_ids(peftkit_model *m) {
    group = "token ids";
    int32_t ids[BATCH * SEQ], labels[BATCH * SEQ], toks[64], n32 = 0;
    float loss = 0;
    int64_t tokens = 0;
    peftkit_train_config tc = train_config();
    peftkit_generate_config gc;
    peftkit_generate_config_init(&gc);
    gc.max_new_tokens = 4;
    const int32_t bad_ids[] = {-1, VOCAB, INT32_MAX, INT32_MIN};
    for (int i = 0; i < 4; i++) {
        fill(ids, BATCH * SEQ, 0);
        ids[5] = bad_ids[i];
        CASE(BAD, peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, NULL), "train_step(input id %d)", (int)bad_ids[i]);
        CASE(BAD, peftkit_forward(m, ids, NULL, BATCH, SEQ, NULL, 0, &loss, NULL), "forward(input id %d)", (int)bad_ids[i]);
        CASE(BAD, peftkit_generate(m, ids + 3, 3, &gc, toks, 64, &n32, NULL, NULL), "generate(prompt id %d)", (int)bad_ids[i]);
    }
    fill(ids, BATCH * SEQ, 0);
    const int32_t bad_labels[] = {-2, -101, VOCAB, INT32_MIN};
    for (int i = 0; i < 4; i++) {
        memcpy(labels, ids, sizeof labels);
        labels[3] = bad_labels[i];
        CASE(BAD, peftkit_train_step(m, ids, labels, BATCH, SEQ, &tc, NULL), "train_step(label %d)", (int)bad_labels[i]);
        CASE(BAD, peftkit_forward(m, ids, labels, BATCH, SEQ, NULL, 0, &loss, NULL), "forward(label %d)", (int)bad_labels[i]);
    }
    for (int i = 0; i < BATCH * SEQ; i++) labels[i] = PEFTKIT_IGNORE_INDEX;
    CASE(BAD, peftkit_train_step(m, ids, labels, BATCH, SEQ, &tc, NULL), "train_step(every label -100: nothing to learn)");
    CASE(PEFTKIT_OK, peftkit_forward(m, ids, labels, BATCH, SEQ, NULL, 0, &loss, &tokens), "forward(every label -100)");
    check(loss == 0 && tokens == 0, "[token ids] forward with no counted label: loss 0, tokens 0");
    int32_t stop = 300;
    gc.stop_tokens = &stop;
    gc.n_stop_tokens = 1;
    CASE(BAD, peftkit_generate(m, ids, 3, &gc, toks, 64, &n32, NULL, NULL), "generate(stop token 300 >= vocab)");
}

static void lengths(peftkit_model *m) {
    group = "sequence lengths";
    /* Short arrays with huge counts: the length is refused before any id is read. */
    int32_t ids[16], toks[64], n32 = -1;
    fill(ids, 16, 0);
    float loss = 0;
    peftkit_train_config tc = train_config();
    peftkit_generate_config gc;
    peftkit_generate_config_init(&gc);
    gc.max_new_tokens = 4;
    int32_t *long_ids = malloc(sizeof(int32_t) * 1100);
    if (!long_ids) return;
    fill(long_ids, 1100, 0);
    CASE(BAD, peftkit_train_step(m, long_ids, NULL, 1, 1025, &tc, NULL), "train_step(seq_len 1025 > max_positions 1024)");
    CASE(BAD, peftkit_forward(m, long_ids, NULL, 1, 1025, NULL, 0, &loss, NULL), "forward(seq_len 1025 > max_positions)");
    CASE(BAD, peftkit_generate(m, long_ids, 1025, &gc, toks, 64, &n32, NULL, NULL), "generate(n_prompt 1025 > max_positions)");
    CASE(BAD, peftkit_train_step(m, ids, NULL, 1, 1 << 30, &tc, NULL), "train_step(seq_len 2^30, 16-entry array)");
    CASE(BAD, peftkit_forward(m, ids, NULL, 1, 1 << 30, NULL, 0, &loss, NULL), "forward(seq_len 2^30, 16-entry array)");
    CASE(BAD, peftkit_generate(m, ids, 1 << 30, &gc, toks, 64, &n32, NULL, NULL), "generate(n_prompt 2^30, 16-entry array)");
    gc.max_new_tokens = 50;
    CASE(PEFTKIT_OK, peftkit_generate(m, long_ids, 1020, &gc, toks, 64, &n32, NULL, NULL),
         "generate(n_prompt 1020 + max_new_tokens 50 > max_positions)");
    check(n32 == 4, "[sequence lengths] generation stops at the model's maximum (4 new tokens)");
    free(long_ids);
}

static void hyper_parameters(peftkit_model *m) {
    group = "hyper-parameters";
    int32_t ids[BATCH * SEQ], toks[64], n32 = 0;
    fill(ids, BATCH * SEQ, 0);
    peftkit_train_config tc;
    const float nan = NAN, inf = INFINITY;
#define TRAIN_CASE(field, value)                                                                                       \
    tc = train_config();                                                                                               \
    tc.field = value;                                                                                                  \
    CASE(BAD, peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, NULL), "train_step(" #field " " #value ")");
    TRAIN_CASE(learning_rate, nan)
    TRAIN_CASE(learning_rate, inf)
    TRAIN_CASE(learning_rate, -1e-3f)
    TRAIN_CASE(beta1, nan)
    TRAIN_CASE(beta1, -0.1f)
    TRAIN_CASE(beta1, 1.0f)
    TRAIN_CASE(beta2, nan)
    TRAIN_CASE(beta2, 1.0f)
    TRAIN_CASE(beta2, -inf)
    TRAIN_CASE(eps, 0.0f)
    TRAIN_CASE(eps, -1e-8f)
    TRAIN_CASE(eps, nan)
    TRAIN_CASE(eps, inf)
    TRAIN_CASE(weight_decay, -0.01f)
    TRAIN_CASE(weight_decay, nan)
    TRAIN_CASE(weight_decay, inf)
    TRAIN_CASE(max_grad_norm, nan)
    TRAIN_CASE(max_grad_norm, -1.0f)
    TRAIN_CASE(max_grad_norm, inf)
    TRAIN_CASE(schedule, 7)
    TRAIN_CASE(lora_plus_ratio, nan)
    TRAIN_CASE(lora_plus_ratio, -1.0f)
    TRAIN_CASE(lora_plus_ratio, inf)
    TRAIN_CASE(gradient_checkpointing, 2)
    TRAIN_CASE(gradient_checkpointing, -1)
    TRAIN_CASE(activation_memory, 4)
    TRAIN_CASE(activation_memory, -1)
    tc = train_config();
    tc.struct_size = (uint32_t)offsetof(peftkit_train_config, lora_plus_ratio);
    tc.gradient_checkpointing = 7; /* past the caller's struct: not read */
    CASE(PEFTKIT_OK, peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, NULL),
         "train_step(config of the layout before lora_plus_ratio)");
    tc = train_config();
    tc.gradient_checkpointing = 1;
    tc.lora_plus_ratio = 4;
    CASE(PEFTKIT_OK, peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, NULL), "train_step(gradient_checkpointing 1, lora_plus_ratio 4)");
    tc = train_config();
    tc.learning_rate = 0;
    CASE(PEFTKIT_OK, peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, NULL), "train_step(learning_rate 0)");

    peftkit_generate_config gc;
#define GEN_CASE(field, value)                                                                                         \
    peftkit_generate_config_init(&gc);                                                                                 \
    gc.max_new_tokens = 2;                                                                                             \
    gc.field = value;                                                                                                  \
    CASE(BAD, peftkit_generate(m, ids, 3, &gc, toks, 64, &n32, NULL, NULL), "generate(" #field " " #value ")");
    GEN_CASE(temperature, nan)
    GEN_CASE(temperature, -1.0f)
    GEN_CASE(temperature, inf)
    GEN_CASE(top_p, nan)
    GEN_CASE(top_p, 0.0f)
    GEN_CASE(top_p, -0.5f)
    GEN_CASE(top_p, 1.5f)
    GEN_CASE(top_p, inf)
    GEN_CASE(struct_size, 1)
    GEN_CASE(repetition_penalty, nan)
    GEN_CASE(repetition_penalty, -1.0f)
    GEN_CASE(repetition_penalty, inf)
    GEN_CASE(min_p, nan)
    GEN_CASE(min_p, -0.1f)
    GEN_CASE(min_p, 1.5f)
    GEN_CASE(n_stop_strings, -1)
    GEN_CASE(n_stop_strings, 1025)
    GEN_CASE(reserved0, 7)
    {
        const char *null_entry[2] = {"x", NULL};
        const char *empty[1] = {""};
        const char *bad_utf8[1] = {"\xc3\x28"};
        static char long_stop[5000];
        memset(long_stop, 'a', sizeof long_stop - 1);
        const char *too_long[1] = {long_stop};
        peftkit_generate_config_init(&gc);
        gc.max_new_tokens = 2;
        gc.stop_strings = null_entry;
        gc.n_stop_strings = 2;
        CASE(BAD, peftkit_generate(m, ids, 3, &gc, toks, 64, &n32, NULL, NULL), "generate(stop_strings[1] NULL)");
        gc.stop_strings = empty;
        gc.n_stop_strings = 1;
        CASE(BAD, peftkit_generate(m, ids, 3, &gc, toks, 64, &n32, NULL, NULL), "generate(stop_strings[0] empty)");
        gc.stop_strings = bad_utf8;
        CASE(BAD, peftkit_generate(m, ids, 3, &gc, toks, 64, &n32, NULL, NULL), "generate(stop_strings[0] invalid UTF-8)");
        gc.stop_strings = too_long;
        CASE(BAD, peftkit_generate(m, ids, 3, &gc, toks, 64, &n32, NULL, NULL), "generate(stop_strings[0] 4999 bytes > 4096)");
        const char *fine[1] = {"x"};
        gc.stop_strings = fine;
        CASE(PEFTKIT_ERR_STATE, peftkit_generate(m, ids, 3, &gc, toks, 64, &n32, NULL, NULL),
             "generate(stop strings, model without a tokenizer)");
    }

    peftkit_model_config mc;
    peftkit_model *out = NULL;
    MODEL_CASE(norm_eps, -1.0f)
    MODEL_CASE(norm_eps, nan)
    MODEL_CASE(norm_eps, inf)
    peftkit_model_config_init(&mc);
    mc.architecture = PEFTKIT_ARCH_LLAMA;
    mc.rope_theta = nan;
    CASE(BAD, peftkit_model_create(&mc, 1, &out), "model_create(llama, rope_theta nan)");
    mc.rope_theta = 0;
    CASE(BAD, peftkit_model_create(&mc, 1, &out), "model_create(llama, rope_theta 0)");
    mc.rope_theta = -inf;
    CASE(BAD, peftkit_model_create(&mc, 1, &out), "model_create(llama, rope_theta -inf)");
}

static void names(peftkit_model *m, const char *adapter_dir, const char *checkpoint_dir) {
    group = "adapter names";
    int64_t n64 = 0;
    char buf[64];
    CASE(PEFTKIT_ERR_NOT_FOUND, peftkit_adapter_set_active(m, "nope"), "adapter_set_active(unknown)");
    CASE(PEFTKIT_ERR_NOT_FOUND, peftkit_adapter_remove(m, "nope"), "adapter_remove(unknown)");
    CASE(PEFTKIT_ERR_NOT_FOUND, peftkit_adapter_num_params(m, "nope", &n64), "adapter_num_params(unknown)");
    CASE(PEFTKIT_ERR_NOT_FOUND, peftkit_adapter_save(m, "nope", "/tmp/peftkit-misuse-never"), "adapter_save(unknown)");
    CASE(PEFTKIT_ERR_NOT_FOUND, peftkit_adapter_save_as(m, "nope", "/tmp/peftkit-misuse-never.gguf", PEFTKIT_ADAPTER_FORMAT_GGUF),
         "adapter_save_as(unknown, GGUF)");
    CASE(PEFTKIT_ERR_NOT_FOUND, peftkit_checkpoint_save(m, "nope", "/tmp/peftkit-misuse-never"), "checkpoint_save(unknown)");
    CASE(PEFTKIT_ERR_STATE, peftkit_adapter_attach_json(m, "a", PFEIFFER), "adapter_attach_json(duplicate name)");
    CASE(PEFTKIT_ERR_STATE, peftkit_adapter_load(m, adapter_dir, "a", buf, sizeof buf), "adapter_load(as a name already attached)");
    CASE(PEFTKIT_ERR_STATE, peftkit_adapter_load(m, adapter_dir, NULL, NULL, 0), "adapter_load(stored name already attached)");
    CASE(PEFTKIT_ERR_STATE, peftkit_checkpoint_load(m, checkpoint_dir, buf, sizeof buf), "checkpoint_load(stored name already attached)");
    CASE(BAD, peftkit_adapter_attach_json(m, "", PFEIFFER), "adapter_attach_json(name \"\")");
    CASE(BAD, peftkit_adapter_attach_json(m, "../x", PFEIFFER), "adapter_attach_json(name \"../x\")");
    CASE(BAD, peftkit_adapter_attach_json(m, "with space", PFEIFFER), "adapter_attach_json(name with a space)");
    CASE(BAD, peftkit_adapter_attach_json(m, "bad\xc3\x28", PFEIFFER), "adapter_attach_json(name not UTF-8)");
    char longname[300];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    CASE(BAD, peftkit_adapter_attach_json(m, longname, PFEIFFER), "adapter_attach_json(name of 299 bytes)");
    CASE(BAD, peftkit_adapter_set_active(m, ""), "adapter_set_active(\"\")");
    CASE(BAD, peftkit_adapter_load(m, adapter_dir, "", buf, sizeof buf), "adapter_load(name \"\")");
}

static int32_t reenter_status, reenter_read_status, reenter_save_status;
static peftkit_model *reenter_model;
static const char REENTER_SAVE_PATH[] = "/tmp/peftkit-misuse-busy-save";
static int32_t reenter_cb(int32_t token, void *user) {
    (void)token;
    (void)user;
    int64_t n = 0;
    int32_t count = 0;
    reenter_status = peftkit_adapter_num_params(reenter_model, "t", &n);
    reenter_save_status = peftkit_model_save(reenter_model, REENTER_SAVE_PATH, PEFTKIT_MODEL_FORMAT_HF);
    reenter_read_status = peftkit_adapter_count(reenter_model, &count);
    return 1;
}

static void states(void) {
    group = "model state";
    int32_t ids[BATCH * SEQ], toks[8], n32 = 0;
    fill(ids, BATCH * SEQ, 0);
    float loss = 0;
    peftkit_train_config tc = train_config();
    peftkit_generate_config gc;
    peftkit_generate_config_init(&gc);
    gc.max_new_tokens = 4;
    peftkit_model *m = new_model(7);
    if (!m) return;
    CASE(PEFTKIT_ERR_STATE, peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, NULL), "train_step(no adapter attached)");
    CASE(PEFTKIT_OK, peftkit_forward(m, ids, NULL, BATCH, SEQ, NULL, 0, &loss, NULL), "forward(no adapter: base model)");
    CASE(PEFTKIT_OK, peftkit_generate(m, ids, 3, &gc, toks, 8, &n32, NULL, NULL), "generate(no adapter: base model)");
    peftkit_adapter_attach_json(m, "t", PFEIFFER);
    CASE(PEFTKIT_ERR_STATE, peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, NULL), "train_step(adapter attached, none active)");
    peftkit_adapter_set_active(m, "t");
    CASE(PEFTKIT_OK, peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, NULL), "train_step(active adapter)");
    peftkit_adapter_remove(m, "t");
    CASE(PEFTKIT_ERR_STATE, peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, NULL), "train_step(after removing the active adapter)");
    reenter_model = m;
    reenter_status = 12345;
    CASE(PEFTKIT_OK, peftkit_generate(m, ids, 3, &gc, toks, 8, &n32, reenter_cb, NULL), "generate(callback re-entering the model)");
    record("a call on the generating model from its token callback", PEFTKIT_ERR_BUSY, reenter_status);
    record("adapter_count from the token callback (a read of the adapter list)", PEFTKIT_OK, reenter_read_status);
    record("model_save on the generating model from its token callback", PEFTKIT_ERR_BUSY, reenter_save_status);
    check(access(REENTER_SAVE_PATH, F_OK) != 0, "[model state] a busy model_save wrote nothing");
    peftkit_model_free(m);
}

/* Packed rows: the *_packed calls take the plain calls' arguments plus segment ids. */
static void packing(void) {
    group = "packed rows";
    int32_t ids[BATCH * SEQ], seg[BATCH * SEQ];
    fill(ids, BATCH * SEQ, 0);
    for (int i = 0; i < BATCH * SEQ; i++) seg[i] = (i % SEQ) < SEQ / 2 ? 0 : 1;
    float loss = 0, logits[8];
    int64_t tokens = 0;
    peftkit_train_config tc = train_config();
    peftkit_train_result r = result();
    peftkit_model *m = new_model_with_adapter(5, "a");
    if (!m) return;
    CASE(PEFTKIT_OK, peftkit_train_step_packed(m, ids, NULL, seg, BATCH, SEQ, &tc, &r), "train_step_packed(two records per row)");
    CASE(PEFTKIT_OK, peftkit_train_step_packed(m, ids, NULL, NULL, BATCH, SEQ, &tc, &r), "train_step_packed(segment_ids NULL: the plain step)");
    CASE(BAD, peftkit_train_step_packed(NULL, ids, NULL, seg, BATCH, SEQ, &tc, &r), "train_step_packed(model NULL)");
    CASE(BAD, peftkit_train_step_packed(m, NULL, NULL, seg, BATCH, SEQ, &tc, &r), "train_step_packed(input_ids NULL)");
    CASE(BAD, peftkit_train_step_packed(m, ids, NULL, seg, BATCH, SEQ, NULL, &r), "train_step_packed(config NULL)");
    CASE(BAD, peftkit_train_step_packed(m, ids, NULL, seg, 0, SEQ, &tc, &r), "train_step_packed(batch 0)");
    CASE(BAD, peftkit_train_step_packed(m, ids, NULL, seg, BATCH, -3, &tc, &r), "train_step_packed(seq_len -3)");
    CASE(PEFTKIT_OK, peftkit_train_compute_gradients_packed(m, ids, NULL, seg, BATCH, SEQ, &tc, 0, &loss, &tokens),
         "train_compute_gradients_packed(two records per row)");
    CASE(BAD, peftkit_train_compute_gradients_packed(NULL, ids, NULL, seg, BATCH, SEQ, &tc, 0, NULL, NULL),
         "train_compute_gradients_packed(model NULL)");
    CASE(BAD, peftkit_train_compute_gradients_packed(m, NULL, NULL, seg, BATCH, SEQ, &tc, 0, NULL, NULL),
         "train_compute_gradients_packed(input_ids NULL)");
    CASE(BAD, peftkit_train_compute_gradients_packed(m, ids, NULL, seg, BATCH, SEQ, NULL, 0, NULL, NULL),
         "train_compute_gradients_packed(config NULL)");
    CASE(BAD, peftkit_train_compute_gradients_packed(m, ids, NULL, seg, BATCH, SEQ, &tc, -5, NULL, NULL),
         "train_compute_gradients_packed(loss_divisor -5)");
    CASE(PEFTKIT_OK, peftkit_train_apply_gradients(m, &tc, &r), "train_apply_gradients(after the packed compute)");
    CASE(PEFTKIT_OK, peftkit_forward_packed(m, ids, NULL, seg, BATCH, SEQ, NULL, 0, &loss, &tokens), "forward_packed(two records per row)");
    CASE(BAD, peftkit_forward_packed(NULL, ids, NULL, seg, BATCH, SEQ, NULL, 0, &loss, NULL), "forward_packed(model NULL)");
    CASE(BAD, peftkit_forward_packed(m, NULL, NULL, seg, BATCH, SEQ, NULL, 0, &loss, NULL), "forward_packed(input_ids NULL)");
    CASE(BAD, peftkit_forward_packed(m, ids, NULL, seg, 0, SEQ, NULL, 0, &loss, NULL), "forward_packed(batch 0)");
    CASE(PEFTKIT_ERR_BUFFER_TOO_SMALL, peftkit_forward_packed(m, ids, NULL, seg, BATCH, SEQ, logits, 8, &loss, NULL),
         "forward_packed(logits_capacity 8 < batch*seq*vocab)");
    /* Prompt and prefix tuning: their virtual positions belong to one sequence. */
    peftkit_adapter_attach_json(m, "pfx", "{\"peft_type\": \"PREFIX_TUNING\", \"num_virtual_tokens\": 2}");
    peftkit_adapter_set_active(m, "pfx");
    CASE(PEFTKIT_ERR_UNSUPPORTED, peftkit_train_step_packed(m, ids, NULL, seg, BATCH, SEQ, &tc, &r), "train_step_packed(prefix tuning active)");
    CASE(PEFTKIT_ERR_UNSUPPORTED, peftkit_forward_packed(m, ids, NULL, seg, BATCH, SEQ, NULL, 0, &loss, NULL),
         "forward_packed(prefix tuning active)");
    peftkit_adapter_attach_json(m, "pt", "{\"peft_type\": \"PROMPT_TUNING\", \"num_virtual_tokens\": 2}");
    peftkit_adapter_set_active(m, "pt");
    CASE(PEFTKIT_ERR_UNSUPPORTED, peftkit_train_compute_gradients_packed(m, ids, NULL, seg, BATCH, SEQ, &tc, 0, NULL, NULL),
         "train_compute_gradients_packed(prompt tuning active)");
    peftkit_model_free(m);
}

static void files(peftkit_model *m, const char *scratch, const char *adapter_dir, const char *checkpoint_dir) {
    group = "files";
    char d[1100], p[1200], buf[64];
    long size = file_size(strcat(strcpy(p, adapter_dir), "/adapter.safetensors"));
    peftkit_model *out = NULL;

    CASE(PEFTKIT_ERR_IO, peftkit_adapter_load(m, "/nonexistent/peftkit", "x", buf, sizeof buf), "adapter_load(missing folder)");
    snprintf(d, sizeof d, "%s/adapter.safetensors", adapter_dir);
    CASE(PEFTKIT_ERR_IO, peftkit_adapter_load(m, d, "x", buf, sizeof buf), "adapter_load(path is a file)");
    const long cuts[] = {0, 7, 8, 100, size / 2, size - 1};
    for (int i = 0; i < 6; i++) {
        snprintf(d, sizeof d, "%s/misuse-cut-%d", scratch, i);
        copy_adapter(adapter_dir, d, cuts[i], -1);
        CASE(PEFTKIT_ERR_FORMAT, peftkit_adapter_load(m, d, "x", buf, sizeof buf), "adapter_load(adapter.safetensors cut to %ld of %ld bytes)",
             cuts[i], size);
    }
    snprintf(d, sizeof d, "%s/misuse-cut-config", scratch);
    copy_adapter(adapter_dir, d, -1, 50);
    CASE(PEFTKIT_ERR_FORMAT, peftkit_adapter_load(m, d, "x", buf, sizeof buf), "adapter_load(adapter_config.json cut to 50 bytes)");
    snprintf(d, sizeof d, "%s/misuse-empty-config", scratch);
    copy_adapter(adapter_dir, d, -1, 0);
    CASE(PEFTKIT_ERR_FORMAT, peftkit_adapter_load(m, d, "x", buf, sizeof buf), "adapter_load(adapter_config.json empty)");
    snprintf(d, sizeof d, "%s/misuse-no-weights", scratch);
    copy_adapter(adapter_dir, d, -1, -1);
    snprintf(p, sizeof p, "%s/adapter.safetensors", d);
    unlink(p);
    CASE(PEFTKIT_ERR_IO, peftkit_adapter_load(m, d, "x", buf, sizeof buf), "adapter_load(adapter.safetensors missing)");
    snprintf(d, sizeof d, "%s/misuse-nan", scratch);
    copy_adapter(adapter_dir, d, -1, -1);
    snprintf(p, sizeof p, "%s/adapter.safetensors", d);
    long n = 0;
    unsigned char *b = read_file(p, &n);
    if (b && poison_safetensors(b, n, NAN)) write_file(p, b, n);
    free(b);
    CASE(PEFTKIT_ERR_NUMERICAL, peftkit_adapter_load(m, d, "x", buf, sizeof buf), "adapter_load(weights NaN)");

    peftkit_model_config mc;
    peftkit_model_config_init(&mc);
    mc.hidden_size = 32;
    peftkit_model *other = NULL;
    if (peftkit_model_create(&mc, 1, &other) == PEFTKIT_OK) {
        CASE(PEFTKIT_ERR_FORMAT, peftkit_adapter_load(other, adapter_dir, NULL, buf, sizeof buf), "adapter_load(adapter of another model shape)");
        CASE(PEFTKIT_ERR_FORMAT, peftkit_checkpoint_load(other, checkpoint_dir, buf, sizeof buf),
             "checkpoint_load(checkpoint of another model shape)");
        peftkit_model_free(other);
    }

    CASE(PEFTKIT_ERR_IO, peftkit_adapter_save(m, "a", "/proc/peftkit-misuse/x"), "adapter_save(folder cannot be created)");
    CASE(PEFTKIT_ERR_IO, peftkit_adapter_save(m, "a", p), "adapter_save(folder path is a file)");
    CASE(PEFTKIT_ERR_UNSUPPORTED, peftkit_adapter_save_as(m, "a", "/tmp/peftkit-misuse-never.gguf", PEFTKIT_ADAPTER_FORMAT_GGUF),
         "adapter_save_as(GGUF: not a LoRA adapter of a Llama model)");
    CASE(PEFTKIT_ERR_IO, peftkit_checkpoint_save(m, "a", p), "checkpoint_save(folder path is a file)");

    CASE(PEFTKIT_ERR_IO, peftkit_checkpoint_load(m, "/nonexistent/peftkit", buf, sizeof buf), "checkpoint_load(missing folder)");
    CASE(PEFTKIT_ERR_IO, peftkit_checkpoint_load(m, adapter_dir, buf, sizeof buf), "checkpoint_load(an adapter folder)");
    /* Damaged copies of the checkpoint. */
    char state[1200], manifest[1200], copy[1200];
    snprintf(manifest, sizeof manifest, "%s/checkpoint.json", checkpoint_dir);
    if (find_file(checkpoint_dir, "state-", state, sizeof state)) {
        const char *base = strrchr(state, '/') + 1;
        for (int i = 0; i < 3; i++) {
            snprintf(d, sizeof d, "%s/misuse-ckpt-%d", scratch, i);
            mkdir(d, 0755);
            snprintf(copy, sizeof copy, "%s/checkpoint.json", d);
            copy_file(manifest, copy, i == 0 ? 40 : -1);
            snprintf(copy, sizeof copy, "%s/%s", d, base);
            long ssize = file_size(state);
            if (i != 2) copy_file(state, copy, i == 1 ? ssize - 4 : -1);
        }
        peftkit_model *fresh = new_model(1234);  /* without "a", so the name is free */
        snprintf(d, sizeof d, "%s/misuse-ckpt-0", scratch);
        CASE(PEFTKIT_ERR_FORMAT, peftkit_checkpoint_load(fresh, d, buf, sizeof buf), "checkpoint_load(checkpoint.json cut to 40 bytes)");
        snprintf(d, sizeof d, "%s/misuse-ckpt-1", scratch);
        CASE(PEFTKIT_ERR_FORMAT, peftkit_checkpoint_load(fresh, d, buf, sizeof buf), "checkpoint_load(state file cut by 4 bytes)");
        snprintf(d, sizeof d, "%s/misuse-ckpt-2", scratch);
        CASE(PEFTKIT_ERR_IO, peftkit_checkpoint_load(fresh, d, buf, sizeof buf), "checkpoint_load(state file missing)");
        int32_t cnt = -1;
        peftkit_adapter_count(fresh, &cnt);
        check(cnt == 0, "[files] damaged checkpoints attached nothing");
        peftkit_model_free(fresh);
    } else {
        check(0, "[files] the checkpoint has one state file");
    }

    CASE(PEFTKIT_ERR_IO, peftkit_model_load("/nonexistent/peftkit-model", &out), "model_load(missing folder)");
    snprintf(d, sizeof d, "%s/misuse-model", scratch);
    mkdir(d, 0755);
    snprintf(p, sizeof p, "%s/config.json", d);
    write_file(p, "{\"model_type\": \"gpt2\", \"n_embd\": 4", 35);
    CASE(PEFTKIT_ERR_FORMAT, peftkit_model_load(d, &out), "model_load(config.json cut short)");
    const char *cfg = "{\"model_type\":\"gpt2\",\"vocab_size\":8,\"n_embd\":4,\"n_layer\":1,\"n_head\":1,\"n_positions\":4}";
    write_file(p, cfg, (long)strlen(cfg));
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    const char hdr[] = "\x40\x00\x00\x00\x00\x00\x00\x00{\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[8,4],\"data_";
    write_file(p, hdr, (long)sizeof hdr - 1);
    CASE(PEFTKIT_ERR_FORMAT, peftkit_model_load(d, &out), "model_load(model.safetensors cut inside its header)");
    const char big[] = "\x5b\x00\x00\x00\x00\x00\x00\x00{\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[25000000000],"
                       "\"data_offsets\":[0,100000000000]}}";
    write_file(p, big, (long)sizeof big - 1);
    CASE(PEFTKIT_ERR_FORMAT, peftkit_model_load(d, &out), "model_load(header claims a 100 GB tensor)");
    snprintf(p, sizeof p, "%s/config.json", d);
    const char *llama = "{\"model_type\":\"falcon\"}";
    write_file(p, llama, (long)strlen(llama));
    CASE(PEFTKIT_ERR_UNSUPPORTED, peftkit_model_load(d, &out), "model_load(model_type falcon)");
}

static void freed(void) {
    group = "freed and foreign model pointers";
    peftkit_model *m = new_model_with_adapter(3, "f");
    if (!m) return;
    int32_t ids[BATCH * SEQ], toks[8], n32 = 0;
    fill(ids, BATCH * SEQ, 0);
    float loss = 0;
    char buf[32];
    size_t len = 0;
    peftkit_train_config tc = train_config();
    peftkit_generate_config gc;
    peftkit_generate_config_init(&gc);
    gc.max_new_tokens = 2;
    peftkit_model_config mc;
    peftkit_model_config_init(&mc);
    peftkit_model_free(m);
    record_void("model_free(live model)");
    CASE(BAD, peftkit_model_get_config(m, &mc), "model_get_config(freed model)");
    CASE(BAD, peftkit_adapter_attach_json(m, "g", PFEIFFER), "adapter_attach_json(freed model)");
    CASE(BAD, peftkit_adapter_count(m, &n32), "adapter_count(freed model)");
    CASE(BAD, peftkit_adapter_name(m, 0, buf, sizeof buf, &len), "adapter_name(freed model)");
    CASE(BAD, peftkit_adapter_set_active(m, NULL), "adapter_set_active(freed model)");
    CASE(BAD, peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, NULL), "train_step(freed model)");
    CASE(BAD, peftkit_model_set_full_finetuning(m, 1), "model_set_full_finetuning(freed model)");
    CASE(BAD, peftkit_forward(m, ids, NULL, BATCH, SEQ, NULL, 0, &loss, NULL), "forward(freed model)");
    CASE(BAD, peftkit_generate(m, ids, 3, &gc, toks, 8, &n32, NULL, NULL), "generate(freed model)");
    {
        peftkit_generate_result gr;
        gr.struct_size = sizeof gr;
        CASE(BAD, peftkit_generate_ex(m, ids, 3, &gc, toks, 8, &gr, NULL, NULL), "generate_ex(freed model)");
        CASE(BAD, peftkit_token_to_piece(m, 1, buf, sizeof buf, &len), "token_to_piece(freed model)");
    }
    CASE(BAD, peftkit_adapter_save(m, "f", "/tmp/peftkit-misuse-never"), "adapter_save(freed model)");
    CASE(BAD, peftkit_checkpoint_save(m, "f", "/tmp/peftkit-misuse-never"), "checkpoint_save(freed model)");
    peftkit_model_free(m);
    record_void("model_free(freed model again)");
    int64_t not_a_model[16] = {0};
    peftkit_model *fake = (peftkit_model *)(void *)not_a_model;
    CASE(BAD, peftkit_adapter_count(fake, &n32), "adapter_count(pointer to a stack array)");
    CASE(BAD, peftkit_train_step(fake, ids, NULL, BATCH, SEQ, &tc, NULL), "train_step(pointer to a stack array)");
    peftkit_model_free(fake);
    record_void("model_free(pointer to a stack array)");
    void *heap = malloc(256);
    if (heap) {
        memset(heap, 0x5a, 256);
        CASE(BAD, peftkit_forward((peftkit_model *)heap, ids, NULL, BATCH, SEQ, NULL, 0, &loss, NULL), "forward(malloc'd garbage)");
        free(heap);
    }
}

/* ------------------------------------------------------------------------------------------------- */
/* Numerics: a NaN or infinity rejects the step and changes nothing                                  */
/* ------------------------------------------------------------------------------------------------- */

static void numerics(const char *scratch) {
    group = "numerics";
    printf("# numerics\n");
    char good[1100], bad_dir[1100], after[1100], state[1200], state_after[1200], manifest[1200], buf[64];
    snprintf(good, sizeof good, "%s/misuse-num-good", scratch);
    snprintf(bad_dir, sizeof bad_dir, "%s/misuse-num-poisoned", scratch);
    snprintf(after, sizeof after, "%s/misuse-num-after", scratch);
    peftkit_model *m = new_model_with_adapter(11, "n");
    if (!m) return;
    int32_t ids[BATCH * SEQ];
    fill(ids, BATCH * SEQ, 0);
    peftkit_train_config tc = train_config();
    peftkit_train_result r = result();
    for (int i = 0; i < 3; i++) peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, &r);
    check(r.step == 3, "[numerics] three steps taken");
    int64_t n_params = 0;
    peftkit_adapter_num_params(m, "n", &n_params);
    peftkit_checkpoint_save(m, "n", good);
    peftkit_adapter_remove(m, "n");

    /* Poison the checkpoint's weights with 1e30 (finite, so it loads; the forward pass overflows), keep the
     * moments and the step, and re-sign the state file in the manifest. */
    long n = 0, mn = 0;
    int ok = find_file(good, "state-", state, sizeof state);
    unsigned char *b = ok ? read_file(state, &n) : NULL;
    snprintf(manifest, sizeof manifest, "%s/checkpoint.json", good);
    char *text = (char *)read_file(manifest, &mn);
    ok = ok && b && text;
    if (ok) {
        char old_hash[17], new_hash[17];
        snprintf(old_hash, sizeof old_hash, "%016llx", (unsigned long long)fnv1a64(b, n));
        /* Only the params tensor (the first of the state file's tensors) is poisoned; the moments are kept. */
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--) hl = (hl << 8) | b[i];
        long data = 8 + (long)hl;
        float big = 1e30f;
        for (long i = 0; i < (long)n_params && data + 4 * i + 4 <= n; i++) memcpy(b + data + 4 * i, &big, 4);
        snprintf(new_hash, sizeof new_hash, "%016llx", (unsigned long long)fnv1a64(b, n));
        char *tm = realloc(text, (size_t)mn + 1);
        text = tm;
        ok = text != NULL;
        if (ok) {
            text[mn] = 0;
            ok = replace_same_length(text, old_hash, new_hash);
        }
        mkdir(bad_dir, 0755);
        char path[1300];
        snprintf(path, sizeof path, "%s/%s", bad_dir, strrchr(state, '/') + 1);
        ok = ok && write_file(path, b, n);
        snprintf(path, sizeof path, "%s/checkpoint.json", bad_dir);
        ok = ok && write_file(path, text, mn);
    }
    free(b);
    free(text);
    check(ok, "[numerics] poisoned checkpoint written");
    if (!ok) {
        peftkit_model_free(m);
        return;
    }
    CASE(PEFTKIT_OK, peftkit_checkpoint_load(m, bad_dir, buf, sizeof buf), "checkpoint_load(weights 1e30: finite, accepted)");
    peftkit_adapter_set_active(m, "n");
    r = result();
    r.step = -42;
    CASE(PEFTKIT_ERR_NUMERICAL, peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, &r), "train_step(weights overflow to inf)");
    check(r.step == -42, "[numerics] the result struct is not written on failure");
    check(strstr(peftkit_last_error(), "non-finite") != NULL, "[numerics] the message says what went wrong");
    float loss = 0;
    CASE(PEFTKIT_ERR_NUMERICAL, peftkit_forward(m, ids, NULL, BATCH, SEQ, NULL, 0, &loss, NULL), "forward(weights overflow to inf)");
    peftkit_generate_config gc;
    peftkit_generate_config_init(&gc);
    gc.max_new_tokens = 4;
    int32_t toks[8], n_out = -1;
    CASE(PEFTKIT_ERR_NUMERICAL, peftkit_generate(m, ids, 3, &gc, toks, 8, &n_out, NULL, NULL), "generate(weights overflow to inf)");
    check(n_out == -1, "[numerics] n_out is not written on failure");
    /* Weights, moments, random state and step are exactly those loaded. */
    CASE(PEFTKIT_OK, peftkit_checkpoint_save(m, "n", after), "checkpoint_save after the rejected step");
    long n1 = 0, n2 = 0;
    unsigned char *b1 = find_file(bad_dir, "state-", state, sizeof state) ? read_file(state, &n1) : NULL;
    unsigned char *b2 = find_file(after, "state-", state_after, sizeof state_after) ? read_file(state_after, &n2) : NULL;
    check(b1 && b2 && n1 == n2 && memcmp(b1, b2, (size_t)n1) == 0,
          "[numerics] weights, AdamW moments and step unchanged by the rejected step (state files byte-identical)");
    free(b1);
    free(b2);
    snprintf(manifest, sizeof manifest, "%s/checkpoint.json", after);
    text = (char *)read_file(manifest, &mn);
    check(text && strstr(text, "\"step\" : 3") != NULL, "[numerics] the step count is still 3");
    free(text);
    peftkit_model_free(m);
}

/* ------------------------------------------------------------------------------------------------- */
/* Concurrency                                                                                       */
/* ------------------------------------------------------------------------------------------------- */

struct trainer {
    peftkit_model *model;
    int steps;
    float losses[16];
    peftkit_status status;
};

static void *train_distinct_batches(void *arg) {
    struct trainer *t = arg;
    peftkit_train_config tc = train_config();
    peftkit_train_result r = result();
    int32_t ids[BATCH * SEQ];
    t->status = PEFTKIT_OK;
    for (int i = 0; i < t->steps && t->status == PEFTKIT_OK; i++) {
        fill(ids, BATCH * SEQ, i);
        t->status = peftkit_train_step(t->model, ids, NULL, BATCH, SEQ, &tc, &r);
        t->losses[i] = r.loss;
    }
    return NULL;
}

static int logits_of(peftkit_model *m, float *out) {
    int32_t ids[BATCH * SEQ];
    fill(ids, BATCH * SEQ, 3);
    return peftkit_forward(m, ids, NULL, BATCH, SEQ, out, (size_t)BATCH * SEQ * VOCAB, NULL, NULL) == PEFTKIT_OK;
}

struct hammer {
    peftkit_model *model;
    int id, calls, ok, busy, other;
    peftkit_status other_status;
};

static void *hammer_train(void *arg) {
    struct hammer *h = arg;
    peftkit_train_config tc = train_config();
    int32_t ids[BATCH * SEQ];
    fill(ids, BATCH * SEQ, 0);
    for (int i = 0; i < h->calls; i++) {
        peftkit_status s = peftkit_train_step(h->model, ids, NULL, BATCH, SEQ, &tc, NULL);
        if (s == PEFTKIT_OK) h->ok++;
        else if (s == PEFTKIT_ERR_BUSY) h->busy++;
        else {
            h->other++;
            h->other_status = s;
        }
    }
    return NULL;
}

static void *hammer_mixed(void *arg) {
    struct hammer *h = arg;
    peftkit_train_config tc = train_config();
    peftkit_generate_config gc;
    peftkit_generate_config_init(&gc);
    gc.max_new_tokens = 3;
    int32_t ids[BATCH * SEQ], toks[8], n = 0;
    fill(ids, BATCH * SEQ, h->id);
    float loss = 0;
    char buf[64];
    size_t len = 0;
    for (int i = 0; i < h->calls; i++) {
        peftkit_status s;
        switch ((i + h->id) % 6) {
        case 0: s = peftkit_train_step(h->model, ids, NULL, BATCH, SEQ, &tc, NULL); break;
        case 1: s = peftkit_forward(h->model, ids, NULL, BATCH, SEQ, NULL, 0, &loss, NULL); break;
        case 2: s = peftkit_generate(h->model, ids, 4, &gc, toks, 8, &n, NULL, NULL); break;
        case 3: s = peftkit_adapter_count(h->model, &n); break;
        case 4: s = peftkit_adapter_get_active(h->model, buf, sizeof buf, &len); break;
        default: s = peftkit_adapter_set_active(h->model, "h"); break;
        }
        if (s == PEFTKIT_OK) h->ok++;
        else if (s == PEFTKIT_ERR_BUSY) h->busy++;
        else {
            h->other++;
            h->other_status = s;
        }
    }
    return NULL;
}

static int32_t slow_cb(int32_t token, void *user) {
    (void)token;
    (void)user;
    sleep_ms(30);
    return 0;
}

struct slow_gen {
    peftkit_model *model;
    peftkit_status status;
    int32_t n;
};

static void *slow_generate(void *arg) {
    struct slow_gen *g = arg;
    peftkit_generate_config gc;
    peftkit_generate_config_init(&gc);
    gc.max_new_tokens = 6;
    int32_t prompt[3] = {1, 2, 3}, toks[8];
    g->status = peftkit_generate(g->model, prompt, 3, &gc, toks, 8, &g->n, slow_cb, NULL);
    return NULL;
}

static void concurrency(void) {
    group = "concurrency";
    printf("# concurrency\n");
    /* Two models on two threads give what they give one after the other. */
    struct trainer t[4];
    memset(t, 0, sizeof t);
    for (int i = 0; i < 4; i++) {
        t[i].model = new_model_with_adapter(21 + (uint64_t)(i % 2), "c");
        t[i].steps = 8;
    }
    if (!t[0].model || !t[1].model || !t[2].model || !t[3].model) return;
    train_distinct_batches(&t[2]);  /* sequential references */
    train_distinct_batches(&t[3]);
    pthread_t th[4];
    pthread_create(&th[0], NULL, train_distinct_batches, &t[0]);
    pthread_create(&th[1], NULL, train_distinct_batches, &t[1]);
    pthread_join(th[0], NULL);
    pthread_join(th[1], NULL);
    check(t[0].status == PEFTKIT_OK && t[1].status == PEFTKIT_OK, "[concurrency] two models trained on two threads");
    check(memcmp(t[0].losses, t[2].losses, sizeof t[0].losses) == 0 && memcmp(t[1].losses, t[3].losses, sizeof t[1].losses) == 0,
          "[concurrency] concurrent losses are bit-identical to sequential runs");
    float *a = malloc(sizeof(float) * BATCH * SEQ * VOCAB), *b = malloc(sizeof(float) * BATCH * SEQ * VOCAB);
    if (a && b) {
        check(logits_of(t[0].model, a) && logits_of(t[2].model, b) && memcmp(a, b, sizeof(float) * BATCH * SEQ * VOCAB) == 0,
              "[concurrency] and so are the trained weights (logits)");
    }
    for (int i = 0; i < 4; i++) peftkit_model_free(t[i].model);

    /* One model hammered by 4 threads with the same step: each call succeeds or is refused with STATE, and the
     * model ends exactly where a sequential run of the successful steps ends. */
    peftkit_model *h = new_model_with_adapter(31, "h");
    peftkit_model *ref = new_model_with_adapter(31, "h");
    if (!h || !ref) return;
    struct hammer hs[4];
    memset(hs, 0, sizeof hs);
    for (int i = 0; i < 4; i++) {
        hs[i].model = h;
        hs[i].id = i;
        hs[i].calls = 25;
        pthread_create(&th[i], NULL, hammer_train, &hs[i]);
    }
    int ok = 0, busy = 0, other = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ok += hs[i].ok;
        busy += hs[i].busy;
        other += hs[i].other;
    }
    printf("     4 threads x 25 train_step on one model: %d OK, %d STATE\n", ok, busy);
    record("4 threads x 25 train_step on one model: each call OK or STATE", PEFTKIT_OK,
           other == 0 && ok + busy == 100 ? PEFTKIT_OK : hs[0].other_status);
    check(ok >= 1, "[concurrency] at least one hammered step succeeded");
    peftkit_train_config tc = train_config();
    int32_t ids[BATCH * SEQ];
    fill(ids, BATCH * SEQ, 0);
    for (int i = 0; i < ok; i++) peftkit_train_step(ref, ids, NULL, BATCH, SEQ, &tc, NULL);
    if (a && b) {
        check(logits_of(h, a) && logits_of(ref, b) && memcmp(a, b, sizeof(float) * BATCH * SEQ * VOCAB) == 0,
              "[concurrency] hammered model equals a sequential run of its successful steps (bit-identical logits)");
    }

    /* Mixed calls from 4 threads. */
    memset(hs, 0, sizeof hs);
    for (int i = 0; i < 4; i++) {
        hs[i].model = h;
        hs[i].id = i;
        hs[i].calls = 30;
        pthread_create(&th[i], NULL, hammer_mixed, &hs[i]);
    }
    ok = busy = other = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ok += hs[i].ok;
        busy += hs[i].busy;
        other += hs[i].other;
    }
    printf("     4 threads x 30 mixed calls on one model: %d OK, %d STATE\n", ok, busy);
    record("4 threads x 30 mixed calls (train, forward, generate, list, activate): each OK or STATE", PEFTKIT_OK,
           other == 0 ? PEFTKIT_OK : hs[0].other_status);
    peftkit_train_result r = result();
    CASE(PEFTKIT_OK, peftkit_train_step(h, ids, NULL, BATCH, SEQ, &tc, &r), "train_step after the hammering");
    check(isfinite(r.loss), "[concurrency] the model still trains");

    /* Freeing a model while another thread's call on it runs: the header calls this undefined; the library
     * tolerates it (the running call keeps the model alive until it returns). */
    struct slow_gen g = {h, -99, 0};
    pthread_t gt;
    pthread_create(&gt, NULL, slow_generate, &g);
    sleep_ms(60);
    peftkit_model_free(h);
    pthread_join(gt, NULL);
    record("generate running on thread B while thread A frees the model (tolerated)", PEFTKIT_OK, g.status);
    check(g.n == 6, "[concurrency] that generation completed");
    int32_t cnt = 0;
    CASE(BAD, peftkit_adapter_count(h, &cnt), "adapter_count(model freed during a call)");
    peftkit_model_free(ref);
    free(a);
    free(b);
}

/* ------------------------------------------------------------------------------------------------- */
/* Tokenization                                                                                      */
/* ------------------------------------------------------------------------------------------------- */

static void tokenizer(const char *scratch) {
    group = "tokenization";
    const char *fixtures = getenv("PEFTKIT_FIXTURES");
    char tiny[1024];
    snprintf(tiny, sizeof tiny, "%s/tokenizer/tiny/tokenizer.json", fixtures && fixtures[0] ? fixtures : "../../Tests/Fixtures");
    peftkit_model *bare = new_model(21);
    peftkit_model *m = new_model(22);
    if (!bare || !m) return;
    int32_t ids[64] = {0};
    size_t n = 0;
    char text[256];
    const char *roles[2] = {"user", "assistant"};
    const char *contents[2] = {"hi", "hello"};
    peftkit_tokenizer_info info;
    info.struct_size = sizeof info;

    /* Without a tokenizer. */
    CASE(PEFTKIT_ERR_STATE, peftkit_tokenize(bare, "hi", 2, 0, 1, ids, 64, &n), "tokenize(model without a tokenizer)");
    CASE(PEFTKIT_ERR_STATE, peftkit_detokenize(bare, ids, 1, 0, text, sizeof text, &n), "detokenize(model without a tokenizer)");
    CASE(PEFTKIT_ERR_STATE, peftkit_chat_template_apply(bare, roles, contents, 2, 1, text, sizeof text, &n),
         "chat_template_apply(model without a chat template)");
    CASE(PEFTKIT_OK, peftkit_tokenizer_get_info(bare, &info), "tokenizer_get_info(model without a tokenizer)");
    check(info.has_tokenizer == 0, "[tokenization] get_info says has_tokenizer 0");

    /* Loading. */
    CASE(BAD, peftkit_tokenizer_load(m, NULL), "tokenizer_load(NULL path)");
    CASE(BAD, peftkit_tokenizer_load(m, ""), "tokenizer_load(empty path)");
    CASE(BAD, peftkit_tokenizer_load(m, "\xff\xfe"), "tokenizer_load(path not UTF-8)");
    CASE(PEFTKIT_ERR_IO, peftkit_tokenizer_load(m, "/nonexistent/peftkit/tokenizer.json"), "tokenizer_load(missing path)");
    char empty_dir[1024], garbage[1024];
    snprintf(empty_dir, sizeof empty_dir, "%s/tok-empty", scratch);
    mkdir(empty_dir, 0755);
    CASE(PEFTKIT_ERR_NOT_FOUND, peftkit_tokenizer_load(m, empty_dir), "tokenizer_load(folder without tokenizer files)");
    snprintf(garbage, sizeof garbage, "%s/tok-garbage.json", scratch);
    write_file(garbage, "{\"model\": {\"type\": \"BPE\", \"vocab\": [1, 2", 40);
    CASE(PEFTKIT_ERR_FORMAT, peftkit_tokenizer_load(m, garbage), "tokenizer_load(truncated tokenizer.json)");
    write_file(garbage, "{\"model\": {\"type\": \"Unigram\"}}", 30);
    CASE(PEFTKIT_ERR_UNSUPPORTED, peftkit_tokenizer_load(m, garbage), "tokenizer_load(Unigram tokenizer.json)");
    peftkit_model_config small;
    peftkit_model_config_init(&small);
    small.vocab_size = 50;
    peftkit_model *m50 = NULL;
    if (peftkit_model_create(&small, 1, &m50) == PEFTKIT_OK) {
        CASE(PEFTKIT_ERR_FORMAT, peftkit_tokenizer_load(m50, tiny), "tokenizer_load(97-token tokenizer on a vocab-50 model)");
        CASE(PEFTKIT_ERR_STATE, peftkit_tokenize(m50, "hi", 2, 0, 1, ids, 64, &n), "tokenize after the failed tokenizer_load");
        peftkit_model_free(m50);
    }
    CASE(PEFTKIT_OK, peftkit_tokenizer_load(m, tiny), "tokenizer_load(fixture tokenizer)");
    CASE(PEFTKIT_ERR_UNSUPPORTED, peftkit_tokenizer_load(m, garbage), "tokenizer_load(Unigram file) over a loaded tokenizer");
    CASE(PEFTKIT_OK, peftkit_tokenize(m, "hi", 2, 0, 1, ids, 64, &n), "tokenize: the failed load kept the old tokenizer");

    /* issue: a folder whose tokenizer loads but whose template is outside the Jinja subset. */
    char issue[512], odd_dir[1024], from[1100], to[1100];
    size_t issue_len = 0;
    CASE(PEFTKIT_OK, peftkit_tokenizer_issue(m, issue, sizeof issue, &issue_len), "tokenizer_issue(nothing left out)");
    check(issue_len == 0 && issue[0] == '\0', "[tokenization] tokenizer_issue is empty when nothing was left out");
    snprintf(odd_dir, sizeof odd_dir, "%s/tok-odd-template", scratch);
    mkdir(odd_dir, 0755);
    snprintf(to, sizeof to, "%s/tokenizer.json", odd_dir);
    copy_file(tiny, to, -1);
    snprintf(from, sizeof from, "%s/chat_template.jinja", odd_dir);
    write_file(from, "{{ messages }}", 14);
    CASE(PEFTKIT_OK, peftkit_tokenizer_load(m, odd_dir), "tokenizer_load(folder with a non-ChatML template)");
    CASE(PEFTKIT_ERR_STATE, peftkit_chat_template_apply(m, roles, contents, 2, 1, text, sizeof text, &n),
         "chat_template_apply(template left out)");
    CASE(PEFTKIT_OK, peftkit_tokenizer_issue(m, NULL, 0, &issue_len), "tokenizer_issue size query");
    check(issue_len > 10, "[tokenization] tokenizer_issue reports why the template was left out");
    CASE(PEFTKIT_ERR_BUFFER_TOO_SMALL, peftkit_tokenizer_issue(m, issue, 4, &issue_len), "tokenizer_issue(capacity 4)");
    CASE(BAD, peftkit_tokenizer_issue(m, NULL, 4, &issue_len), "tokenizer_issue(NULL buf, capacity 4)");
    CASE(PEFTKIT_OK, peftkit_tokenizer_issue(m, issue, sizeof issue, NULL), "tokenizer_issue(NULL len_out)");
    check(strstr(issue, "ChatML") != NULL, "[tokenization] the issue names the problem (not a ChatML template)");
    CASE(PEFTKIT_OK, peftkit_tokenizer_load(m, tiny), "tokenizer_load(fixture tokenizer) again");

    /* get_info. */
    CASE(BAD, peftkit_tokenizer_get_info(m, NULL), "tokenizer_get_info(NULL out)");
    info.struct_size = 4;
    CASE(BAD, peftkit_tokenizer_get_info(m, &info), "tokenizer_get_info(struct_size 4)");

    /* tokenize. */
    CASE(BAD, peftkit_tokenize(m, NULL, 3, 0, 1, ids, 64, &n), "tokenize(NULL text, text_len 3)");
    CASE(BAD, peftkit_tokenize(m, "hi", 2, 0, 1, ids, 64, NULL), "tokenize(NULL n_out)");
    CASE(BAD, peftkit_tokenize(m, "hi", 2, 0, 1, NULL, 64, &n), "tokenize(NULL out_ids, capacity 64)");
    CASE(BAD, peftkit_tokenize(m, "a\xff" "b", 3, 0, 1, ids, 64, &n), "tokenize(text not UTF-8)");
    CASE(BAD, peftkit_tokenize(m, "\xe2\x82", 2, 0, 1, ids, 64, &n), "tokenize(text ending inside a character)");
    CASE(BAD, peftkit_tokenize(m, "hi", SIZE_MAX, 0, 1, ids, 64, &n), "tokenize(text_len SIZE_MAX)");
    CASE(BAD, peftkit_tokenize(m, "hi", 2, 2, 1, ids, 64, &n), "tokenize(add_special 2)");
    CASE(BAD, peftkit_tokenize(m, "hi", 2, 0, -1, ids, 64, &n), "tokenize(parse_special -1)");
    CASE(BAD, peftkit_tokenize(m, "hi", 2, 0, 1, ids, SIZE_MAX, &n), "tokenize(capacity SIZE_MAX)");
    ids[0] = 12345;
    n = 0;
    CASE(PEFTKIT_ERR_BUFFER_TOO_SMALL, peftkit_tokenize(m, "hello", 5, 0, 1, ids, 2, &n), "tokenize(5 ids into capacity 2)");
    check(n == 5 && ids[0] == 12345, "[tokenization] a short id buffer: size reported, nothing written");

    /* detokenize. */
    int32_t good[3] = {0, 1, 2};
    int32_t neg[2] = {0, -1};
    int32_t beyond[2] = {0, 97};      /* inside the model's 256 ids, outside the tokenizer's 97 */
    int32_t huge[1] = {INT32_MAX};
    CASE(BAD, peftkit_detokenize(m, neg, 2, 0, text, sizeof text, &n), "detokenize(id -1)");
    CASE(BAD, peftkit_detokenize(m, beyond, 2, 0, text, sizeof text, &n), "detokenize(id 97 of a 97-token tokenizer)");
    CASE(BAD, peftkit_detokenize(m, huge, 1, 0, text, sizeof text, &n), "detokenize(id INT32_MAX)");
    CASE(BAD, peftkit_detokenize(m, NULL, 3, 0, text, sizeof text, &n), "detokenize(NULL ids, n_ids 3)");
    CASE(BAD, peftkit_detokenize(m, good, SIZE_MAX, 0, text, sizeof text, &n), "detokenize(n_ids SIZE_MAX)");
    CASE(BAD, peftkit_detokenize(m, good, 3, 0, text, sizeof text, NULL), "detokenize(NULL n_out)");
    CASE(BAD, peftkit_detokenize(m, good, 3, 0, NULL, 8, &n), "detokenize(NULL out, capacity 8)");

    /* token_to_piece. */
    CASE(PEFTKIT_ERR_STATE, peftkit_token_to_piece(bare, 1, text, sizeof text, &n), "token_to_piece(model without a tokenizer)");
    CASE(BAD, peftkit_token_to_piece(m, -1, text, sizeof text, &n), "token_to_piece(id -1)");
    CASE(BAD, peftkit_token_to_piece(m, 97, text, sizeof text, &n), "token_to_piece(id 97 of a 97-token tokenizer)");
    CASE(BAD, peftkit_token_to_piece(m, INT32_MAX, text, sizeof text, &n), "token_to_piece(id INT32_MAX)");
    CASE(BAD, peftkit_token_to_piece(m, 1, text, sizeof text, NULL), "token_to_piece(NULL n_out)");
    CASE(BAD, peftkit_token_to_piece(m, 1, NULL, 8, &n), "token_to_piece(NULL out, capacity 8)");
    CASE(PEFTKIT_OK, peftkit_token_to_piece(m, 1, NULL, 0, &n), "token_to_piece(size query)");
    CASE(PEFTKIT_ERR_BUFFER_TOO_SMALL, peftkit_token_to_piece(m, 96, text, 2, &n), "token_to_piece(<|im_end|> into capacity 2)");
    check(n == 10, "[tokenization] token_to_piece: the size needed is reported");
    CASE(BAD, peftkit_detokenize(m, good, 3, 5, text, sizeof text, &n), "detokenize(skip_special 5)");
    memset(text, 'x', sizeof text);
    CASE(PEFTKIT_ERR_BUFFER_TOO_SMALL, peftkit_detokenize(m, good, 3, 0, text, 3, &n), "detokenize(3 bytes + NUL into capacity 3)");
    check(n == 3 && text[0] == 'x', "[tokenization] a short text buffer: size reported, nothing written");
    CASE(PEFTKIT_OK, peftkit_detokenize(m, NULL, 0, 0, text, 1, &n), "detokenize(no ids into 1 byte)");

    /* chat_template_apply. */
    const char *null_role[2] = {"user", NULL};
    const char *bad_utf8[2] = {"hi", "\xc3\x28"};
    CASE(BAD, peftkit_chat_template_apply(m, NULL, contents, 2, 1, text, sizeof text, &n), "chat_template_apply(NULL roles)");
    CASE(BAD, peftkit_chat_template_apply(m, roles, NULL, 2, 1, text, sizeof text, &n), "chat_template_apply(NULL contents)");
    CASE(BAD, peftkit_chat_template_apply(m, null_role, contents, 2, 1, text, sizeof text, &n), "chat_template_apply(a NULL role)");
    CASE(BAD, peftkit_chat_template_apply(m, roles, bad_utf8, 2, 1, text, sizeof text, &n), "chat_template_apply(content not UTF-8)");
    CASE(BAD, peftkit_chat_template_apply(m, roles, contents, SIZE_MAX, 1, text, sizeof text, &n), "chat_template_apply(n_messages SIZE_MAX)");
    CASE(BAD, peftkit_chat_template_apply(m, roles, contents, 2, 7, text, sizeof text, &n), "chat_template_apply(add_generation_prompt 7)");
    CASE(BAD, peftkit_chat_template_apply(m, roles, contents, 2, 1, text, sizeof text, NULL), "chat_template_apply(NULL n_out)");
    CASE(PEFTKIT_ERR_BUFFER_TOO_SMALL, peftkit_chat_template_apply(m, roles, contents, 2, 1, text, 10, &n), "chat_template_apply(capacity 10)");

    /* Freed model. */
    peftkit_model_free(m);
    CASE(BAD, peftkit_tokenize(m, "hi", 2, 0, 1, ids, 64, &n), "tokenize(freed model)");
    CASE(BAD, peftkit_detokenize(m, good, 3, 0, text, sizeof text, &n), "detokenize(freed model)");
    CASE(BAD, peftkit_tokenizer_load(m, tiny), "tokenizer_load(freed model)");
    CASE(BAD, peftkit_tokenizer_issue(m, text, sizeof text, &n), "tokenizer_issue(freed model)");
    peftkit_model_free(bare);
}

/* peftkit_train_preference_step: every pointer, size, mask, objective and beta refused; then one DPO step. */
static void preference(peftkit_model *m) {
    group = "preference steps";
    int32_t ids[BATCH * SEQ], mask[BATCH * SEQ], bad[BATCH * SEQ], none[BATCH * SEQ];
    fill(ids, BATCH * SEQ, 0);
    for (int i = 0; i < BATCH * SEQ; i++) {
        mask[i] = (i % SEQ) >= SEQ / 2;
        bad[i] = mask[i] ? 2 : 0;
        none[i] = 0;
    }
    peftkit_train_config tc = train_config();
    peftkit_train_result r = result();
    float st[PEFTKIT_PREFERENCE_STATS];
    const int32_t D = PEFTKIT_OBJECTIVE_DPO, O = PEFTKIT_OBJECTIVE_ORPO, K = PEFTKIT_PREFERENCE_STATS;
    CASE(BAD, peftkit_train_preference_step(NULL, D, 0.1f, ids, mask, ids, mask, BATCH, SEQ, &tc, &r, st, K), "train_preference_step(model NULL)");
    CASE(BAD, peftkit_train_preference_step(m, D, 0.1f, NULL, mask, ids, mask, BATCH, SEQ, &tc, &r, st, K), "train_preference_step(chosen_ids NULL)");
    CASE(BAD, peftkit_train_preference_step(m, D, 0.1f, ids, NULL, ids, mask, BATCH, SEQ, &tc, &r, st, K), "train_preference_step(chosen_mask NULL)");
    CASE(BAD, peftkit_train_preference_step(m, D, 0.1f, ids, mask, NULL, mask, BATCH, SEQ, &tc, &r, st, K), "train_preference_step(rejected_ids NULL)");
    CASE(BAD, peftkit_train_preference_step(m, D, 0.1f, ids, mask, ids, NULL, BATCH, SEQ, &tc, &r, st, K), "train_preference_step(rejected_mask NULL)");
    CASE(BAD, peftkit_train_preference_step(m, D, 0.1f, ids, mask, ids, mask, BATCH, SEQ, NULL, &r, st, K), "train_preference_step(config NULL)");
    CASE(BAD, peftkit_train_preference_step(m, 0, 0.1f, ids, mask, ids, mask, BATCH, SEQ, &tc, &r, st, K), "train_preference_step(objective 0)");
    CASE(BAD, peftkit_train_preference_step(m, 3, 0.1f, ids, mask, ids, mask, BATCH, SEQ, &tc, &r, st, K), "train_preference_step(objective 3)");
    CASE(BAD, peftkit_train_preference_step(m, D, 0.0f, ids, mask, ids, mask, BATCH, SEQ, &tc, &r, st, K), "train_preference_step(DPO beta 0)");
    CASE(BAD, peftkit_train_preference_step(m, D, NAN, ids, mask, ids, mask, BATCH, SEQ, &tc, &r, st, K), "train_preference_step(DPO beta NaN)");
    CASE(BAD, peftkit_train_preference_step(m, O, -1.0f, ids, mask, ids, mask, BATCH, SEQ, &tc, &r, st, K), "train_preference_step(ORPO beta -1)");
    CASE(BAD, peftkit_train_preference_step(m, D, 0.1f, ids, mask, ids, mask, 0, SEQ, &tc, &r, st, K), "train_preference_step(pairs 0)");
    CASE(BAD, peftkit_train_preference_step(m, D, 0.1f, ids, mask, ids, mask, -1, SEQ, &tc, &r, st, K), "train_preference_step(pairs -1)");
    CASE(BAD, peftkit_train_preference_step(m, D, 0.1f, ids, mask, ids, mask, BATCH, 0, &tc, &r, st, K), "train_preference_step(seq_len 0)");
    CASE(BAD, peftkit_train_preference_step(m, D, 0.1f, ids, mask, ids, mask, BATCH, INT32_MAX, &tc, &r, st, K), "train_preference_step(seq_len INT32_MAX)");
    CASE(BAD, peftkit_train_preference_step(m, D, 0.1f, ids, mask, ids, mask, BATCH, SEQ, &tc, &r, st, -1), "train_preference_step(stats_capacity -1)");
    CASE(BAD, peftkit_train_preference_step(m, D, 0.1f, ids, bad, ids, mask, BATCH, SEQ, &tc, &r, st, K), "train_preference_step(mask value 2)");
    CASE(BAD, peftkit_train_preference_step(m, D, 0.1f, ids, mask, ids, none, BATCH, SEQ, &tc, &r, st, K), "train_preference_step(rejected row without a response token)");
    int32_t saved = ids[1];
    ids[1] = -1;
    CASE(BAD, peftkit_train_preference_step(m, D, 0.1f, ids, mask, ids, mask, BATCH, SEQ, &tc, &r, st, K), "train_preference_step(id -1)");
    ids[1] = saved;
    r.struct_size = 3;
    CASE(BAD, peftkit_train_preference_step(m, D, 0.1f, ids, mask, ids, mask, BATCH, SEQ, &tc, &r, st, K), "train_preference_step(result struct_size 3)");
    r.struct_size = sizeof r;
    CASE(PEFTKIT_OK, peftkit_train_preference_step(m, O, 0.1f, ids, mask, ids, mask, BATCH, SEQ, &tc, &r, NULL, 0), "train_preference_step(ORPO, stats NULL)");
    CASE(PEFTKIT_OK, peftkit_train_preference_step(m, D, 0.1f, ids, mask, ids, mask, BATCH, SEQ, &tc, &r, st, 2), "train_preference_step(DPO, stats_capacity 2)");
}

/* peftkit_model_save: every argument checked, refusals leave nothing behind. */
static void model_save(peftkit_model *m, const char *scratch) {
    group = "model save";
    char d[1100], f[1100];
    snprintf(d, sizeof d, "%s/misuse-model-never", scratch);
    snprintf(f, sizeof f, "%s/misuse-model-file", scratch);
    unsigned char one = 1;
    write_file(f, &one, 1);
    CASE(BAD, peftkit_model_save(NULL, d, PEFTKIT_MODEL_FORMAT_HF), "model_save(model NULL)");
    CASE(BAD, peftkit_model_save(m, NULL, PEFTKIT_MODEL_FORMAT_HF), "model_save(path NULL)");
    CASE(BAD, peftkit_model_save(m, "", PEFTKIT_MODEL_FORMAT_HF), "model_save(path \"\")");
    CASE(BAD, peftkit_model_save(m, d, 3), "model_save(format 3)");
    CASE(BAD, peftkit_model_save(m, d, -1), "model_save(format -1)");
    CASE(BAD, peftkit_model_save(m, "bad\xc3\x28", PEFTKIT_MODEL_FORMAT_HF), "model_save(path not UTF-8)");
    peftkit_model *busy = new_model_with_adapter(13, "s");
    if (busy) {
        CASE(PEFTKIT_ERR_STATE, peftkit_model_save(busy, d, PEFTKIT_MODEL_FORMAT_HF), "model_save(an adapter active, not merged)");
        CASE(PEFTKIT_ERR_UNSUPPORTED, peftkit_adapter_merge(busy, "s"), "adapter_merge(a bottleneck adapter cannot be merged)");
        peftkit_model_free(busy);
    }
    peftkit_model *g = new_model(11);
    if (g) {
        CASE(PEFTKIT_ERR_UNSUPPORTED, peftkit_model_save(g, d, PEFTKIT_MODEL_FORMAT_GGUF_F32), "model_save(GGUF of a GPT-2 model)");
        CASE(PEFTKIT_ERR_IO, peftkit_model_save(g, "/proc/peftkit-misuse/x", PEFTKIT_MODEL_FORMAT_HF), "model_save(folder cannot be created)");
        CASE(PEFTKIT_ERR_IO, peftkit_model_save(g, f, PEFTKIT_MODEL_FORMAT_HF), "model_save(folder path is a file)");
        peftkit_model_free(g);
    }
    peftkit_model_config mc;
    peftkit_model_config_init(&mc);
    mc.architecture = PEFTKIT_ARCH_LLAMA;
    peftkit_model *l = NULL;
    if (peftkit_model_create(&mc, 12, &l) == PEFTKIT_OK) {
        CASE(PEFTKIT_ERR_IO, peftkit_model_save(l, scratch, PEFTKIT_MODEL_FORMAT_GGUF_F16), "model_save(GGUF path is a folder)");
        CASE(PEFTKIT_ERR_IO, peftkit_model_save(l, "/nonexistent/peftkit/x.gguf", PEFTKIT_MODEL_FORMAT_GGUF_F32),
             "model_save(GGUF folder missing)");
        CASE(PEFTKIT_ERR_IO, peftkit_model_save(l, "/proc/peftkit-misuse.gguf", PEFTKIT_MODEL_FORMAT_GGUF_F32),
             "model_save(GGUF folder not writable)");
        peftkit_model_free(l);
    }
    check(access(d, F_OK) != 0, "[model save] no refused call created its folder");
    check(file_size(f) == 1, "[model save] the file in the folder's place is untouched");
    unlink(f);
}

/* Encoders (BERT): token types, padding masks, embeddings and task heads. */
static peftkit_model *new_bert(uint64_t seed) {
    peftkit_model_config mc;
    peftkit_model_config_init(&mc);
    mc.architecture = PEFTKIT_ARCH_BERT;
    peftkit_model *m = NULL;
    if (peftkit_model_create(&mc, seed, &m) != PEFTKIT_OK) {
        printf("FAIL model_create(BERT): %s\n", peftkit_last_error());
        n_failed++;
    }
    return m;
}

static void encoders(peftkit_model *gpt2) {
    group = "encoders (BERT)";
    enum { B = 2, T = 4, C = 64 };
    int32_t ids[B * T], types[B * T] = {0, 1, 1, 0, 0, 0, 0, 0}, mask[B * T] = {1, 1, 1, 1, 1, 1, 0, 0};
    fill(ids, B * T, 3);
    static float out[B * T * C];
    float loss = 0;
    peftkit_train_config tc = train_config();
    peftkit_train_result r = result();
    peftkit_model *m = new_bert(5);
    if (!m) return;
    int32_t bad[B * T];
    CASE(PEFTKIT_OK, peftkit_encoder_hidden_states(m, ids, types, mask, B, T, out, B * T * C), "encoder_hidden_states(types and mask)");
    CASE(PEFTKIT_OK, peftkit_encoder_hidden_states(m, ids, NULL, NULL, B, T, out, B * T * C), "encoder_hidden_states(types and mask NULL)");
    CASE(BAD, peftkit_encoder_hidden_states(NULL, ids, types, mask, B, T, out, B * T * C), "encoder_hidden_states(model NULL)");
    CASE(BAD, peftkit_encoder_hidden_states(m, NULL, types, mask, B, T, out, B * T * C), "encoder_hidden_states(input_ids NULL)");
    CASE(BAD, peftkit_encoder_hidden_states(m, ids, types, mask, B, T, NULL, 0), "encoder_hidden_states(out NULL)");
    CASE(PEFTKIT_ERR_BUFFER_TOO_SMALL, peftkit_encoder_hidden_states(m, ids, types, mask, B, T, out, B * T * C - 1),
         "encoder_hidden_states(out_capacity one short)");
    CASE(BAD, peftkit_encoder_hidden_states(m, ids, types, mask, 0, T, out, B * T * C), "encoder_hidden_states(batch 0)");
    CASE(BAD, peftkit_encoder_hidden_states(m, ids, types, mask, B, -1, out, B * T * C), "encoder_hidden_states(seq_len -1)");
    CASE(PEFTKIT_ERR_UNSUPPORTED, peftkit_encoder_hidden_states(gpt2, ids, NULL, NULL, B, T, out, B * T * C),
         "encoder_hidden_states(a GPT-2 model)");
    memcpy(bad, mask, sizeof bad); bad[2] = 2;
    CASE(BAD, peftkit_encoder_hidden_states(m, ids, types, bad, B, T, out, B * T * C), "encoder_hidden_states(mask entry 2)");
    memcpy(bad, mask, sizeof bad); bad[1] = -1;
    CASE(BAD, peftkit_encoder_hidden_states(m, ids, types, bad, B, T, out, B * T * C), "encoder_hidden_states(mask entry -1)");
    memcpy(bad, mask, sizeof bad); for (int i = T; i < B * T; i++) bad[i] = 0;
    CASE(BAD, peftkit_encoder_hidden_states(m, ids, types, bad, B, T, out, B * T * C), "encoder_hidden_states(a row all padding)");
    memcpy(bad, types, sizeof bad); bad[3] = 2;
    CASE(BAD, peftkit_encoder_hidden_states(m, ids, bad, mask, B, T, out, B * T * C), "encoder_hidden_states(token type 2 >= type_vocab_size)");
    memcpy(bad, types, sizeof bad); bad[0] = -1;
    CASE(BAD, peftkit_encoder_hidden_states(m, ids, bad, mask, B, T, out, B * T * C), "encoder_hidden_states(token type -1)");
    memcpy(bad, ids, sizeof bad); bad[5] = VOCAB;
    CASE(BAD, peftkit_encoder_hidden_states(m, bad, types, mask, B, T, out, B * T * C), "encoder_hidden_states(input id = vocab)");
    CASE(PEFTKIT_OK, peftkit_encoder_embed(m, ids, types, mask, B, T, 1, out, B * C), "encoder_embed(normalize 1)");
    CASE(BAD, peftkit_encoder_embed(m, ids, types, mask, B, T, 2, out, B * C), "encoder_embed(normalize 2)");
    CASE(BAD, peftkit_encoder_embed(NULL, ids, types, mask, B, T, 1, out, B * C), "encoder_embed(model NULL)");
    CASE(BAD, peftkit_encoder_embed(m, ids, types, mask, B, T, 1, NULL, 0), "encoder_embed(out NULL)");
    CASE(PEFTKIT_ERR_BUFFER_TOO_SMALL, peftkit_encoder_embed(m, ids, types, mask, B, T, 1, out, B * C - 1), "encoder_embed(out_capacity one short)");
    CASE(BAD, peftkit_encoder_embed(m, ids, types, mask, B, T, 1, out, (size_t)-1), "encoder_embed(out_capacity SIZE_MAX)");
    CASE(PEFTKIT_ERR_UNSUPPORTED, peftkit_encoder_embed(gpt2, ids, NULL, NULL, B, T, 1, out, B * C), "encoder_embed(a GPT-2 model)");

    int32_t kind = -1, outputs = -1, labels[B] = {1, 0}, tok_labels[B * T] = {0, 1, 2, -100, 1, 1, -100, -100};
    float targets[B] = {0.5f, -1.0f};
    CASE(PEFTKIT_ERR_STATE, peftkit_head_attach(m, PEFTKIT_HEAD_CLASSIFICATION, 2, 0), "head_attach(no active adapter)");
    CASE(PEFTKIT_OK, peftkit_head_get(m, &kind, &outputs), "head_get(no active adapter: kind 0)");
    check(kind == 0 && outputs == 0, "[encoders (BERT)] head_get reports no head");
    CASE(PEFTKIT_ERR_STATE, peftkit_head_forward(m, ids, types, mask, B, T, labels, NULL, out, B * 2, &loss), "head_forward(no head)");
    peftkit_adapter_attach_json(m, "t", "{\"peft_type\": \"LORA\", \"r\": 2, \"target_modules\": [\"query\", \"value\"]}");
    peftkit_adapter_set_active(m, "t");
    CASE(PEFTKIT_ERR_STATE, peftkit_head_train_step(m, ids, types, mask, B, T, labels, NULL, &tc, &r), "head_train_step(adapter without a head)");
    CASE(BAD, peftkit_head_attach(m, 0, 2, 0), "head_attach(kind 0)");
    CASE(BAD, peftkit_head_attach(m, 4, 2, 0), "head_attach(kind 4)");
    CASE(BAD, peftkit_head_attach(m, PEFTKIT_HEAD_CLASSIFICATION, 0, 0), "head_attach(outputs 0)");
    CASE(BAD, peftkit_head_attach(m, PEFTKIT_HEAD_CLASSIFICATION, 65537, 0), "head_attach(outputs 65537)");
    CASE(BAD, peftkit_head_attach(NULL, PEFTKIT_HEAD_CLASSIFICATION, 2, 0), "head_attach(model NULL)");
    CASE(BAD, peftkit_head_get(m, NULL, &outputs), "head_get(kind NULL)");
    CASE(BAD, peftkit_head_get(NULL, &kind, &outputs), "head_get(model NULL)");
    CASE(PEFTKIT_OK, peftkit_head_attach(m, PEFTKIT_HEAD_CLASSIFICATION, 2, 0), "head_attach(classification, 2)");
    CASE(PEFTKIT_OK, peftkit_head_forward(m, ids, types, mask, B, T, labels, NULL, out, B * 2, &loss), "head_forward(classification labels)");
    CASE(PEFTKIT_OK, peftkit_head_forward(m, ids, types, mask, B, T, NULL, NULL, NULL, 0, NULL), "head_forward(no labels, out NULL)");
    CASE(PEFTKIT_ERR_BUFFER_TOO_SMALL, peftkit_head_forward(m, ids, types, mask, B, T, NULL, NULL, out, B * 2 - 1, NULL),
         "head_forward(out_capacity one short)");
    CASE(BAD, peftkit_head_forward(m, ids, types, mask, B, T, NULL, NULL, NULL, 4, NULL), "head_forward(out NULL, capacity 4)");
    labels[1] = 2;
    CASE(BAD, peftkit_head_forward(m, ids, types, mask, B, T, labels, NULL, out, B * 2, &loss), "head_forward(label 2 >= outputs)");
    labels[1] = -2;
    CASE(BAD, peftkit_head_train_step(m, ids, types, mask, B, T, labels, NULL, &tc, &r), "head_train_step(label -2)");
    labels[1] = 0;
    CASE(BAD, peftkit_head_train_step(m, ids, types, mask, B, T, NULL, NULL, &tc, &r), "head_train_step(classification, labels NULL)");
    CASE(BAD, peftkit_head_train_step(m, ids, types, mask, B, T, labels, targets, &tc, &r), "head_train_step(classification, targets given)");
    CASE(BAD, peftkit_head_train_step(m, ids, types, mask, B, T, labels, NULL, NULL, &r), "head_train_step(config NULL)");
    memcpy(bad, mask, sizeof bad); bad[0] = 3;
    CASE(BAD, peftkit_head_train_step(m, ids, types, bad, B, T, labels, NULL, &tc, &r), "head_train_step(mask entry 3)");
    CASE(PEFTKIT_OK, peftkit_head_train_step(m, ids, types, mask, B, T, labels, NULL, &tc, &r), "head_train_step(classification)");
    CASE(PEFTKIT_OK, peftkit_head_attach(m, PEFTKIT_HEAD_TOKENS, 3, 0), "head_attach(tokens, 3)");
    CASE(PEFTKIT_OK, peftkit_head_train_step(m, ids, types, mask, B, T, tok_labels, NULL, &tc, &r), "head_train_step(tokens)");
    tok_labels[7] = 3;
    CASE(BAD, peftkit_head_train_step(m, ids, types, mask, B, T, tok_labels, NULL, &tc, &r), "head_train_step(token label 3 >= outputs)");
    CASE(PEFTKIT_OK, peftkit_head_attach(m, PEFTKIT_HEAD_REGRESSION, 1, 0), "head_attach(regression, 1)");
    CASE(BAD, peftkit_head_train_step(m, ids, types, mask, B, T, labels, NULL, &tc, &r), "head_train_step(regression, integer labels)");
    CASE(BAD, peftkit_head_train_step(m, ids, types, mask, B, T, NULL, NULL, &tc, &r), "head_train_step(regression, targets NULL)");
    targets[1] = NAN;
    CASE(BAD, peftkit_head_train_step(m, ids, types, mask, B, T, NULL, targets, &tc, &r), "head_train_step(regression, NaN target)");
    targets[1] = INFINITY;
    CASE(BAD, peftkit_head_forward(m, ids, types, mask, B, T, NULL, targets, out, B, &loss), "head_forward(regression, infinite target)");
    targets[1] = 0.25f;
    CASE(PEFTKIT_OK, peftkit_head_train_step(m, ids, types, mask, B, T, NULL, targets, &tc, &r), "head_train_step(regression)");
    peftkit_adapter_attach_json(gpt2, "enc", "{\"config\": \"seq_bn\"}");
    peftkit_adapter_set_active(gpt2, "enc");
    CASE(PEFTKIT_ERR_UNSUPPORTED, peftkit_head_attach(gpt2, PEFTKIT_HEAD_CLASSIFICATION, 2, 0), "head_attach(a GPT-2 model)");
    peftkit_adapter_set_active(gpt2, "a");
    peftkit_adapter_remove(gpt2, "enc");
    peftkit_model_free(m);
}

/* ------------------------------------------------------------------------------------------------- */
/* Host capabilities: tensor access, forward outputs, progress and cancellation                      */
/* ------------------------------------------------------------------------------------------------- */

static int32_t progress_calls, progress_reenter_status;
static peftkit_model *progress_model;
static int32_t stop_at_second(int64_t done, int64_t total, void *user) {
    (void)done;
    (void)total;
    (void)user;
    return ++progress_calls < 2;
}
static int32_t reenter_progress(int64_t done, int64_t total, void *user) {
    (void)done;
    (void)total;
    (void)user;
    int32_t n = 0;
    progress_reenter_status = peftkit_adapter_tensor_count(progress_model, "h", &n);
    return 1;
}

static void host(void) {
    group = "host capabilities";
    peftkit_model *m = new_model(21);
    if (!m) return;
    peftkit_adapter_attach_json(m, "h", "{\"peft_type\": \"LORA\", \"r\": 2, \"target_modules\": [\"c_attn\"]}");
    peftkit_adapter_set_active(m, "h");
    int32_t ids[BATCH * SEQ], n32 = 0, nd = 0, wr = 0;
    fill(ids, BATCH * SEQ, 0);
    int64_t shape[4];
    char name[256];
    size_t len = 0, n = 0;
    float buf[64 * 64], loss = 0;
    CASE(BAD, peftkit_adapter_tensor_count(NULL, "h", &n32), "adapter_tensor_count(model NULL)");
    CASE(BAD, peftkit_adapter_tensor_count(m, NULL, &n32), "adapter_tensor_count(adapter NULL)");
    CASE(BAD, peftkit_adapter_tensor_count(m, "h", NULL), "adapter_tensor_count(out NULL)");
    CASE(PEFTKIT_ERR_NOT_FOUND, peftkit_adapter_tensor_count(m, "nope", &n32), "adapter_tensor_count(unknown adapter)");
    CASE(BAD, peftkit_adapter_tensor_info(m, "h", -1, name, sizeof name, &len, shape, 4, &nd, &wr), "adapter_tensor_info(index -1)");
    CASE(BAD, peftkit_adapter_tensor_info(m, "h", 4, name, sizeof name, &len, shape, 4, &nd, &wr), "adapter_tensor_info(index = count)");
    CASE(BAD, peftkit_adapter_tensor_info(m, "h", 0, name, sizeof name, &len, shape, 4, NULL, &wr), "adapter_tensor_info(ndim NULL)");
    CASE(BAD, peftkit_adapter_tensor_info(m, "h", 0, NULL, 8, &len, shape, 4, &nd, &wr), "adapter_tensor_info(name_buf NULL, cap 8)");
    CASE(BAD, peftkit_adapter_tensor_info(m, "h", 0, name, sizeof name, &len, NULL, 4, &nd, &wr), "adapter_tensor_info(shape NULL, cap 4)");
    CASE(BAD, peftkit_adapter_tensor_info(m, "h", 0, name, sizeof name, &len, shape, -1, &nd, &wr), "adapter_tensor_info(shape_cap -1)");
    CASE(PEFTKIT_ERR_BUFFER_TOO_SMALL, peftkit_adapter_tensor_info(m, "h", 0, name, 4, &len, shape, 4, &nd, &wr), "adapter_tensor_info(name_cap 4)");
    CASE(PEFTKIT_ERR_BUFFER_TOO_SMALL, peftkit_adapter_tensor_info(m, "h", 0, name, sizeof name, &len, shape, 1, &nd, &wr), "adapter_tensor_info(shape_cap 1 for a 2-D tensor)");
    peftkit_adapter_tensor_info(m, "h", 0, name, sizeof name, &len, shape, 4, &nd, &wr);
    size_t count = (size_t)(shape[0] * shape[1]);
    for (size_t i = 0; i < count; i++) buf[i] = 0.01f * (float)(i % 13);
    CASE(BAD, peftkit_adapter_tensor_read(m, "h", NULL, buf, count, &n), "adapter_tensor_read(tensor NULL)");
    CASE(BAD, peftkit_adapter_tensor_read(m, "h", name, NULL, count, &n), "adapter_tensor_read(buf NULL, count > 0)");
    CASE(BAD, peftkit_adapter_tensor_read(m, "h", name, buf, (size_t)-1, &n), "adapter_tensor_read(count SIZE_MAX)");
    CASE(PEFTKIT_ERR_BUFFER_TOO_SMALL, peftkit_adapter_tensor_read(m, "h", name, buf, count - 1, &n), "adapter_tensor_read(count one short)");
    CASE(PEFTKIT_ERR_NOT_FOUND, peftkit_adapter_tensor_read(m, "h", "no.such.tensor", buf, count, &n), "adapter_tensor_read(unknown tensor)");
    CASE(BAD, peftkit_adapter_tensor_write(m, "h", name, NULL, count), "adapter_tensor_write(data NULL, count > 0)");
    CASE(BAD, peftkit_adapter_tensor_write(m, "h", name, buf, count - 1), "adapter_tensor_write(count one short)");
    CASE(BAD, peftkit_adapter_tensor_write(m, "h", name, buf, (size_t)-1), "adapter_tensor_write(count SIZE_MAX)");
    buf[3] = NAN;
    CASE(BAD, peftkit_adapter_tensor_write(m, "h", name, buf, count), "adapter_tensor_write(a NaN value)");
    buf[3] = INFINITY;
    CASE(BAD, peftkit_adapter_tensor_write(m, "h", name, buf, count), "adapter_tensor_write(an infinite value)");
    buf[3] = 0;
    CASE(PEFTKIT_ERR_NOT_FOUND, peftkit_adapter_tensor_write(m, "h", "no.such.tensor", buf, count), "adapter_tensor_write(unknown tensor)");
    peftkit_adapter_merge(m, "h");
    CASE(PEFTKIT_ERR_STATE, peftkit_adapter_tensor_write(m, "h", name, buf, count), "adapter_tensor_write(merged adapter)");
    peftkit_adapter_unmerge(m, "h");

    peftkit_forward_options fo;
    peftkit_forward_options_init(&fo);
    CASE(BAD, peftkit_forward_options_init_sized(NULL, sizeof fo), "forward_options_init(NULL)");
    CASE(BAD, peftkit_forward_options_init_sized(&fo, 6), "forward_options_init(size 6)");
    peftkit_forward_options_init(&fo);
    CASE(BAD, peftkit_forward_ex(NULL, ids, NULL, BATCH, SEQ, &fo, &loss, NULL), "forward_ex(model NULL)");
    CASE(BAD, peftkit_forward_ex(m, NULL, NULL, BATCH, SEQ, &fo, &loss, NULL), "forward_ex(input_ids NULL)");
    CASE(BAD, peftkit_forward_ex(m, ids, NULL, 0, SEQ, &fo, &loss, NULL), "forward_ex(batch 0)");
    fo.logits_mode = 7;
    CASE(BAD, peftkit_forward_ex(m, ids, NULL, BATCH, SEQ, &fo, &loss, NULL), "forward_ex(logits_mode 7)");
    fo.logits_mode = PEFTKIT_LOGITS_NONE;
    fo.logits = buf;
    fo.logits_capacity = sizeof buf / sizeof buf[0];
    CASE(BAD, peftkit_forward_ex(m, ids, NULL, BATCH, SEQ, &fo, &loss, NULL), "forward_ex(logits with mode NONE)");
    fo.logits_mode = PEFTKIT_LOGITS_LAST;
    fo.logits_capacity = BATCH * 256 - 1;
    CASE(PEFTKIT_ERR_BUFFER_TOO_SMALL, peftkit_forward_ex(m, ids, NULL, BATCH, SEQ, &fo, &loss, NULL), "forward_ex(LAST logits one float short)");
    fo.logits_capacity = (size_t)-1;
    CASE(BAD, peftkit_forward_ex(m, ids, NULL, BATCH, SEQ, &fo, &loss, NULL), "forward_ex(logits_capacity SIZE_MAX)");
    fo.struct_size = 5;
    CASE(BAD, peftkit_forward_ex(m, ids, NULL, BATCH, SEQ, &fo, &loss, NULL), "forward_ex(options struct_size 5)");
    peftkit_forward_options_init(&fo);
    ids[1] = 999;
    CASE(BAD, peftkit_forward_ex(m, ids, NULL, BATCH, SEQ, &fo, &loss, NULL), "forward_ex(token id outside the vocabulary)");
    fill(ids, BATCH * SEQ, 0);

    peftkit_load_config lc;
    peftkit_load_config_init(&lc);
    peftkit_model *out = (peftkit_model *)(void *)&lc;
    CASE(BAD, peftkit_load_config_init_sized(NULL, sizeof lc), "load_config_init(NULL)");
    CASE(BAD, peftkit_load_config_init_sized(&lc, 12), "load_config_init(size 12)");
    peftkit_load_config_init(&lc);
    CASE(BAD, peftkit_model_load_ex(NULL, &lc, &out), "model_load_ex(path NULL)");
    CASE(BAD, peftkit_model_load_ex("../../Tests/Fixtures/gpt2/model", &lc, NULL), "model_load_ex(out NULL)");
    lc.flags = 6;
    CASE(BAD, peftkit_model_load_ex("../../Tests/Fixtures/gpt2/model", &lc, &out), "model_load_ex(unknown flags)");
    lc.flags = 0;
    CASE(PEFTKIT_ERR_IO, peftkit_model_load_ex("/nonexistent/peftkit-model", &lc, &out), "model_load_ex(missing folder)");
    lc.progress = stop_at_second;
    progress_calls = 0;
    CASE(PEFTKIT_ERR_CANCELLED, peftkit_model_load_ex("../../Tests/Fixtures/gpt2/model", &lc, &out), "model_load_ex(callback cancels)");
    check(out == NULL, "[host capabilities] a cancelled load sets *out = NULL");

    peftkit_train_config tc = train_config();
    CASE(BAD, peftkit_model_set_progress_callback(NULL, stop_at_second, NULL), "model_set_progress_callback(model NULL)");
    CASE(PEFTKIT_OK, peftkit_model_set_progress_callback(m, stop_at_second, NULL), "model_set_progress_callback(callback)");
    progress_calls = 0;
    CASE(PEFTKIT_ERR_CANCELLED, peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, NULL), "train_step(progress callback cancels)");
    CASE(PEFTKIT_ERR_STATE, peftkit_train_apply_gradients(m, &tc, NULL), "train_apply_gradients(after a cancelled compute)");
    progress_model = m;
    progress_reenter_status = 12345;
    peftkit_model_set_progress_callback(m, reenter_progress, NULL);
    CASE(PEFTKIT_OK, peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, NULL), "train_step(progress callback re-entering the model)");
    record("a call on the training model from its progress callback", PEFTKIT_ERR_BUSY, progress_reenter_status);
    CASE(PEFTKIT_OK, peftkit_model_set_progress_callback(m, NULL, NULL), "model_set_progress_callback(NULL: removed)");
    peftkit_model_free(m);
    CASE(BAD, peftkit_adapter_tensor_count(m, "h", &n32), "adapter_tensor_count(freed model)");
    CASE(BAD, peftkit_forward_ex(m, ids, NULL, BATCH, SEQ, NULL, &loss, NULL), "forward_ex(freed model)");
    CASE(BAD, peftkit_model_set_progress_callback(m, NULL, NULL), "model_set_progress_callback(freed model)");
}

int main(int argc, char **argv) {
    const char *scratch = ".";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--markdown") == 0) markdown = 1;
        else scratch = argv[i];
    }
    sentinel();
    snprintf(sentinel_message, sizeof sentinel_message, "%s", peftkit_last_error());
    peftkit_set_num_threads(2);

    char adapter_dir[1024], checkpoint_dir[1024];
    snprintf(adapter_dir, sizeof adapter_dir, "%s/misuse-adapter", scratch);
    snprintf(checkpoint_dir, sizeof checkpoint_dir, "%s/misuse-checkpoint", scratch);
    peftkit_model *m = new_model_with_adapter(1234, "a");
    if (!m) return 1;
    int32_t ids[BATCH * SEQ];
    fill(ids, BATCH * SEQ, 0);
    peftkit_train_config tc = train_config();
    int ok = peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, NULL) == PEFTKIT_OK &&
             peftkit_adapter_save(m, "a", adapter_dir) == PEFTKIT_OK &&
             peftkit_checkpoint_save(m, "a", checkpoint_dir) == PEFTKIT_OK;
    check(ok, "set-up: model, adapter \"a\", one step, adapter and checkpoint saved");

    null_pointers(m);
    sizes(m);
    adapter_configs(m);
    token_ids(m);
    lengths(m);
    hyper_parameters(m);
    names(m, adapter_dir, checkpoint_dir);
    states();
    packing();
    files(m, scratch, adapter_dir, checkpoint_dir);
    model_save(m, scratch);
    freed();
    numerics(scratch);
    concurrency();
    tokenizer(scratch);
    preference(m);
    encoders(m);
    host();

    /* After all of the above, the model still works. */
    group = "afterwards";
    peftkit_train_result r = result();
    CASE(PEFTKIT_OK, peftkit_train_step(m, ids, NULL, BATCH, SEQ, &tc, &r), "train_step on the model every case above used");
    int32_t count = 0;
    peftkit_adapter_count(m, &count);
    check(count == 1, "[afterwards] no rejected call attached anything");
    peftkit_model_free(m);

    if (markdown) print_markdown();
    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed == 0 ? 0 : 1;
}
