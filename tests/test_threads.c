/* test_threads.c - the one OpenMP pool (docs/design.md): the OpenBLAS loaded is its OpenMP
 * build; threads 0 means the default count, and a default run takes the same path (the same
 * one-thread products, the same weights) as one asking for that count; every parallel loop
 * gives the same bits on 1, 2, 3 and 4 threads, each layer on its own and whole training steps
 * (sgemm included), and two runs at one count are identical. The parallel threshold is lowered
 * to 1 float so every parallel path runs on these tiny shapes. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../src/core/test_hooks.h"
#include "../src/nn/layer_impl.h"
#include "kd_gemm.h"
#include "kd_safetensors.h"
#include "kd_test.h"
#include "kd_threads.h"
#include "kd_train.h"

#define MAX_THREADS 4

KD_TEST(threads_blas_is_the_openmp_build) {
    /* openblas_get_parallel() == 2: the rpath took the OpenMP build, not the system default. */
    CHECK(kd_blas_is_openmp());
}

KD_TEST(threads_zero_means_the_default_count) {
    const int def = kd_threads_set(0);
    CHECK(def >= 1);
    if (!getenv("OMP_NUM_THREADS")) CHECK_EQ_INT(def, omp_get_num_procs());
    CHECK_EQ_INT(kd_threads_set(3), 3);
    CHECK_EQ_INT(kd_threads_get(), 3);
    CHECK_EQ_INT(kd_threads_set(0), def);  /* back to the default, not to "unchanged" */
    CHECK_EQ_INT(kd_threads_get(), def);
}

/* One layer's forward (training mode) and backward on a fixed batch: outputs, input gradient,
 * parameter gradients and buffers, concatenated into out (n floats). */
#define LB 6
static size_t run_layer(const char *spec, float *out, size_t cap) {
    char layers[256];
    snprintf(layers, sizeof layers, "[%s]", spec);
    kd_model m = {0};
    kd_err err;
    kd_shape in = {3, {4, 10, 10}};
    size_t n = 0;
    if (kd_model_init(&m, &in, layers, 1, &err) != KD_OK || kd_model_reserve(&m, LB, &err) != KD_OK) {
        kd_test_fail(__FILE__, __LINE__, "%s: %s", spec, err.msg);
        kd_model_free(&m);
        return 0;
    }
    kd_rng rng;
    kd_rng_seed(&rng, 5);
    kd_model_init_weights(&m, &rng, KD_INIT_HE);
    for (size_t i = 0; i < m.n_params; i++) m.grads[i] = 0.0f;
    kd_layer *l = &m.layers[0];
    const size_t nx = LB * 400, ny = LB * kd_shape_numel(&l->out);
    float *x = kd_alloc_floats(nx), *dy = kd_alloc_floats(ny), *dx = kd_alloc_floats(nx);
    for (size_t i = 0; i < nx; i++) x[i] = kd_rng_normal(&rng);
    for (size_t i = 0; i < ny; i++) dy[i] = kd_rng_normal(&rng);
    kd_ctx ctx = {1, &rng, m.workspace, 0, 0, 0};
    l->ops->forward(l, x, m.acts[0], LB, &ctx);
    l->ops->backward(l, x, m.acts[0], dy, dx, LB, &ctx);
    const float *parts[] = {m.acts[0], dx, m.grads, m.buffers};
    const size_t sizes[] = {ny, nx, m.n_params, m.n_buffers};
    for (int k = 0; k < 4; k++) {
        KD_ASSERT(n + sizes[k] <= cap);
        if (sizes[k]) memcpy(out + n, parts[k], sizes[k] * sizeof *out);
        n += sizes[k];
    }
    kd_free_aligned(x);
    kd_free_aligned(dy);
    kd_free_aligned(dx);
    kd_model_free(&m);
    return n;
}

