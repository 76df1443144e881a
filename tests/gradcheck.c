/* gradcheck.c - central-difference gradient checks of whole layer stacks, and the layer
 * hyperparameter probe (see kd_gradcheck.h). */
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kd_gradcheck.h"
#include "kd_test.h"

#define GC_MAX_PER_TENSOR 64
#define GC_STEP 1e-2
#define GC_N_STEPS 6

typedef struct {
    kd_model *m;
    const float *x;      /* (B, numel(input)) */
    const float *r;      /* (B, n_classes) loss weights */
    size_t B;
    uint64_t drop_seed;  /* dropout masks are redrawn from this seed before every forward */
    kd_rng rng;
    kd_ctx ctx;
} gc_state;

/* loss = sum_i r_i * logits_i, accumulated in double. */
static double gc_loss(gc_state *s) {
    kd_rng_seed(&s->rng, s->drop_seed);
    const float *z = kd_model_forward(s->m, s->x, s->B, &s->ctx);
    double L = 0.0;
    for (size_t i = 0; i < s->B * s->m->n_classes; i++) L += (double)s->r[i] * (double)z[i];
    return L;
}

/* Central difference of the loss in *p with step h, dividing by the step actually taken. */
static double gc_numeric(gc_state *s, float *p, double h) {
    float saved = *p, up = (float)(saved + h), down = (float)(saved - h);
    *p = up;
    double lp = gc_loss(s);
    *p = down;
    double lm = gc_loss(s);
    *p = saved;
    return (lp - lm) / ((double)up - (double)down);
}

static double gc_rel(double a, double b) {
    double den = fabs(a) + fabs(b);
    return fabs(a - b) / (den > 1e-3 ? den : 1e-3);
}

typedef struct {
    size_t checked, skipped;
    int failures;
} gc_count;

/* Checks up to GC_MAX_PER_TENSOR elements of one tensor.
 *
 * float32 forces a compromise on the step: roundoff in the logits (~1e-7 of the loss) divided
 * by 2h swamps small gradients when h is small, while a large h straddles ReLU-type kinks. So
 * the numeric derivative is taken at GC_N_STEPS steps h = 1e-2, 5e-3, 2.5e-3, 1.25e-3 (largest
 * first: least roundoff). The element passes as soon as one estimate agrees with the analytic
 * value within tol; every estimate approximates the true derivative, so a wrong gradient still
 * fails. If none agrees and the estimates also disagree among themselves (by more than tol),
 * a kink lies within the steps: the element is skipped and counted. If the estimates agree
 * with each other but not with the analytic value, that is a failure. */
static void gc_tensor(gc_state *s, const char *name, float *data, const float *analytic, size_t n,
                      double tol, const char *json, gc_count *c) {
    size_t count = n < GC_MAX_PER_TENSOR ? n : GC_MAX_PER_TENSOR;
    for (size_t k = 0; k < count; k++) {
        size_t idx = k * n / count;
        double a = analytic[idx], num[GC_N_STEPS], lo = 0, hi = 0;
        int matched = 0, j;
        double h = GC_STEP;
        for (j = 0; j < GC_N_STEPS && !matched; j++, h /= 2) {
            num[j] = gc_numeric(s, &data[idx], h);
            matched = gc_rel(a, num[j]) <= tol;
            lo = j == 0 || num[j] < lo ? num[j] : lo;
            hi = j == 0 || num[j] > hi ? num[j] : hi;
        }
        c->checked++;
        if (matched) continue;
        if (gc_rel(lo, hi) > tol) {
            c->skipped++;
            continue;
        }
        if (c->failures == 0) kd_test_fail(__FILE__, __LINE__, "gradcheck of %s", json);
        c->failures++;
        kd_test_fail(__FILE__, __LINE__,
                     "  %s[%zu]: analytic %.7g, numeric %.7g (h = %g) .. %.7g (h = %g), rel. error %.3g > %g",
                     name, idx, a, num[0], GC_STEP, num[GC_N_STEPS - 1], h * 2, gc_rel(a, num[0]), tol);
    }
}

double kd_test_layer_field(const kd_layer *l, const char *field) {
    double v = NAN;
    cJSON *obj = cJSON_CreateObject();
    if (obj && l->ops->describe) l->ops->describe(l, obj);
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, field);
    if (cJSON_IsNumber(it)) v = it->valuedouble;
    if (cJSON_IsBool(it)) v = cJSON_IsTrue(it) ? 1.0 : 0.0;
    cJSON_Delete(obj);
    return v;
}

