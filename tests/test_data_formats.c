/* test_data_formats.c - the table of data formats and each format's reader operations, and
 * every format through kd_dataset_open and the loader (both modes): each batch value is
 * raw * (scale / std[c]) + (-mean[c] / std[c]) bit for bit, the formula and order of operations
 * the dataset has always used, so a change to the readers or their table cannot change a run's
 * numbers. Also the loader's failed thread start and kd_preprocess_same's rule. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kd_image_write.h"

#include "../src/core/test_hooks.h"
#include "../src/data/data_impl.h"
#include "kd_test.h"

enum { MAX_N = 8, MAX_NUMEL = 36 };

/* A small source whose raw values (before preprocessing) the test knows. */
typedef struct {
    size_t n, C, P;                 /* samples, channels, values per channel */
    float raw[MAX_N][MAX_NUMEL];
    int32_t label[MAX_N];
} fixture;

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* IDX u8 images [6, 2, 2, 3] (two channels) with labels 0..5, so a label names its sample. */
static void make_idx(const char *dir, kd_data_source *src, fixture *fx) {
    unsigned char img[4 + 16 + 6 * 12], lab[4 + 4 + 6];
    memset(img, 0, 4);
    img[2] = 0x08;
    img[3] = 4;
    const uint32_t dims[4] = {6, 2, 2, 3};
    for (int i = 0; i < 4; i++) put_be32(img + 4 + 4 * i, dims[i]);
    memset(lab, 0, 4);
    lab[2] = 0x08;
    lab[3] = 1;
    put_be32(lab + 4, 6);
    fx->n = 6, fx->C = 2, fx->P = 6;
    for (size_t s = 0; s < 6; s++) {
        for (size_t k = 0; k < 12; k++) {
            unsigned char v = (unsigned char)((s * 41 + k * 23 + 7) % 256);
            img[20 + s * 12 + k] = v;
            fx->raw[s][k] = (float)v;
        }
        lab[8 + s] = (unsigned char)s;
        fx->label[s] = (int32_t)s;
    }
    kd_data_source_defaults(src);
    src->format = KD_FMT_IDX;
    snprintf(src->path, sizeof src->path, "%s/img.idx", dir);
    snprintf(src->labels_path, sizeof src->labels_path, "%s/lab.idx", dir);
    CHECK(kd_test_write_file(src->path, img, sizeof img) == 0);
    CHECK(kd_test_write_file(src->labels_path, lab, sizeof lab) == 0);
}

/* CSV: 7 rows of 5 features (exact in binary) and a label column. */
static void make_csv(const char *dir, kd_data_source *src, fixture *fx) {
    char text[2048];
    size_t len = (size_t)snprintf(text, sizeof text, "a,b,c,d,e,label\n");
    fx->n = 7, fx->C = 1, fx->P = 5;
    for (size_t s = 0; s < 7; s++) {
        for (size_t k = 0; k < 5; k++) {
            fx->raw[s][k] = 0.25f * (float)(s * 5 + k) - 3.5f;
            len += (size_t)snprintf(text + len, sizeof text - len, "%g,", (double)fx->raw[s][k]);
        }
        fx->label[s] = (int32_t)(s % 3);
        len += (size_t)snprintf(text + len, sizeof text - len, "%d\n", fx->label[s]);
    }
    kd_data_source_defaults(src);
    src->format = KD_FMT_CSV;
    snprintf(src->path, sizeof src->path, "%s/t.csv", dir);
    CHECK(kd_test_write_file(src->path, text, len) == 0);
}

/* Image folder: classes "a" (3 images) and "b" (2), RGB 4x3 PNGs read at their own size, so the
 * raw values are the pixels, planar. */
static void make_images(const char *dir, kd_data_source *src, fixture *fx) {
    const int W = 4, H = 3;
    fx->n = 5, fx->C = 3, fx->P = (size_t)(W * H);
    size_t s = 0;
    for (int c = 0; c < 2; c++) {
        char sub[1200];
        snprintf(sub, sizeof sub, "%s/%c", dir, "ab"[c]);
        mkdir(sub, 0700);
        for (int i = 0; i < 3 - c; i++, s++) {
            unsigned char px[4 * 3 * 3];
            for (int k = 0; k < W * H * 3; k++) {
                px[k] = (unsigned char)((s * 53 + (size_t)k * 19 + 11) % 256);
                fx->raw[s][(size_t)(k % 3) * fx->P + (size_t)(k / 3)] = (float)px[k];
            }
            fx->label[s] = c;
            char p[1300];
            snprintf(p, sizeof p, "%s/%d.png", sub, i);
            CHECK(stbi_write_png(p, W, H, 3, px, W * 3) != 0);
        }
    }
    kd_data_source_defaults(src);
    src->format = KD_FMT_IMAGES;
    snprintf(src->path, sizeof src->path, "%s", dir);
    src->channels = 3;
    src->height = (size_t)H;
    src->width = (size_t)W;
}

