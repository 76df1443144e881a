/* test_dist.c - data-parallel training pieces that need no MPI: the shard split, the checksum,
 * dropout masks and augmentation drawn for a shard, the loader's shards, and SyncBatchNorm with
 * two replicas in two threads whose sum is a barrier (checked against one model on the whole
 * batch). tests/mpi.sh runs the MPI build under mpirun. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kd_data.h"
#include "kd_dist.h"
#include "kd_nn.h"
#include "kd_test.h"

KD_TEST(dist_shards_cover_the_batch_in_rank_order) {
    for (size_t size = 1; size <= 5; size++)
        for (size_t n = 0; n <= 23; n++) {
            size_t next = 0;
            for (size_t r = 0; r < size; r++) {
                size_t lo, hi;
                kd_dist_shard(n, r, size, &lo, &hi);
                CHECK_EQ_INT(lo, next);  /* contiguous, in rank order */
                /* The first n % size shards hold one row more. */
                CHECK_EQ_INT(hi - lo, n / size + (r < n % size));
                next = hi;
            }
            CHECK_EQ_INT(next, n);
        }
    /* One rank: the whole batch; more ranks than rows: empty shards at the end. */
    size_t lo, hi;
    kd_dist_shard(7, 0, 1, &lo, &hi);
    CHECK(lo == 0 && hi == 7);
    kd_dist_shard(2, 3, 4, &lo, &hi);
    CHECK(lo == 2 && hi == 2);
}

KD_TEST(dist_one_rank_collectives_and_checksum) {
    CHECK_EQ_INT(kd_dist_rank(), 0);
    CHECK_EQ_INT(kd_dist_size(), 1);
    double v[2] = {1.5, -2.0};
    kd_dist_sum(v, 2);
    CHECK(v[0] == 1.5 && v[1] == -2.0);
    CHECK_EQ_INT(kd_dist_any(0), 0);
    CHECK_EQ_INT(kd_dist_any(5), 1);
    uint64_t lo, hi;
    CHECK_EQ_INT(kd_dist_same(42, &lo, &hi), 1);
    CHECK(lo == 42 && hi == 42);

    /* Every bit of every byte, and the length, change the checksum. */
    unsigned char buf[21];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)(i * 37 + 1);
    const uint64_t h0 = kd_dist_hash(KD_DIST_HASH_INIT, buf, sizeof buf);
    CHECK(h0 == kd_dist_hash(KD_DIST_HASH_INIT, buf, sizeof buf));
    CHECK(h0 != kd_dist_hash(KD_DIST_HASH_INIT, buf, sizeof buf - 1));
    size_t same = 0;
    for (size_t i = 0; i < sizeof buf; i++)
        for (int b = 0; b < 8; b++) {
            buf[i] ^= (unsigned char)(1u << b);
            same += kd_dist_hash(KD_DIST_HASH_INIT, buf, sizeof buf) == h0;
            buf[i] ^= (unsigned char)(1u << b);
        }
    CHECK_EQ_INT(same, 0);

    /* The pack: gradients and extras go through, unpack scales. */
    kd_dist_pack p;
    kd_err err;
    CHECK_EQ_INT(kd_dist_pack_init(&p, 3, 2, &err), KD_OK);
    const float g[3] = {1.0f, 2.0f, -4.0f};
    double extra[2] = {7.0, 0.5};
    float out[3];
    kd_dist_pack_reduce(&p, g, extra);
    CHECK(extra[0] == 7.0 && extra[1] == 0.5);
    kd_dist_pack_unpack(&p, out, 0.5f);
    CHECK(out[0] == 0.5f && out[1] == 1.0f && out[2] == -2.0f);
    kd_dist_pack_free(&p);
    kd_dist_pack_free(&p);
}

static int build(kd_model *m, const kd_shape *in, const char *json, size_t B, uint64_t seed) {
    kd_err err;
    if (kd_model_init(m, in, json, 1, &err) != KD_OK || kd_model_reserve(m, B, &err) != KD_OK) {
        kd_test_fail(__FILE__, __LINE__, "model: %s", err.msg);
        return 0;
    }
    kd_rng rng;
    kd_rng_seed(&rng, seed);
    kd_model_init_weights(m, &rng, KD_INIT_HE);
    return 1;
}

