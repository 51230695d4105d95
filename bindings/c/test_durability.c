/*
 * test_durability.c — a process killed with SIGKILL while it saves must never leave a broken file behind.
 *
 * The parent never calls PEFTKit itself (so it stays single-threaded and can fork safely). Each round it forks
 * a writer that saves an adapter (16 MB) or a training checkpoint over and over into one shared folder, kills
 * it with SIGKILL at a random moment, and then forks a reader that must load what is there:
 *
 *   adapters     adapter.safetensors must be byte-identical to either the previous round's file or this
 *                writer's version (written first to a private folder), must load, and adapter_config.json
 *                must be of the same save as the weights (writers alternate between two adapter shapes,
 *                so a new config with old weights, or the reverse, would show);
 *   checkpoints  checkpoint.json must load with its state, and the step it holds must be one this writer or an
 *                earlier one saved.
 *
 * Prints one line per check and "N passed, M failed"; exits 0 only if all passed.
 * Usage: test_durability SCRATCH_DIR [ROUNDS]   (environment PEFTKIT_DURABILITY_SEED fixes the random kill times)
 */
#define _DEFAULT_SOURCE
#define _POSIX_C_SOURCE 200809L

#include "peftkit.h"

#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int n_passed = 0;
static int n_failed = 0;

static void check(int cond, const char *what) {
    if (cond) {
        n_passed++;
        printf("ok   %s\n", what);
    } else {
        n_failed++;
        printf("FAIL %s\n", what);
    }
    fflush(stdout);
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint64_t file_hash(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    uint64_t h = 0xcbf29ce484222325ULL;
    int c;
    while ((c = getc(f)) != EOF) {
        h ^= (unsigned char)c;
        h *= 0x100000001b3ULL;
    }
    fclose(f);
    return h;
}

/* Removes leftovers of interrupted atomic writes (".NAME.tmp-PID-TAG") from dir; returns how many. */
static int remove_temp_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int n = 0;
    char path[2048];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' && strstr(e->d_name, ".tmp-") != NULL) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            if (unlink(path) == 0) n++;
        }
    }
    closedir(d);
    return n;
}

/* Number of entries of dir whose name starts with prefix. */
static int count_prefix(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)) != NULL) n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

enum { BIG_BOTTLENECK = 16384 };

/* In a child: a model with adapter "big" whose weights depend on `seed`. Exits on failure. */
static peftkit_model *child_model(uint64_t seed, int bottleneck) {
    peftkit_model_config mc;
    peftkit_model_config_init(&mc);
    /* A Pfeiffer (seq_bn) adapter of width `bottleneck`: reduction factor hidden / bottleneck, a power of two. */
    char json[256];
    snprintf(json, sizeof json,
             "{\"mh_adapter\": false, \"output_adapter\": true, \"original_ln_before\": true, \"non_linearity\": \"relu\", "
             "\"reduction_factor\": %.17g, \"seed\": %llu}",
             (double)mc.hidden_size / bottleneck, (unsigned long long)seed);
    peftkit_model *m = NULL;
    if (peftkit_model_create(&mc, 1, &m) != PEFTKIT_OK || peftkit_adapter_attach_json(m, "big", json) != PEFTKIT_OK ||
        peftkit_adapter_set_active(m, "big") != PEFTKIT_OK) {
        fprintf(stderr, "child: %s\n", peftkit_last_error());
        _exit(3);
    }
    return m;
}

/* Forks a writer. It tells the parent through `ready_fd` when it starts saving in a loop, then never stops. */
static pid_t start_writer(int checkpoints, uint64_t seed, const char *shared, const char *private_dir, int *ready_fd) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    pid_t pid = fork();
    if (pid != 0) {
        close(fds[1]);
        *ready_fd = fds[0];
        return pid;
    }
    close(fds[0]);
    if (!checkpoints) {
        peftkit_model *m = child_model(seed, seed % 2 ? BIG_BOTTLENECK : BIG_BOTTLENECK / 2);
        if (peftkit_adapter_save(m, "big", private_dir) != PEFTKIT_OK) _exit(4);
        char c = 'r';
        if (write(fds[1], &c, 1) != 1) _exit(5);
        for (;;) peftkit_adapter_save(m, "big", shared);
    }
    peftkit_model *m = child_model(seed, BIG_BOTTLENECK / 4);
    peftkit_train_config tc;
    peftkit_train_config_init(&tc);
    int32_t ids[16];
    for (int i = 0; i < 16; i++) ids[i] = (int32_t)((i * 5 + seed) % 200);
    char c = 'r';
    if (write(fds[1], &c, 1) != 1) _exit(5);
    /* Steps seed*1000+1, +2, ...: every saved checkpoint holds a step this writer can be identified by. */
    for (int step = 0;; step++) {
        if (peftkit_train_step(m, ids, NULL, 2, 8, &tc, NULL) != PEFTKIT_OK) _exit(6);
        peftkit_checkpoint_save(m, "big", shared);
    }
}

/* Forks a reader: 0 if the adapter (or checkpoint) in `dir` loads; for a checkpoint, writes its step count
 * (found by training one more step) into *step. */
