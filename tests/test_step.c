/* test_step.c - the training step as one unit (kd_trainer_step): its loss terms, weights,
 * moments and RNG stream against the same step spelled out by hand with the layer, loss and
 * optimizer APIs (bit for bit); NaN handling; the epoch over a loader (kd_trainer_epoch) against
 * steps taken one by one, and its stop flag; and the partial-epoch sums of a checkpoint's "run"
 * metadata written and read back through their one table, every way it can be damaged. */
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/test_hooks.h"
#include "../src/train/train_impl.h"
#include "kd_eval.h"
#include "kd_loss.h"
#include "kd_optim.h"
#include "kd_test.h"
#include "kd_train.h"

#define B 5
#define C 3

/* A model of the given layers on [1, 4, 4] inputs, He-initialised from seed. */
static void build(kd_model *m, const char *layers, int with_grads, uint64_t seed) {
    kd_err err;
    kd_shape in = {3, {1, 4, 4}};
    kd_rng rng;
    CHECK_EQ_INT(kd_model_init(m, &in, layers, with_grads, &err), KD_OK);
    kd_rng_seed(&rng, seed);
    kd_model_init_weights(m, &rng, KD_INIT_HE);
    CHECK_EQ_INT(kd_model_reserve(m, B, &err), KD_OK);
}

