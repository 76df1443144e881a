/* test_runfolder.c - a run folder is never written over unasked (the real binary): a fresh run
 * into a folder holding a finished or an interrupted run is refused with exit 2 and the ways
 * on (--resume only for the interrupted one), the old files untouched; --overwrite moves the
 * folder to DIR.1, then DIR.2, and trains anew; --resume on a finished run says so. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kd_common.h"
#include "kd_test.h"

#define TINY "configs/tiny.json"

static char g_out[65536];

/* `distill train ARGS`; output in g_out; the exit status. */
#define train(...) kd_test_distillf(g_out, sizeof g_out, "", "train " __VA_ARGS__)

/* The bytes of a file (malloc'd, NULL if unreadable). */
static char *slurp(const char *dir, const char *name, size_t *n) {
    char p[1024], *text = NULL;
    kd_err err;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if (kd_read_file(p, 1u << 28, &text, n, &err) != KD_OK) return NULL;
    return text;
}

static int same_bytes(const char *a, size_t na, const char *b, size_t nb) {
    return a && b && na == nb && memcmp(a, b, na) == 0;
}

static int is_dir(const char *dir, const char *name) {
    char p[1024];
    struct stat sb;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

KD_TEST(runfolder_finished_run_is_refused_then_moved_by_overwrite) {
    if (!kd_test_have_tiny()) return;
    const char *dir = kd_test_tmpdir();
    char run[1024], moved[1100];
    snprintf(run, sizeof run, "%s/run", dir);
    CHECK_EQ_INT(train("--config " TINY " --out %s --epochs 2 --quiet", run), 0);
    size_t n_best = 0, n_again = 0;
    char *best = slurp(run, "best.safetensors", &n_best);
    CHECK(best != NULL);
    /* The second run of the same command: refused before anything is written. */
    CHECK_EQ_INT(train("--config " TINY " --out %s --epochs 1 --quiet", run), 2);
    CHECK_CONTAINS(g_out, "already holds a finished run (2 of 2 epochs)");
    CHECK_CONTAINS(g_out, "--out DIR");
    CHECK_CONTAINS(g_out, "--overwrite");
    CHECK(strstr(g_out, "Continue it with --resume") == NULL);
    char *again = slurp(run, "best.safetensors", &n_again);
    CHECK(same_bytes(best, n_best, again, n_again));
    free(again);
    /* --resume on the finished run: nothing to continue, said so; a temporary that a write
     * killed after the last checkpoint left (its process gone) is removed all the same. */
    const pid_t dead = fork();
    if (dead == 0) _exit(0);
    waitpid(dead, NULL, 0);
    char stale[1200];
    snprintf(stale, sizeof stale, "%s/metrics.jsonl.tmp.%ld", run, (long)dead);
    FILE *sf = fopen(stale, "w");
    CHECK(sf != NULL);
    if (sf) fputs("{\"epoch\":", sf), fclose(sf);
    CHECK_EQ_INT(train("--resume %s --quiet", run), 2);
    CHECK_CONTAINS(g_out, "the run is finished (2 of 2 epochs done)");
    CHECK_CONTAINS(g_out, "removed a temporary file left by an interrupted write");
    CHECK(access(stale, F_OK) != 0);
    CHECK(strstr(g_out, "samples_per_s") == NULL);
    CHECK_EQ_INT(train("--resume %s --overwrite", run), 2);
    CHECK_CONTAINS(g_out, "give one of them");
    /* --overwrite: the old run moves to run.1 whole, a fresh 1-epoch run takes its place. */
    CHECK_EQ_INT(train("--config " TINY " --out %s --epochs 1 --overwrite --quiet", run), 0);
    snprintf(moved, sizeof moved, "%s.1", run);
    CHECK_CONTAINS(g_out, "moved the previous run in");
    CHECK_CONTAINS(g_out, moved);
    again = slurp(moved, "best.safetensors", &n_again);
    CHECK(same_bytes(best, n_best, again, n_again));
    free(again);
    again = slurp(run, "metrics.jsonl", &n_again);
    CHECK(again && strstr(again, "\"epoch\":1") && !strstr(again, "\"epoch\":2"));
    free(again);
    /* A trailing slash moves to run.2, not into the folder itself. */
    CHECK_EQ_INT(train("--config " TINY " --out %s/ --epochs 1 --overwrite --quiet", run), 0);
    CHECK(is_dir(dir, "run.1") && is_dir(dir, "run.2") && is_dir(dir, "run"));
    free(best);
}

KD_TEST(runfolder_interrupted_run_is_refused_offering_resume) {
    if (!kd_test_have_tiny()) return;
    const char *dir = kd_test_tmpdir();
    char cmd[4096];
    /* 12 batches per epoch: stopped after 17 steps, mid epoch 2 of 3. */
    snprintf(cmd, sizeof cmd, "KD_TRAIN_STOP_AFTER_STEPS=17 %s train --config " TINY
             " --out %s/cut --epochs 3 --quiet", kd_test_distill(), dir);
    CHECK_EQ_INT(kd_test_run(cmd, g_out, sizeof g_out), 130);
    CHECK_EQ_INT(train("--config " TINY " --out %s/cut --epochs 3 --quiet", dir), 2);
    CHECK_CONTAINS(g_out, "already holds an interrupted run (1 of 3 epochs done)");
    CHECK_CONTAINS(g_out, "Continue it with --resume");
    CHECK_CONTAINS(g_out, "--overwrite");
    /* The offered --resume works and finishes the run. */
    CHECK_EQ_INT(train("--resume %s/cut --quiet", dir), 0);
    CHECK(!is_dir(dir, "cut.1"));
    /* config.json alone (a run stopped before its first epoch ended) holds nothing to lose. */
    snprintf(cmd, sizeof cmd, "mkdir -p %s/empty && echo '{}' > %s/empty/config.json", dir, dir);
    CHECK_EQ_INT(kd_test_run(cmd, NULL, 0), 0);
    CHECK_EQ_INT(train("--config " TINY " --out %s/empty --epochs 1 --quiet", dir), 0);
    CHECK(!is_dir(dir, "empty.1"));
}
