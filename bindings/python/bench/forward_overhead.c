/*
 * forward_overhead.c — per-call cost of small PEFTKit calls made directly from C: the baseline for
 * forward_overhead.py, which times the same calls through the Python package.
 *
 * Usage: forward_overhead [CALLS]   prints one line per case: "<case> <median> <p10> <p90>" in
 * microseconds per call. Model: the tiny default GPT-2 (vocab 256, hidden 64, 2 layers), 1 thread.
 */
#define _POSIX_C_SOURCE 199309L

#include "peftkit.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report(const char *name, double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, cmp);
    printf("%s %.3f %.3f %.3f\n", name, t[n / 2], t[n / 10], t[n - 1 - n / 10]);
}

static int fail(const char *what) {
    fprintf(stderr, "%s: %s\n", what, peftkit_last_error());
    return 1;
}

int main(int argc, char **argv) {
    int calls = argc > 1 ? atoi(argv[1]) : 5000;
    if (calls < 10) calls = 10;
    peftkit_set_num_threads(1);
    peftkit_model_config mc;
    peftkit_model_config_init(&mc);
    peftkit_model *m = NULL;
    if (peftkit_model_create(&mc, 1, &m) != PEFTKIT_OK) return fail("create");

    int32_t ids[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    float *logits = malloc(sizeof(float) * 8 * 256);
    double *t = malloc(sizeof(double) * (size_t)calls);
    if (!logits || !t) return 1;

    for (int i = 0; i < calls / 10; i++)
        if (peftkit_forward(m, ids, NULL, 1, 8, logits, 8 * 256, NULL, NULL) != PEFTKIT_OK) return fail("forward");
    for (int i = 0; i < calls; i++) {
        double t0 = now_us();
        peftkit_forward(m, ids, NULL, 1, 8, logits, 8 * 256, NULL, NULL);
        t[i] = now_us() - t0;
    }
    report("forward_1x8", t, calls);

    int32_t count = 0;
    for (int i = 0; i < calls; i++) {
        double t0 = now_us();
        peftkit_adapter_count(m, &count);
        t[i] = now_us() - t0;
    }
    report("adapter_count", t, calls);

    free(t);
    free(logits);
    peftkit_model_free(m);
    return 0;
}