/* Reads the whole dataset through the loader in both modes (order reversed, batches of 3) and
 * checks every value and label. by_label: the label is the source index (seeded subsets). */
static void check_batches(kd_dataset *ds, const fixture *fx, int by_label) {
    const kd_data_info *info = kd_dataset_info(ds);
    const kd_preprocess *pp = kd_dataset_preprocess(ds);
    size_t n = info->n, D = fx->C * fx->P;
    float mul[4], add[4];
    for (size_t c = 0; c < fx->C; c++) {
        float mean = 0, sd = 1;
        if (pp->n_channels > 0) {
            size_t k = pp->n_channels == 1 ? 0 : c;
            mean = pp->mean[k], sd = pp->std[k];
        }
        mul[c] = pp->scale / sd;
        add[c] = -mean / sd;
    }
    size_t order[MAX_N];
    for (size_t i = 0; i < n; i++) order[i] = n - 1 - i;
    for (int mode = KD_LOADER_SYNC; mode <= KD_LOADER_THREAD; mode++) {
        kd_loader *l = NULL;
        kd_err err;
        CHECK_EQ_INT(kd_loader_open_mode(&l, ds, order, n, 3, (kd_loader_mode)mode, &err), KD_OK);
        if (!l) continue;
        kd_batch b;
        size_t seen = 0;
        while (kd_loader_next(l, &b, &err) == KD_OK && b.n) {
            for (size_t i = 0; i < b.n; i++, seen++) {
                size_t s = by_label ? (size_t)b.y[i] : order[seen];
                if (s >= fx->n) {
                    kd_test_fail(__FILE__, __LINE__, "label %d names no sample", b.y[i]);
                    continue;
                }
                CHECK_EQ_INT(b.y[i], fx->label[s]);
                float want[MAX_NUMEL];
                for (size_t c = 0; c < fx->C; c++)
                    for (size_t k = 0; k < fx->P; k++)
                        want[c * fx->P + k] = fx->raw[s][c * fx->P + k] * mul[c] + add[c];
                CHECK_FLOATS(b.x + i * D, want, D, 0, 0);
            }
        }
        CHECK_EQ_INT(seen, n);
        kd_loader_close(l);
    }
}

static kd_dataset *open_ok(const kd_data_source *src, const kd_preprocess *pp) {
    kd_dataset *ds = NULL;
    kd_err err;
    kd_err_clear(&err);
    kd_status st = kd_dataset_open(&ds, src, pp, &err);
    CHECK_EQ_INT(st, KD_OK);
    if (st) printf("    %s\n", err.msg);
    return ds;
}

KD_TEST(data_formats_idx_batches_match_the_preprocessing_formula) {
    const char *dir = kd_test_tmpdir();
    kd_data_source src;
    fixture fx;
    make_idx(dir, &src, &fx);
    kd_preprocess pp;
    kd_preprocess_defaults(&pp);  /* scale auto: 1/255 for u8 */
    kd_dataset *ds = open_ok(&src, &pp);
    if (ds) {
        CHECK(kd_dataset_preprocess(ds)->scale == 1.0f / 255.0f);
        CHECK_EQ_INT(kd_dataset_info(ds)->shape.rank, 3);
        CHECK_EQ_INT(kd_dataset_info(ds)->shape.d[0], 2);
        check_batches(ds, &fx, 1);
    }
    kd_dataset_close(ds);
    /* Per-channel normalisation on a seeded subset of 4 (labels tell which samples). */
    pp.scale = 0.5f;
    pp.n_channels = 2;
    pp.mean[0] = 10.0f, pp.std[0] = 3.0f;
    pp.mean[1] = -2.5f, pp.std[1] = 0.7f;
    src.subset = 4;
    src.subset_seeded = 1;
    src.subset_seed = 77;
    ds = open_ok(&src, &pp);
    if (ds) {
        CHECK_EQ_INT(kd_dataset_info(ds)->n, 4);
        check_batches(ds, &fx, 1);
    }
    kd_dataset_close(ds);
}

KD_TEST(data_formats_csv_batches_match_the_preprocessing_formula) {
    const char *dir = kd_test_tmpdir();
    kd_data_source src;
    fixture fx;
    make_csv(dir, &src, &fx);
    kd_dataset *ds = open_ok(&src, NULL);
    if (ds) {
        CHECK(kd_dataset_preprocess(ds)->scale == 1.0f);  /* not u8: scale 1 */
        CHECK_EQ_INT(kd_dataset_info(ds)->shape.rank, 1);
        check_batches(ds, &fx, 0);
    }
    kd_dataset_close(ds);
    kd_preprocess pp;
    kd_preprocess_defaults(&pp);
    pp.scale = 0.3f;
    pp.n_channels = 1;
    pp.mean[0] = 0.1f, pp.std[0] = 1.7f;
    src.subset = 5;  /* the first 5 */
    ds = open_ok(&src, &pp);
    if (ds) {
        CHECK_EQ_INT(kd_dataset_info(ds)->n, 5);
        check_batches(ds, &fx, 0);
    }
    kd_dataset_close(ds);
}

