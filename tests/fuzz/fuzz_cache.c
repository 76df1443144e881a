/* fuzz_cache.c - libFuzzer target: the soft-target cache reader (preamble, header JSON and
 * ranges, the size the header implies, index, checksums, top-k classes, finite values) and, for
 * caches it accepts, reading rows through kd_cache_logits (first and last row in every view),
 * lookups of present and absent samples, and the file checked against its own meta.
 * Byte 0 is an option: bit 0 repairs the checksums first (kd_cache_fix_checksums), so that
 * mutations reach the checks behind them; bit 1 reads through a file (kd_cache_open) instead of
 * memory (kd_cache_open_mem). */
#include "fuzz_common.h"  /* first: it sets _GNU_SOURCE for memfd_create */

#include <math.h>

#include "../../src/cache/cache_impl.h"

/* An accepted cache is consistent: its size is what its meta implies, its rows are found where
 * the index says, every row reads back finite, and it matches its own meta. */
static void check_accepted(const kd_cache *c, size_t size, const char *name) {
    const kd_cache_meta *m = kd_cache_info(c);
    char why[768];
    FUZZ_CHECK(kd_cache_meta_invalid(m, why, sizeof why) == 0);
    kd_cache_layout lay;
    FUZZ_CHECK(kd_cache_layout_of(m, c->lay.header_len, &lay) == 0 && lay.file_size == size);
    const uint32_t *ix = kd_cache_index(c);
    size_t last = m->n_rows - 1, C = m->n_classes, nt = m->n_teachers;
    FUZZ_CHECK(kd_cache_row(c, ix[0]) == 0 && kd_cache_row(c, ix[last]) == (long)last);
    float *out = malloc(nt * 2 * C * sizeof *out);
    FUZZ_CHECK(out != NULL);
    kd_err err;
    size_t s[2] = {ix[0], ix[last]};
    for (uint32_t v = 0; v < m->views; v++) {
        uint32_t vs[2] = {v, v};
        FUZZ_CHECK(kd_cache_logits(c, s, vs, 2, out, &err) == KD_OK);
        for (size_t i = 0; i < nt * 2 * C; i++) FUZZ_CHECK(isfinite(out[i]));
    }
    /* A sample between or before the rows, and a view past the last: refused, naming the file. */
    size_t absent = ix[0] > 0 ? ix[0] - 1 : (size_t)ix[last] + 1;
    kd_status st = kd_cache_logits(c, &absent, NULL, 1, out, &err);
    FUZZ_CHECK(st == KD_EINPUT && strstr(err.msg, name));
    uint32_t bad_view = (uint32_t)m->views;
    st = kd_cache_logits(c, s, &bad_view, 1, out, &err);
    FUZZ_CHECK(st == KD_EINPUT && strstr(err.msg, name));
    size_t *idx = malloc(m->n_rows * sizeof *idx);
    FUZZ_CHECK(idx != NULL);
    for (size_t r = 0; r < m->n_rows; r++) idx[r] = ix[r];
    FUZZ_CHECK(kd_cache_check(c, m, idx, m->n_rows, "rebuild", &err) == KD_OK);
    free(idx);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t opt = data[0];
    size_t n = size - 1;
    uint8_t *bytes = malloc(n ? n : 1);
    FUZZ_CHECK(bytes != NULL);
    if (n) memcpy(bytes, data + 1, n);
    if (opt & 1) kd_cache_fix_checksums(bytes, n);
    const char *name = (opt & 2) ? fuzz_file(bytes, n) : "fuzz-input";
    kd_cache *c = NULL;
    kd_err err;
    kd_err_clear(&err);
    kd_status st = (opt & 2) ? kd_cache_open(&c, name, &err)
                             : kd_cache_open_mem(&c, bytes, n, name, &err);
    fuzz_check_status(st, &err, name);
    FUZZ_CHECK((st == KD_OK) == (c != NULL));
    if (c) check_accepted(c, n, name);
    kd_cache_close(c);
    free(bytes);
    return 0;
}
