/* test_core.c - sgemm wrapper vs the reference loop, the PRNG, checked sizes, atomic writes, the
 * text buffer. */
#include <stdlib.h>
#include <string.h>

#include "kd_common.h"
#include "kd_gemm.h"
#include "kd_reduce.h"
#include "kd_rng.h"
#include "kd_strbuf.h"
#include "kd_test.h"
#include "../src/core/test_hooks.h"

static void fill(kd_rng *r, float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = kd_rng_uniform(r) * 2.0f - 1.0f;
}

KD_TEST(sgemm_matches_reference_all_transposes_odd_shapes) {
    static const size_t sizes[] = {1, 7, 129};
    kd_rng r;
    kd_rng_seed(&r, 42);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (size_t a = 0; a < 3; a++)
                for (size_t b = 0; b < 3; b++)
                    for (size_t c = 0; c < 3; c++) {
                        size_t M = sizes[a], N = sizes[b], K = sizes[c];
                        /* Padded leading dimensions catch lda/ldb/ldc mix-ups. */
                        size_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 2, ldc = N + 1;
                        size_t rows_a = ta ? K : M, rows_b = tb ? N : K;
                        float *A = malloc(rows_a * lda * sizeof *A);
                        float *B = malloc(rows_b * ldb * sizeof *B);
                        float *C1 = malloc(M * ldc * sizeof *C1), *C2 = malloc(M * ldc * sizeof *C2);
                        fill(&r, A, rows_a * lda);
                        fill(&r, B, rows_b * ldb);
                        fill(&r, C1, M * ldc);
                        memcpy(C2, C1, M * ldc * sizeof *C1);
                        kd_sgemm(ta, tb, M, N, K, 0.75f, A, lda, B, ldb, 0.5f, C1, ldc);
                        kd_sgemm_ref(ta, tb, M, N, K, 0.75f, A, lda, B, ldb, 0.5f, C2, ldc);
                        CHECK_FLOATS(C1, C2, M * ldc, 1e-4, 1e-4);
                        free(A);
                        free(B);
                        free(C1);
                        free(C2);
                    }
}

KD_TEST(sgemm_reference_hand_computed) {
    /* [1 2; 3 4] * [5 6; 7 8] = [19 22; 43 50]; with A transposed: [1 3; 2 4] * B = [26 30; 38 44]. */
    const float A[] = {1, 2, 3, 4}, B[] = {5, 6, 7, 8};
    float C[4];
    kd_sgemm_ref(0, 0, 2, 2, 2, 1.0f, A, 2, B, 2, 0.0f, C, 2);
    const float want[] = {19, 22, 43, 50};
    CHECK_FLOATS(C, want, 4, 0, 0);
    kd_sgemm_ref(1, 0, 2, 2, 2, 1.0f, A, 2, B, 2, 0.0f, C, 2);
    const float want_t[] = {26, 30, 38, 44};
    CHECK_FLOATS(C, want_t, 4, 0, 0);
}

KD_TEST(rng_is_seeded_and_uniform) {
    kd_rng a, b;
    kd_rng_seed(&a, 7);
    kd_rng_seed(&b, 7);
    for (int i = 0; i < 100; i++) CHECK(kd_rng_u64(&a) == kd_rng_u64(&b));
    kd_rng_seed(&b, 8);
    CHECK(kd_rng_u64(&a) != kd_rng_u64(&b));
    double sum = 0, sumsq = 0, nsum = 0, nsq = 0;
    const int n = 100000;
    for (int i = 0; i < n; i++) {
        float u = kd_rng_uniform(&a);
        CHECK(u >= 0.0f && u < 1.0f);
        sum += u;
        sumsq += (double)u * u;
        float z = kd_rng_normal(&a);
        nsum += z;
        nsq += (double)z * z;
    }
    CHECK_CLOSE(sum / n, 0.5, 0.01, 0);
    CHECK_CLOSE(sumsq / n - (sum / n) * (sum / n), 1.0 / 12, 0.005, 0);
    CHECK_CLOSE(nsum / n, 0.0, 0.02, 0);
    CHECK_CLOSE(nsq / n, 1.0, 0.02, 0);
}

