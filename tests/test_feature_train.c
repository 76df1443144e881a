/* test_feature_train.c - the feature losses (hint, at) wired into training: the whole step's
 * gradient with respect to a hint adapter's weights and to a student weight upstream of the
 * hinted value against finite differences of the step's own loss; steps that shrink each term;
 * a run with an adapter that resumes to the bit, whose checkpoint keeps the adapter and whose
 * exports and evaluation drop it; and the config's refusals. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kd_checkpoint.h"
#include "kd_safetensors.h"
#include "kd_test.h"
#include "kd_train.h"

#define B 4
#define C 3

/* Smooth (tanh) models on [1, 4, 4]: the student's "c1" is [2, 4, 4], the teacher's "t1"
 * [3, 4, 4]. */
#define STUDENT                                                                            \
    "[{\"type\":\"conv2d\",\"channels\":2,\"kernel\":3,\"padding\":1,\"name\":\"c1\"},"    \
    "{\"type\":\"tanh\"},{\"type\":\"conv2d\",\"channels\":2,\"kernel\":3,\"padding\":1},"  \
    "{\"type\":\"tanh\",\"name\":\"a2\"},{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":3}]"
#define TEACHER                                                                            \
    "[{\"type\":\"conv2d\",\"channels\":3,\"kernel\":3,\"padding\":1},"                    \
    "{\"type\":\"tanh\",\"name\":\"t1\"},{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":3}]"

static void build(kd_model *m, const char *layers, int with_grads, uint64_t seed) {
    kd_err err;
    kd_shape in = {3, {1, 4, 4}};
    kd_rng rng;
    CHECK_EQ_INT(kd_model_init(m, &in, layers, with_grads, &err), KD_OK);
    kd_rng_seed(&rng, seed);
    kd_model_init_weights(m, &rng, KD_INIT_HE);
    CHECK_EQ_INT(kd_model_reserve(m, B, &err), KD_OK);
}

/* A trainer of plain SGD at a learning rate the test sets per step (sc->base_lr). */
typedef struct {
    kd_model s, t;
    kd_optim_cfg oc;
    kd_sched_cfg sc;
    kd_loss_list l;
    kd_rng rng;
    kd_trainer tr;
    float x[B * 16];
    int32_t y[B];
} rig;

static void rig_init(rig *r, const kd_loss_list *l) {
    kd_err err;
    memset(r, 0, sizeof *r);
    build(&r->s, STUDENT, 1, 11);
    build(&r->t, TEACHER, 0, 12);
    r->oc = kd_optim_defaults(KD_OPT_SGD);
    r->sc = (kd_sched_cfg){.kind = KD_SCHED_CONSTANT, .base_lr = 0.0f, .total_steps = 1000};
    r->l = *l;
    kd_rng_seed(&r->rng, 5);
    for (size_t i = 0; i < B * 16; i++) r->x[i] = kd_rng_normal(&r->rng);
    for (size_t i = 0; i < B; i++) r->y[i] = (int32_t)(i % C);
    kd_trainer_setup s = {0};
    s.model = &r->s;
    s.teacher = &r->t;
    s.losses = &r->l;
    s.optim = &r->oc;
    s.sched = &r->sc;
    s.batch_cap = B;
    s.rng = &r->rng;
    CHECK_EQ_INT(kd_trainer_init(&r->tr, &s, &err), KD_OK);
    if (err.code) printf("%s\n", err.msg);
}

static void rig_free(rig *r) {
    kd_trainer_free(&r->tr);
    kd_model_free(&r->s);
    kd_model_free(&r->t);
}

static kd_step_result step(rig *r, float lr) {
    kd_err err;
    kd_step_result res;
    r->sc.base_lr = lr;
    CHECK_EQ_INT(kd_trainer_step(&r->tr, r->x, r->y, NULL, B, &res, &err), KD_OK);
    return res;
}

static kd_loss_list losses(void) {
    kd_loss_list l = {0};
    l.n = 4;
    l.e[0] = (kd_loss_entry){.type = KD_LOSS_KL, .weight = 0.5, .temperature = 2.0f};
    l.e[1] = (kd_loss_entry){.type = KD_LOSS_HINT, .weight = 0.7};
    l.e[2] = (kd_loss_entry){.type = KD_LOSS_AT, .weight = 0.3};
    l.e[3] = (kd_loss_entry){.type = KD_LOSS_HINT, .weight = 0.4};
    strcpy(l.e[1].student, "c1");
    strcpy(l.e[1].teacher, "t1");
    strcpy(l.e[2].student, "c1");
    strcpy(l.e[2].teacher, "t1");
    strcpy(l.e[3].student, "a2");  /* a second adapter, downstream of c1 */
    strcpy(l.e[3].teacher, "0");   /* the conv before t1, by its index */
    return l;
}

