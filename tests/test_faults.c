/* test_faults.c - disk faults during training, each ending with a clear message naming the file
 * and the system error, status/exit 1, and the checkpoints written before intact and loadable:
 * injected write (ENOSPC), fsync (EIO) and create (EACCES) failures (src/core/test_hooks.h); a
 * real full disk and a read-only folder (a small tmpfs, where the machine lets us mount one);
 * a folder we may not write, as an unprivileged user (root ignores permissions); the run folder
 * deleted mid-run. And out-of-memory inside cJSON while a model describes itself. */
#include <cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../src/core/test_hooks.h"
#include "kd_checkpoint.h"
#include "kd_config.h"
#include "kd_train.h"
#include "kd_test.h"

/* 240 images 1x8x8 of 4 classes (IDX, raw) and a config training a small MLP on them without a
 * validation split, so every epoch writes best (improved: no accuracy to compare), last and
 * metrics.jsonl, in that order, after config.json at the start. */
static const char *make_data(const char *dir) {
    static char cfg[700];
    unsigned char img[16 + 240 * 64], lab[8 + 240];
    const unsigned char ih[16] = {0, 0, 8, 3, 0, 0, 0, 240, 0, 0, 0, 8, 0, 0, 0, 8};
    const unsigned char lh[8] = {0, 0, 8, 1, 0, 0, 0, 240};
    memcpy(img, ih, 16);
    memcpy(lab, lh, 8);
    for (int i = 0; i < 240; i++) {
        lab[8 + i] = (unsigned char)(i % 4);
        for (int k = 0; k < 64; k++) img[16 + i * 64 + k] = (unsigned char)((i * 7 + k * (i % 4 + 1) * 13) % 251);
    }
    char p[700];
    snprintf(p, sizeof p, "%s/images.idx", dir);
    CHECK_EQ_INT(kd_test_write_file(p, img, sizeof img), 0);
    snprintf(p, sizeof p, "%s/labels.idx", dir);
    CHECK_EQ_INT(kd_test_write_file(p, lab, sizeof lab), 0);
    static const char text[] =
        "{\"data\": {\"train\": {\"format\": \"idx\", \"path\": \"images.idx\", \"labels\": "
        "\"labels.idx\"}, \"validation_split\": 0, \"preprocess\": {\"flatten\": true}},\n"
        " \"model\": {\"layers\": [{\"type\": \"dense\", \"units\": 256}, {\"type\": \"relu\"},"
        " {\"type\": \"dense\", \"units\": 4}]},\n"
        " \"optimizer\": {\"name\": \"adam\", \"lr\": 0.001},\n"
        " \"train\": {\"epochs\": 1, \"batch_size\": 60, \"seed\": 5}}\n";
    snprintf(cfg, sizeof cfg, "%s/faults.json", dir);
    CHECK_EQ_INT(kd_test_write_file(cfg, text, sizeof text - 1), 0);
    return cfg;
}

typedef struct {
    const char *delete_dir;  /* removed at the end of epoch 1 (the folder-deleted case) */
} fault_ctx;

static void on_event(const kd_train_event *ev, void *user) {
    fault_ctx *f = user;
    if (ev->kind == KD_EV_EPOCH_END && ev->epoch == 1 && f->delete_dir) {
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->delete_dir);
        CHECK_EQ_INT(kd_test_run(cmd, NULL, 0), 0);
    }
}

/* Trains cfg_path for `epochs` into out (resuming from out/last.safetensors when resume), in
 * this process so the fault hooks reach the writes. */
static kd_status train(const char *cfg_path, const char *out, size_t epochs, int resume,
                       fault_ctx *fc, kd_err *err) {
    char ov[64], last[1200];
    snprintf(ov, sizeof ov, "train.epochs=%zu", epochs);
    const char *ovs[1] = {ov};
    kd_config cfg;
    kd_status st = kd_config_load(&cfg, cfg_path, ovs, 1, err);
    if (st) return st;
    snprintf(last, sizeof last, "%s/last.safetensors", out);
    kd_train_opts opts = {0};
    opts.cfg = &cfg;
    opts.out_dir = out;
    opts.resume = resume ? last : NULL;
    opts.progress = fc ? on_event : NULL;
    opts.user = fc;
    kd_train_result res;
    st = kd_train_run(&opts, &res, err);
    kd_config_free(&cfg);
    return st;
}