KD_TEST(rng_shuffle_is_a_permutation) {
    kd_rng r;
    kd_rng_seed(&r, 1);
    size_t idx[1000];
    int seen[1000] = {0};
    for (size_t i = 0; i < 1000; i++) idx[i] = i;
    kd_rng_shuffle(&r, idx, 1000);
    size_t fixed = 0;
    for (size_t i = 0; i < 1000; i++) {
        CHECK(idx[i] < 1000);
        if (idx[i] < 1000) seen[idx[i]]++;
        fixed += idx[i] == i;
    }
    for (size_t i = 0; i < 1000; i++) CHECK_EQ_INT(seen[i], 1);
    CHECK(fixed < 20); /* a real shuffle moves almost everything */
}

KD_TEST(checked_size_arithmetic) {
    size_t out;
    CHECK(kd_mul_size(SIZE_MAX / 2, 3, &out) == -1);
    CHECK(kd_mul_size(1000, 1000, &out) == 0 && out == 1000000);
    CHECK(kd_add_size(SIZE_MAX, 1, &out) == -1);
    float *p = kd_alloc_floats(SIZE_MAX / 2);
    CHECK(p == NULL);
    p = kd_alloc_floats(3);
    CHECK(p != NULL && ((uintptr_t)p % 64) == 0 && p[2] == 0.0f);
    kd_free_aligned(p);
}

static kd_status write_text(FILE *f, void *ctx, kd_err *err) {
    (void)err;
    fputs((const char *)ctx, f);
    return KD_OK;
}

KD_TEST(atomic_write_keeps_old_file_on_failure) {
    char path[600], *buf;
    size_t len;
    kd_err err;
    const char *dir = kd_test_tmpdir();
    snprintf(path, sizeof path, "%s/out.txt", dir);
    CHECK(kd_write_atomic(path, write_text, "first", &err) == KD_OK);
    kd_fault_write_after = 1;
    CHECK(kd_write_atomic(path, write_text, "second", &err) == KD_EIO);
    kd_fault_write_after = 0;
    CHECK_CONTAINS(err.msg, "out.txt");
    CHECK(kd_read_file(path, 100, &buf, &len, &err) == KD_OK);
    CHECK(len == 5 && memcmp(buf, "first", 5) == 0);
    free(buf);
    char cmd[700], out[256];
    snprintf(cmd, sizeof cmd, "ls -a '%s' | wc -l", dir);
    kd_test_run(cmd, out, sizeof out);
    CHECK(atoi(out) == 3); /* ., .. and out.txt: no temp file left behind */
    /* An unwritable directory is an I/O error with the path in the message. */
    CHECK(kd_write_atomic("/nonexistent-dir/x.txt", write_text, "x", &err) == KD_EIO);
    CHECK_CONTAINS(err.msg, "/nonexistent-dir/x.txt");
}

/* Once the rename is done the new file is in place: a failing directory fsync after it is a
 * warning beside KD_OK, not a failure that would claim the old file is still there. */