/* The step's gradient (SGD at lr 1: the update is the gradient) against central differences of
 * the step's own total (lr 0: nothing moves), for a hint adapter's weight and bias and for the
 * first convolution's weight, upstream of both hinted values. */
KD_TEST(feature_train_step_gradient_matches_finite_differences) {
    rig r;
    kd_loss_list l = losses();
    rig_init(&r, &l);
    kd_model *m = &r.s;
    CHECK_EQ_INT(r.tr.plan.n_terms, 4);
    CHECK(strcmp(r.tr.plan.key[3], "loss.hint.1") == 0);
    kd_tensor *aw = kd_model_tensor(m, "adapters.hint.weight");
    kd_tensor *ab = kd_model_tensor(m, "adapters.hint.bias");
    kd_tensor *aw1 = kd_model_tensor(m, "adapters.hint.1.weight");
    CHECK(aw && ab && aw1);
    if (!aw || !ab || !aw1) return;
    CHECK(aw->shape.rank == 4 && aw->shape.d[0] == 3 && aw->shape.d[1] == 2);
    /* The adapters are initialised (He), not zero. */
    double s2 = 0;
    for (size_t k = 0; k < aw->numel; k++) s2 += aw->data[k] * aw->data[k];
    CHECK(s2 > 0.01);
    float *before = malloc(m->n_params * sizeof *before);
    memcpy(before, m->params, m->n_params * sizeof *before);
    kd_step_result r0 = step(&r, 1.0f);
    for (size_t k = 0; k < 4; k++) CHECK(r0.loss.term[k] > 0);
    float *grad = malloc(m->n_params * sizeof *grad);
    for (size_t k = 0; k < m->n_params; k++) grad[k] = before[k] - m->params[k];
    memcpy(m->params, before, m->n_params * sizeof *before);
    kd_tensor *c1 = kd_model_tensor(m, "c1.weight");
    const size_t probe[] = {aw->offset + 1, aw->offset + 4, ab->offset + 2, aw1->offset + 3,
                            c1->offset + 0, c1->offset + 7, c1->offset + 13};
    for (size_t k = 0; k < sizeof probe / sizeof probe[0]; k++) {
        const size_t p = probe[k];
        const float h = 1e-3f, p0 = m->params[p];
        m->params[p] = p0 + h;
        const double up = step(&r, 0.0f).loss.total;
        m->params[p] = p0 - h;
        const double dn = step(&r, 0.0f).loss.total;
        m->params[p] = p0;
        const double fd = (up - dn) / ((double)(p0 + h) - (double)(p0 - h));
        CHECK(fabs(fd) > 1e-5);  /* each probe is a real dependence */
        CHECK_CLOSE(grad[p], fd, 2e-5, 2e-2);
    }
    free(before);
    free(grad);
    rig_free(&r);
}

/* Steps on one batch with a feature loss alone shrink it: the gradient is a descent direction
 * for the adapter and the student together. */
static void check_term_shrinks(kd_loss_type type, float lr) {
    kd_loss_list l = {0};
    l.n = 1;
    l.e[0] = (kd_loss_entry){.type = type, .weight = 1.0};
    strcpy(l.e[0].student, "c1");
    strcpy(l.e[0].teacher, "t1");
    rig r;
    rig_init(&r, &l);
    const double first = step(&r, lr).loss.term[0];
    double last = first;
    for (int i = 0; i < 60; i++) last = step(&r, lr).loss.term[0];
    if (!(last < 0.5 * first))
        kd_test_fail(__FILE__, __LINE__, "%s: %.6g after 60 steps from %.6g",
                     kd_loss_type_info(type)->name, last, first);
    rig_free(&r);
}

KD_TEST(feature_train_steps_shrink_the_hint_and_at_terms) {
    check_term_shrinks(KD_LOSS_HINT, 0.2f);
    check_term_shrinks(KD_LOSS_AT, 2.0f);
}

/* A feature entry of weight 0 beside ce alone: the teacher does not run, the entry reports 0
 * and the step stays finite; a second trainer on the same model keeps its adapter. */