static char *slurp(const char *path, size_t *n) {
    char *b = NULL;
    kd_err err;
    *n = 0;
    return kd_read_file(path, 1 << 26, &b, n, &err) == KD_OK ? b : NULL;
}

/* 1 when path has exactly the bytes of (want, n). */
static int same_bytes(const char *path, const char *want, size_t n) {
    size_t m;
    char *got = slurp(path, &m);
    int same = got && want && m == n && memcmp(got, want, n) == 0;
    free(got);
    return same;
}

/* The file loads as a checkpoint of this model (the loader's full validation). */
static int loads(const char *path) {
    kd_model m;
    kd_err err;
    kd_status st = kd_ckpt_load(path, NULL, 0, 0, &m, NULL, NULL, NULL, NULL, &err);
    if (st) kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
    kd_model_free(&m);
    return st == KD_OK;
}

static int no_temporaries(const char *dir) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -q '\\.tmp\\.'", dir);
    return kd_test_run(cmd, NULL, 0) != 0;
}

KD_TEST(faults_injected_write_fsync_create_keep_the_checkpoints) {
    const char *dir = kd_test_tmpdir();
    const char *cfg = make_data(dir);
    char out[700], last[800], best[800];
    snprintf(out, sizeof out, "%s/run", dir);
    snprintf(last, sizeof last, "%s/last.safetensors", out);
    snprintf(best, sizeof best, "%s/best.safetensors", out);
    kd_err err;
    CHECK_EQ_INT(train(cfg, out, 1, 0, NULL, &err), KD_OK);
    size_t n_last, n_best;
    char *last1 = slurp(last, &n_last), *best1 = slurp(best, &n_best);
    CHECK(last1 && best1);
    static const struct {
        int *hook;
        const char *what;
    } faults[] = {
        {&kd_fault_write_after, "write failed: No space left on device"},
        {&kd_fault_fsync_after, "fsync failed: Input/output error"},
        {&kd_fault_create_after, "cannot create temporary file"},
    };
    /* The resumed run's writes: 1 config.json, 2 best, 3 last. */
    for (size_t f = 0; f < sizeof faults / sizeof faults[0]; f++) {
        for (int at = 2; at <= 3; at++) {
            *faults[f].hook = at;
            kd_err_clear(&err);
            CHECK_EQ_INT(train(cfg, out, 2, 1, NULL, &err), KD_EIO);
            *faults[f].hook = 0;
            CHECK_CONTAINS(err.msg, at == 2 ? best : last);
            CHECK_CONTAINS(err.msg, faults[f].what);
            if (faults[f].hook == &kd_fault_create_after)
                CHECK_CONTAINS(err.msg, "Permission denied");
            /* last is the epoch-1 file; best too when its write failed, else epoch 2's. */
            CHECK(same_bytes(last, last1, n_last));
            if (at == 2) CHECK(same_bytes(best, best1, n_best));
            CHECK(loads(last) && loads(best));
            CHECK(no_temporaries(out));
            /* Back to the epoch-1 state for the next case. */
            CHECK_EQ_INT(kd_test_write_file(best, best1, n_best), 0);
        }
    }
    /* And the run still resumes and finishes once the disk is well again. */
    CHECK_EQ_INT(train(cfg, out, 2, 1, NULL, &err), KD_OK);
    CHECK(loads(last) && !same_bytes(last, last1, n_last));
    free(last1);
    free(best1);
}

KD_TEST(faults_run_folder_deleted_during_training) {
    const char *dir = kd_test_tmpdir();
    const char *cfg = make_data(dir);
    char out[700];
    snprintf(out, sizeof out, "%s/run", dir);
    fault_ctx fc = {out};
    kd_err err;
    CHECK_EQ_INT(train(cfg, out, 2, 0, &fc, &err), KD_EIO);
    CHECK_CONTAINS(err.msg, out);
    CHECK_CONTAINS(err.msg, "cannot create temporary file");
    CHECK_CONTAINS(err.msg, "No such file or directory (its folder no longer exists)");
}

/* Runs `distill train` on the config (exit status; output in out). prefix runs it as another
 * user ("setpriv ... " or ""). */