KD_TEST(atomic_write_dir_fsync_failure_warns_after_the_rename) {
    char path[600], cmd[700], out[256], *buf;
    size_t len;
    kd_err err;
    const char *dir = kd_test_tmpdir();
    snprintf(path, sizeof path, "%s/out.txt", dir);
    CHECK(kd_write_atomic(path, write_text, "first", &err) == KD_OK);
    CHECK(err.code == KD_OK && err.msg[0] == '\0');
    /* The second directory fsync from now on fails: one clean write, then one that warns. */
    kd_fault_dirsync_after = 2;
    CHECK(kd_write_atomic(path, write_text, "second", &err) == KD_OK);
    CHECK(err.msg[0] == '\0');
    CHECK(kd_write_atomic(path, write_text, "third", &err) == KD_OK);
    CHECK_EQ_INT(kd_fault_dirsync_after, 0);
    kd_fault_dirsync_after = 0;
    CHECK_EQ_INT(err.code, KD_OK);
    CHECK_CONTAINS(err.msg, path);
    CHECK_CONTAINS(err.msg, "fsync of its directory failed");
    CHECK(kd_read_file(path, 100, &buf, &len, &err) == KD_OK);
    CHECK(len == 5 && memcmp(buf, "third", 5) == 0);
    free(buf);
    snprintf(cmd, sizeof cmd, "ls -a '%s' | wc -l", dir);
    kd_test_run(cmd, out, sizeof out);
    CHECK(atoi(out) == 3); /* ., .. and out.txt: no temp file left behind */
    /* A message left in err by an earlier failure does not read as a warning afterwards. */
    kd_err_set(&err, KD_EIO, "stale");
    CHECK(kd_write_atomic(path, write_text, "fourth", &err) == KD_OK);
    CHECK(err.code == KD_OK && err.msg[0] == '\0');
}

KD_TEST(reductions_match_naive_double_sums) {
    static const size_t sizes[] = {0, 1, 7, 8, 9, 1000, 1003};
    kd_rng r;
    kd_rng_seed(&r, 5);
    float a[1003], b[1003];
    fill(&r, a, 1003);
    fill(&r, b, 1003);
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        double sum = 0, dev = 0, dot = 0;
        for (size_t i = 0; i < n; i++) {
            sum += a[i];
            dev += ((double)a[i] - 0.25) * ((double)a[i] - 0.25);
            dot += (double)a[i] * b[i];
        }
        CHECK_CLOSE(kd_sum(a, n), sum, 1e-12, 1e-12);
        CHECK_CLOSE(kd_sum_sq_dev(a, n, 0.25), dev, 1e-12, 1e-12);
        CHECK_CLOSE(kd_dot(a, b, n), dot, 1e-12, 1e-12);
    }
    const float three[] = {1.0f, 2.0f, 3.5f};
    CHECK(kd_sum(three, 3) == 6.5 && kd_dot(three, three, 3) == 17.25);
}

/* The fused batch-statistics sums against double loops, across the float-block boundaries
 * (256) and with data far from zero, where an unshifted float sum of squares would lose
 * most digits: values 1000 + u, u in [-1, 1), shifted by the first value. */
KD_TEST(shifted_sums_match_double_loops) {
    static const size_t sizes[] = {0, 1, 7, 8, 255, 256, 257, 700, 2000};
    enum { NMAX = 2000 };
    kd_rng r;
    kd_rng_seed(&r, 9);
    static float a[NMAX], b[NMAX];
    fill(&r, a, NMAX);
    fill(&r, b, NMAX);
    for (size_t i = 0; i < NMAX; i++) b[i] += 1000.0f;
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        const size_t n = sizes[s];
        const float shift = b[0];
        double sb = 0, qb = 0, sa = 0, sab = 0;
        for (size_t i = 0; i < n; i++) {
            double d = (double)b[i] - shift;
            sb += d;
            qb += d * d;
            sa += a[i];
            sab += (double)a[i] * d;
        }
        double s1 = 1.0, q1 = 2.0, s2 = -1.0, p2 = 0.5;  /* the functions add to what is there */
        kd_sum_sq_shifted(b, n, shift, &s1, &q1);
        kd_sum_dot_shifted(a, b, n, shift, &s2, &p2);
        CHECK_CLOSE(s1, 1.0 + sb, 1e-4, 1e-5);
        CHECK_CLOSE(q1, 2.0 + qb, 1e-4, 1e-5);
        CHECK_CLOSE(s2, -1.0 + sa, 1e-4, 1e-5);
        CHECK_CLOSE(p2, 0.5 + sab, 1e-4, 1e-5);
    }
    /* Hand-computed: x = {3, 5, 10}, shift 3: sum 0 + 2 + 7 = 9, squares 0 + 4 + 49 = 53;
     * a = {1, 2, 0.5}: sum 3.5, sum a (x - 3) = 0 + 4 + 3.5 = 7.5. */
    const float x[] = {3.0f, 5.0f, 10.0f}, w[] = {1.0f, 2.0f, 0.5f};
    double s0 = 0, q0 = 0, a0 = 0, p0 = 0;
    kd_sum_sq_shifted(x, 3, 3.0f, &s0, &q0);
    kd_sum_dot_shifted(w, x, 3, 3.0f, &a0, &p0);
    CHECK(s0 == 9.0 && q0 == 53.0 && a0 == 3.5 && p0 == 7.5);
}