KD_TEST(threads_each_layer_gives_the_same_bits_on_any_thread_count) {
    static const char *const specs[] = {
        "{\"type\":\"batchnorm\"}",
        "{\"type\":\"maxpool2d\",\"kernel\":2}",
        "{\"type\":\"maxpool2d\",\"kernel\":3,\"stride\":1,\"padding\":1}",
        "{\"type\":\"avgpool2d\",\"kernel\":3,\"stride\":2,\"padding\":1}",
        "{\"type\":\"global_avgpool\"}",
        "{\"type\":\"relu\"}",
        "{\"type\":\"leaky_relu\"}",
        "{\"type\":\"tanh\"}",
        "{\"type\":\"sigmoid\"}",
        "{\"type\":\"gelu\"}",
        "{\"type\":\"dropout\",\"p\":0.3}",
        "{\"type\":\"flatten\"}",
        "{\"type\":\"layernorm\"}",
        "{\"type\":\"conv2d\",\"channels\":5,\"kernel\":3,\"padding\":1}",
        "{\"type\":\"conv2d\",\"channels\":3,\"kernel\":[3,2],\"stride\":2,\"padding\":1}",
    };
    const size_t cap = 4 * LB * 400 + 4096;
    float *ref = malloc(cap * sizeof *ref), *got = malloc(cap * sizeof *got);
    const int def = kd_threads_get();
    kd_par_min = 1;
    for (size_t s = 0; s < sizeof specs / sizeof *specs; s++) {
        kd_threads_set(1);
        const size_t n = run_layer(specs[s], ref, cap);
        CHECK(n > 0);
        for (int t = 2; t <= MAX_THREADS; t++) {
            kd_threads_set(t);
            CHECK_EQ_INT(run_layer(specs[s], got, cap), n);
            if (memcmp(ref, got, n * sizeof *ref) != 0)
                kd_test_fail(__FILE__, __LINE__, "%s: %d threads differ from 1 thread", specs[s], t);
        }
    }
    kd_par_min = KD_PAR_MIN;
    kd_threads_set(def);
    free(ref);
    free(got);
}

/* A small CNN with every parallel kernel on [3, 12, 12] inputs (a fused batchnorm -> maxpool ->
 * relu group, and a batch norm on its own); its dense layer makes more than two optimizer
 * chunks of parameters. */
#define SB 8
#define SD (3 * 12 * 12)
#define CNN                                                                                \
    "[{\"type\":\"conv2d\",\"channels\":8,\"kernel\":3,\"padding\":1},"                    \
    "{\"type\":\"batchnorm\"},{\"type\":\"maxpool2d\",\"kernel\":2},{\"type\":\"relu\"},"  \
    "{\"type\":\"conv2d\",\"channels\":8,\"kernel\":3,\"stride\":2,\"padding\":1},"        \
    "{\"type\":\"batchnorm\"},{\"type\":\"leaky_relu\"},{\"type\":\"flatten\"},"            \
    "{\"type\":\"dropout\",\"p\":0.2},"                                                   \
    "{\"type\":\"dense\",\"units\":600},{\"type\":\"gelu\"},{\"type\":\"layernorm\"},"     \
    "{\"type\":\"dense\",\"units\":5}]"

/* Three training steps on t threads from seed 3; params, moments and buffers into out. */
static size_t run_steps(int t, const kd_optim_cfg *oc, float *out, size_t cap) {
    kd_model m = {0};
    kd_err err;
    kd_shape in = {3, {3, 12, 12}};
    kd_trainer tr = {0};
    size_t n = 0;
    kd_threads_set(t);
    kd_rng rng;
    kd_rng_seed(&rng, 3);
    float x[SB * SD];
    int32_t y[SB];
    for (size_t i = 0; i < SB * SD; i++) x[i] = kd_rng_normal(&rng);
    for (size_t i = 0; i < SB; i++) y[i] = (int32_t)(i % 5);
    CHECK_EQ_INT(kd_model_init(&m, &in, CNN, 1, &err), KD_OK);
    kd_model_init_weights(&m, &rng, KD_INIT_HE);
    kd_sched_cfg sc = {.kind = KD_SCHED_CONSTANT, .base_lr = 0.01f};
    kd_trainer_setup s = {0};
    s.model = &m;
    s.optim = oc;
    s.sched = &sc;
    s.batch_cap = SB;
    s.rng = &rng;
    CHECK_EQ_INT(kd_trainer_init(&tr, &s, &err), KD_OK);
    for (int k = 0; k < 3 && !kd_test_failed_now(); k++)
        CHECK_EQ_INT(kd_trainer_step(&tr, x, y, NULL, SB, NULL, &err), KD_OK);
    CHECK(m.n_params > 2 * 16384);
    const float *parts[] = {m.params, m.m, m.v, m.buffers};
    const size_t sizes[] = {m.n_params, m.n_params, m.n_params, m.n_buffers};
    for (int k = 0; k < 4; k++) {
        KD_ASSERT(n + sizes[k] <= cap);
        memcpy(out + n, parts[k], sizes[k] * sizeof *out);
        n += sizes[k];
    }
    kd_trainer_free(&tr);
    kd_model_free(&m);
    return n;
}