/* A dropout layer with 5 values per row (odd, so a shard can start in the middle of a 64-bit
 * draw): each shard's mask is its rows of the whole batch's, and the RNG ends in the same state,
 * for every split of 7 rows among 1 to 4 ranks (empty shards included). */
KD_TEST(dist_dropout_shard_masks_are_rows_of_the_whole_batch) {
    enum { F = 5, ROWS = 7 };
    const kd_shape in = {1, {F}};
    kd_model whole, part;
    if (!build(&whole, &in, "[{\"type\":\"dropout\",\"p\":0.4}]", ROWS, 1)) return;
    if (!build(&part, &in, "[{\"type\":\"dropout\",\"p\":0.4}]", ROWS, 1)) return;
    float x[ROWS * F], want[ROWS * F];
    for (size_t i = 0; i < ROWS * F; i++) x[i] = 1.0f + (float)i;
    kd_rng rng, after;
    kd_rng_seed(&rng, 11);
    kd_ctx ctx = {1, &rng, NULL, 0, 0, 0};
    memcpy(want, kd_model_forward(&whole, x, ROWS, &ctx), sizeof want);
    after = rng;
    kd_shard sh = {0, ROWS, NULL};
    kd_model_set_shard(&part, &sh);
    size_t checked = 0;
    for (size_t size = 1; size <= 4; size++)
        for (size_t r = 0; r < size; r++) {
            size_t lo, hi;
            kd_dist_shard(ROWS, r, size, &lo, &hi);
            sh.row0 = lo;
            kd_rng_seed(&rng, 11);
            const float *y = kd_model_forward(&part, x + lo * F, hi - lo, &ctx);
            CHECK_FLOATS(y, want + lo * F, (hi - lo) * F, 0, 0);
            CHECK(memcmp(&rng, &after, sizeof rng) == 0);
            checked += hi - lo;
        }
    CHECK_EQ_INT(checked, 4 * ROWS);
    kd_model_free(&whole);
    kd_model_free(&part);
}

KD_TEST(dist_augment_rows_match_the_whole_batch) {
    const kd_shape shape = {3, {1, 4, 5}};
    const kd_augment a = {2, 1};
    enum { ROWS = 6, D = 20 };
    float x[ROWS * D], want[ROWS * D], got[ROWS * D];
    for (size_t i = 0; i < ROWS * D; i++) x[i] = (float)i;
    kd_rng rng, after;
    kd_rng_seed(&rng, 3);
    kd_augment_batch(&a, &shape, x, want, ROWS, &rng);
    after = rng;
    /* Shards of 3 + 3, 2 + 2 + 2 rows, and an empty one at the end. */
    const size_t shards[][2] = {{0, 3}, {3, 3}, {0, 2}, {2, 2}, {4, 2}, {6, 0}};
    for (size_t k = 0; k < sizeof shards / sizeof shards[0]; k++) {
        const size_t lo = shards[k][0], n = shards[k][1];
        kd_rng_seed(&rng, 3);
        kd_augment_rows(&a, &shape, x + lo * D, got, lo, n, ROWS, &rng);
        CHECK_FLOATS(got, want + lo * D, n * D, 0, 0);
        CHECK(memcmp(&rng, &after, sizeof rng) == 0);
    }
}