int kd_gradcheck(const kd_shape *input, const char *layers_json, size_t B, uint64_t seed,
                 int training, double tol) {
    int failures = 0;
    kd_model m;
    kd_err err;
    kd_rng rng;
    gc_state s;
    gc_count c = {0, 0, 0};
    float *x = NULL, *r = NULL, *grads = NULL, **dx = NULL, *dinput = NULL;
    memset(&m, 0, sizeof m);
    if (kd_model_init(&m, input, layers_json, 1, &err) || kd_model_reserve(&m, B, &err)) {
        kd_test_fail(__FILE__, __LINE__, "gradcheck: %s: %s", layers_json, err.msg);
        failures = 1;
        goto cleanup;
    }

    /* Proper-scale weights from the layers' own init; constant-initialised tensors (biases 0,
     * batch-norm weight 1) get noise so their paths are exercised away from trivial values. */
    kd_rng_seed(&rng, seed);
    kd_model_init_weights(&m, &rng, KD_INIT_HE);
    for (size_t t = 0; t < m.n_tensors; t++) {
        kd_tensor *tt = &m.tensors[t];
        if (tt->kind != KD_TENSOR_PARAM) continue;
        int constant = 1;
        for (size_t i = 1; i < tt->numel; i++) constant &= tt->data[i] == tt->data[0];
        if (constant)
            for (size_t i = 0; i < tt->numel; i++) tt->data[i] += kd_rng_uniform(&rng) - 0.5f;
    }
    size_t n_in = B * kd_shape_numel(input), n_out = B * m.n_classes;
    x = malloc(n_in * sizeof *x);
    r = malloc(n_out * sizeof *r);
    grads = malloc((m.n_params ? m.n_params : 1) * sizeof *grads);
    dx = calloc(m.n_layers, sizeof *dx);
    dinput = malloc(n_in * sizeof *dinput);
    if (!x || !r || !grads || !dx || !dinput) {
        kd_test_fail(__FILE__, __LINE__, "gradcheck: out of memory");
        failures = 1;
        goto cleanup;
    }
    for (size_t i = 0; i < n_in; i++) x[i] = 2.0f * kd_rng_uniform(&rng) - 1.0f;
    for (size_t i = 0; i < n_out; i++) r[i] = 2.0f * kd_rng_uniform(&rng) - 1.0f;
    for (size_t i = 0; i < m.n_layers; i++) {
        dx[i] = malloc(B * kd_shape_numel(&m.layers[i].in) * sizeof **dx);
        if (!dx[i]) {
            kd_test_fail(__FILE__, __LINE__, "gradcheck: out of memory");
            failures = 1;
            goto cleanup;
        }
    }
    s = (gc_state){&m, x, r, B, seed ^ 0x9e3779b97f4a7c15ull, {{0}},
                   {training, NULL, NULL, 0, 0, 0}};
    s.ctx.rng = &s.rng;

    /* Analytic: the model's backward through every layer down to the input's gradient. */
    gc_loss(&s);
    kd_model_zero_grad(&m);
    kd_model_backward_to(&m, x, r, dinput, B, &s.ctx);
    memcpy(grads, m.grads, m.n_params * sizeof *grads);

    /* kd_model_backward must agree (it skips work below the first trainable layer, which must
     * not change any parameter gradient). */
    gc_loss(&s);
    kd_model_zero_grad(&m);
    kd_model_backward(&m, x, r, B, &s.ctx);
    if (!CHECK_FLOATS(m.grads, grads, m.n_params, 1e-6, 1e-5)) failures++;

    /* A chain also runs every layer's backward directly (no fusion, no shared buffers): the
     * same gradients. */
    int chain = 1;
    for (size_t i = 0; i < m.n_layers; i++) {
        size_t n_src;
        const size_t *src = kd_model_layer_inputs(&m, i, &n_src);
        chain &= n_src == 1 && src[0] == i;
    }
    if (chain) {
        gc_loss(&s);
        kd_model_zero_grad(&m);
        const float *dy = r;
        for (size_t i = m.n_layers; i-- > 0;) {
            kd_layer *l = &m.layers[i];
            l->ops->backward(l, i ? m.acts[i - 1] : x, m.acts[i], dy, dx[i], B, &s.ctx);
            dy = dx[i];
        }
        if (!CHECK_FLOATS(m.grads, grads, m.n_params, 1e-6, 1e-5)) failures++;
        if (!CHECK_FLOATS(dx[0], dinput, n_in, 1e-6, 1e-5)) failures++;
    }

    for (size_t t = 0; t < m.n_tensors; t++) {
        kd_tensor *tt = &m.tensors[t];
        if (tt->kind != KD_TENSOR_PARAM) continue;
        gc_tensor(&s, tt->name, tt->data, grads + tt->offset, tt->numel, tol, layers_json, &c);
    }
    gc_tensor(&s, "input", x, dinput, n_in, tol, layers_json, &c);
    failures += c.failures;
    if (c.skipped * 10 > c.checked) {
        kd_test_fail(__FILE__, __LINE__, "gradcheck of %s: %zu of %zu elements skipped as kinks",
                     layers_json, c.skipped, c.checked);
        failures++;
    }

cleanup:
    if (dx)
        for (size_t i = 0; i < m.n_layers; i++) free(dx[i]);
    free(dx);
    free(dinput);
    free(grads);
    free(r);
    free(x);
    kd_model_free(&m);
    return failures;
}