/* Adam with dropout, then SGD with momentum and clipping (the norm-first path). */
KD_TEST(threads_training_steps_give_the_same_bits_on_any_thread_count) {
    kd_optim_cfg adam = kd_optim_defaults(KD_OPT_ADAM), sgd = kd_optim_defaults(KD_OPT_SGD);
    sgd.momentum = 0.9f;
    sgd.clip_norm = 0.5f;
    const kd_optim_cfg *cfgs[] = {&adam, &sgd};
    const size_t cap = 4 * 50000;
    float *ref = malloc(cap * sizeof *ref), *got = malloc(cap * sizeof *got);
    const int def = kd_threads_get();
    kd_par_min = 1;
    for (int c = 0; c < 2; c++) {
        const size_t n = run_steps(1, cfgs[c], ref, cap);
        CHECK(n > 0);
        /* 2 twice: the same count repeats itself; the others match one thread. */
        const int counts[] = {2, 2, 3, 4};
        for (int k = 0; k < 4; k++) {
            CHECK_EQ_INT(run_steps(counts[k], cfgs[c], got, cap), n);
            if (memcmp(ref, got, n * sizeof *ref) != 0)
                kd_test_fail(__FILE__, __LINE__, "%s: weights after 3 steps on %d threads differ "
                             "from 1 thread", c ? "sgd+clip" : "adam", counts[k]);
        }
    }
    kd_par_min = KD_PAR_MIN;
    kd_threads_set(def);
    free(ref);
    free(got);
}

/* The "threads: N" note of a run. */
static int g_noted;
static void on_note(const kd_train_event *ev, void *user) {
    (void)user;
    if (ev->kind == KD_EV_NOTE && strncmp(ev->msg, "threads: ", 9) == 0) g_noted = atoi(ev->msg + 9);
}

/* A run with train.threads = threads (0: the default) into dir/name; the number of products it
 * ran on one thread by the small-products rule. */
static unsigned long train_csv(const char *dir, const char *name, int threads, int *noted) {
    char text[1024], out[1024];
    snprintf(text, sizeof text,
             "{\"data\": {\"train\": {\"format\": \"csv\", \"path\": \"%s/rows.csv\", "
             "\"header\": false}, \"validation_split\": 0},"
             " \"model\": {\"layers\": [{\"type\": \"dense\", \"units\": 32}, {\"type\": \"relu\"},"
             " {\"type\": \"dense\", \"units\": 3}]},"
             " \"train\": {\"epochs\": 2, \"batch_size\": 8, \"seed\": 4, \"threads\": %d}}",
             dir, threads);
    snprintf(out, sizeof out, "%s/%s", dir, name);
    kd_config cfg = {0};
    kd_err err;
    CHECK_EQ_INT(kd_config_parse(&cfg, text, strlen(text), "t.json", dir, NULL, 0, &err), KD_OK);
    kd_train_opts opts = {0};
    opts.cfg = &cfg;
    opts.out_dir = out;
    opts.progress = on_note;
    kd_train_result res;
    g_noted = -1;
    const unsigned long before = kd_hook_gemm_one_thread;
    CHECK_EQ_INT(kd_train_run(&opts, &res, &err), KD_OK);
    *noted = g_noted;
    CHECK_EQ_INT(res.threads, g_noted);
    kd_config_free(&cfg);
    return kd_hook_gemm_one_thread - before;
}

