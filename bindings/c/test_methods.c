/* Every adapter method through the C ABI: attach, train until the loss falls, save in HF PEFT's format and
 * reload with the same logits, merge/unmerge (LoRA, IA3), and a mixed-adapter batch equal to each row alone.
 * Ends with "N passed, M failed". */
#define _POSIX_C_SOURCE 200809L
#include <peftkit.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int passed, failed;
static void check(int ok, const char *what) {
    if (ok) { passed++; printf("ok   %s\n", what); }
    else { failed++; printf("FAIL %s (last error: %s)\n", what, peftkit_last_error()); }
}

enum { B = 2, T = 8, V = 256 };
static int32_t ids[B * T];
static float logits_a[B * T * V], logits_b[B * T * V];

static float max_diff(const float *a, const float *b, size_t n) {
    float m = 0;
    for (size_t i = 0; i < n; i++) { float d = fabsf(a[i] - b[i]); if (d > m) m = d; }
    return m;
}

int main(void) {
    for (int i = 0; i < B * T; i++) ids[i] = (int32_t)((i * 37 + 11) % V);
    peftkit_model_config mc; peftkit_model_config_init(&mc);
    peftkit_model *m = NULL;
    check(peftkit_model_create(&mc, 3, &m) == PEFTKIT_OK, "model_create");
    if (!m) return 1;
    {
        /* The core numbers methods itself: every number must equal the header's. */
        int32_t method = -1;
        check(peftkit_adapter_attach_json(m, "bn", "{\"config\": \"seq_bn\"}") == PEFTKIT_OK &&
                  peftkit_adapter_method(m, "bn", &method) == PEFTKIT_OK && method == PEFTKIT_METHOD_BOTTLENECK &&
                  peftkit_adapter_remove(m, "bn") == PEFTKIT_OK,
              "adapter_method(bottleneck) is PEFTKIT_METHOD_BOTTLENECK");
    }
    const char *names[] = {"lora", "ia3", "prefix", "prompt"};
    int methods[] = {PEFTKIT_METHOD_LORA, PEFTKIT_METHOD_IA3, PEFTKIT_METHOD_PREFIX, PEFTKIT_METHOD_PROMPT};
    peftkit_train_config tc; peftkit_train_config_init(&tc);
    tc.learning_rate = 1e-2f;
    /* Each method's adapter_config.json, in Hugging Face PEFT's schema. */
    const char *configs[] = {
        "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 16, \"target_modules\": [\"c_attn\", \"mlp.c_proj\"]}",
        "{\"peft_type\": \"IA3\", \"target_modules\": [\"c_attn\", \"mlp.c_proj\"], \"feedforward_modules\": [\"mlp.c_proj\"]}",
        "{\"peft_type\": \"PREFIX_TUNING\", \"num_virtual_tokens\": 4, \"task_type\": \"CAUSAL_LM\"}",
        "{\"peft_type\": \"PROMPT_TUNING\", \"num_virtual_tokens\": 4, \"prompt_tuning_init\": \"RANDOM\"}",
    };
    for (int k = 0; k < 4; k++) {
        char what[96];
        snprintf(what, sizeof what, "attach %s", names[k]);
        check(peftkit_adapter_attach_json(m, names[k], configs[k]) == PEFTKIT_OK, what);
        int32_t method = -1;
        check(peftkit_adapter_method(m, names[k], &method) == PEFTKIT_OK && method == methods[k], "adapter_method");
        check(peftkit_adapter_set_active(m, names[k]) == PEFTKIT_OK, "set_active");
        peftkit_train_result r = {.struct_size = sizeof r};
        float first = 0;
        for (int s = 0; s < 15; s++) {
            if (peftkit_train_step(m, ids, NULL, B, T, &tc, &r) != PEFTKIT_OK) break;
            if (s == 0) first = r.loss;
        }
        snprintf(what, sizeof what, "%s: loss falls (%.4f -> %.4f)", names[k], first, r.loss);
        check(r.step == 15 && r.loss < first, what);
        /* HF PEFT's files, reloaded: same logits. */
        char dir[] = "/tmp/peftkit-methods-XXXXXX";
        check(mkdtemp(dir) != NULL, "mkdtemp");
        check(peftkit_adapter_save(m, names[k], dir) == PEFTKIT_OK, "save");
        char file[128];
        snprintf(file, sizeof file, "%s/adapter_model.safetensors", dir);
        snprintf(what, sizeof what, "%s: saved as PEFT's adapter_model.safetensors", names[k]);
        check(access(file, R_OK) == 0, what);
        char back[64], again[64];
        snprintf(again, sizeof again, "%s-again", names[k]);
        check(peftkit_adapter_load(m, dir, again, back, sizeof back) == PEFTKIT_OK && strcmp(back, again) == 0, "load");
        peftkit_forward(m, ids, NULL, B, T, logits_a, sizeof logits_a / sizeof(float), NULL, NULL);
        peftkit_adapter_set_active(m, again);
        peftkit_forward(m, ids, NULL, B, T, logits_b, sizeof logits_b / sizeof(float), NULL, NULL);
        snprintf(what, sizeof what, "%s: reloaded adapter gives the same logits", names[k]);
        check(memcmp(logits_a, logits_b, sizeof logits_a) == 0, what);
        peftkit_adapter_set_active(m, names[k]);
        check(peftkit_adapter_remove(m, again) == PEFTKIT_OK, "remove reloaded");
        remove(file);
        snprintf(file, sizeof file, "%s/adapter_config.json", dir);
        remove(file);
        rmdir(dir);
    }
    /* merge / unmerge */
    check(peftkit_adapter_set_active(m, "lora") == PEFTKIT_OK, "activate lora");
    check(peftkit_forward(m, ids, NULL, B, T, logits_a, sizeof logits_a / sizeof(float), NULL, NULL) == PEFTKIT_OK, "forward lora");
    check(peftkit_adapter_merge(m, "lora") == PEFTKIT_OK, "merge lora");
    check(peftkit_adapter_merge(m, "prefix") == PEFTKIT_ERR_UNSUPPORTED, "merge prefix is unsupported");
    check(peftkit_adapter_set_active(m, NULL) == PEFTKIT_OK, "deactivate");
    check(peftkit_forward(m, ids, NULL, B, T, logits_b, sizeof logits_b / sizeof(float), NULL, NULL) == PEFTKIT_OK, "forward merged base");
    check(max_diff(logits_a, logits_b, B * T * V) < 1e-4f, "merged base equals unmerged lora");
    check(peftkit_adapter_unmerge(m, "lora") == PEFTKIT_OK, "unmerge lora");
    check(peftkit_adapter_unmerge(m, "lora") == PEFTKIT_ERR_STATE, "second unmerge is a state error");
    /* mixed batch: row 0 with ia3, row 1 with the prompt adapter */
    const char *choice[B] = {"ia3", "prompt"};
    float loss = 0;
    check(peftkit_forward_mixed(m, ids, NULL, choice, B, T, logits_a, sizeof logits_a / sizeof(float), &loss, NULL) == PEFTKIT_OK,
          "forward_mixed");
    int same = 1;
    for (int b = 0; b < B; b++) {
        peftkit_adapter_set_active(m, choice[b]);
        peftkit_forward(m, ids + b * T, NULL, 1, T, logits_b, T * V, NULL, NULL);
        if (max_diff(logits_a + b * T * V, logits_b, T * V) > 1e-6f) same = 0;
    }
    check(same, "mixed batch rows equal each row alone");
    const char *bad[B] = {"ia3", "nope"};
    check(peftkit_forward_mixed(m, ids, NULL, bad, B, T, NULL, 0, &loss, NULL) == PEFTKIT_ERR_NOT_FOUND, "unknown adapter in a mixed batch");
    check(peftkit_adapter_attach_json(m, "bad", "{\"peft_type\": \"LORA\", \"r\": 4, \"target_modules\": [\"no_such_module\"]}")
          == PEFTKIT_ERR_UNSUPPORTED, "unknown target module");
    check(peftkit_adapter_attach_json(m, "bad", "{\"peft_type\": \"VERA\", \"r\": 4}") == PEFTKIT_ERR_UNSUPPORTED,
          "unknown method");
    peftkit_model_free(m);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