KD_TEST(feature_train_weight_zero_entry_idles_and_adapters_are_kept) {
    kd_loss_list l = {0};
    l.n = 2;
    l.e[0] = (kd_loss_entry){.type = KD_LOSS_CE, .weight = 1.0};
    l.e[1] = (kd_loss_entry){.type = KD_LOSS_HINT, .weight = 0.0};
    strcpy(l.e[1].student, "c1");
    strcpy(l.e[1].teacher, "t1");
    rig r;
    rig_init(&r, &l);
    CHECK(!r.tr.use_teacher);
    kd_step_result res = step(&r, 0.1f);
    CHECK(isfinite(res.loss.total) && res.loss.term[0] > 0 && res.loss.term[1] == 0.0);
    kd_tensor *aw = kd_model_tensor(&r.s, "adapters.hint.weight");
    CHECK(aw != NULL);
    const size_t n_params = r.s.n_params;
    const float w0 = aw ? aw->data[0] : 0;
    kd_trainer_setup s = r.tr.s;
    kd_trainer_free(&r.tr);
    kd_err err;
    CHECK_EQ_INT(kd_trainer_init(&r.tr, &s, &err), KD_OK);
    CHECK_EQ_INT(r.s.n_params, n_params);
    aw = kd_model_tensor(&r.s, "adapters.hint.weight");
    CHECK(aw && aw->data[0] == w0);
    rig_free(&r);
}

/* The trainer's refusals: a value the model lacks (with a suggestion), shapes that do not fit,
 * a member out of range. */
KD_TEST(feature_train_setup_refuses_unknown_values_and_shapes) {
    kd_model s = {0}, t = {0};
    build(&s, STUDENT, 1, 1);
    build(&t, TEACHER, 0, 2);
    kd_optim_cfg oc = kd_optim_defaults(KD_OPT_SGD);
    kd_sched_cfg sc = {.kind = KD_SCHED_CONSTANT, .base_lr = 0.1f, .total_steps = 10};
    kd_trainer_setup su = {0};
    su.model = &s;
    su.teacher = &t;
    su.optim = &oc;
    su.sched = &sc;
    su.batch_cap = B;
    kd_loss_list l = {0};
    l.n = 1;
    l.e[0] = (kd_loss_entry){.type = KD_LOSS_HINT, .weight = 1.0};
    su.losses = &l;
    static const struct {
        kd_loss_type type;
        const char *student, *teacher;
        size_t member;
        const char *msg;
    } cases[] = {
        {KD_LOSS_HINT, "c", "t1", 0, "distill.losses[0].student: the student has no layer "
                                     "output \"c\" (did you mean \"c1\"?)"},
        {KD_LOSS_HINT, "c1", "t2", 0, "distill.losses[0].teacher: the teacher has no layer "
                                      "output \"t2\" (did you mean \"t1\"?)"},
        {KD_LOSS_HINT, "c1", "2", 0, "distill.losses[0]: the student value is [2, 4, 4] and "
                                     "the teacher's [48]"},
        {KD_LOSS_AT, "4", "2", 0, "expected both [C, H, W]"},
        {KD_LOSS_HINT, "c1", "t1", 1, "distill.losses[0].member: 1 is out of range (0 to 0)"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        kd_trainer tr;
        kd_err err = {0};
        l.e[0].type = cases[k].type;
        strcpy(l.e[0].student, cases[k].student);
        strcpy(l.e[0].teacher, cases[k].teacher);
        l.e[0].member = cases[k].member;
        CHECK_EQ_INT(kd_trainer_init(&tr, &su, &err), KD_EUSAGE);
        CHECK_CONTAINS(err.msg, cases[k].msg);
        kd_trainer_free(&tr);
    }
    kd_model_free(&s);
    kd_model_free(&t);
}

/* ---- Runs from the command line ---- */

#define TINY "configs/tiny.json"

static char g_out[65536];

/* `ENV distill ARGS` (env may be ""); output in g_out; the exit status. */
#define distill(...) kd_test_distillf(g_out, sizeof g_out, __VA_ARGS__)

#define TEACHER_AT "--set 'teacher={\"checkpoint\":\"%s/teacher/best.safetensors\"}' "
/* kl and ce as distill's defaults, and a hint from the student's hidden layer ([64]) to the
 * teacher's ([128], given by index): a dense adapter 64 -> 128. */
#define HINT_LOSSES                                                                          \
    "--set 'distill={\"losses\":[{\"type\":\"kl\",\"weight\":0.9},{\"type\":\"ce\","      \
    "\"weight\":0.1},{\"type\":\"hint\",\"student\":\"hidden\",\"teacher\":0,"              \
    "\"weight\":0.5}]}' "
#define NAMED_STUDENT                                                                        \
    "--set 'model.layers=[{\"type\":\"dense\",\"units\":64,\"name\":\"hidden\"},"           \
    "{\"type\":\"relu\"},{\"type\":\"dense\",\"units\":10}]' "

/* Every tensor of two safetensors files, bit for bit. */
static void check_same_tensors(const char *a, const char *b) {
    kd_st_file fa = {0}, fb = {0};
    kd_err err;
    CHECK_EQ_INT(kd_st_read(&fa, a, &err), KD_OK);
    CHECK_EQ_INT(kd_st_read(&fb, b, &err), KD_OK);
    CHECK_EQ_INT(fa.n_tensors, fb.n_tensors);
    for (size_t i = 0; i < fa.n_tensors; i++) {
        const kd_st_tensor *t = kd_st_find(&fb, fa.tensors[i].name);
        const size_t nb = (size_t)(fa.tensors[i].end - fa.tensors[i].begin);
        if (!t || (size_t)(t->end - t->begin) != nb || memcmp(t->data, fa.tensors[i].data, nb))
            kd_test_fail(__FILE__, __LINE__, "tensor %s differs between %s and %s",
                         fa.tensors[i].name, a, b);
    }
    kd_st_free(&fa);
    kd_st_free(&fb);
}

/* Whether the file at path contains the bytes s. */
static int file_contains(const char *path, const char *s) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    static char buf[1 << 22];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    for (size_t i = 0; i + strlen(s) <= n; i++)
        if (!memcmp(buf + i, s, strlen(s))) return 1;
    return 0;
}