/* The bug this guards: train.threads 0 used to leave the thread setup out, so the one-thread
 * rule for small products never ran in a default run. */
KD_TEST(threads_default_run_takes_the_same_path_as_asking_for_every_core) {
    const char *dir = kd_test_tmpdir();
    char text[8192], path[1024], a[1100], b[1100];
    size_t len = 0;
    kd_rng rng;
    kd_rng_seed(&rng, 9);
    for (int r = 0; r < 40; r++) {
        for (int c = 0; c < 16; c++)
            len += (size_t)snprintf(text + len, sizeof text - len, "%.4f,", (double)kd_rng_normal(&rng));
        len += (size_t)snprintf(text + len, sizeof text - len, "%d\n", r % 3);
    }
    snprintf(path, sizeof path, "%s/rows.csv", dir);
    CHECK(kd_test_write_file(path, text, len) == 0);
    const int def = kd_threads_set(0);
    kd_threads_set(1);  /* a count left over from elsewhere must not leak into the default */
    int n_default, n_explicit;
    unsigned long one_default = train_csv(dir, "default", 0, &n_default);
    unsigned long one_explicit = train_csv(dir, "explicit", def, &n_explicit);
    CHECK_EQ_INT(n_default, def);
    CHECK_EQ_INT(n_explicit, def);
    CHECK_EQ_INT(one_default, one_explicit);
    if (def > 1) CHECK(one_default > 0);  /* every product here is small */
    snprintf(a, sizeof a, "%s/default/last.safetensors", dir);
    snprintf(b, sizeof b, "%s/explicit/last.safetensors", dir);
    CHECK(kd_test_same_tensors(a, b));
    kd_threads_set(def);
}

/* A tiny output with a long reduction is cut into fixed pieces along K (gemm.c): it must still
 * be the product (against the double-precision loop, every transpose, beta 0 over garbage and
 * beta != 0), with the same bits on 1, 2 and 3 threads. */
KD_TEST(threads_split_k_product_matches_reference_on_any_thread_count) {
    enum { M = 5, N = 7, K = 20011 };
    float *a = malloc(M * K * sizeof *a), *b = malloc(K * N * sizeof *b);
    float c0[M * N], c[M * N], ref[M * N];
    kd_rng rng;
    kd_rng_seed(&rng, 17);
    for (size_t i = 0; i < M * K; i++) a[i] = kd_rng_normal(&rng);
    for (size_t i = 0; i < K * N; i++) b[i] = kd_rng_normal(&rng);
    for (size_t i = 0; i < M * N; i++) c0[i] = kd_rng_normal(&rng);
    const int def = kd_threads_get();
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int with_beta = 0; with_beta < 2; with_beta++) {
                const float beta = with_beta ? 0.25f : 0.0f;
                const size_t lda = ta ? M : K, ldb = tb ? K : N;
                memcpy(ref, c0, sizeof ref);
                kd_sgemm_ref(ta, tb, M, N, K, 0.5f, a, lda, b, ldb, beta, ref, N);
                float first[M * N];
                for (int t = 1; t <= 3; t++) {
                    kd_threads_set(t);
                    for (size_t i = 0; i < M * N; i++) c[i] = with_beta ? c0[i] : NAN;
                    kd_sgemm(ta, tb, M, N, K, 0.5f, a, lda, b, ldb, beta, c, N);
                    CHECK_FLOATS(c, ref, M * N, 2e-3, 1e-4);
                    if (t == 1) memcpy(first, c, sizeof first);
                    else if (memcmp(first, c, sizeof c) != 0)
                        kd_test_fail(__FILE__, __LINE__, "ta %d tb %d beta %g: %d threads differ "
                                     "from 1", ta, tb, (double)beta, t);
                }
            }
    kd_threads_set(def);
    free(a);
    free(b);
}

