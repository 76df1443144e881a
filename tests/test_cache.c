/* test_cache.c - the soft-target cache file: round trips (f32 bit for bit, f16 as its
 * rounding, top-k against the true softmax computed here in double), the comparison with a
 * run's expectations, atomic writes, numeric failures, and the file hash. Malformed files are
 * in test_cache_bad.c. */
#include <dirent.h>
#include <stdio.h>
#include <zlib.h>

#include "cache_fixture.h"
#include "kd_rng.h"
#include "kd_safetensors.h"

KD_TEST(cache_entry_bytes_per_layout) {
    kd_cache_meta m = cache_fx_meta(4, 10, 3, 1, KD_CACHE_F32, 0, 0);
    CHECK_EQ_INT(kd_cache_entry_bytes(&m), 3 * 10 * 4);
    m.dtype = KD_CACHE_F16;
    CHECK_EQ_INT(kd_cache_entry_bytes(&m), 3 * 10 * 2);
    m.top_k = 4; /* 4 u16 classes, 4 f16 values, one f32 */
    CHECK_EQ_INT(kd_cache_entry_bytes(&m), 3 * (8 + 8 + 4));
    m.dtype = KD_CACHE_F32;
    CHECK_EQ_INT(kd_cache_entry_bytes(&m), 3 * (8 + 16 + 4));
    kd_cache_dtype d;
    CHECK(kd_cache_dtype_find("f16", &d) == 0 && d == KD_CACHE_F16);
    CHECK(kd_cache_dtype_find("bf16", &d) == -1);
    CHECK(strcmp(kd_cache_dtype_name(KD_CACHE_F32), "f32") == 0);
}

