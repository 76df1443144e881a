/* test_data_csv.c - the CSV reader: numeric and string labels, header detection, delimiters,
 * quotes, gzip, and each malformed input rejected with its line and column. */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "kd_data.h"
#include "kd_test.h"

/* Writes text to dir/name and opens it as a CSV with the given label column. */
static kd_status open_csv(const char *dir, const char *name, const char *text, const char *label,
                          int header, char delim, kd_dataset **ds, kd_err *err) {
    kd_data_source src;
    kd_data_source_defaults(&src);
    src.format = KD_FMT_CSV;
    snprintf(src.path, sizeof src.path, "%s/%s", dir, name);
    snprintf(src.label_column, sizeof src.label_column, "%s", label);
    src.has_header = header;
    src.delimiter = delim;
    CHECK(kd_test_write_file(src.path, text, strlen(text)) == 0);
    kd_err_clear(err);
    *ds = NULL;
    return kd_dataset_open(ds, &src, NULL, err);
}

KD_TEST(data_csv_numeric_labels_read_back_exactly) {
    const char *dir = kd_test_tmpdir();
    kd_dataset *ds;
    kd_err err;
    const char *text = "f1,f2,f3,label\n0.5,-2,1e3,2\n\n 3.25 ,4,5,0\r\n-0.125,7,8,1\n";
    CHECK_EQ_INT(open_csv(dir, "a.csv", text, "", -1, ',', &ds, &err), KD_OK);
    if (!ds) {
        printf("    %s\n", err.msg);
        return;
    }
    const kd_data_info *info = kd_dataset_info(ds);
    CHECK_EQ_INT(info->n, 3);
    CHECK_EQ_INT(info->shape.rank, 1);
    CHECK_EQ_INT(info->shape.d[0], 3);
    CHECK_EQ_INT(info->n_classes, 3);
    CHECK_CLOSE(kd_dataset_preprocess(ds)->scale, 1.0, 0, 0);  /* auto: 1 for float sources */
    size_t idx[3] = {0, 1, 2};
    float x[9];
    int32_t y[3];
    CHECK_EQ_INT(kd_dataset_get(ds, idx, 3, x, y, NULL, &err), KD_OK);
    const float want[9] = {0.5f, -2, 1000, 3.25f, 4, 5, -0.125f, 7, 8};
    CHECK_FLOATS(x, want, 9, 0, 0);
    CHECK_EQ_INT(y[0], 2);
    CHECK_EQ_INT(y[1], 0);
    CHECK_EQ_INT(y[2], 1);
    kd_dataset_close(ds);

    /* No header, label in column 0 by index, no trailing newline. */
    CHECK_EQ_INT(open_csv(dir, "b.csv", "1,10,20\n0,30,40", "0", -1, ',', &ds, &err), KD_OK);
    if (!ds) return;
    CHECK_EQ_INT(kd_dataset_info(ds)->n, 2);
    CHECK_EQ_INT(kd_dataset_get(ds, idx, 2, x, y, NULL, &err), KD_OK);
    const float want_b[4] = {10, 20, 30, 40};
    CHECK_FLOATS(x, want_b, 4, 0, 0);
    CHECK_EQ_INT(y[0], 1);
    CHECK_EQ_INT(y[1], 0);
    kd_dataset_close(ds);

    /* Unlabeled: every column is a feature. */
    CHECK_EQ_INT(open_csv(dir, "c.csv", "1,2\n3,4\n", "none", -1, ',', &ds, &err), KD_OK);
    if (!ds) return;
    CHECK_EQ_INT(kd_dataset_info(ds)->has_labels, 0);
    CHECK_EQ_INT(kd_dataset_info(ds)->shape.d[0], 2);
    CHECK_EQ_INT(kd_dataset_get(ds, idx, 2, x, y, NULL, &err), KD_OK);
    CHECK_EQ_INT(y[1], -1);
    CHECK_CLOSE(x[3], 4, 0, 0);
    kd_dataset_close(ds);
}

KD_TEST(data_csv_string_labels_sorted_and_recorded) {
    const char *dir = kd_test_tmpdir();
    kd_dataset *ds;
    kd_err err;
    /* Semicolon-delimited, label by name in the middle, quoted fields with an embedded
     * delimiter and an escaped quote. */
    const char *text = "x;species;z\n1;\"virginica\";2\n3;setosa;4\n5;\"ver;si\"\"color\";6\n7;setosa;8\n";
    CHECK_EQ_INT(open_csv(dir, "s.csv", text, "species", -1, ';', &ds, &err), KD_OK);
    if (!ds) {
        printf("    %s\n", err.msg);
        return;
    }
    const kd_data_info *info = kd_dataset_info(ds);
    CHECK_EQ_INT(info->n, 4);
    CHECK_EQ_INT(info->n_classes, 3);
    if (info->n_classes == 3) {
        CHECK(strcmp(info->class_names[0], "setosa") == 0);
        CHECK(strcmp(info->class_names[1], "ver;si\"color") == 0);
        CHECK(strcmp(info->class_names[2], "virginica") == 0);
    }
    size_t idx[4] = {0, 1, 2, 3};
    float x[8];
    int32_t y[4];
    CHECK_EQ_INT(kd_dataset_get(ds, idx, 4, x, y, NULL, &err), KD_OK);
    const int32_t want_y[4] = {2, 0, 1, 0};
    const float want_x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    for (int i = 0; i < 4; i++) CHECK_EQ_INT(y[i], want_y[i]);
    CHECK_FLOATS(x, want_x, 8, 0, 0);
    kd_dataset_close(ds);

    /* String labels without a header: auto-detection must not take row 1 for a header. */
    CHECK_EQ_INT(open_csv(dir, "t.csv", "1,2,cat\n3,4,dog\n", "", -1, ',', &ds, &err), KD_OK);
    if (!ds) return;
    CHECK_EQ_INT(kd_dataset_info(ds)->n, 2);
    CHECK(strcmp(kd_dataset_info(ds)->class_names[1], "dog") == 0);
    kd_dataset_close(ds);
}