/* The largest OpenMP count any product of a forward was called with. */
static int g_max_team;
static void note_team(int ta, int tb, size_t M, size_t N, size_t K, int serial) {
    (void)ta, (void)tb, (void)M, (void)N, (void)K, (void)serial;
    const int t = omp_get_max_threads();
    if (t > g_max_team) g_max_team = t;
}

/* One sample through a small model runs on the calling thread alone (the team would only be
 * woken to wait), with the logits it gets in a batch; a batch still uses the team. The hook
 * sees the OpenMP count each product is called with (before the small-products rule). */
KD_TEST(threads_one_sample_forward_stays_on_the_calling_thread) {
    const int def = kd_threads_get();
    kd_threads_set(2);
    kd_model m = {0};
    kd_err err;
    kd_shape in = {3, {3, 12, 12}};
    CHECK_EQ_INT(kd_model_init(&m, &in, CNN, 0, &err), KD_OK);
    CHECK_EQ_INT(kd_model_reserve(&m, 64, &err), KD_OK);
    kd_rng rng;
    kd_rng_seed(&rng, 4);
    kd_model_init_weights(&m, &rng, KD_INIT_HE);
    float x[64 * SD], batch_z[64 * 5];
    for (size_t i = 0; i < 64 * SD; i++) x[i] = kd_rng_normal(&rng);
    kd_hook_gemm_shape = note_team;
    g_max_team = 0;
    memcpy(batch_z, kd_model_forward(&m, x, 64, NULL), sizeof batch_z);
    CHECK_EQ_INT(g_max_team, 2);
    g_max_team = 0;
    const float *z = kd_model_forward(&m, x + 5 * SD, 1, NULL);
    CHECK_EQ_INT(g_max_team, 1);
    CHECK_FLOATS(z, batch_z + 5 * 5, 5, 1e-5, 1e-5);  /* a one-row product sums otherwise */
    CHECK_EQ_INT(kd_threads_get(), 2);  /* the count is restored */
    kd_hook_gemm_shape = NULL;
    kd_model_free(&m);
    kd_threads_set(def);
}

/* The one-row products of a forward: their output widths, in call order. */
static size_t g_rows_n[8], g_rows;
static void note_one_row(int ta, int tb, size_t M, size_t N, size_t K, int serial) {
    (void)ta, (void)tb, (void)K, (void)serial;
    if (M == 1 && g_rows < 8) g_rows_n[g_rows++] = N;
}

/* One sample through a model whose dense weights are too large for a core's cache (the MLP
 * teacher's case): the team takes the forward, each thread a block of the wide layer's output
 * rows by its own sgemv (the hook sees the two halves), and the logits are the one-thread
 * forward's bits; the small output layer stays one product. */