#define STUDENT                                                                            \
    "[{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":8},{\"type\":\"relu\"},"        \
    "{\"type\":\"dropout\",\"p\":0.3},{\"type\":\"dense\",\"units\":3}]"
#define TEACHER                                                                            \
    "[{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":12},{\"type\":\"tanh\"},"       \
    "{\"type\":\"dense\",\"units\":3}]"

static void fill_batch(float *x, int32_t *y) {
    kd_rng rng;
    kd_rng_seed(&rng, 7);
    for (size_t i = 0; i < B * 16; i++) x[i] = kd_rng_normal(&rng);
    for (size_t i = 0; i < B; i++) y[i] = (int32_t)(i % C);
}

static int same_bits(const float *a, const float *b, size_t n) {
    return memcmp(a, b, n * sizeof *a) == 0;
}

/* kd_trainer_step against forward/loss/backward/kd_optim_step called by hand on a twin model
 * (same initial weights, same RNG state), for distillation with augmentation and dropout (both
 * draw from the RNG: augmentation first) and for plain cross-entropy. */
static void check_step_matches_manual(int with_teacher) {
    kd_model s1 = {0}, s2 = {0}, teacher = {0};
    build(&s1, STUDENT, 1, 11);
    build(&s2, STUDENT, 1, 11);
    if (with_teacher) build(&teacher, TEACHER, 0, 12);
    float x[B * 16], aug[B * 16], dz[B * C], scratch[3 * B * C], zs_copy[B * C];
    int32_t y[B];
    fill_batch(x, y);
    kd_optim_cfg oc = kd_optim_defaults(KD_OPT_ADAM);
    oc.weight_decay = 0.01f;
    kd_sched_cfg sc = {.kind = KD_SCHED_COSINE, .base_lr = 0.01f, .total_steps = 10,
                       .min_lr = 0.001f};
    kd_distill_cfg dc = {0.7f, 2.0f, KD_DISTILL_KL};
    kd_augment aug_cfg = {1, 1};
    kd_rng rng1, rng2;
    kd_rng_seed(&rng1, 99);
    rng2 = rng1;
    kd_trainer_setup setup = {0};
    setup.model = &s1;
    setup.teacher = with_teacher ? &teacher : NULL;
    setup.distill = &dc;
    setup.optim = &oc;
    setup.sched = &sc;
    setup.augment = &aug_cfg;
    setup.sample_shape = s1.input;
    setup.batch_cap = B;
    setup.rng = &rng1;
    kd_trainer t;
    kd_err err;
    CHECK_EQ_INT(kd_trainer_init(&t, &setup, &err), KD_OK);
    t.step = 3; /* as a resumed run: the schedule and Adam's bias correction use it */
    kd_step_result r;
    CHECK_EQ_INT(kd_trainer_step(&t, x, y, NULL, B, &r, &err), KD_OK);
    CHECK_EQ_INT(t.step, 4);

    /* The same step by hand. */
    kd_ctx train = {1, &rng2, NULL, 0, 0, 0}, eval = {0, NULL, NULL, 0, 0, 0};
    kd_augment_batch(&aug_cfg, &s2.input, x, aug, B, &rng2);
    kd_loss_terms lt = {0};
    const float *zs;
    if (with_teacher) {
        const float *zt = kd_model_forward(&teacher, aug, B, &eval);
        zs = kd_model_forward(&s2, aug, B, &train);
        lt = kd_loss_distill(&dc, zs, zt, y, B, C, dz, scratch);
    } else {
        zs = kd_model_forward(&s2, aug, B, &train);
        lt.hard = lt.total = kd_loss_ce(zs, y, B, C, dz);
    }
    memcpy(zs_copy, zs, sizeof zs_copy);
    kd_model_zero_grad(&s2);
    kd_model_backward(&s2, aug, dz, B, &train);
    float lr = kd_sched_lr(&sc, 3);
    double gnorm = kd_optim_step(&oc, s2.params, s2.grads, s2.m, s2.v, s2.n_params, lr, 4);

    CHECK(r.loss.total == lt.total);
    CHECK(r.loss.soft == lt.soft);
    CHECK(r.loss.hard == lt.hard);
    CHECK(with_teacher ? lt.soft > 0 : lt.soft == 0);
    CHECK(r.lr == lr);
    CHECK(r.grad_norm == gnorm);
    size_t correct = 0;
    for (size_t i = 0; i < B; i++) correct += kd_argmax(zs_copy + i * C, C) == (size_t)y[i];
    CHECK_EQ_INT(r.labelled, B);
    CHECK_EQ_INT(r.correct, correct);
    CHECK(same_bits(t.dlogits, dz, B * C));
    CHECK(same_bits(s1.params, s2.params, s1.n_params));
    CHECK(same_bits(s1.m, s2.m, s1.n_params));
    CHECK(same_bits(s1.v, s2.v, s1.n_params));
    CHECK(memcmp(&rng1, &rng2, sizeof rng1) == 0);
    /* The optimizer left the gradients at 0 for the next backward (which then skips zeroing:
     * this step already ran that way after the earlier ones and matched). */
    size_t nonzero = 0;
    for (size_t i = 0; i < s1.n_params; i++) nonzero += s1.grads[i] != 0.0f;
    CHECK_EQ_INT(nonzero, 0);
    /* It moved: a step that did nothing would also "match" an empty manual step. */
    kd_model fresh = {0};
    build(&fresh, STUDENT, 1, 11);
    CHECK(!same_bits(s1.params, fresh.params, s1.n_params));
    kd_model_free(&fresh);
    kd_trainer_free(&t);
    kd_trainer_free(&t); /* idempotent */
    kd_model_free(&s1);
    kd_model_free(&s2);
    kd_model_free(&teacher);
}

KD_TEST(step_distillation_equals_manual_sequence_bitwise) { check_step_matches_manual(1); }
KD_TEST(step_cross_entropy_equals_manual_sequence_bitwise) { check_step_matches_manual(0); }

KD_TEST(step_nan_input_is_numeric_failure_and_leaves_parameters) {
    const char *plain = "[{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":3}]";
    for (int with_teacher = 0; with_teacher < 2; with_teacher++) {
        kd_model s = {0}, teacher = {0}, before = {0};
        build(&s, plain, 1, 21);
        build(&before, plain, 1, 21);
        if (with_teacher) build(&teacher, plain, 0, 22);
        float x[B * 16];
        int32_t y[B];
        fill_batch(x, y);
        x[17] = NAN;  /* sample 1: its logits are NaN in both models */
        kd_optim_cfg oc = kd_optim_defaults(KD_OPT_SGD);
        kd_sched_cfg sc = {.kind = KD_SCHED_CONSTANT, .base_lr = 0.1f};
        kd_distill_cfg dc = {0.5f, 4.0f, KD_DISTILL_KL};
        kd_rng rng;
        kd_rng_seed(&rng, 5);
        kd_trainer_setup setup = {0};
        setup.model = &s;
        setup.teacher = with_teacher ? &teacher : NULL;
        setup.distill = &dc;
        setup.optim = &oc;
        setup.sched = &sc;
        setup.batch_cap = B;
        setup.rng = &rng;
        kd_trainer t;
        kd_err err;
        CHECK_EQ_INT(kd_trainer_init(&t, &setup, &err), KD_OK);
        kd_err_clear(&err);
        CHECK_EQ_INT(kd_trainer_step(&t, x, y, NULL, B, NULL, &err), KD_ENUMERIC);
        CHECK_EQ_INT(err.code, KD_ENUMERIC);
        CHECK_CONTAINS(err.msg, with_teacher ? "teacher logits contain NaN/Inf" : "loss is NaN");
        CHECK_EQ_INT(t.step, 0);
        CHECK(same_bits(s.params, before.params, s.n_params));
        /* The same trainer still steps on a clean batch. */
        x[17] = 0.5f;
        CHECK_EQ_INT(kd_trainer_step(&t, x, y, NULL, B, NULL, &err), KD_OK);
        CHECK_EQ_INT(t.step, 1);
        CHECK(!same_bits(s.params, before.params, s.n_params));
        kd_trainer_free(&t);
        kd_model_free(&s);
        kd_model_free(&before);
        kd_model_free(&teacher);
    }
}