/* The block terms, added in order, give exactly the accumulating functions' bits (batch norm
 * computes them in parallel and relies on this). */
KD_TEST(shifted_sum_blocks_add_up_to_the_same_bits) {
    enum { N = 3 * KD_REDUCE_BLOCK + 37 };
    static float a[N], b[N];
    kd_rng rng;
    kd_rng_seed(&rng, 21);
    for (size_t i = 0; i < N; i++) a[i] = kd_rng_normal(&rng) * 3.0f + 1.0f, b[i] = kd_rng_normal(&rng);
    double ts[4], tq[4], s = 0.5, q = 0.25, s2 = 0.5, q2 = 0.25;
    CHECK_EQ_INT(kd_sum_sq_shifted_blocks(a, N, 0.7f, ts, tq), 4);
    kd_sum_sq_shifted(a, N, 0.7f, &s, &q);
    for (int k = 0; k < 4; k++) s2 += ts[k], q2 += tq[k];
    CHECK(s == s2 && q == q2);
    s = q = s2 = q2 = -1.0;
    CHECK_EQ_INT(kd_sum_dot_shifted_blocks(b, a, N, 0.7f, ts, tq), 4);
    kd_sum_dot_shifted(b, a, N, 0.7f, &s, &q);
    for (int k = 0; k < 4; k++) s2 += ts[k], q2 += tq[k];
    CHECK(s == s2 && q == q2);
    CHECK_EQ_INT(kd_sum_sq_shifted_blocks(a, 0, 0.0f, ts, tq), 0);
}

KD_TEST(float_shortest_round_trips_with_few_digits) {
    CHECK(kd_float_shortest(0.1f) == 0.1);
    CHECK(kd_float_shortest(0.286f) == 0.286);
    CHECK(kd_float_shortest(1e-8f) == 1e-8);
    CHECK(kd_float_shortest(-3.0f) == -3.0);
    kd_rng r;
    kd_rng_seed(&r, 9);
    for (int i = 0; i < 10000; i++) {
        float v = (kd_rng_uniform(&r) - 0.5f) * 1e3f * kd_rng_uniform(&r);
        CHECK((float)kd_float_shortest(v) == v);
    }
}

/* Appends of every length land whole and in order (the printf path past its stack buffer too);
 * free leaves a reusable empty buffer. */
KD_TEST(strbuf_appends_long_text_in_order) {
    kd_strbuf b = {0};
    char long_word[1001];
    memset(long_word, 'x', 1000);
    long_word[1000] = '\0';
    kd_strbuf_puts(&b, "a");
    kd_strbuf_printf(&b, "<%s>%d", long_word, 42);
    kd_strbuf_put(&b, "bcd", 2);
    CHECK(!b.oom);
    CHECK_EQ_INT(b.len, 1 + 1 + 1000 + 1 + 2 + 2);
    CHECK(b.s && b.s[0] == 'a' && b.s[1] == '<' && b.s[1001] == 'x' && b.s[1002] == '>');
    CHECK(b.s && strcmp(b.s + 1003, "42bc") == 0);
    kd_strbuf_free(&b);
    CHECK(b.s == NULL && b.len == 0);
    kd_strbuf_printf(&b, "%.3f", 0.5);
    CHECK(b.s && strcmp(b.s, "0.500") == 0);
    kd_strbuf_free(&b);
    kd_strbuf_free(&b);
}