KD_TEST(threads_one_sample_wide_dense_splits_rows_with_the_same_bits) {
    const int def = kd_threads_get();
    static const char *mlp = "[{\"type\":\"dense\",\"units\":720,\"name\":\"wide\"},"
                             "{\"type\":\"relu\"},{\"type\":\"dense\",\"units\":5}]";
    kd_model m = {0};
    kd_err err;
    kd_shape in = {1, {750}}; /* 720 x 750 = 540,000 weights: past KD_GEMV_SPLIT_MIN */
    CHECK_EQ_INT(kd_model_init(&m, &in, mlp, 0, &err), KD_OK);
    CHECK_EQ_INT(kd_model_reserve(&m, 4, &err), KD_OK);
    kd_rng rng;
    kd_rng_seed(&rng, 8);
    kd_model_init_weights(&m, &rng, KD_INIT_HE);
    for (size_t i = 0; i < m.n_params; i++) m.params[i] += 0.01f * (float)(i % 7); /* biases */
    float x[750], one[5];
    for (size_t i = 0; i < 750; i++) x[i] = kd_rng_normal(&rng);
    kd_threads_set(1);
    memcpy(one, kd_model_forward(&m, x, 1, NULL), sizeof one);
    kd_threads_set(2);
    kd_hook_gemm_shape = note_one_row;
    g_rows = 0;
    const float *z = kd_model_forward(&m, x, 1, NULL);
    kd_hook_gemm_shape = NULL;
    CHECK(memcmp(z, one, sizeof one) == 0);
    CHECK_EQ_INT((int)g_rows, 3);
    CHECK_EQ_INT((int)g_rows_n[0] + (int)g_rows_n[1], 720);
    CHECK_EQ_INT((int)g_rows_n[0], 360);
    CHECK_EQ_INT((int)g_rows_n[2], 5);
    /* against a double-precision product of the same weights (the first logit) */
    const kd_tensor *w1 = &m.tensors[0], *b1 = &m.tensors[1], *w2 = &m.tensors[2],
                    *b2 = &m.tensors[3];
    CHECK(w1->numel == 720 * 750 && b1->numel == 720 && w2->numel == 5 * 720 && b2->numel == 5);
    double z0 = b2->data[0];
    for (size_t o = 0; o < 720; o++) {
        double h = b1->data[o];
        for (size_t k = 0; k < 750; k++) h += (double)w1->data[o * 750 + k] * x[k];
        z0 += (h > 0 ? h : 0) * w2->data[o];
    }
    CHECK(fabs(z[0] - z0) <= 1e-4 * (1 + fabs(z0)));
    kd_model_free(&m);
    kd_threads_set(def);
}

/* Products that may fork a team (not serial) called from inside an inactive parallel region
 * (`omp parallel if (0)`): each would be a nested region, for which libgomp starts a new thread
 * per call. Counted against all products that may fork. */
static unsigned long g_forking, g_forking_nested;
static void note_nested(int ta, int tb, size_t M, size_t N, size_t K, int serial) {
    (void)ta, (void)tb, (void)M, (void)N, (void)K;
    if (serial || omp_in_parallel()) return;
    g_forking++;
    if (omp_get_level() > 0) g_forking_nested++;
}

/* One sample through a model past the one-thread rule's size (two 64-channel 28 x 28
 * convolutions: the pieces of one sample run outside the team, each product on the team) and a
 * training step on one sample: no product is started inside an inactive region. */
KD_TEST(threads_one_sample_products_are_not_nested_in_an_inactive_region) {
    static const char *json =
        "[{\"type\":\"conv2d\",\"channels\":64,\"kernel\":3,\"padding\":1},{\"type\":\"relu\"},"
        "{\"type\":\"conv2d\",\"channels\":64,\"kernel\":3,\"padding\":1},"
        "{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":4}]";
    const int def = kd_threads_get();
    kd_threads_set(2);
    const kd_shape in = {3, {1, 28, 28}};
    for (int train = 0; train < 2; train++) {
        kd_model m = {0};
        kd_err err;
        if (kd_model_init(&m, &in, json, train, &err) || kd_model_reserve(&m, 1, &err)) {
            kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
            kd_model_free(&m);
            continue;
        }
        kd_rng rng;
        kd_rng_seed(&rng, 9);
        kd_model_init_weights(&m, &rng, KD_INIT_HE);
        static float x[784];
        for (size_t i = 0; i < 784; i++) x[i] = kd_rng_normal(&rng);
        g_forking = g_forking_nested = 0;
        kd_hook_gemm_shape = note_nested;
        if (train) {
            kd_ctx ctx = {1, &rng, NULL, 0, 0, 0};
            float dz[4] = {1.0f, -1.0f, 0.5f, 0.0f};
            kd_model_forward(&m, x, 1, &ctx);
            kd_model_backward(&m, x, dz, 1, &ctx);
        } else {
            kd_model_forward(&m, x, 1, NULL);
        }
        kd_hook_gemm_shape = NULL;
        CHECK(g_forking > 0);  /* the products that could fork ran */
        CHECK_EQ_INT((int)g_forking_nested, 0);
        kd_model_free(&m);
    }
    kd_threads_set(def);
}