KD_TEST(dist_loader_hands_out_each_ranks_shard) {
    const char *dir = kd_test_tmpdir();
    char path[512], text[256] = "a,b,label\n";
    for (int i = 0; i < 10; i++)
        snprintf(text + strlen(text), sizeof text - strlen(text), "%d,%d,%d\n", i, 2 * i, i % 3);
    snprintf(path, sizeof path, "%s/s.csv", dir);
    CHECK_EQ_INT(kd_test_write_file(path, text, strlen(text)), 0);
    kd_data_source src;
    kd_preprocess pp;
    kd_data_source_defaults(&src);
    kd_preprocess_defaults(&pp);
    src.format = KD_FMT_CSV;
    snprintf(src.path, sizeof src.path, "%s", path);
    kd_dataset *ds = NULL;
    kd_err err;
    if (kd_dataset_open(&ds, &src, &pp, &err) != KD_OK) {
        kd_test_fail(__FILE__, __LINE__, "open: %s", err.msg);
        return;
    }
    const size_t order[10] = {9, 2, 5, 0, 7, 1, 8, 3, 6, 4};
    float all[10 * 2];
    int32_t labels[10];
    size_t n;
    CHECK_EQ_INT(kd_dataset_get(ds, order, 10, all, labels, &n, &err), KD_OK);
    for (size_t r = 0; r < 3; r++) {
        kd_loader *ld = NULL;
        CHECK_EQ_INT(kd_loader_open_shard(&ld, ds, order, 10, 4, r, 3, &err), KD_OK);
        for (size_t k = 0; k < 3; k++) {
            kd_batch b;
            size_t lo, hi;
            kd_dist_shard(k < 2 ? 4 : 2, r, 3, &lo, &hi);
            CHECK_EQ_INT(kd_loader_next(ld, &b, &err), KD_OK);
            CHECK_EQ_INT(b.slices, 1);
            CHECK_EQ_INT(b.n, hi - lo);
            CHECK_FLOATS(b.x, all + (4 * k + lo) * 2, b.n * 2, 0, 0);
            for (size_t i = 0; i < b.n; i++) CHECK_EQ_INT(b.y[i], labels[4 * k + lo + i]);
        }
        kd_batch end;
        CHECK_EQ_INT(kd_loader_next(ld, &end, &err), KD_OK);
        CHECK_EQ_INT(end.slices, 0);
        CHECK_EQ_INT(end.n, 0);
        kd_loader_close(ld);
    }
    kd_dataset_close(ds);
}

/* ---- SyncBatchNorm with two replicas in two threads ---- */

/* The fake allreduce: each thread posts its vector, both add the two in rank order, then each
 * writes its own (the barriers keep a thread from overwriting what the other still reads). */
static pthread_barrier_t g_bar;
static double *g_posted[2];
static _Thread_local int t_rank;

static void two_thread_sum(double *v, size_t n) {
    g_posted[t_rank] = v;
    pthread_barrier_wait(&g_bar);
    double *s = malloc(n * sizeof *s);
    for (size_t i = 0; i < n; i++) s[i] = g_posted[0][i] + g_posted[1][i];
    pthread_barrier_wait(&g_bar);
    memcpy(v, s, n * sizeof *s);
    free(s);
    pthread_barrier_wait(&g_bar);
}

typedef struct {
    int rank;
    kd_model *m;
    kd_shard sh;
    const float *x, *dy;   /* the whole batch's input and logit gradient */
    size_t per_row, rows;  /* input floats per row, global rows */
    kd_rng rng;
    const float *out;      /* this shard's logits */
} replica;

static void *replica_main(void *arg) {
    replica *p = arg;
    size_t lo, hi;
    t_rank = p->rank;
    kd_dist_shard(p->rows, (size_t)p->rank, 2, &lo, &hi);
    p->sh.row0 = lo;
    p->sh.rows = p->rows;
    kd_model_set_shard(p->m, &p->sh);
    kd_ctx ctx = {1, &p->rng, NULL, 0, 0, 0};
    const size_t C = p->m->n_classes;
    p->out = kd_model_forward(p->m, p->x + lo * p->per_row, hi - lo, &ctx);
    kd_model_zero_grad(p->m);
    kd_model_backward(p->m, p->x + lo * p->per_row, p->dy + lo * C, hi - lo, &ctx);
    return NULL;
}

/* Batch norm on [2, 3, 3] inputs (BatchNorm2d) and after a dense layer (BatchNorm1d), with
 * dropout: two replicas on shards of the batch, their statistics summed by the fake
 * allreduce, give the whole batch's logits row for row, gradients that add up to the whole
 * batch's, and the same running statistics; with 7 rows (shards of 4 and 3) and with 1 row
 * (one shard empty). The inputs have a mean of 3 so the shift of the sums matters. The same
 * for a fused batchnorm -> maxpool2d -> relu group after a convolution on [2, 4, 4]. */