static int run_cli(const char *prefix, const char *cfg, const char *out_dir, int epochs,
                   int resume, char *out, size_t cap) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s'%s' train --config '%s' --out '%s' --epochs %d --quiet %s%s%s",
             prefix, kd_test_distill(), cfg, out_dir, epochs, resume ? "--resume '" : "",
             resume ? out_dir : "", resume ? "/last.safetensors'" : "");
    return kd_test_run(cmd, out, cap);
}

/* "distill info" validates the file (the reader, the arch, every tensor, the metadata). */
static int info_ok(const char *path) {
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "'%s' info '%s' >/dev/null", kd_test_distill(), path);
    return kd_test_run(cmd, NULL, 0) == 0;
}

/* A real full disk and a read-only folder, on a small tmpfs: needs root and a system that lets
 * us mount (CI containers may not: then skipped, the injected faults above still run). */
KD_TEST(faults_real_disk_full_and_read_only_tmpfs) {
    const char *dir = kd_test_tmpdir();
    const char *cfg = make_data(dir);
    char mnt[700], cmd[1600], run[800], last[900], best[900], out[8192];
    snprintf(mnt, sizeof mnt, "%s/mnt", dir);
    mkdir(mnt, 0700);
    snprintf(cmd, sizeof cmd, "mount -t tmpfs -o size=16m kdfaults '%s' 2>/dev/null", mnt);
    if (geteuid() != 0 || kd_test_run(cmd, NULL, 0) != 0) {
        kd_test_skip("cannot mount a tmpfs here (needs root and mount rights)");
        return;
    }
    snprintf(run, sizeof run, "%s/run", mnt);
    snprintf(last, sizeof last, "%s/last.safetensors", run);
    snprintf(best, sizeof best, "%s/best.safetensors", run);
    CHECK_EQ_INT(run_cli("", cfg, run, 1, 0, out, sizeof out), 0);
    size_t n_last, n_best;
    char *last1 = slurp(last, &n_last), *best1 = slurp(best, &n_best);
    /* Shrink the disk to what is used plus room for the new best but not the new last (the
     * old and the new last must coexist until the rename). */
    snprintf(cmd, sizeof cmd, "mount -o remount,size=%zuk '%s'",
             (n_last + n_best + 24 * 1024 + n_best + n_last / 2) / 1024 + 4, mnt);
    CHECK_EQ_INT(kd_test_run(cmd, NULL, 0), 0);
    CHECK_EQ_INT(run_cli("", cfg, run, 2, 1, out, sizeof out), 1);
    CHECK_CONTAINS(out, "distill: ");
    CHECK_CONTAINS(out, last);
    CHECK_CONTAINS(out, "No space left on device");
    CHECK(same_bytes(last, last1, n_last));
    CHECK(info_ok(last) && info_ok(best));
    CHECK(no_temporaries(run));
    /* Read-only: the config.json write at the start fails; nothing is lost. */
    snprintf(cmd, sizeof cmd, "mount -o remount,ro,size=16m '%s'", mnt);
    CHECK_EQ_INT(kd_test_run(cmd, NULL, 0), 0);
    CHECK_EQ_INT(run_cli("", cfg, run, 2, 1, out, sizeof out), 1);
    CHECK_CONTAINS(out, run);
    CHECK_CONTAINS(out, "Read-only file system");
    CHECK(same_bytes(last, last1, n_last));
    CHECK(info_ok(last) && info_ok(best));
    snprintf(cmd, sizeof cmd, "umount '%s'", mnt);
    CHECK_EQ_INT(kd_test_run(cmd, NULL, 0), 0);
    free(last1);
    free(best1);
}

/* A folder we may not write. As root, permissions do not apply, so the run goes to an
 * unprivileged user (setpriv, nobody); as anyone else chmod is enough. */