KD_TEST(step_init_refuses_a_model_without_gradients_and_missing_labels) {
    kd_model inf = {0}, s = {0};
    build(&inf, STUDENT, 0, 1);
    build(&s, STUDENT, 1, 1);
    kd_optim_cfg oc = kd_optim_defaults(KD_OPT_SGD);
    kd_sched_cfg sc = {.kind = KD_SCHED_CONSTANT, .base_lr = 0.1f};
    kd_rng rng;
    kd_rng_seed(&rng, 5);
    kd_trainer_setup setup = {0};
    setup.model = &inf;
    setup.optim = &oc;
    setup.sched = &sc;
    setup.batch_cap = B;
    setup.rng = &rng;
    kd_trainer t;
    kd_err err;
    CHECK_EQ_INT(kd_trainer_init(&t, &setup, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "without gradients");
    kd_trainer_free(&t);
    /* Cross-entropy without labels: refused, nothing touched. */
    setup.model = &s;
    CHECK_EQ_INT(kd_trainer_init(&t, &setup, &err), KD_OK);
    float x[B * 16];
    int32_t y[B];
    fill_batch(x, y);
    CHECK_EQ_INT(kd_trainer_step(&t, x, NULL, NULL, B, NULL, &err), KD_EUSAGE);
    CHECK_EQ_INT(t.step, 0);
    kd_trainer_free(&t);
    kd_model_free(&inf);
    kd_model_free(&s);
}

/* Counts KD_EV_BATCH events and checks they number the batches 1, 2, ... */
typedef struct {
    size_t n_events, last_batch;
    int out_of_order;
} batch_log;

static void on_event(const kd_train_event *ev, void *user) {
    batch_log *l = user;
    if (ev->kind != KD_EV_BATCH) return;
    l->out_of_order |= ev->batch != l->last_batch + 1;
    l->last_batch = ev->batch;
    l->n_events++;
}

/* A 10-row CSV of 16 features and a label, as a dataset. */
static kd_dataset *open_rows(const char *dir) {
    char text[4096], path[1024];
    size_t len = 0;
    kd_rng rng;
    kd_rng_seed(&rng, 3);
    for (int r = 0; r < 10; r++) {
        for (int c = 0; c < 16; c++)
            len += (size_t)snprintf(text + len, sizeof text - len, "%.4f,",
                                    (double)kd_rng_normal(&rng));
        len += (size_t)snprintf(text + len, sizeof text - len, "%d\n", r % C);
    }
    snprintf(path, sizeof path, "%s/rows.csv", dir);
    CHECK(kd_test_write_file(path, text, len) == 0);
    kd_data_source src;
    kd_data_source_defaults(&src);
    src.format = KD_FMT_CSV;
    src.has_header = 0;
    snprintf(src.path, sizeof src.path, "%s", path);
    kd_dataset *ds = NULL;
    kd_err err;
    CHECK_EQ_INT(kd_dataset_open(&ds, &src, NULL, &err), KD_OK);
    return ds;
}

KD_TEST(step_epoch_equals_steps_one_by_one_and_honours_stop) {
    const char *flat = "[{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":6},{\"type\":\"relu\"},"
                       "{\"type\":\"dense\",\"units\":3}]";
    kd_dataset *ds = open_rows(kd_test_tmpdir());
    if (!ds) return;
    size_t order[10] = {4, 1, 7, 0, 9, 2, 8, 5, 3, 6};
    kd_model a = {0}, b = {0};
    build(&a, flat, 1, 31);
    build(&b, flat, 1, 31);
    kd_optim_cfg oc = kd_optim_defaults(KD_OPT_ADAM);
    kd_sched_cfg sc = {.kind = KD_SCHED_STEP, .base_lr = 0.01f, .step_size = 2, .gamma = 0.5f};
    kd_rng ra, rb;
    kd_rng_seed(&ra, 8);
    rb = ra;
    kd_trainer_setup setup = {0};
    setup.optim = &oc;
    setup.sched = &sc;
    setup.batch_cap = 4;
    kd_trainer ta, tb;
    kd_err err;
    setup.model = &a;
    setup.rng = &ra;
    CHECK_EQ_INT(kd_trainer_init(&ta, &setup, &err), KD_OK);
    setup.model = &b;
    setup.rng = &rb;
    CHECK_EQ_INT(kd_trainer_init(&tb, &setup, &err), KD_OK);

    batch_log log = {0};
    kd_epoch_pass e = {0};
    e.ds = ds;
    e.order = order;
    e.n = 10;
    e.use_labels = 1;
    e.epoch = e.n_epochs = 1;
    e.n_batches = 3;
    e.t_start = kd_now();
    e.progress = on_event;
    e.user = &log;
    CHECK_EQ_INT(kd_trainer_epoch(&ta, &e, &err), KD_OK);
    CHECK_EQ_INT(e.batch, 3);
    CHECK_EQ_INT(e.stopped, 0);
    CHECK_EQ_INT(ta.step, 3);
    CHECK_EQ_INT(log.n_events, 3);
    CHECK(!log.out_of_order);

    /* By hand: batches of 4, 4, 2 in the given order. */
    double loss = 0, hard = 0, labelled = 0, correct = 0;
    float lr = 0;
    for (size_t first = 0; first < 10; first += 4) {
        size_t n = first + 4 <= 10 ? 4 : 10 - first;
        float x[4 * 16];
        int32_t y[4];
        kd_step_result r;
        CHECK_EQ_INT(kd_dataset_get(ds, order + first, n, x, y, NULL, &err), KD_OK);
        CHECK_EQ_INT(kd_trainer_step(&tb, x, y, NULL, n, &r, &err), KD_OK);
        loss += r.loss.total * (double)n;
        hard += r.loss.hard * (double)n;
        labelled += (double)r.labelled;
        correct += (double)r.correct;
        lr = r.lr;
    }
    CHECK(same_bits(a.params, b.params, a.n_params));
    CHECK(e.sums.loss == loss);
    CHECK(e.sums.hard == hard);
    CHECK(e.sums.soft == 0);
    CHECK(e.sums.seen == 10);
    CHECK(e.sums.labelled == labelled && labelled == 10);
    CHECK(e.sums.correct == correct);
    /* Steps 0, 1, 2 at step_size 2: the last one's rate is the halved one. */
    CHECK(e.lr == lr && lr == kd_sched_lr(&sc, 2) && lr < 0.01f);

    /* The stop flag: the epoch ends after the step that sees it, before the last batch. */
    volatile sig_atomic_t stop = 1;
    kd_epoch_pass s = e;
    memset(&s.sums, 0, sizeof s.sums);
    s.batch = 1;  /* resumed after one batch: starts at sample order[4] */
    s.stop = &stop;
    log = (batch_log){0, 1, 0};
    CHECK_EQ_INT(kd_trainer_epoch(&ta, &s, &err), KD_OK);
    CHECK_EQ_INT(s.stopped, 1);
    CHECK_EQ_INT(s.batch, 2);
    CHECK(s.sums.seen == 4);
    CHECK_EQ_INT(ta.step, 4);
    CHECK_EQ_INT(log.n_events, 1);
    /* ... but a stop seen on the epoch's last batch finishes the epoch normally. */
    s.batch = 2;
    memset(&s.sums, 0, sizeof s.sums);
    CHECK_EQ_INT(kd_trainer_epoch(&ta, &s, &err), KD_OK);
    CHECK_EQ_INT(s.stopped, 0);
    CHECK_EQ_INT(s.batch, 3);
    CHECK(s.sums.seen == 2);

    kd_trainer_free(&ta);
    kd_trainer_free(&tb);
    kd_model_free(&a);
    kd_model_free(&b);
    kd_dataset_close(ds);
}

/* ---- the "run" metadata's partial sums ---- */

static kd_epoch_sums sample_sums(void) {
    kd_epoch_sums s = {0};
    /* Distinct values with full binary fractions, so a swapped or dropped field shows. */
    s.loss = 12.345678901234567;
    s.soft = 0.1;
    s.hard = 3.0000000000000004;
    s.correct = 17;
    s.labelled = 25;
    s.seen = 32;
    s.train_seconds = 1.5e-3;
    s.seconds = 2.718281828459045;
    return s;
}

KD_TEST(step_partial_sums_round_trip_through_run_metadata) {
    kd_epoch_sums s = sample_sums(), back;
    memset(&back, 0xff, sizeof back);
    char *json = kd_run_meta_json(2, 17, NAN, &s, NULL);
    CHECK(json != NULL);
    CHECK_CONTAINS(json, "\"epoch\":2");
    CHECK_CONTAINS(json, "\"step\":17");
    CHECK_CONTAINS(json, "\"val_acc\":null");
    kd_err err;
    CHECK_EQ_INT(kd_run_meta_partial("f.safetensors", json, &back, &err), KD_OK);
    CHECK(memcmp(&s, &back, sizeof s) == 0);
    free(json);
    /* Without partial sums (an epoch-boundary checkpoint) there is no "partial" object. */
    json = kd_run_meta_json(3, 24, 0.75, NULL, NULL);
    CHECK(json && !strstr(json, "partial"));
    CHECK_CONTAINS(json, "\"val_acc\":0.75");
    free(json);
}

/* Expects kd_run_meta_partial to refuse run_json with a message naming the file and `what`. */
static void check_refused(const char *run_json, const char *what) {
    kd_epoch_sums out;
    kd_err err;
    kd_err_clear(&err);
    CHECK_EQ_INT(kd_run_meta_partial("dir/last.safetensors", run_json, &out, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, "resume dir/last.safetensors: metadata ");
    CHECK_CONTAINS(err.msg, what);
}

/* A "run" metadata string whose partial sums are all 1, except `field`, which is left out
 * (value NULL) or given the literal JSON value. */
static void run_json_with(char *out, size_t cap, const char *field, const char *value) {
    static const char *const fields[] = {"loss", "soft", "hard", "correct", "labelled", "seen",
                                         "train_seconds", "seconds"};
    size_t len = (size_t)snprintf(out, cap, "{\"epoch\":1,\"step\":5,\"val_acc\":null,\"partial\":{");
    const char *sep = "";
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        int mine = field && strcmp(fields[i], field) == 0;
        if (mine && !value) continue;
        len += (size_t)snprintf(out + len, cap - len, "%s\"%s\":%s", sep, fields[i],
                                mine ? value : "1");
        sep = ",";
    }
    snprintf(out + len, cap - len, "}}");
}

KD_TEST(step_partial_sums_refuse_damaged_metadata) {
    check_refused(NULL, "metadata run: missing");
    check_refused("{\"epoch\": 1", "metadata run: expected a JSON object");
    check_refused("[1, 2]", "metadata run: expected a JSON object");
    check_refused("{\"epoch\":1,\"step\":5}", "metadata run.partial: expected an object");
    check_refused("{\"partial\": 3}", "metadata run.partial: expected an object");
    char text[1024], want[96];
    kd_epoch_sums out;
    kd_err err;
    /* The well-formed string is accepted (so the refusals below are about the one field). */
    run_json_with(text, sizeof text, NULL, NULL);
    CHECK_EQ_INT(kd_run_meta_partial("f", text, &out, &err), KD_OK);
    CHECK(out.seen == 1 && out.seconds == 1);
    /* Each field in turn: missing, a string, null, negative, infinite (1e999 reads as inf). */
    const char *fields[] = {"loss", "soft", "hard", "correct", "labelled", "seen",
                            "train_seconds", "seconds"};
    const char *bad[] = {NULL, "\"12\"", "null", "-1", "-0.5", "1e999"};
    for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++)
        for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
            run_json_with(text, sizeof text, fields[f], bad[k]);
            snprintf(want, sizeof want, "metadata run.partial.%s: expected a number >= 0",
                     fields[f]);
            check_refused(text, want);
        }
}

