/* fuzz_idx.c - libFuzzer target: the IDX reader, raw or gzip (zlib reads both through one
 * path), alone and as an images + labels pair. The first byte picks the mode: even, the rest of
 * the input is one IDX file; odd, the next byte is the length of a labels file that follows,
 * then the images file. */
#include "fuzz_common.h"
#include "../../src/core/test_hooks.h"
#include "../../src/data/data_impl.h"

static void check_idx(const kd_idx *x) {
    FUZZ_CHECK(x->rank >= 1 && x->rank <= 4);
    FUZZ_CHECK((x->u8 != NULL) != (x->f32 != NULL));
    for (int i = 0; i < x->rank; i++) FUZZ_CHECK(x->dims[i] >= 1 && x->dims[i] <= KD_IDX_MAX_DIM);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    kd_err err;
    kd_err_clear(&err);
    if ((data[0] & 1) == 0) {
        const char *path = fuzz_file(data + 1, size - 1);
        kd_idx x;
        kd_status st = kd_idx_read(path, &x, &err);
        fuzz_check_status(st, &err, path);
        /* Memory grows with the data that actually arrives (docs/design.md: a small file must
         * not make us allocate its claimed size): at most twice what a file of this size can
         * hold after gzip's best ratio (1032:1) plus the first 1 MiB chunk. */
        FUZZ_CHECK(kd_idx_last_alloc <= ((size_t)1 << 20) + 2 * 1032 * size);
        if (st == KD_OK) check_idx(&x);
        kd_idx_free(&x);
        return 0;
    }
    if (size < 2) return 0;
    size_t nl = data[1];
    if (nl > size - 2) nl = size - 2;
    kd_data_source src;
    kd_data_source_defaults(&src);
    src.format = KD_FMT_IDX;
    snprintf(src.labels_path, sizeof src.labels_path, "%s", fuzz_file2(data + 2, nl));
    snprintf(src.path, sizeof src.path, "%s", fuzz_file(data + 2 + nl, size - 2 - nl));
    if (data[0] & 2) src.n_classes = 10;
    kd_data_mem m;
    kd_status st = kd_idx_load(&src, &m, &err);
    fuzz_check_status(st, &err, NULL);
    if (st == KD_OK) {
        FUZZ_CHECK(m.n >= 1 && m.labels != NULL && m.n_classes >= 1);
        for (size_t i = 0; i < m.n; i++)
            FUZZ_CHECK(m.labels[i] >= 0 && (size_t)m.labels[i] < m.n_classes);
    }
    kd_data_mem_free(&m);
    return 0;
}
