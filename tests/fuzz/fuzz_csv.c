/* fuzz_csv.c - libFuzzer target: the CSV reader, plain or gzip. The first byte picks the
 * settings a config could give (delimiter, header, label column, class count); the rest is the
 * file. Accepted data must be finite floats with labels inside the class count. */
#include "fuzz_common.h"

#include <math.h>
#include "../../src/data/data_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    static const char delims[4] = {',', ';', '\t', ' '};
    static const char *const label_cols[4] = {"", "0", "none", "label"};
    const uint8_t opt = data[0];
    kd_data_source src;
    kd_data_source_defaults(&src);
    src.format = KD_FMT_CSV;
    src.delimiter = delims[opt & 3];
    snprintf(src.label_column, sizeof src.label_column, "%s", label_cols[(opt >> 2) & 3]);
    src.has_header = (int)((opt >> 4) % 3) - 1;  /* -1 auto, 0, 1 */
    src.n_classes = (opt & 0x80) ? 3 : 0;
    const char *path = fuzz_file(data + 1, size - 1);
    snprintf(src.path, sizeof src.path, "%s", path);
    kd_err err;
    kd_err_clear(&err);
    kd_data_mem m;
    kd_status st = kd_csv_load(&src, &m, &err);
    fuzz_check_status(st, &err, st == KD_EINPUT ? path : NULL);
    if (st == KD_OK) {
        FUZZ_CHECK(m.n >= 1 && m.shape.rank == 1 && m.shape.d[0] >= 1 && m.f32 != NULL);
        for (size_t i = 0; i < m.n * m.shape.d[0]; i++) FUZZ_CHECK(isfinite(m.f32[i]));
        FUZZ_CHECK((m.labels == NULL) == (strcmp(src.label_column, "none") == 0));
        for (size_t i = 0; m.labels && i < m.n; i++)
            FUZZ_CHECK(m.labels[i] >= 0 && (size_t)m.labels[i] < m.n_classes);
        for (size_t k = 0; m.class_names && k < m.n_classes; k++)
            FUZZ_CHECK(m.class_names[k] != NULL);
    }
    kd_data_mem_free(&m);
    return 0;
}