KD_TEST(data_formats_images_batches_match_the_preprocessing_formula) {
    const char *dir = kd_test_tmpdir();
    kd_data_source src;
    fixture fx;
    make_images(dir, &src, &fx);
    kd_dataset *ds = open_ok(&src, NULL);
    if (ds) {
        CHECK(kd_dataset_preprocess(ds)->scale == 1.0f / 255.0f);
        CHECK_EQ_INT(kd_dataset_info(ds)->n_classes, 2);
        check_batches(ds, &fx, 0);
    }
    kd_dataset_close(ds);
    kd_preprocess pp;
    kd_preprocess_defaults(&pp);
    pp.scale = 1.0f / 255.0f;
    pp.n_channels = 3;
    const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
    for (int c = 0; c < 3; c++) pp.mean[c] = mean[c], pp.std[c] = sd[c];
    pp.flatten = 1;
    ds = open_ok(&src, &pp);
    if (ds) {
        CHECK_EQ_INT(kd_dataset_info(ds)->shape.rank, 1);
        CHECK_EQ_INT(kd_dataset_info(ds)->shape.d[0], 36);
        check_batches(ds, &fx, 0);
    }
    kd_dataset_close(ds);
}

KD_TEST(data_formats_table_has_one_row_per_format) {
    size_t n;
    const char *const *names = kd_data_format_names(&n);
    CHECK_EQ_INT(n, 3);
    for (size_t f = 0; f < n; f++) {
        const kd_format_ops *ops = kd_data_format_ops((kd_data_format)f);
        CHECK(ops != NULL);
        if (!ops) continue;
        CHECK(ops->open && ops->read && ops->close);
        /* Only image folders decode files per sample, so only they prefetch in a thread. */
        CHECK_EQ_INT(ops->decodes_per_batch, f == KD_FMT_IMAGES);
        kd_data_format back;
        CHECK(kd_data_format_find(names[f], &back) == 0 && back == (kd_data_format)f);
    }
    CHECK(kd_data_format_ops((kd_data_format)n) == NULL);
    CHECK(kd_data_format_ops((kd_data_format)-1) == NULL);
    /* Guessing: a suffix wins over a marker anywhere in the path. */
    struct { const char *path; int want; } g[] = {
        {"data/x.csv", KD_FMT_CSV},         {"data/ubyte/x.csv", KD_FMT_CSV},
        {"a/b.tsv", KD_FMT_CSV},            {"t.csv.gz", KD_FMT_CSV},
        {"t.idx.gz", KD_FMT_IDX},           {"train-images-idx3-ubyte.gz", KD_FMT_IDX},
        {"x.idx", KD_FMT_IDX},              {"photos/", -1},
        {"x.png", -1}};
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
        kd_data_format f = (kd_data_format)99;
        int rc = kd_data_format_guess(g[i].path, &f);
        if (g[i].want < 0) CHECK(rc == -1);
        else if (rc != 0 || (int)f != g[i].want)
            kd_test_fail(__FILE__, __LINE__, "guess(%s) = %d (rc %d), expected %d", g[i].path,
                         (int)f, rc, g[i].want);
    }
}

/* Opens src with its format's ops and checks what the reader reports and every raw sample. */
static void check_reader(const kd_data_source *src, const fixture *fx, int u8, int rank) {
    const kd_format_ops *ops = kd_data_format_ops(src->format);
    void *h = NULL;
    kd_reader_info info;
    kd_err err;
    kd_err_clear(&err);
    kd_status st = ops->open(src, &h, &info, &err);
    CHECK_EQ_INT(st, KD_OK);
    if (st) {
        printf("    %s\n", err.msg);
        return;
    }
    CHECK_EQ_INT(info.n, fx->n);
    CHECK_EQ_INT(info.u8, u8);
    CHECK_EQ_INT(info.shape.rank, rank);
    CHECK_EQ_INT(kd_shape_numel(&info.shape), fx->C * fx->P);
    if (rank == 3) CHECK_EQ_INT(info.shape.d[0], fx->C);
    CHECK(info.labels != NULL);
    CHECK(info.class_names != NULL && info.n_classes > 0);
    CHECK_EQ_INT(info.n_skipped, 0);
    for (size_t s = 0; s < fx->n && info.labels; s++) {
        float got[MAX_NUMEL];
        CHECK_EQ_INT(ops->read(h, s, got, &err), KD_OK);
        CHECK_FLOATS(got, fx->raw[s], fx->C * fx->P, 0, 0);
        CHECK_EQ_INT(info.labels[s], fx->label[s]);
    }
    ops->close(h);
    ops->close(NULL);  /* NULL-safe */
}