static int run_reader(int checkpoints, const char *dir, long *step) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        peftkit_model_config mc;
        peftkit_model_config_init(&mc);
        peftkit_model *m = NULL;
        if (peftkit_model_create(&mc, 1, &m) != PEFTKIT_OK) _exit(3);
        char name[64];
        peftkit_status s = checkpoints ? peftkit_checkpoint_load(m, dir, name, sizeof name)
                                       : peftkit_adapter_load(m, dir, NULL, name, sizeof name);
        if (s != PEFTKIT_OK) {
            fprintf(stderr, "reader: %s\n", peftkit_last_error());
            _exit(1);
        }
        long st = -1;
        if (checkpoints) {
            peftkit_train_config tc;
            peftkit_train_config_init(&tc);
            peftkit_train_result r;
            memset(&r, 0, sizeof r);
            r.struct_size = sizeof r;
            int32_t ids[16];
            for (int i = 0; i < 16; i++) ids[i] = i;
            if (peftkit_adapter_set_active(m, name) != PEFTKIT_OK ||
                peftkit_train_step(m, ids, NULL, 2, 8, &tc, &r) != PEFTKIT_OK)
                _exit(2);
            st = (long)r.step - 1;
        }
        if (write(fds[1], &st, sizeof st) != (ssize_t)sizeof st) _exit(7);
        _exit(0);
    }
    close(fds[1]);
    int status = 0;
    long st = -1;
    ssize_t got = read(fds[0], &st, sizeof st);
    close(fds[0]);
    waitpid(pid, &status, 0);
    if (step) *step = got == (ssize_t)sizeof st ? st : -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void rounds(int checkpoints, const char *scratch, int n, unsigned *rng) {
    char shared[1024], private_dir[1100], what[256], path[1200];
    snprintf(shared, sizeof shared, "%s/%s", scratch, checkpoints ? "checkpoint" : "adapter");
    printf("# %s: %d writers killed at random moments\n", checkpoints ? "checkpoints" : "adapters", n);
    uint64_t previous = 0, previous_config = 0;
    int interrupted = 0, first_loaded = 0;
    for (int round = 0; round < n; round++) {
        snprintf(private_dir, sizeof private_dir, "%s/%s-ref-%d", scratch, checkpoints ? "checkpoint" : "adapter", round);
        int ready = -1;
        pid_t pid = start_writer(checkpoints, 100 + (uint64_t)round, shared, private_dir, &ready);
        if (pid < 0) {
            check(0, "fork");
            return;
        }
        char c;
        int started = read(ready, &c, 1) == 1;
        close(ready);
        if (started) sleep_ms((int)(rand_r(rng) % 400));
        kill(pid, SIGKILL);
        int status = 0;
        waitpid(pid, &status, 0);
        snprintf(what, sizeof what, "round %d: writer started and was killed by SIGKILL", round);
        check(started && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, what);
        /* A kill in the middle of a save leaves a staging folder beside the adapter folder (removed by the next
         * save), or for checkpoints a temporary file or a state file the manifest does not name yet. */
        int leftovers = checkpoints ? remove_temp_files(shared) + count_prefix(shared, "state-") - 1
                                    : count_prefix(scratch, ".adapter.peftkit-new-");
        interrupted += leftovers > 0;
        snprintf(path, sizeof path, "%s/%s", shared, checkpoints ? "checkpoint.json" : "adapter.safetensors");
        struct stat st;
        if (stat(path, &st) != 0) {
            /* Killed before its first save completed, and no earlier round left a file: nothing to check. */
            snprintf(what, sizeof what, "round %d: no file yet (killed before the first save finished)", round);
            check(previous == 0 && !first_loaded, what);
            continue;
        }
        long step = -1;
        int rc = run_reader(checkpoints, shared, &step);
        snprintf(what, sizeof what, "round %d: what the killed writer left loads (reader exit %d)", round, rc);
        check(rc == 0, what);
        first_loaded = 1;
        if (!checkpoints) {
            snprintf(path, sizeof path, "%s/adapter.safetensors", shared);
            uint64_t now = file_hash(path);
            snprintf(path, sizeof path, "%s/adapter.safetensors", private_dir);
            uint64_t mine = file_hash(path);
            snprintf(what, sizeof what, "round %d: adapter.safetensors is the previous file or this writer's, complete (%s)",
                     round, now == mine ? "new" : "previous");
            check(now == mine || (previous != 0 && now == previous), what);
            snprintf(path, sizeof path, "%s/adapter_config.json", shared);
            uint64_t config_now = file_hash(path);
            snprintf(path, sizeof path, "%s/adapter_config.json", private_dir);
            uint64_t config_mine = file_hash(path);
            snprintf(what, sizeof what, "round %d: adapter_config.json belongs to the same save as the weights", round);
            check(now == mine ? config_now == config_mine : config_now == previous_config, what);
            previous = now;
            previous_config = config_now;
            snprintf(path, sizeof path, "%s/adapter.safetensors", private_dir);
            unlink(path);
            snprintf(path, sizeof path, "%s/adapter_config.json", private_dir);
            unlink(path);
            rmdir(private_dir);
        } else {
            snprintf(what, sizeof what, "round %d: the checkpoint holds a step a writer saved (step %ld)", round, step);
            check(step >= 1, what);
        }
    }
    printf("     %d of %d kills interrupted a save (leftover files found; the file in use was intact)\n", interrupted, n);
    check(interrupted > 0 || n < 5, "some kills landed in the middle of a write");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_durability SCRATCH_DIR [ROUNDS]\n");
        return 2;
    }
    const char *scratch = argv[1];
    int n = argc > 2 ? atoi(argv[2]) : 12;
    const char *env = getenv("PEFTKIT_DURABILITY_SEED");
    unsigned seed = env ? (unsigned)strtoul(env, NULL, 10) : (unsigned)time(NULL) ^ (unsigned)getpid();
    printf("# kill times from seed %u (PEFTKIT_DURABILITY_SEED=%u reproduces them)\n", seed, seed);
    unsigned rng = seed;
    mkdir(scratch, 0755);
    rounds(0, scratch, n, &rng);
    rounds(1, scratch, n, &rng);
    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed == 0 ? 0 : 1;
}