KD_TEST(feature_train_hint_run_resumes_to_the_bit_and_exports_drop_adapters) {
    if (!kd_test_have_tiny()) return;
    const char *d = kd_test_tmpdir();
    CHECK_EQ_INT(distill("", "train --config " TINY " --out %s/teacher --epochs 1 --quiet --set "
                         "'model.layers=[{\"type\":\"dense\",\"units\":128},{\"type\":\"relu\"},"
                         "{\"type\":\"dense\",\"units\":10}]'", d), 0);
    CHECK_EQ_INT(distill("", "train --config " TINY " --out %s/full " NAMED_STUDENT TEACHER_AT
                         HINT_LOSSES, d, d), 0);
    CHECK_CONTAINS(g_out, ", hint ");
    kd_epoch_metrics *rows = NULL;
    size_t n = 0;
    kd_err err;
    char p[1024], q[1024];
    snprintf(p, sizeof p, "%s/full/metrics.jsonl", d);
    CHECK_EQ_INT(kd_metrics_read(p, &rows, &n, &err), KD_OK);
    CHECK(n == 2 && rows[0].n_terms == 3 && rows[1].n_terms == 3);
    if (n == 2 && rows[0].n_terms == 3) {
        CHECK(strcmp(rows[0].keys[2], "loss.hint") == 0);
        CHECK(rows[1].term[2] < rows[0].term[2]);  /* the hint term falls */
        /* The total is the weighted sum of the terms. */
        CHECK_CLOSE(rows[1].loss, 0.9 * rows[1].term[0] + 0.1 * rows[1].term[1] +
                    0.5 * rows[1].term[2], 1e-9, 1e-6);
    }
    free(rows);
    /* The checkpoint keeps the adapter and its moments. */
    kd_st_file f = {0};
    snprintf(p, sizeof p, "%s/full/last.safetensors", d);
    CHECK_EQ_INT(kd_st_read(&f, p, &err), KD_OK);
    const kd_st_tensor *w = kd_st_find(&f, "adapters.hint.weight");
    CHECK(w && w->rank == 2 && w->shape[0] == 128 && w->shape[1] == 64);
    CHECK(kd_st_find(&f, "adapters.hint.bias") && kd_st_find(&f, "optim.m.adapters.hint.weight"));
    kd_st_free(&f);
    /* Stopped mid-epoch 2 and resumed: the same checkpoint to the bit, adapter included. */
    CHECK_EQ_INT(distill("KD_TRAIN_STOP_AFTER_STEPS=17", "train --config " TINY " --out %s/cut "
                         "--quiet " NAMED_STUDENT TEACHER_AT HINT_LOSSES, d, d), 130);
    CHECK_EQ_INT(distill("", "train --resume %s/cut --quiet", d), 0);
    snprintf(q, sizeof q, "%s/cut/last.safetensors", d);
    check_same_tensors(p, q);
    /* Every export and evaluation drop or ignore it. */
    static const char *const exports[] = {"x.safetensors --dtype f16", "y.safetensors --dtype "
                                          "int8", "z.onnx --format onnx", "m.h --format c"};
    static const char *const outs[] = {"x.safetensors", "y.safetensors", "z.onnx", "m.h"};
    for (size_t k = 0; k < 4; k++) {
        CHECK_EQ_INT(distill("", "export %s %s/%s", p, d, exports[k]), 0);
        snprintf(q, sizeof q, "%s/%s", d, outs[k]);
        CHECK_EQ_INT(file_contains(q, "adapters"), 0);
    }
    /* eval loads it as teachers do (kd_ckpt_load, no extras allowed but adapters.*). */
    CHECK_EQ_INT(distill("", "eval %s --config " TINY, p), 0);
    /* A resume whose checkpoint lacks the adapter is refused, naming it. */
    CHECK_EQ_INT(distill("", "train --config " TINY " --out %s/plain --epochs 1 --quiet "
                         NAMED_STUDENT TEACHER_AT, d, d), 0);
    CHECK_EQ_INT(distill("", "train --config " TINY " --out %s/plain --resume "
                         "%s/plain/last.safetensors --epochs 2 --quiet " NAMED_STUDENT TEACHER_AT
                         HINT_LOSSES, d, d, d), 3);
    CHECK_CONTAINS(g_out, "adapters.hint.weight: missing");
    /* A value the student lacks, by name, with a suggestion (exit 2). */
    CHECK_EQ_INT(distill("", "train --config " TINY " --out %s/bad " NAMED_STUDENT TEACHER_AT
                         "--set 'distill={\"losses\":[{\"type\":\"hint\",\"student\":\"hiden\","
                         "\"teacher\":0}]}'", d, d), 2);
    CHECK_CONTAINS(g_out, "distill.losses[0].student: the student has no layer output "
                   "\"hiden\" (did you mean \"hidden\"?)");
}