KD_TEST(data_formats_each_reader_reports_its_source_and_raw_values) {
    kd_data_source src;
    fixture fx;
    make_idx(kd_test_tmpdir(), &src, &fx);
    check_reader(&src, &fx, 1, 3);
    make_csv(kd_test_tmpdir(), &src, &fx);
    check_reader(&src, &fx, 0, 1);
    make_images(kd_test_tmpdir(), &src, &fx);
    check_reader(&src, &fx, 1, 3);
    /* A reader's own settings are checked at its open. */
    const kd_format_ops *ops = kd_data_format_ops(KD_FMT_IMAGES);
    void *h = (void *)1;
    kd_reader_info info;
    kd_err err;
    src.channels = 2;
    CHECK_EQ_INT(ops->open(&src, &h, &info, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "data.channels: expected 1 or 3, got 2");
    CHECK(h == NULL);
}

KD_TEST(data_formats_failed_thread_start_is_an_error_not_a_hang) {
    kd_data_source src;
    fixture fx;
    make_images(kd_test_tmpdir(), &src, &fx);
    kd_dataset *ds = open_ok(&src, NULL);
    if (!ds) return;
    size_t order[5] = {0, 1, 2, 3, 4};
    kd_loader *l = (kd_loader *)1;
    kd_err err;
    kd_err_clear(&err);
    kd_loader_fail_thread_start = 1;
    CHECK_EQ_INT(kd_loader_open(&l, ds, order, 5, 2, &err), KD_EIO);  /* AUTO: threaded */
    CHECK(l == NULL);
    CHECK_CONTAINS(err.msg, "cannot start the data loader thread");
    /* The hook fires once; the next loader starts its thread and delivers every batch. */
    CHECK_EQ_INT(kd_loader_fail_thread_start, 0);
    CHECK_EQ_INT(kd_loader_open(&l, ds, order, 5, 2, &err), KD_OK);
    kd_batch b;
    size_t seen = 0;
    while (l && kd_loader_next(l, &b, &err) == KD_OK && b.n) seen += b.n;
    CHECK_EQ_INT(seen, 5);
    kd_loader_close(l);
    kd_dataset_close(ds);
}

KD_TEST(data_preprocess_same_compares_what_changes_the_values) {
    kd_preprocess a, b;
    kd_preprocess_defaults(&a);
    a.scale = 1.0f / 255.0f;
    a.n_channels = 3;
    for (int c = 0; c < 3; c++) a.mean[c] = 0.1f * (float)(c + 1), a.std[c] = 0.2f + 0.01f * (float)c;
    b = a;
    CHECK(kd_preprocess_same(&a, &b));
    /* flatten changes only the shape: the same values in the same order. */
    b.flatten = 1;
    CHECK(kd_preprocess_same(&a, &b) && kd_preprocess_same(&b, &a));
    /* 0.0078 lies just under 2^-7, where one float step is 6.0e-8 relative: within 1e-7, the
     * same. Two steps (1.2e-7) or one part in a million are different, whichever side is
     * larger. (Just above 2^-8, at 1/255, one step is already 1.19e-7: different.) */
    a.scale = 0.0078f;
    b = a;
    b.scale = nextafterf(a.scale, 1.0f);
    CHECK(kd_preprocess_same(&a, &b) && kd_preprocess_same(&b, &a));
    b.scale = nextafterf(b.scale, 1.0f);
    CHECK(!kd_preprocess_same(&a, &b) && !kd_preprocess_same(&b, &a));
    b.scale = a.scale * 1.000001f;
    CHECK(!kd_preprocess_same(&a, &b) && !kd_preprocess_same(&b, &a));
    b.scale = NAN;
    CHECK(!kd_preprocess_same(&a, &b) && !kd_preprocess_same(&b, &a));
    a.scale = 1.0f / 255.0f;
    b = a;
    b.scale = nextafterf(a.scale, 1.0f);
    CHECK(!kd_preprocess_same(&a, &b));
    b = a;
    b.n_channels = 1;
    CHECK(!kd_preprocess_same(&a, &b));
    b = a;
    b.mean[2] = nextafterf(a.mean[2], 1.0f);
    CHECK(!kd_preprocess_same(&a, &b));
    b = a;
    b.std[0] = 0.3f;
    CHECK(!kd_preprocess_same(&a, &b));
    /* Entries past n_channels are unused, so they do not count. */
    b = a;
    b.mean[3] = 42.0f, b.std[3] = 7.0f;
    CHECK(kd_preprocess_same(&a, &b));
}