static void expect_csv_reject(const char *text, const char *label, int header, kd_status code,
                              const char *frag1, const char *frag2) {
    const char *dir = kd_test_tmpdir();
    kd_dataset *ds;
    kd_err err;
    CHECK_EQ_INT(open_csv(dir, "bad.csv", text, label, header, ',', &ds, &err), code);
    CHECK(ds == NULL);
    if (code == KD_EINPUT) CHECK_CONTAINS(err.msg, "bad.csv");
    CHECK_CONTAINS(err.msg, frag1);
    if (frag2) CHECK_CONTAINS(err.msg, frag2);
    kd_dataset_close(ds);
}

KD_TEST(data_csv_rejects_malformed_input) {
    expect_csv_reject("a,b,label\n1,2,0\n3,4\n", "", -1, KD_EINPUT,
                      "line 3: expected 3 columns (as on line 1), found 2", NULL);
    expect_csv_reject("a,b,label\n1,2,0\n3,4,1,9\n", "", -1, KD_EINPUT,
                      "line 3: expected 3 columns", "found 4");
    expect_csv_reject("1,2,0\n3,x4,1\n", "", -1, KD_EINPUT, "line 2, column 2",
                      "expected a finite number, found \"x4\"");
    expect_csv_reject("1,2,0\n3,,1\n", "", -1, KD_EINPUT, "line 2, column 2", "found \"\"");
    expect_csv_reject("1,2,0\n3,nan,1\n", "", -1, KD_EINPUT, "line 2, column 2", "finite");
    expect_csv_reject("a,b,label\n1,2,0\n", "target", -1, KD_EINPUT,
                      "label column \"target\" not found in the header", "columns: a, b, label");
    expect_csv_reject("1,2,0\n", "5", -1, KD_EINPUT, "label column 5: expected an index from 0 to 2",
                      NULL);
    expect_csv_reject("1,2,0\n", "target", 0, KD_EUSAGE, "is a name, but data.header is false", NULL);
    expect_csv_reject("", "", -1, KD_EINPUT, "no data rows", NULL);
    expect_csv_reject("a,b,label\n\n", "", -1, KD_EINPUT, "no data rows after the header", NULL);
    expect_csv_reject("1,2,0.5\n3,4,1\n", "", -1, KD_EINPUT, "sample 1, column 3",
                      "label \"0.5\": expected an integer class");
    expect_csv_reject("1,\"2,0\n", "", -1, KD_EINPUT, "line 1: unterminated or malformed quoted field",
                      NULL);
    expect_csv_reject("0\n1\n", "", 0, KD_EINPUT, "no feature columns", NULL);
}

/* A ".csv.gz" file (the format table names it CSV) is decompressed as IDX files are: the same
 * samples as the plain file, not "line 1, column 1: expected a finite number" on a gzip byte.
 * A damaged stream is refused naming the file and where the data broke. */
KD_TEST(data_csv_gzip_is_decompressed) {
    const char *dir = kd_test_tmpdir();
    const char *text = "f1,f2,label\n0.5,-2,1\n3.25,4,0\n-0.125,7,1\n";
    char path[600];
    snprintf(path, sizeof path, "%s/t.csv.gz", dir);
    gzFile g = gzopen(path, "wb");
    CHECK(g != NULL);
    if (!g) return;
    CHECK_EQ_INT(gzwrite(g, text, (unsigned)strlen(text)), (int)strlen(text));
    CHECK_EQ_INT(gzclose(g), Z_OK);
    kd_data_source src;
    kd_data_source_defaults(&src);
    CHECK_EQ_INT(kd_data_format_guess(path, &src.format), 0);
    CHECK_EQ_INT(src.format, KD_FMT_CSV);
    snprintf(src.path, sizeof src.path, "%s", path);
    kd_dataset *gz = NULL, *plain = NULL;
    kd_err err;
    CHECK_EQ_INT(kd_dataset_open(&gz, &src, NULL, &err), KD_OK);
    CHECK_EQ_INT(open_csv(dir, "t.csv", text, "", -1, ',', &plain, &err), KD_OK);
    if (gz && plain) {
        size_t idx[3] = {0, 1, 2};
        float xa[6], xb[6];
        int32_t ya[3], yb[3];
        CHECK_EQ_INT(kd_dataset_info(gz)->n, 3);
        CHECK_EQ_INT(kd_dataset_get(gz, idx, 3, xa, ya, NULL, &err), KD_OK);
        CHECK_EQ_INT(kd_dataset_get(plain, idx, 3, xb, yb, NULL, &err), KD_OK);
        CHECK_FLOATS(xa, xb, 6, 0, 0);
        for (int i = 0; i < 3; i++) CHECK_EQ_INT(ya[i], yb[i]);
    }
    kd_dataset_close(gz);
    kd_dataset_close(plain);
    /* Cut the compressed file short: a clear message, exit code 3. */
    char *bytes = NULL;
    size_t n = 0;
    CHECK_EQ_INT(kd_read_file(path, 1 << 20, &bytes, &n, &err), KD_OK);
    CHECK_EQ_INT(kd_test_write_file(path, bytes, n - 12), 0);
    free(bytes);
    CHECK_EQ_INT(kd_dataset_open(&gz, &src, NULL, &err), KD_EINPUT);
    CHECK_CONTAINS(err.msg, path);
    CHECK_CONTAINS(err.msg, "of the decompressed data: corrupt or truncated gzip stream");
}