/* Refusals of the config itself (exit 2), before any teacher is read. */
KD_TEST(feature_train_config_refuses_feature_losses_without_an_online_teacher) {
    if (!kd_test_have_tiny()) return;
    const char *d = kd_test_tmpdir();
    static const struct {
        const char *teacher, *loss, *msg;
    } cases[] = {
        {"{\"checkpoint\":\"t.safetensors\",\"cache\":{\"path\":\"c.safetensors\"}}",
         "{\"type\":\"hint\",\"student\":\"0\",\"teacher\":\"0\"}",
         "distill.losses[0].type: \"hint\" reads the teacher's inner values, which a "
         "teacher.cache does not keep: feature losses need the teacher run online"},
        {"{\"logits\":\"l.safetensors\"}", "{\"type\":\"at\",\"student\":0,\"teacher\":0}",
         "\"at\" reads the teacher's inner values, which imported teacher.logits does not "
         "keep: feature losses need the teacher run online"},
        {"{\"ensemble\":[{\"checkpoint\":\"a.safetensors\"},{\"checkpoint\":\"b.safetensors\"}]}",
         "{\"type\":\"hint\",\"student\":0,\"teacher\":0}",
         "distill.losses[0].member: missing: the teacher is an ensemble of 2"},
        {"{\"ensemble\":[{\"checkpoint\":\"a.safetensors\"},{\"checkpoint\":\"b.safetensors\"}]}",
         "{\"type\":\"hint\",\"student\":0,\"teacher\":0,\"member\":2}",
         "distill.losses[0].member: 2 is out of range: the teacher has 2 members (0 to 1)"},
        {"{\"checkpoint\":\"t.safetensors\"}", "{\"type\":\"hint\",\"teacher\":0}",
         "distill.losses[0].student: missing"},
        {"{\"checkpoint\":\"t.safetensors\"}", "{\"type\":\"hint\",\"student\":-1,\"teacher\":0}",
         "distill.losses[0].student: expected a layer's name or index"},
        {"{\"checkpoint\":\"t.safetensors\"}", "{\"type\":\"kl\",\"student\":\"0\"}",
         "not used by type \"kl\""},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        CHECK_EQ_INT(distill("", "train --config " TINY " --out %s/r%zu --set 'teacher=%s' "
                             "--set 'distill={\"losses\":[%s]}'", d, k, cases[k].teacher,
                             cases[k].loss), 2);
        CHECK_CONTAINS(g_out, cases[k].msg);
    }
    /* distill logits writes a cache: a config with a feature loss is refused the same way. */
    CHECK_EQ_INT(distill("", "logits --config " TINY " --set 'teacher=%s' --set 'distill="
                         "{\"losses\":[%s]}'", cases[0].teacher, cases[0].loss), 2);
    CHECK_CONTAINS(g_out, "feature losses need the teacher run online");
}
