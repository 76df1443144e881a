/* test_data_split.c - validation splits, per-epoch shuffling, subsets and the in-memory batch
 * loader (coverage, last partial batch, identical batches in both loader modes). */
#include <stdlib.h>
#include <string.h>

#include "kd_data.h"
#include "kd_test.h"

static int is_sorted_strict(const size_t *v, size_t n) {
    for (size_t i = 1; i < n; i++)
        if (v[i - 1] >= v[i]) return 0;
    return 1;
}

static int cmp_sz(const void *a, const void *b) {
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

KD_TEST(data_split_disjoint_sorted_and_seed_only) {
    const size_t n = 1000, n_val = 137;
    size_t *tr, *va, nt, *tr2, *va2, nt2;
    kd_err err;
    CHECK_EQ_INT(kd_split(n, n_val, 42, &tr, &nt, &va, &err), KD_OK);
    CHECK_EQ_INT(nt, n - n_val);
    CHECK(is_sorted_strict(tr, nt));
    CHECK(is_sorted_strict(va, n_val));
    /* Disjoint and covering: mark every index once. */
    unsigned char *seen = calloc(n, 1);
    for (size_t i = 0; i < nt; i++) seen[tr[i]]++;
    for (size_t i = 0; i < n_val; i++) seen[va[i]]++;
    int all_once = 1;
    for (size_t i = 0; i < n; i++) all_once &= seen[i] == 1;
    CHECK(all_once);
    free(seen);
    /* Same seed: same split. Different seed: a different validation set. */
    CHECK_EQ_INT(kd_split(n, n_val, 42, &tr2, &nt2, &va2, &err), KD_OK);
    CHECK(memcmp(va, va2, n_val * sizeof(size_t)) == 0);
    CHECK(memcmp(tr, tr2, nt * sizeof(size_t)) == 0);
    free(tr2);
    free(va2);
    CHECK_EQ_INT(kd_split(n, n_val, 43, &tr2, &nt2, &va2, &err), KD_OK);
    CHECK(memcmp(va, va2, n_val * sizeof(size_t)) != 0);
    free(tr2);
    free(va2);
    /* The validation set is not simply the tail: it is spread over the range. */
    CHECK(va[0] < n / 2 && va[n_val - 1] >= n / 2);

    /* Shuffling the training list per epoch: a permutation, reproducible, different across
     * epochs (successive draws of one generator). */
    size_t *e1 = malloc(nt * sizeof(size_t)), *e2 = malloc(nt * sizeof(size_t)),
           *e1b = malloc(nt * sizeof(size_t)), *sorted = malloc(nt * sizeof(size_t));
    kd_rng r, r2;
    kd_rng_seed(&r, 7);
    memcpy(e1, tr, nt * sizeof(size_t));
    kd_rng_shuffle(&r, e1, nt);
    memcpy(e2, tr, nt * sizeof(size_t));
    kd_rng_shuffle(&r, e2, nt);
    kd_rng_seed(&r2, 7);
    memcpy(e1b, tr, nt * sizeof(size_t));
    kd_rng_shuffle(&r2, e1b, nt);
    CHECK(memcmp(e1, e1b, nt * sizeof(size_t)) == 0);
    CHECK(memcmp(e1, e2, nt * sizeof(size_t)) != 0);
    CHECK(memcmp(e1, tr, nt * sizeof(size_t)) != 0);
    memcpy(sorted, e2, nt * sizeof(size_t));
    qsort(sorted, nt, sizeof(size_t), cmp_sz);
    CHECK(memcmp(sorted, tr, nt * sizeof(size_t)) == 0);
    /* Never a validation index in a training epoch. */
    size_t overlap = 0;
    for (size_t i = 0; i < nt; i++)
        if (bsearch(&e2[i], va, n_val, sizeof(size_t), cmp_sz)) overlap++;
    CHECK_EQ_INT(overlap, 0);
    free(e1);
    free(e2);
    free(e1b);
    free(sorted);
    free(tr);
    free(va);

    /* Edge cases. */
    CHECK_EQ_INT(kd_split(10, 0, 1, &tr, &nt, &va, &err), KD_OK);
    CHECK_EQ_INT(nt, 10);
    CHECK(tr[0] == 0 && tr[9] == 9);
    free(tr);
    free(va);
    CHECK_EQ_INT(kd_split(10, 11, 1, &tr, &nt, &va, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "validation split of 11 samples, but the data has only 10");
    CHECK(tr == NULL && va == NULL);

    size_t nv;
    CHECK_EQ_INT(kd_split_count(60000, 0.1, 0, &nv, &err), KD_OK);
    CHECK_EQ_INT(nv, 6000);
    CHECK_EQ_INT(kd_split_count(7, 0.5, 0, &nv, &err), KD_OK);
    CHECK_EQ_INT(nv, 4);  /* 3.5 rounds to 4 */
    CHECK_EQ_INT(kd_split_count(100, -1, 5, &nv, &err), KD_OK);
    CHECK_EQ_INT(nv, 5);
    CHECK_EQ_INT(kd_split_count(100, 1.0, 0, &nv, &err), KD_EUSAGE);
    CHECK_EQ_INT(kd_split_count(5, -1, 5, &nv, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "leaves no training data");
}

/* An f32 IDX file of n samples x 2 features where sample i holds {i, -i}, labels i % 3. */
static void make_indexed_idx(const char *dir, size_t n, kd_data_source *src) {
    char img[600], lab[600];
    snprintf(img, sizeof img, "%s/x.idx", dir);
    snprintf(lab, sizeof lab, "%s/y.idx", dir);
    size_t nb = 12 + n * 8;
    unsigned char *buf = calloc(1, nb);
    buf[2] = 0x0D;
    buf[3] = 2;
    buf[4] = (unsigned char)(n >> 24);
    buf[5] = (unsigned char)(n >> 16);
    buf[6] = (unsigned char)(n >> 8);
    buf[7] = (unsigned char)n;
    buf[11] = 2;
    for (size_t i = 0; i < 2 * n; i++) {
        float f = (i % 2) ? -(float)(i / 2) : (float)(i / 2);
        uint32_t u;
        memcpy(&u, &f, 4);
        for (int b = 0; b < 4; b++) buf[12 + 4 * i + (size_t)b] = (unsigned char)(u >> (24 - 8 * b));
    }
    CHECK(kd_test_write_file(img, buf, nb) == 0);
    unsigned char *lb = calloc(1, 8 + n);
    lb[2] = 0x08;
    lb[3] = 1;
    lb[4] = (unsigned char)(n >> 24);
    lb[5] = (unsigned char)(n >> 16);
    lb[6] = (unsigned char)(n >> 8);
    lb[7] = (unsigned char)n;
    for (size_t i = 0; i < n; i++) lb[8 + i] = (unsigned char)(i % 3);
    CHECK(kd_test_write_file(lab, lb, 8 + n) == 0);
    free(buf);
    free(lb);
    kd_data_source_defaults(src);
    snprintf(src->path, sizeof src->path, "%s", img);
    snprintf(src->labels_path, sizeof src->labels_path, "%s", lab);
}

KD_TEST(data_subset_first_n_and_seeded_sample) {
    const char *dir = kd_test_tmpdir();
    kd_data_source src;
    make_indexed_idx(dir, 500, &src);
    kd_dataset *ds = NULL;
    kd_err err;
    src.subset = 20;
    CHECK_EQ_INT(kd_dataset_open(&ds, &src, NULL, &err), KD_OK);
    if (!ds) {
        printf("    %s\n", err.msg);
        return;
    }
    CHECK_EQ_INT(kd_dataset_info(ds)->n, 20);
    CHECK_EQ_INT(kd_dataset_info(ds)->n_source, 500);
    size_t idx[20];
    float x[40];
    int32_t y[20];
    for (size_t i = 0; i < 20; i++) idx[i] = i;
    CHECK_EQ_INT(kd_dataset_get(ds, idx, 20, x, y, NULL, &err), KD_OK);
    for (size_t i = 0; i < 20; i++) {
        CHECK_CLOSE(x[2 * i], (float)i, 0, 0);
        CHECK_CLOSE(x[2 * i + 1], -(float)i, 0, 0);
        CHECK_EQ_INT(y[i], (int)(i % 3));
    }
    size_t out_of_range = 20;
    CHECK_EQ_INT(kd_dataset_get(ds, &out_of_range, 1, x, y, NULL, &err), KD_EUSAGE);
    kd_dataset_close(ds);

    /* Seeded sample: distinct source samples in ascending order, reproducible by seed. */
    size_t picked[3][20];
    const uint64_t seeds[3] = {5, 5, 6};
    for (int t = 0; t < 3; t++) {
        src.subset_seeded = 1;
        src.subset_seed = seeds[t];
        CHECK_EQ_INT(kd_dataset_open(&ds, &src, NULL, &err), KD_OK);
        if (!ds) return;
        CHECK_EQ_INT(kd_dataset_get(ds, idx, 20, x, y, NULL, &err), KD_OK);
        for (size_t i = 0; i < 20; i++) {
            picked[t][i] = (size_t)x[2 * i];
            CHECK_CLOSE(x[2 * i + 1], -x[2 * i], 0, 0);          /* a real row of the source */
            CHECK_EQ_INT(y[i], (int)(picked[t][i] % 3));         /* with its own label */
        }
        CHECK(is_sorted_strict(picked[t], 20));
        kd_dataset_close(ds);
    }
    CHECK(memcmp(picked[0], picked[1], sizeof picked[0]) == 0);
    CHECK(memcmp(picked[0], picked[2], sizeof picked[0]) != 0);
    CHECK(picked[0][19] >= 20);  /* not just the first 20 */

    /* A subset larger than the data keeps everything. */
    src.subset = 10000;
    CHECK_EQ_INT(kd_dataset_open(&ds, &src, NULL, &err), KD_OK);
    if (ds) CHECK_EQ_INT(kd_dataset_info(ds)->n, 500);
    kd_dataset_close(ds);
}

KD_TEST(data_loader_batches_cover_order_once_in_both_modes) {
    const char *dir = kd_test_tmpdir();
    kd_data_source src;
    make_indexed_idx(dir, 103, &src);
    kd_dataset *ds = NULL;
    kd_err err;
    CHECK_EQ_INT(kd_dataset_open(&ds, &src, NULL, &err), KD_OK);
    if (!ds) return;
    size_t *tr, *va, nt;
    CHECK_EQ_INT(kd_split(103, 10, 9, &tr, &nt, &va, &err), KD_OK);
    kd_rng r;
    kd_rng_seed(&r, 11);
    kd_rng_shuffle(&r, tr, nt);
    float *got[2];
    int32_t *goty[2];
    for (int mode = 0; mode < 2; mode++) {
        got[mode] = malloc(nt * 2 * sizeof(float));
        goty[mode] = malloc(nt * sizeof(int32_t));
        kd_loader *l = NULL;
        CHECK_EQ_INT(kd_loader_open_mode(&l, ds, tr, nt, 16, mode ? KD_LOADER_THREAD : KD_LOADER_SYNC,
                                         &err),
                     KD_OK);
        if (!l) continue;
        kd_batch b;
        size_t seen = 0, nb = 0;
        while (kd_loader_next(l, &b, &err) == KD_OK && b.n) {
            CHECK(b.n == (seen + 16 <= nt ? 16 : nt - seen));
            memcpy(got[mode] + 2 * seen, b.x, b.n * 2 * sizeof(float));
            memcpy(goty[mode] + seen, b.y, b.n * sizeof(int32_t));
            seen += b.n;
            nb++;
        }
        CHECK_EQ_INT(seen, 93);
        CHECK_EQ_INT(nb, 6);  /* 5 full batches of 16 and one of 13 */
        kd_loader_close(l);
        /* Batch contents follow the order exactly: sample tr[i] holds {tr[i], -tr[i]}. */
        for (size_t i = 0; i < nt; i++) {
            CHECK_CLOSE(got[mode][2 * i], (float)tr[i], 0, 0);
            CHECK_EQ_INT(goty[mode][i], (int)(tr[i] % 3));
        }
    }
    CHECK(memcmp(got[0], got[1], nt * 2 * sizeof(float)) == 0);
    CHECK(memcmp(goty[0], goty[1], nt * sizeof(int32_t)) == 0);
    for (int m = 0; m < 2; m++) {
        free(got[m]);
        free(goty[m]);
    }
    /* Bad settings. */
    kd_loader *l = (kd_loader *)1;
    CHECK_EQ_INT(kd_loader_open(&l, ds, tr, nt, 0, &err), KD_EUSAGE);
    CHECK(l == NULL);
    tr[3] = 103;
    CHECK_EQ_INT(kd_loader_open(&l, ds, tr, nt, 8, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "order[3] = 103: expected < 103");
    /* An empty order is legal and ends at once. */
    CHECK_EQ_INT(kd_loader_open_mode(&l, ds, tr, 0, 8, KD_LOADER_THREAD, &err), KD_OK);
    if (l) {
        kd_batch b;
        CHECK_EQ_INT(kd_loader_next(l, &b, &err), KD_OK);
        CHECK_EQ_INT(b.n, 0);
        kd_loader_close(l);
    }
    free(tr);
    free(va);
    kd_dataset_close(ds);
}
