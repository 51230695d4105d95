/*
 * example.c — PEFTKit from C, end to end.
 *
 * 1. Create a tiny GPT-2 with random weights and attach a Pfeiffer bottleneck adapter.
 * 2. Train the adapter on a repeated byte pattern until the loss has fallen by 10%.
 * 3. Save the adapter, free the model.
 * 4. Create the same base model again (same seed), load the adapter, and check the logits are equal.
 * 5. Generate greedily twice and check both runs agree.
 *
 * Usage: example [ADAPTER_DIR]   (default: ./example-adapter)
 * Exits 0 on success; on any failure prints the library's message and exits 1.
 */
#include "peftkit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 4
#define SEQ 32
#define MAX_STEPS 200

static const char pattern[] = "peftkit! ";

/* Exit with the library's message if a call failed. */
static void must(peftkit_status s, const char *what) {
    if (s != PEFTKIT_OK) {
        fprintf(stderr, "example: %s failed (status %d): %s\n", what, (int)s, peftkit_last_error());
        exit(1);
    }
}

static void fail(const char *message) {
    fprintf(stderr, "example: %s\n", message);
    exit(1);
}

/* Row b of the batch is the pattern repeated, starting at offset b. Tokens are bytes. */
static void make_batch(int32_t *ids) {
    const int period = (int)strlen(pattern);
    for (int b = 0; b < BATCH; b++)
        for (int t = 0; t < SEQ; t++) ids[b * SEQ + t] = (unsigned char)pattern[(b + t) % period];
}

/* Streams generated tokens as characters. */
static int32_t print_token(int32_t token, void *user) {
    (void)user;
    putchar(token >= 32 && token < 127 ? (int)token : '?');
    fflush(stdout);
    return 0; /* keep going */
}

static float *forward_logits(peftkit_model *m, const int32_t *ids, size_t n) {
    float *logits = malloc(n * sizeof(float));
    if (!logits) fail("out of memory");
    float loss = 0;
    must(peftkit_forward(m, ids, NULL, BATCH, SEQ, logits, n, &loss, NULL), "peftkit_forward");
    return logits;
}

int main(int argc, char **argv) {
    const char *adapter_dir = argc > 1 ? argv[1] : "example-adapter";
    const uint64_t seed = 2024;
    printf("PEFTKit %s (header %s)\n", peftkit_version(), PEFTKIT_VERSION_STRING);

    /* 1. A tiny GPT-2 (vocab 256 = bytes, 2 layers, d=64) and a Pfeiffer adapter with bottleneck 16. */
    peftkit_model_config mc;
    peftkit_model_config_init(&mc);
    peftkit_model *model = NULL;
    must(peftkit_model_create(&mc, seed, &model), "peftkit_model_create");
    must(peftkit_model_get_config(model, &mc), "peftkit_model_get_config");

    /* The adapter's config is the JSON of an adapter_config.json: AdapterHub's SeqBnConfig ("pfeiffer")
     * with reduction factor 4 (64 / 4 = 16). A PEFT LoraConfig's dict works the same way. */
    must(peftkit_adapter_attach_json(model, "pattern",
                                     "{\"mh_adapter\": false, \"output_adapter\": true, \"reduction_factor\": 4, "
                                     "\"non_linearity\": \"relu\", \"original_ln_before\": true}"),
         "peftkit_adapter_attach_json");
    must(peftkit_adapter_set_active(model, "pattern"), "peftkit_adapter_set_active");
    int64_t n_params = 0;
    must(peftkit_adapter_num_params(model, "pattern", &n_params), "peftkit_adapter_num_params");
    printf("model: vocab %d, hidden %d, layers %d; adapter \"pattern\": %lld trainable parameters\n", mc.vocab_size,
           mc.hidden_size, mc.num_layers, (long long)n_params);

    /* 2. Train until the loss is 10% below where it started. A randomly initialised model has small
     *    embeddings and a frozen, tied output head, which bounds how confident any adapter can make it:
     *    the loss falls clearly but cannot approach 0. */
    int32_t ids[BATCH * SEQ];
    make_batch(ids);
    peftkit_train_config tc;
    peftkit_train_config_init(&tc);
    tc.learning_rate = 1e-2f;
    peftkit_train_result r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    float first = 0;
    for (int step = 0; step < MAX_STEPS; step++) {
        must(peftkit_train_step(model, ids, NULL, BATCH, SEQ, &tc, &r), "peftkit_train_step");
        if (step == 0) first = r.loss;
        if (step % 25 == 0) printf("step %3lld  loss %.4f  grad norm %.4f\n", (long long)r.step, r.loss, r.grad_norm);
        if (r.loss < 0.9f * first) break;
    }
    printf("step %3lld  loss %.4f (started at %.4f)\n", (long long)r.step, r.loss, first);
    if (!(r.loss < 0.9f * first)) fail("the loss did not fall by 10%");

    /* 3. Save the adapter and keep the logits it gives, then free the model. */
    must(peftkit_adapter_save(model, "pattern", adapter_dir), "peftkit_adapter_save");
    printf("saved adapter to %s\n", adapter_dir);
    const size_t n_logits = (size_t)BATCH * SEQ * (size_t)mc.vocab_size;
    float *before = forward_logits(model, ids, n_logits);
    peftkit_model_free(model);

    /* 4. Same base model again (same config and seed), adapter loaded from disk. */
    peftkit_model *again = NULL;
    must(peftkit_model_create(&mc, seed, &again), "peftkit_model_create (again)");
    char name[256];
    must(peftkit_adapter_load(again, adapter_dir, NULL, name, sizeof name), "peftkit_adapter_load");
    must(peftkit_adapter_set_active(again, name), "peftkit_adapter_set_active (reloaded)");
    float *after = forward_logits(again, ids, n_logits);
    float max_diff = 0;
    for (size_t i = 0; i < n_logits; i++) {
        float d = fabsf(before[i] - after[i]);
        if (!(d <= max_diff)) max_diff = d; /* also catches NaN */
    }
    printf("reloaded adapter \"%s\": max |logit difference| = %g\n", name, max_diff);
    if (!(max_diff <= 1e-5f)) fail("logits of the reloaded adapter differ");

    /* 5. Greedy generation twice: the same tokens both times. */
    peftkit_generate_config gc;
    peftkit_generate_config_init(&gc);
    gc.max_new_tokens = 24; /* temperature 0 = greedy */
    const int32_t prompt[] = {'p', 'e', 'f'};
    int32_t out1[24], out2[24];
    int32_t n1 = 0, n2 = 0;
    printf("generated: \"pef");
    must(peftkit_generate(again, prompt, 3, &gc, out1, 24, &n1, print_token, NULL), "peftkit_generate");
    printf("\"\n");
    must(peftkit_generate(again, prompt, 3, &gc, out2, 24, &n2, NULL, NULL), "peftkit_generate (again)");
    if (n1 != n2 || memcmp(out1, out2, sizeof(int32_t) * (size_t)n1) != 0) fail("greedy generation is not deterministic");
    printf("greedy generation is deterministic (%d tokens)\n", (int)n1);

    free(before);
    free(after);
    peftkit_model_free(again);
    printf("example: all good\n");
    return 0;
}