KD_TEST(faults_permission_denied_output_folder) {
    const char *dir = kd_test_tmpdir();
    const char *cfg = make_data(dir);
    char run[700], last[800], best[800], cmd[1600], out[8192], prefix[128] = "";
    snprintf(run, sizeof run, "%s/run", dir);
    snprintf(last, sizeof last, "%s/last.safetensors", run);
    snprintf(best, sizeof best, "%s/best.safetensors", run);
    CHECK_EQ_INT(run_cli("", cfg, run, 1, 0, out, sizeof out), 0);
    size_t n_last;
    char *last1 = slurp(last, &n_last);
    /* Everyone may read the data, the config and the checkpoints; nobody may write the run. */
    snprintf(cmd, sizeof cmd, "chmod 755 '%s' && chmod 644 '%s'/*.idx '%s' '%s'/* && chmod 555 '%s'",
             dir, dir, cfg, run, run);
    CHECK_EQ_INT(kd_test_run(cmd, NULL, 0), 0);
    if (geteuid() == 0) {
        if (kd_test_run("command -v setpriv >/dev/null", NULL, 0) != 0) {
            kd_test_skip("running as root without setpriv: permissions cannot be tested");
            free(last1);
            return;
        }
        snprintf(prefix, sizeof prefix, "setpriv --reuid=65534 --regid=65534 --clear-groups ");
        /* The user must reach the binary at all, or the test would test nothing. */
        snprintf(cmd, sizeof cmd, "%s'%s' --version >/dev/null 2>&1", prefix, kd_test_distill());
        if (kd_test_run(cmd, NULL, 0) != 0) {
            kd_test_skip("user 65534 cannot run %s", kd_test_distill());
            free(last1);
            return;
        }
    }
    CHECK_EQ_INT(run_cli(prefix, cfg, run, 2, 1, out, sizeof out), 1);
    CHECK_CONTAINS(out, run);
    CHECK_CONTAINS(out, "cannot create temporary file");
    CHECK_CONTAINS(out, "Permission denied");
    CHECK(same_bytes(last, last1, n_last));
    CHECK(info_ok(last) && info_ok(best));
    snprintf(cmd, sizeof cmd, "chmod 755 '%s'", run);
    kd_test_run(cmd, NULL, 0);
    free(last1);
}

/* cJSON's allocator, failing the n-th allocation from now (0: never). */
static int g_fail_at;
static void *failing_malloc(size_t n) { return --g_fail_at == 0 ? NULL : malloc(n); }

/* Every layer type writes its fields back with every cJSON allocation checked: when one fails
 * the arch is NULL (callers report out of memory), never an arch with a field missing, which
 * would be saved into a checkpoint that cannot be rebuilt. Each allocation fails in turn. */
KD_TEST(faults_out_of_memory_while_describing_layers) {
    static const char *const arch =
        "{\"input\":[2,9,9],\"layers\":[{\"type\":\"conv2d\",\"channels\":3,\"kernel\":[3,2],"
        "\"stride\":2,\"padding\":1,\"bias\":false},{\"type\":\"batchnorm\",\"momentum\":0.2,"
        "\"eps\":0.001},{\"type\":\"leaky_relu\",\"slope\":0.2},{\"type\":\"maxpool2d\","
        "\"kernel\":2,\"stride\":1,\"padding\":1},{\"type\":\"layernorm\",\"eps\":0.01},"
        "{\"type\":\"flatten\"},{\"type\":\"dropout\",\"p\":0.25},{\"type\":\"dense\","
        "\"units\":4,\"bias\":false}]}";
    kd_model m;
    kd_err err;
    CHECK_EQ_INT(kd_model_init_arch(&m, arch, 0, &err), KD_OK);
    char *want = kd_model_arch_json(&m);
    CHECK(want != NULL);
    int failed = 0, k;
    cJSON_Hooks hooks = {failing_malloc, free};
    for (k = 1; k < 1000; k++) {
        g_fail_at = k;
        cJSON_InitHooks(&hooks);
        char *got = kd_model_arch_json(&m);
        cJSON_InitHooks(NULL);
        int reached = g_fail_at > 0;  /* the k-th allocation never came: all succeeded */
        if (!got) failed++;
        else CHECK(want && strcmp(got, want) == 0);
        free(got);
        if (reached) break;
    }
    CHECK(k < 1000);
    CHECK(failed >= 20);  /* one per allocation on the way: objects, fields, the printout */
    /* The arch round-trips: the same model again. */
    kd_model m2;
    CHECK_EQ_INT(kd_model_init_arch(&m2, want, 0, &err), KD_OK);
    CHECK_EQ_INT(m2.n_params, m.n_params);
    kd_model_free(&m2);
    kd_model_free(&m);
    free(want);
}