KD_TEST(cache_meta_add_limits) {
    kd_cache_meta m;
    memset(&m, 0, sizeof m);
    kd_err err;
    char name[80], value[600];
    for (int i = 0; i < KD_CACHE_MAX_FIELDS; i++) {
        snprintf(name, sizeof name, "f%d", i);
        CHECK_EQ_INT(kd_cache_meta_add(&m, name, "v", &err), KD_OK);
    }
    CHECK_EQ_INT(kd_cache_meta_add(&m, "one.more", "v", &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "at most 32 fields");
    memset(&m, 0, sizeof m);
    memset(name, 'n', 63);
    name[63] = '\0';
    CHECK_EQ_INT(kd_cache_meta_add(&m, name, "v", &err), KD_OK); /* 63 bytes fit */
    name[63] = 'n', name[64] = '\0';
    CHECK_EQ_INT(kd_cache_meta_add(&m, name, "v", &err), KD_EUSAGE);
    memset(value, 'v', 512);
    value[512] = '\0';
    CHECK_EQ_INT(kd_cache_meta_add(&m, "long", value, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "its value is 512 bytes, more than the 511");
    value[511] = '\0';
    CHECK_EQ_INT(kd_cache_meta_add(&m, "long", value, &err), KD_OK);
    CHECK_EQ_INT(kd_cache_meta_add(&m, "long", "again", &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "cache field long: recorded twice");
    CHECK_EQ_INT(kd_cache_meta_add(&m, "", "v", &err), KD_EUSAGE);
}

/* Every value of every row, view and teacher equals the fill's bit for bit. */
static void check_all_f32(const kd_cache *c, const size_t *idx, size_t n_rows, size_t views,
                          size_t nt, size_t C) {
    float *got = malloc(nt * n_rows * C * sizeof *got);
    size_t *samples = malloc(n_rows * sizeof *samples);
    uint32_t *vs = malloc(n_rows * sizeof *vs);
    kd_err err;
    size_t bad = 0;
    for (size_t v = 0; v < views; v++) {
        for (size_t r = 0; r < n_rows; r++) samples[r] = idx[n_rows - 1 - r], vs[r] = (uint32_t)v;
        CHECK_EQ_INT(kd_cache_logits(c, samples, vs, n_rows, got, &err), KD_OK);
        for (size_t k = 0; k < nt; k++)
            for (size_t r = 0; r < n_rows; r++)
                for (size_t j = 0; j < C; j++) {
                    float want = cache_fx_value(k, samples[r], v, j);
                    if (memcmp(&got[(k * n_rows + r) * C + j], &want, 4) != 0) bad++;
                }
    }
    CHECK_EQ_INT(bad, 0);
    free(got);
    free(samples);
    free(vs);
}

KD_TEST(cache_f32_round_trip_bit_for_bit) {
    const char *dir = kd_test_tmpdir();
    char path[600];
    snprintf(path, sizeof path, "%s/targets.kdcache", dir);
    size_t idx[5] = {2, 5, 7, 11, 20};
    kd_cache_meta m = cache_fx_meta(5, 4, 2, 2, KD_CACHE_F32, 0, 0);
    m.temperature = 3; /* ignored (stored as 0): full rows hold no T */
    cache_fx fx = {0};
    kd_err err;
    CHECK_EQ_INT(cache_fx_write(path, &m, idx, &fx, 2, &err), KD_OK);
    /* View by view, rows in order, in chunks of at most 2: 3 calls per view. */
    CHECK_EQ_INT(fx.calls, 6);
    CHECK_EQ_INT(fx.max_n, 2);
    CHECK(!fx.out_of_order);
    kd_cache *c = NULL;
    CHECK_EQ_INT(kd_cache_open(&c, path, &err), KD_OK);
    if (!c) return;
    const kd_cache_meta *got = kd_cache_info(c);
    CHECK_EQ_INT(got->n_rows, 5);
    CHECK_EQ_INT(got->n_classes, 4);
    CHECK_EQ_INT(got->n_teachers, 2);
    CHECK_EQ_INT(got->views, 2);
    CHECK_EQ_INT(got->view_seed, 12345);
    CHECK(got->dtype == KD_CACHE_F32 && got->top_k == 0 && got->temperature == 0);
    CHECK(got->weight[0] == 0.5 && got->weight[1] == 0.5);
    CHECK(got->teacher_val_acc[0] == 0.8 && isnan(got->teacher_val_acc[1]));
    CHECK(got->ensemble_val_acc == 0.875);
    CHECK_EQ_INT(got->n_fields, 2);
    CHECK(strcmp(got->fields[0].name, "teacher[0].checkpoint_hash") == 0);
    CHECK(strcmp(got->fields[0].value, "crc32:0badf00d adler32:1 size:7") == 0);
    CHECK(strcmp(got->fields[1].name, "data.train") == 0);
    const uint32_t *index = kd_cache_index(c);
    for (int r = 0; r < 5; r++) CHECK_EQ_INT(index[r], idx[r]);
    /* Rows of present samples; -1 for absent ones (before, between, after, past 2^32). */
    CHECK_EQ_INT(kd_cache_row(c, 2), 0);
    CHECK_EQ_INT(kd_cache_row(c, 7), 2);
    CHECK_EQ_INT(kd_cache_row(c, 20), 4);
    CHECK_EQ_INT(kd_cache_row(c, 0), -1);
    CHECK_EQ_INT(kd_cache_row(c, 6), -1);
    CHECK_EQ_INT(kd_cache_row(c, 21), -1);
    CHECK_EQ_INT(kd_cache_row(c, (size_t)1 << 32 | 7), -1);
    check_all_f32(c, idx, 5, 2, 2, 4);
    /* Mixed views in one call, and view NULL meaning view 0. */
    size_t s[3] = {20, 2, 7};
    uint32_t v[3] = {1, 0, 1};
    float out[2 * 3 * 4];
    CHECK_EQ_INT(kd_cache_logits(c, s, v, 3, out, &err), KD_OK);
    for (size_t k = 0; k < 2; k++)
        for (size_t i = 0; i < 3; i++)
            for (size_t j = 0; j < 4; j++)
                CHECK(out[(k * 3 + i) * 4 + j] == cache_fx_value(k, s[i], v[i], j));
    CHECK_EQ_INT(kd_cache_logits(c, s, NULL, 3, out, &err), KD_OK);
    CHECK(out[(1 * 3 + 0) * 4 + 3] == cache_fx_value(1, 20, 0, 3));
    /* A sample the cache was not built for, and a view it does not hold. */
    size_t absent[2] = {2, 6};
    CHECK_EQ_INT(kd_cache_logits(c, absent, NULL, 2, out, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, path);
    CHECK_CONTAINS(err.msg, "no row for training sample 6");
    v[2] = 2;
    CHECK_EQ_INT(kd_cache_logits(c, s, v, 3, out, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, "view 2 out of range (the cache holds 2 views)");
    kd_cache_close(c);
    kd_cache_close(NULL);
}

/* 5000 rows x 2 views: three blocks, chunks that straddle them; opened from memory too. */
KD_TEST(cache_many_blocks_round_trip) {
    char path[600];
    snprintf(path, sizeof path, "%s/big.kdcache", kd_test_tmpdir());
    size_t n = 5000, *idx = cache_fx_index(n);
    kd_cache_meta m = cache_fx_meta(n, 3, 1, 2, KD_CACHE_F32, 0, 0);
    cache_fx fx = {0};
    kd_err err;
    CHECK_EQ_INT(cache_fx_write(path, &m, idx, &fx, 777, &err), KD_OK);
    CHECK(!fx.out_of_order);
    CHECK_EQ_INT(fx.calls, 2 * 7);
    size_t len;
    unsigned char *bytes = cache_fx_read(path, &len);
    kd_cache *c = NULL;
    CHECK_EQ_INT(kd_cache_open_mem(&c, bytes, len, "mem-copy", &err), KD_OK);
    if (c) check_all_f32(c, idx, n, 2, 1, 3);
    kd_cache_close(c);
    free(bytes);
    free(idx);
}

KD_TEST(cache_f16_values_are_the_f16_rounding) {
    char path[600];
    snprintf(path, sizeof path, "%s/half.kdcache", kd_test_tmpdir());
    size_t idx[3] = {0, 1, 9};
    /* Rows of hand-picked values: 1/3 is 0x3555 = 0.333251953125 in f16, 0.1 is 0x2e66 =
     * 0.0999755859375, 65504 is the largest half, 2^-24 the smallest subnormal. */
    float table[3 * 5] = {1.0f / 3.0f, 0.1f, 65504.0f, 5.9604644775390625e-8f, -2.5f,
                          1000.7f, -0.0f, 3.14159265f, -65504.0f, 1e-3f,
                          7.0f, 8.0f, 9.0f, 10.0f, 11.0f};
    kd_cache_meta m = cache_fx_meta(3, 5, 1, 1, KD_CACHE_F16, 0, 0);
    cache_fx fx = {.table = table};
    kd_err err;
    CHECK_EQ_INT(cache_fx_write(path, &m, idx, &fx, 8, &err), KD_OK);
    kd_cache *c = NULL;
    CHECK_EQ_INT(kd_cache_open(&c, path, &err), KD_OK);
    if (!c) return;
    float out[15];
    CHECK_EQ_INT(kd_cache_logits(c, idx, NULL, 3, out, &err), KD_OK);
    for (int i = 0; i < 15; i++) CHECK(out[i] == kd_f16_to_f32(kd_f32_to_f16(table[i])));
    CHECK(out[0] == 0.333251953125f);
    CHECK(out[1] == 0.0999755859375f);
    CHECK(out[2] == 65504.0f && out[8] == -65504.0f);
    CHECK(out[3] == 5.9604644775390625e-8f);
    CHECK(out[5] == 1000.5f); /* the halves near 1000 are 0.5 apart */
    kd_cache_close(c);
    /* A finite logit f16 cannot hold is a numeric failure that says which and what to do. */
    table[7] = 70000.0f;
    fx = (cache_fx){.table = table};
    CHECK_EQ_INT(cache_fx_write(path, &m, idx, &fx, 8, &err), KD_ENUMERIC);
    CHECK_CONTAINS(err.msg, "teacher 0 logit for training sample 1 (view 0, class 2) is 70000, "
                            "beyond the range of f16: use dtype f32");
}

/* softmax(z / T) in double. */
static void softmax_t(const float *z, size_t C, double T, double *p) {
    double mx = -INFINITY, s = 0;
    for (size_t j = 0; j < C; j++) mx = fmax(mx, (double)z[j] / T);
    for (size_t j = 0; j < C; j++) s += p[j] = exp((double)z[j] / T - mx);
    for (size_t j = 0; j < C; j++) p[j] /= s;
}

/* The K classes with the largest logits, ties to the lower class: kept[c] = 1. */
static void top_classes(const float *z, size_t C, size_t K, int *kept) {
    for (size_t j = 0; j < C; j++) kept[j] = 0;
    for (size_t n = 0; n < K; n++) {
        size_t best = C;
        for (size_t j = 0; j < C; j++)
            if (!kept[j] && (best == C || z[j] > z[best])) best = j;
        kept[best] = 1;
    }
}

KD_TEST(cache_top_k_targets_are_exact_in_kept_classes_and_rest_mass) {
    enum { N = 40, C = 10, NT = 2, V = 2 };
    static float table[V * N * NT * C];
    kd_rng rng;
    kd_rng_seed(&rng, 2024);
    for (size_t i = 0; i < sizeof table / sizeof *table; i++)
        table[i] = 6.0f * kd_rng_normal(&rng);
    /* Ties, in view 0 row 0: teacher 0 has five classes at 3 (the kept ones are the lowest),
     * teacher 1 three equal maxima. */
    static const float tie[C] = {0, 3, 1, 3, 3, 0.5f, 3, -1, 2, 3};
    for (int j = 0; j < C; j++) table[j] = tie[j], table[C + j] = (float)j * 0.25f;
    table[C + 2] = table[C + 5] = table[C + 7] = 9.0f;
    size_t idx[N];
    for (size_t r = 0; r < N; r++) idx[r] = 2 * r;
    char path[600];
    snprintf(path, sizeof path, "%s/topk.kdcache", kd_test_tmpdir());
    static const size_t ks[3] = {1, 3, C - 1};
    static const double ts[2] = {1.0, 4.0};
    double worst_kept = 0, worst_rest = 0;
    for (int ki = 0; ki < 3; ki++)
        for (int ti = 0; ti < 2; ti++) {
            size_t K = ks[ki];
            double T = ts[ti];
            kd_cache_meta m = cache_fx_meta(N, C, NT, V, KD_CACHE_F32, K, T);
            cache_fx fx = {.table = table};
            kd_err err;
            CHECK_EQ_INT(cache_fx_write(path, &m, idx, &fx, 16, &err), KD_OK);
            kd_cache *c = NULL;
            CHECK_EQ_INT(kd_cache_open(&c, path, &err), KD_OK);
            if (!c) return;
            float out[NT * N * C];
            uint32_t views[N];
            for (uint32_t v = 0; v < V; v++) {
                for (size_t r = 0; r < N; r++) views[r] = v;
                CHECK_EQ_INT(kd_cache_logits(c, idx, views, N, out, &err), KD_OK);
                for (size_t k = 0; k < NT; k++)
                    for (size_t r = 0; r < N; r++) {
                        const float *z = &table[((v * N + r) * NT + k) * C];
                        const float *q = &out[(k * N + r) * C];
                        double p[C], pq[C], rest = 0, rest_q = 0;
                        int kept[C];
                        float shared = NAN; /* the value every class not kept gets */
                        softmax_t(z, C, T, p);
                        softmax_t(q, C, T, pq);
                        top_classes(z, C, K, kept);
                        for (size_t j = 0; j < C; j++) {
                            if (kept[j]) {
                                CHECK(q[j] == z[j]); /* kept logits are stored exactly */
                                worst_kept = fmax(worst_kept, fabs(pq[j] - p[j]));
                            } else {
                                rest += p[j], rest_q += pq[j];
                                if (isnan(shared)) shared = q[j];
                                CHECK(q[j] == shared);
                            }
                        }
                        worst_rest = fmax(worst_rest, fabs(rest_q - rest));
                    }
            }
            /* The tie rows: the lower classes win. */
            CHECK_EQ_INT(kd_cache_logits(c, idx, NULL, 1, out, &err), KD_OK);
            if (K == 1) {
                CHECK(out[1] == 3.0f && out[3] < 3.0f && out[9] < 3.0f);
                CHECK(out[C + 2] == 9.0f && out[C + 5] < 9.0f && out[C + 7] < 9.0f);
            }
            if (K == 3) {
                CHECK(out[1] == 3.0f && out[3] == 3.0f && out[4] == 3.0f);
                CHECK(out[6] < 3.0f && out[9] < 3.0f && out[6] == out[0]);
                CHECK(out[C + 2] == 9.0f && out[C + 5] == 9.0f && out[C + 7] == 9.0f);
            }
            kd_cache_close(c);
        }
    CHECK(worst_kept <= 1e-6);
    CHECK(worst_rest <= 1e-6);
    printf("    top-k: largest probability error %.2g on kept classes, %.2g on the rest's mass\n",
           worst_kept, worst_rest);
}

KD_TEST(cache_check_names_the_first_difference) {
    char path[600];
    snprintf(path, sizeof path, "%s/check.kdcache", kd_test_tmpdir());
    size_t *idx = cache_fx_index(6);
    kd_cache_meta m = cache_fx_meta(6, 5, 2, 2, KD_CACHE_F16, 2, 2.5);
    cache_fx fx = {0};
    kd_err err;
    CHECK_EQ_INT(cache_fx_write(path, &m, idx, &fx, 4, &err), KD_OK);
    kd_cache *c = NULL;
    CHECK_EQ_INT(kd_cache_open(&c, path, &err), KD_OK);
    if (!c) return;
    const char *rebuild = "distill logits --config c.json --force";
    CHECK_EQ_INT(kd_cache_check(c, &m, idx, 6, rebuild, &err), KD_OK);
    kd_cache_meta w = m; /* within the tolerances: T relative 1e-6, weights 1e-6 */
    w.temperature = 2.5 * (1 + 5e-7);
    w.weight[0] += 5e-7;
    w.teacher_val_acc[0] = 0.1; /* informational, never compared */
    w.ensemble_val_acc = NAN;
    CHECK_EQ_INT(kd_cache_check(c, &w, idx, 6, rebuild, &err), KD_OK);
    /* One field changed at a time, in the order the check compares them. */
    const char *want[] = {
        "n_classes differs: the file has 5, this run has 6",
        "n_teachers differs: the file has 2, this run has 1",
        "dtype differs: the file has f16, this run has f32",
        "top_k differs: the file has 2, this run has 3",
        "temperature differs: the file has 2.5, this run has 2.6",
        "views differs: the file has 2, this run has 8",
        "view_seed differs: the file has 12345, this run has 12346",
        "weights[0] differs: the file has 0.5, this run has 0.75",
        "data.train differs: the file has \"train-images.idx\", this run has \"other.idx\"",
        "teacher[1].checkpoint_hash differs: the file has none, this run has \"crc32:1\"",
    };
    for (int i = 0; i < 10; i++) {
        w = m;
        switch (i) {
        case 0: w.n_classes = 6; break;
        case 1: w.n_teachers = 1; break;
        case 2: w.dtype = KD_CACHE_F32; break;
        case 3: w.top_k = 3; break;
        case 4: w.temperature = 2.6; break;
        case 5: w.views = 8; break;
        case 6: w.view_seed = 12346; break;
        case 7: w.weight[0] = 0.75, w.weight[1] = 0.25; break;
        case 8: snprintf(w.fields[1].value, sizeof w.fields[1].value, "other.idx"); break;
        case 9: kd_cache_meta_add(&w, "teacher[1].checkpoint_hash", "crc32:1", &err); break;
        }
        CHECK_EQ_INT(kd_cache_check(c, &w, idx, 6, rebuild, &err), KD_EINPUT);
        CHECK_CONTAINS(err.msg, path);
        CHECK_CONTAINS(err.msg, want[i]);
        CHECK_CONTAINS(err.msg, "(rebuild it: distill logits --config c.json --force)");
    }
    /* The rows: their count, then each sample index. */
    CHECK_EQ_INT(kd_cache_check(c, &m, idx, 5, rebuild, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, "n_rows differs: the file has 6 samples, this run has 5");
    idx[3] = 11;
    CHECK_EQ_INT(kd_cache_check(c, &m, idx, 6, rebuild, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, "row 3 of the file is sample 10, this run's is sample 11");
    kd_cache_close(c);
    /* A cache of all logits holds no T, so a run's temperature is not compared. */
    m = cache_fx_meta(6, 5, 2, 2, KD_CACHE_F16, 0, 0);
    idx[3] = 10;
    fx = (cache_fx){0};
    CHECK_EQ_INT(cache_fx_write(path, &m, idx, &fx, 4, &err), KD_OK);
    CHECK_EQ_INT(kd_cache_open(&c, path, &err), KD_OK);
    m.temperature = 4;
    if (c) CHECK_EQ_INT(kd_cache_check(c, &m, idx, 6, rebuild, &err), KD_OK);
    kd_cache_close(c);
    free(idx);
}

/* Names in dir that start with prefix. */
static int count_prefixed(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) n++;
    if (d) closedir(d);
    return n;
}

KD_TEST(cache_write_is_atomic_and_refuses_non_finite_logits) {
    const char *dir = kd_test_tmpdir();
    char path[600], fresh[600];
    snprintf(path, sizeof path, "%s/t.kdcache", dir);
    snprintf(fresh, sizeof fresh, "%s/fresh.kdcache", dir);
    size_t *idx = cache_fx_index(10);
    kd_cache_meta m = cache_fx_meta(10, 4, 2, 2, KD_CACHE_F32, 0, 0);
    cache_fx fx = {0};
    kd_err err;
    CHECK_EQ_INT(cache_fx_write(path, &m, idx, &fx, 3, &err), KD_OK);
    size_t len0, len1;
    unsigned char *before = cache_fx_read(path, &len0);
    /* The teacher fails on the 5th chunk (view 1): the old file stays, no temp file is left. */
    fx = (cache_fx){.fail_at = 5};
    CHECK_EQ_INT(cache_fx_write(path, &m, idx, &fx, 3, &err), KD_EIO);
    CHECK_CONTAINS(err.msg, "teacher forward failed (injected, call 5)");
    CHECK_CONTAINS(err.msg, path);
    unsigned char *after = cache_fx_read(path, &len1);
    CHECK(before && after && len0 == len1 && memcmp(before, after, len0) == 0);
    free(after);
    fx = (cache_fx){.fail_at = 2};
    CHECK_EQ_INT(cache_fx_write(fresh, &m, idx, &fx, 3, &err), KD_EIO);
    CHECK_EQ_INT(count_prefixed(dir, "fresh.kdcache"), 0);
    /* NaN from teacher 1 for training sample 13 (row 4): KD_ENUMERIC naming both. */
    fx = (cache_fx){.nan_on = 1, .nan_teacher = 1, .nan_sample = 13};
    CHECK_EQ_INT(cache_fx_write(path, &m, idx, &fx, 3, &err), KD_ENUMERIC);
    CHECK_CONTAINS(err.msg, "teacher 1 logit for training sample 13 (view 0, class 2) is nan");
    after = cache_fx_read(path, &len1);
    CHECK(after && len0 == len1 && memcmp(before, after, len0) == 0);
    CHECK_EQ_INT(count_prefixed(dir, "t.kdcache"), 1);
    free(after);
    free(before);
    /* Usage errors: a meta out of range, rows not ascending, no chunk. */
    m.weight[0] = 0.7;
    CHECK_EQ_INT(cache_fx_write(fresh, &m, idx, &fx, 3, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "weights: expected 2 weights summing to 1 (within 1e-6), got a sum "
                            "of 1.2");
    m.weight[0] = 0.5;
    idx[5] = idx[4];
    CHECK_EQ_INT(cache_fx_write(fresh, &m, idx, &fx, 3, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "sample index 13 (row 5) is not above the one before it");
    idx[5] = 16;
    CHECK_EQ_INT(cache_fx_write(fresh, &m, idx, &fx, 0, &err), KD_EUSAGE);
    m.top_k = 4;
    CHECK_EQ_INT(cache_fx_write(fresh, &m, idx, &fx, 3, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "top_k: expected 0 (all logits) or 1..3");
    m.top_k = 2; /* and no temperature */
    CHECK_EQ_INT(cache_fx_write(fresh, &m, idx, &fx, 3, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "temperature: expected a number > 0");
    CHECK_EQ_INT(count_prefixed(dir, "fresh.kdcache"), 0);
    free(idx);
}

KD_TEST(cache_file_hash) {
    const char *dir = kd_test_tmpdir();
    char a[600], b[600], missing[600], ha[80], hb[80];
    snprintf(a, sizeof a, "%s/a.bin", dir);
    snprintf(b, sizeof b, "%s/b.bin", dir);
    snprintf(missing, sizeof missing, "%s/none.bin", dir);
    CHECK_EQ_INT(kd_test_write_file(a, "123456789", 9), 0);
    CHECK_EQ_INT(kd_test_write_file(b, "123456789", 9), 0);
    kd_err err;
    CHECK_EQ_INT(kd_file_hash(a, ha, sizeof ha, &err), KD_OK);
    CHECK_EQ_INT(kd_file_hash(b, hb, sizeof hb, &err), KD_OK);
    /* The standard check values of CRC-32 and Adler-32 for "123456789". */
    CHECK(strcmp(ha, "crc32:cbf43926 adler32:091e01de size:9") == 0);
    CHECK(strcmp(ha, hb) == 0);
    CHECK_EQ_INT(kd_test_write_file(b, "123456780", 9), 0);
    CHECK_EQ_INT(kd_file_hash(b, hb, sizeof hb, &err), KD_OK);
    CHECK(strcmp(ha, hb) != 0);
    /* Larger than one 1 MiB piece: the streamed sums equal zlib's over the whole. */
    size_t n = ((size_t)1 << 20) + 12345;
    unsigned char *big = malloc(n);
    for (size_t i = 0; i < n; i++) big[i] = (unsigned char)(i * 2654435761u >> 13);
    CHECK_EQ_INT(kd_test_write_file(b, big, n), 0);
    CHECK_EQ_INT(kd_file_hash(b, hb, sizeof hb, &err), KD_OK);
    char want[80];
    snprintf(want, sizeof want, "crc32:%08lx adler32:%08lx size:%zu", crc32(0, big, (uInt)n),
             adler32(1, big, (uInt)n), n);
    CHECK(strcmp(hb, want) == 0);
    free(big);
    CHECK_EQ_INT(kd_file_hash(missing, ha, sizeof ha, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, missing);
    CHECK_EQ_INT(kd_file_hash(dir, ha, sizeof ha, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, "not a regular file");
}

/* Every number of the header reads back exactly: cJSON's printer would keep 15 digits of a
 * view_seed of 2^53 - 1 (reading back as 2^53 - 2) and of weights like 1/3. */
KD_TEST(cache_header_numbers_round_trip_exactly) {
    char path[600];
    snprintf(path, sizeof path, "%s/exact.kdcache", kd_test_tmpdir());
    size_t idx[2] = {0, 4294967295u};
    kd_cache_meta m = cache_fx_meta(2, 3, 3, 1, KD_CACHE_F32, 1, 1.0 / 3.0);
    m.view_seed = ((uint64_t)1 << 53) - 1;
    m.weight[0] = 0.1, m.weight[1] = 0.2, m.weight[2] = 0.7000000000000001;
    m.teacher_val_acc[1] = 0.8765432109876543;
    m.ensemble_val_acc = NAN;
    cache_fx fx = {0};
    kd_err err;
    CHECK_EQ_INT(cache_fx_write(path, &m, idx, &fx, 2, &err), KD_OK);
    kd_cache *c = NULL;
    CHECK_EQ_INT(kd_cache_open(&c, path, &err), KD_OK);
    if (!c) return;
    const kd_cache_meta *g = kd_cache_info(c);
    CHECK(g->view_seed == m.view_seed);
    CHECK(g->temperature == 1.0 / 3.0);
    for (int k = 0; k < 3; k++) CHECK(g->weight[k] == m.weight[k]);
    CHECK(g->teacher_val_acc[1] == 0.8765432109876543 && isnan(g->teacher_val_acc[2]));
    CHECK(isnan(g->ensemble_val_acc));
    CHECK_EQ_INT(kd_cache_row(c, 4294967295u), 1);
    kd_cache_close(c);
    m.view_seed++;
    CHECK_EQ_INT(cache_fx_write(path, &m, idx, &fx, 2, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "view_seed: expected an integer in 0..2^53-1, got 9007199254740992");
}

/* The header is JSON: a provenance field that is not UTF-8 (a Latin-1 file name) is refused
 * when written, not turned into a cache nothing can read. */
KD_TEST(cache_write_refuses_fields_that_are_not_utf8) {
    char path[600];
    snprintf(path, sizeof path, "%s/latin1.kdcache", kd_test_tmpdir());
    size_t idx[2] = {0, 1};
    kd_cache_meta m = cache_fx_meta(2, 3, 1, 1, KD_CACHE_F32, 0, 0);
    kd_err err;
    CHECK_EQ_INT(kd_cache_meta_add(&m, "data.test", "caf\xe9.idx", &err), KD_OK);
    cache_fx fx = {0};
    CHECK_EQ_INT(cache_fx_write(path, &m, idx, &fx, 2, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "fields.data.test: expected UTF-8 text (the header is JSON)");
    snprintf(m.fields[2].value, sizeof m.fields[2].value, "caf\xc3\xa9.idx\n");
    CHECK_EQ_INT(cache_fx_write(path, &m, idx, &fx, 2, &err), KD_OK);
    kd_cache *c = NULL;
    CHECK_EQ_INT(kd_cache_open(&c, path, &err), KD_OK);
    if (c) CHECK(strcmp(kd_cache_info(c)->fields[2].value, "caf\xc3\xa9.idx\n") == 0);
    kd_cache_close(c);
}