KD_TEST(dist_sync_batchnorm_two_replicas_equal_one_model) {
    const kd_shape ins[2] = {{3, {2, 3, 3}}, {3, {2, 4, 4}}};
    const char *jsons[2] = {
        "[{\"type\":\"batchnorm\"},{\"type\":\"flatten\"},"
        "{\"type\":\"dense\",\"units\":6},{\"type\":\"batchnorm\"},"
        "{\"type\":\"relu\"},{\"type\":\"dropout\",\"p\":0.3},"
        "{\"type\":\"dense\",\"units\":4}]",
        "[{\"type\":\"conv2d\",\"channels\":2,\"kernel\":3,\"padding\":1},"
        "{\"type\":\"batchnorm\"},{\"type\":\"maxpool2d\",\"kernel\":2},{\"type\":\"relu\"},"
        "{\"type\":\"flatten\"},{\"type\":\"dense\",\"units\":6},{\"type\":\"batchnorm\"},"
        "{\"type\":\"relu\"},{\"type\":\"dropout\",\"p\":0.3},"
        "{\"type\":\"dense\",\"units\":4}]"};
    enum { MAXR = 7, MAXD = 32, C = 4 };
    const size_t cases[2] = {MAXR, 1};
    for (size_t c = 0; c < 4; c++) {
        const size_t rows = cases[c % 2], D = kd_shape_numel(&ins[c / 2]);
        const kd_shape in = ins[c / 2];
        const char *json = jsons[c / 2];
        kd_model whole, rep[2];
        if (!build(&whole, &in, json, MAXR, 5) || !build(&rep[0], &in, json, MAXR, 5) ||
            !build(&rep[1], &in, json, MAXR, 5))
            return;
        float x[MAXR * MAXD], dy[MAXR * C];
        kd_rng data;
        kd_rng_seed(&data, 100 + c);
        for (size_t i = 0; i < MAXR * D; i++) x[i] = 3.0f + kd_rng_normal(&data);
        for (size_t i = 0; i < MAXR * C; i++) dy[i] = 0.1f * kd_rng_normal(&data);

        kd_rng rng;
        kd_rng_seed(&rng, 9);
        kd_ctx ctx = {1, &rng, NULL, 0, 0, 0};
        const float *z = kd_model_forward(&whole, x, rows, &ctx);
        kd_model_zero_grad(&whole);
        kd_model_backward(&whole, x, dy, rows, &ctx);

        replica p[2];
        pthread_t th[2];
        pthread_barrier_init(&g_bar, NULL, 2);
        for (int r = 0; r < 2; r++) {
            p[r] = (replica){r, &rep[r], {0, 0, two_thread_sum}, x, dy, D, rows, {{0}}, NULL};
            kd_rng_seed(&p[r].rng, 9);
            pthread_create(&th[r], NULL, replica_main, &p[r]);
        }
        for (int r = 0; r < 2; r++) pthread_join(th[r], NULL);
        pthread_barrier_destroy(&g_bar);

        size_t lo, hi;
        for (int r = 0; r < 2; r++) {
            kd_dist_shard(rows, (size_t)r, 2, &lo, &hi);
            CHECK_FLOATS(p[r].out, z + lo * C, (hi - lo) * C, 1e-5, 1e-4);
            CHECK(memcmp(&p[r].rng, &rng, sizeof rng) == 0);
            CHECK_FLOATS(rep[r].buffers, whole.buffers, whole.n_buffers, 1e-6, 1e-5);
        }
        float *g = malloc(whole.n_params * sizeof *g);
        for (size_t i = 0; i < whole.n_params; i++) g[i] = rep[0].grads[i] + rep[1].grads[i];
        CHECK_FLOATS(g, whole.grads, whole.n_params, 1e-6, 1e-4);
        free(g);
        kd_model_free(&whole);
        kd_model_free(&rep[0]);
        kd_model_free(&rep[1]);
    }
}
