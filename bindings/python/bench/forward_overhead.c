/*
 * forward_overhead.c — per-call cost of small PEFTKit calls made directly from C: the baseline for
 * forward_overhead.py, which times the same calls through the Python package.
 *
 * Usage: forward_overhead [SAMPLES]
 *        forward_overhead count forward|set_active N
 *            N calls inside bench_region(), untimed: run under valgrind --tool=callgrind
 *            --collect-atstart=no to count their instructions only (needs valgrind's callgrind.h;
 *            build with -DPEFTKIT_BENCH_CALLGRIND).
 * Each sample times a batch of calls (20 forwards, 1000 set-actives) and divides. Two clocks: wall
 * time (CLOCK_MONOTONIC) and this thread's CPU time (CLOCK_THREAD_CPUTIME_ID), which leaves out the
 * time other processes take the core away and so stays meaningful on a busy machine. Prints one line
 * per case and clock: "<case> <clock> <median> <p10> <p90>" in microseconds per call.
 * Model: the tiny default GPT-2 (vocab 256, hidden 64, 2 layers), input 1x8, 1 thread.
 */
#define _POSIX_C_SOURCE 199309L

#include "peftkit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_us(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report(const char *name, const char *clock, double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, cmp);
    printf("%s %s %.3f %.3f %.3f\n", name, clock, t[n / 2], t[n / 10], t[n - 1 - n / 10]);
}

#ifdef PEFTKIT_BENCH_CALLGRIND
#include <valgrind/callgrind.h>
#else
#define CALLGRIND_TOGGLE_COLLECT
#endif

/* The calls whose instructions are counted (see Usage). */
static void bench_region(peftkit_model *m, int fwd, int n, const int32_t *ids, float *logits) {
    CALLGRIND_TOGGLE_COLLECT;
    for (int i = 0; i < n; i++) {
        if (fwd) peftkit_forward(m, ids, NULL, 1, 8, logits, 8 * 256, NULL, NULL);
        else peftkit_adapter_set_active(m, "a");
    }
    CALLGRIND_TOGGLE_COLLECT;
}

static int fail(const char *what) {
    fprintf(stderr, "%s: %s\n", what, peftkit_last_error());
    return 1;
}

int main(int argc, char **argv) {
    int samples = argc > 1 ? atoi(argv[1]) : 500;
    if (samples < 10) samples = 10;
    peftkit_set_num_threads(1);
    peftkit_model_config mc;
    peftkit_model_config_init(&mc);
    peftkit_model *m = NULL;
    if (peftkit_model_create(&mc, 1, &m) != PEFTKIT_OK) return fail("create");
    if (peftkit_adapter_attach_json(m, "a", "{\"config\": \"seq_bn\"}") != PEFTKIT_OK) return fail("attach");

    int32_t ids[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    float *logits = malloc(sizeof(float) * 8 * 256);
    if (!logits) return 1;

    if (argc == 4 && strcmp(argv[1], "count") == 0) {
        int fwd = strcmp(argv[2], "forward") == 0;
        for (int i = 0; i < 10; i++) { /* warm-up, outside the counted region */
            if (fwd) peftkit_forward(m, ids, NULL, 1, 8, logits, 8 * 256, NULL, NULL);
            else peftkit_adapter_set_active(m, "a");
        }
        bench_region(m, fwd, atoi(argv[3]), ids, logits);
        peftkit_model_free(m);
        free(logits);
        return 0;
    }
    double *wall = malloc(sizeof(double) * (size_t)samples);
    double *cpu = malloc(sizeof(double) * (size_t)samples);
    if (!wall || !cpu) return 1;

    enum { FWD = 20, SET = 1000 };
    for (int i = 0; i < 200; i++)
        if (peftkit_forward(m, ids, NULL, 1, 8, logits, 8 * 256, NULL, NULL) != PEFTKIT_OK) return fail("forward");
    for (int s = 0; s < samples; s++) {
        double w0 = now_us(CLOCK_MONOTONIC), c0 = now_us(CLOCK_THREAD_CPUTIME_ID);
        for (int i = 0; i < FWD; i++) peftkit_forward(m, ids, NULL, 1, 8, logits, 8 * 256, NULL, NULL);
        cpu[s] = (now_us(CLOCK_THREAD_CPUTIME_ID) - c0) / FWD;
        wall[s] = (now_us(CLOCK_MONOTONIC) - w0) / FWD;
    }
    report("forward_1x8", "wall", wall, samples);
    report("forward_1x8", "cpu", cpu, samples);

    for (int s = 0; s < samples; s++) {
        double w0 = now_us(CLOCK_MONOTONIC), c0 = now_us(CLOCK_THREAD_CPUTIME_ID);
        for (int i = 0; i < SET; i++) peftkit_adapter_set_active(m, "a");
        cpu[s] = (now_us(CLOCK_THREAD_CPUTIME_ID) - c0) / SET;
        wall[s] = (now_us(CLOCK_MONOTONIC) - w0) / SET;
    }
    report("set_active", "wall", wall, samples);
    report("set_active", "cpu", cpu, samples);

    free(cpu);
    free(wall);
    free(logits);
    peftkit_model_free(m);
    return 0;
}
