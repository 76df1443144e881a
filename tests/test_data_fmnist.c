/* test_data_fmnist.c - the real Fashion-MNIST files from Debian's dataset-fashion-mnist:
 * sizes, class balance, the first label and a pixel checksum. Skipped if not installed. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kd_data.h"
#include "kd_test.h"

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"

/* Checksums of the raw pixel bytes, computed once independently with
 *   python3 -c "import gzip; d=gzip.open('FILE').read(); print(sum(d[16:]))"
 * train-images: 3431114169, t10k-images: 573469082, first train image: 76247. */
#define FMNIST_TRAIN_PIXEL_SUM 3431114169ull
#define FMNIST_TEST_PIXEL_SUM 573469082ull
#define FMNIST_FIRST_IMAGE_SUM 76247ull

static int open_fmnist(const char *split, kd_dataset **ds) {
    kd_data_source src;
    kd_data_source_defaults(&src);
    snprintf(src.path, sizeof src.path, FMNIST_DIR "/%s-images-idx%d-ubyte.gz", split, 3);
    snprintf(src.labels_path, sizeof src.labels_path, FMNIST_DIR "/%s-labels-idx1-ubyte.gz", split);
    if (access(src.path, R_OK) != 0 || access(src.labels_path, R_OK) != 0) return -1;
    kd_preprocess pp;
    kd_preprocess_defaults(&pp);
    pp.scale = 1;  /* raw 0..255 values, so the checksum is exact */
    kd_err err;
    kd_err_clear(&err);
    kd_status st = kd_dataset_open(ds, &src, &pp, &err);
    CHECK_EQ_INT(st, KD_OK);
    if (st) printf("    %s\n", err.msg);
    return st ? 1 : 0;
}

static void check_split(const char *split, size_t want_n, unsigned long long want_sum) {
    kd_dataset *ds = NULL;
    int r = open_fmnist(split, &ds);
    if (r < 0) {
        kd_test_skip("%s not installed (Debian package dataset-fashion-mnist)", FMNIST_DIR);
        return;
    }
    if (r) return;
    const kd_data_info *info = kd_dataset_info(ds);
    CHECK_EQ_INT(info->n, want_n);
    CHECK_EQ_INT(info->shape.rank, 3);
    CHECK(info->shape.d[0] == 1 && info->shape.d[1] == 28 && info->shape.d[2] == 28);
    CHECK_EQ_INT(info->n_classes, 10);
    CHECK(info->class_names && strcmp(info->class_names[9], "9") == 0);
    /* Stream the whole split through the loader at batch 128, as training does. */
    size_t *order = malloc(want_n * sizeof(size_t));
    for (size_t i = 0; i < want_n; i++) order[i] = i;
    kd_loader *l = NULL;
    kd_err err;
    CHECK_EQ_INT(kd_loader_open(&l, ds, order, want_n, 128, &err), KD_OK);
    unsigned long long sum = 0, first_sum = 0;
    size_t per_class[10] = {0}, seen = 0, bad_labels = 0, nonint = 0;
    int32_t first_label = -1;
    kd_batch b;
    while (l && kd_loader_next(l, &b, &err) == KD_OK && b.n) {
        for (size_t i = 0; i < b.n * 784; i++) {
            float v = b.x[i];
            unsigned long long u = (unsigned long long)v;
            if ((float)u != v) nonint++;
            sum += u;
            if (seen == 0 && i < 784) first_sum += u;
        }
        if (seen == 0) first_label = b.y[0];
        for (size_t i = 0; i < b.n; i++) {
            if (b.y[i] < 0 || b.y[i] > 9) bad_labels++;
            else per_class[b.y[i]]++;
        }
        seen += b.n;
    }
    kd_loader_close(l);
    free(order);
    CHECK_EQ_INT(seen, want_n);
    CHECK_EQ_INT(nonint, 0);
    CHECK_EQ_INT(bad_labels, 0);
    CHECK(sum == want_sum);
    if (sum != want_sum) printf("    pixel sum %llu, expected %llu\n", sum, want_sum);
    for (int c = 0; c < 10; c++) CHECK_EQ_INT(per_class[c], want_n / 10);
    if (want_n == 60000) {
        CHECK_EQ_INT(first_label, 9);
        CHECK(first_sum == FMNIST_FIRST_IMAGE_SUM);
    }
    kd_dataset_close(ds);
}

KD_TEST(data_fmnist_train_60000_balanced_checksum) {
    check_split("train", 60000, FMNIST_TRAIN_PIXEL_SUM);
}

KD_TEST(data_fmnist_test_10000_balanced_checksum) {
    check_split("t10k", 10000, FMNIST_TEST_PIXEL_SUM);
}