/* A checkpoint or metrics write whose directory fsync fails after the rename (kd_write_atomic:
 * KD_OK plus a message) reaches the user as a warning event and the run completes; every kth
 * write is hit in turn (config.json, best, last, metrics.jsonl of a one-epoch run). */
static int n_warnings;
static char last_warning[1100];
static void on_warning_event(const kd_train_event *ev, void *user) {
    (void)user;
    if (ev->kind != KD_EV_WARNING) return;
    n_warnings++;
    snprintf(last_warning, sizeof last_warning, "%s", ev->msg);
}

KD_TEST(train_run_turns_a_failed_directory_fsync_into_a_warning) {
    const char *dir = kd_test_tmpdir();
    kd_dataset *ds = open_rows(dir);
    if (!ds) return;
    kd_dataset_close(ds);
    char text[1024];
    snprintf(text, sizeof text,
             "{\"data\": {\"train\": {\"format\": \"csv\", \"path\": \"%s/rows.csv\", "
             "\"header\": false}, \"validation_split\": 0},"
             " \"model\": {\"layers\": [{\"type\": \"dense\", \"units\": 3}]},"
             " \"train\": {\"epochs\": 1, \"batch_size\": 4}}", dir);
    for (int k = 1; k <= 4; k++) {
        kd_config cfg = {0};
        kd_err err;
        CHECK_EQ_INT(kd_config_parse(&cfg, text, strlen(text), "fsync.json", dir, NULL, 0, &err),
                     KD_OK);
        char out[1024];
        snprintf(out, sizeof out, "%s/run%d", dir, k);
        kd_train_opts opts = {0};
        opts.cfg = &cfg;
        opts.out_dir = out;
        opts.progress = on_warning_event;
        kd_train_result res;
        n_warnings = 0;
        kd_fault_dirsync_after = k;
        CHECK_EQ_INT(kd_train_run(&opts, &res, &err), KD_OK);
        CHECK_EQ_INT(kd_fault_dirsync_after, 0);
        kd_fault_dirsync_after = 0;
        CHECK_EQ_INT(n_warnings, 1);
        CHECK_CONTAINS(last_warning, "WARNING: ");
        CHECK_EQ_INT(res.epochs_done, 1);
        kd_config_free(&cfg);
    }
}
