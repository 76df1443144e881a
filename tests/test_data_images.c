/* test_data_images.c - image folders: PNG/JPEG decoding, sorted classes, channels, bilinear
 * resize, preprocessing, the threaded loader against direct decoding, and every rejection. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kd_image_write.h"

#include "../src/data/data_impl.h"
#include "kd_test.h"

static void mkdir_p2(const char *a, const char *b) {
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", a, b);
    mkdir(p, 0700);
}

/* Gray w x h PNG whose pixel (i, j) is base + 3*i + j. */
static void write_gray(const char *dir, const char *name, int w, int h, int base) {
    char p[1200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    unsigned char *px = malloc((size_t)w * h);
    for (int i = 0; i < h; i++)
        for (int j = 0; j < w; j++) px[i * w + j] = (unsigned char)(base + 3 * i + j);
    CHECK(stbi_write_png(p, w, h, 1, px, w) != 0);
    free(px);
}

static kd_data_source folder_source(const char *root, int channels, size_t h, size_t w) {
    kd_data_source src;
    kd_data_source_defaults(&src);
    src.format = KD_FMT_IMAGES;
    snprintf(src.path, sizeof src.path, "%s", root);
    src.channels = channels;
    src.height = h;
    src.width = w;
    return src;
}

KD_TEST(data_images_folder_reads_back_exactly_with_sorted_classes) {
    const char *dir = kd_test_tmpdir();
    mkdir_p2(dir, "zebra");
    mkdir_p2(dir, "ant");
    char sub[1200];
    snprintf(sub, sizeof sub, "%s/zebra", dir);
    write_gray(sub, "b.png", 4, 3, 100);
    write_gray(sub, "a.PNG", 4, 3, 50);
    kd_test_write_file(strcat(sub, "/notes.txt"), "x", 1);  /* ignored: not an image */
    snprintf(sub, sizeof sub, "%s/ant", dir);
    write_gray(sub, "x.png", 4, 3, 7);

    kd_data_source src = folder_source(dir, 1, 3, 4);
    kd_dataset *ds = NULL;
    kd_err err;
    kd_err_clear(&err);
    CHECK_EQ_INT(kd_dataset_open(&ds, &src, NULL, &err), KD_OK);
    if (!ds) {
        printf("    %s\n", err.msg);
        return;
    }
    const kd_data_info *info = kd_dataset_info(ds);
    CHECK_EQ_INT(info->n, 3);
    CHECK_EQ_INT(info->n_classes, 2);
    CHECK(strcmp(info->class_names[0], "ant") == 0 && strcmp(info->class_names[1], "zebra") == 0);
    CHECK_EQ_INT(info->shape.rank, 3);
    CHECK_EQ_INT(info->shape.d[0], 1);
    CHECK_EQ_INT(info->shape.d[1], 3);
    CHECK_EQ_INT(info->shape.d[2], 4);
    /* Order: ant/x.png, zebra/a.PNG, zebra/b.png. */
    size_t idx[3] = {0, 1, 2};
    float x[36];
    int32_t y[3];
    CHECK_EQ_INT(kd_dataset_get(ds, idx, 3, x, y, NULL, &err), KD_OK);
    const int bases[3] = {7, 50, 100}, labels[3] = {0, 1, 1};
    for (int s = 0; s < 3; s++) {
        CHECK_EQ_INT(y[s], labels[s]);
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 4; j++)
                CHECK_CLOSE(x[s * 12 + i * 4 + j], (bases[s] + 3 * i + j) / 255.0f, 1e-7, 0);
    }
    kd_dataset_close(ds);
}

KD_TEST(data_images_rgb_planar_resize_and_normalisation) {
    /* Bilinear with half-pixel centres, 2x2 -> 4x4, values worked out by hand: the sampling
     * weights along each axis are 0, 1/4, 3/4, 1. */
    const float src2[4] = {0, 4, 8, 12};
    float dst[16];
    kd_resize_bilinear(src2, 2, 2, dst, 4, 4);
    const float want[16] = {0, 1, 3, 4, 2, 3, 5, 6, 6, 7, 9, 10, 8, 9, 11, 12};
    CHECK_FLOATS(dst, want, 16, 1e-6, 0);
    /* Downscale 4x4 -> 2x2 samples the centres between pixel pairs: averages of 2x2 blocks. */
    float back[4];
    kd_resize_bilinear(want, 4, 4, back, 2, 2);
    const float want_back[4] = {(0 + 1 + 2 + 3) / 4.0f, (3 + 4 + 5 + 6) / 4.0f,
                                (6 + 7 + 8 + 9) / 4.0f, (9 + 10 + 11 + 12) / 4.0f};
    CHECK_FLOATS(back, want_back, 4, 1e-6, 0);

    const char *dir = kd_test_tmpdir();
    mkdir_p2(dir, "c");
    char p[1200];
    snprintf(p, sizeof p, "%s/c/rgb.png", dir);
    /* 2x2 RGB: channel c of pixel k = 10*c + 4*k (so each plane is {0,4,8,12} + 10c). */
    unsigned char rgb[12];
    for (int k = 0; k < 4; k++)
        for (int c = 0; c < 3; c++) rgb[k * 3 + c] = (unsigned char)(10 * c + 4 * k);
    CHECK(stbi_write_png(p, 2, 2, 3, rgb, 6) != 0);
    kd_data_source src = folder_source(dir, 3, 4, 4);
    kd_preprocess pp;
    kd_preprocess_defaults(&pp);
    pp.scale = 1;
    pp.n_channels = 3;
    for (int c = 0; c < 3; c++) {
        pp.mean[c] = 10.0f * c;
        pp.std[c] = 0.5f;
    }
    kd_dataset *ds = NULL;
    kd_err err;
    CHECK_EQ_INT(kd_dataset_open(&ds, &src, &pp, &err), KD_OK);
    if (!ds) {
        printf("    %s\n", err.msg);
        return;
    }
    float x[48];
    size_t i0 = 0;
    CHECK_EQ_INT(kd_dataset_get(ds, &i0, 1, x, NULL, NULL, &err), KD_OK);
    /* After (raw - 10c) / 0.5 every plane is 2 * want. */
    for (int c = 0; c < 3; c++)
        for (int k = 0; k < 16; k++) CHECK_CLOSE(x[c * 16 + k], 2 * want[k], 1e-5, 0);
    kd_dataset_close(ds);

    /* The same file through kd_image_load (predict's path) with flatten-independent output. */
    float one[48];
    CHECK_EQ_INT(kd_image_load(p, 3, 4, 4, &pp, one, &err), KD_OK);
    CHECK_FLOATS(one, x, 48, 0, 0);
}

/* An 8x8 JPEG, every pixel 128, quality 95: bytes written once by stbi_write_jpg_to_func in
 * a non-sanitized build (stb_image_write's JPEG encoder shifts signed ints, which UBSan rejects,
 * so the sanitizer suite cannot run the encoder itself). */
static const unsigned char gray128_jpg[] = {
    0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01,
    0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0xff, 0xdb, 0x00, 0x84,
    0x00, 0x02, 0x01, 0x01, 0x01, 0x01, 0x01, 0x02, 0x01, 0x01, 0x01, 0x02, 0x02,
    0x02, 0x02, 0x02, 0x04, 0x03, 0x02, 0x02, 0x02, 0x02, 0x05, 0x04, 0x04,
    0x03, 0x04, 0x06, 0x05, 0x06, 0x06, 0x06, 0x05, 0x06, 0x06, 0x06, 0x07,
    0x09, 0x08, 0x06, 0x07, 0x09, 0x07, 0x06, 0x06, 0x08, 0x0b, 0x08, 0x09,
    0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x06, 0x08, 0x0b, 0x0c, 0x0b, 0x0a, 0x0c,
    0x09, 0x0a, 0x0a, 0x0a, 0x01, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x05, 0x03, 0x03, 0x05, 0x0a, 0x07,
    0x06, 0x07, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a,
    0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a,
    0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a,
    0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a, 0x0a,
    0x0a, 0x0a, 0x0a, 0x0a, 0xff, 0xc0, 0x00, 0x11, 0x08, 0x00, 0x08, 0x00, 0x08, 0x03, 0x01, 0x11,
    0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01, 0xff, 0xc4, 0x01, 0xa2, 0x00,
    0x00, 0x01, 0x05, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b,
    0x10, 0x00, 0x02, 0x01, 0x03, 0x03, 0x02, 0x04, 0x03, 0x05, 0x05, 0x04, 0x04,
    0x00, 0x00, 0x01, 0x7d, 0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06,
    0x13, 0x51, 0x61, 0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08,
    0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72,
    0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45,
    0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59,
    0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75,
    0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3,
    0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6,
    0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9,
    0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4,
    0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0x01, 0x00, 0x03, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b,
    0x11, 0x00, 0x02, 0x01, 0x02, 0x04, 0x04, 0x03, 0x04, 0x07, 0x05, 0x04, 0x04,
    0x00, 0x01, 0x02, 0x77, 0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41,
    0x51, 0x07, 0x61, 0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91,
    0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0, 0x15, 0x62, 0x72, 0xd1,
    0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26,
    0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44,
    0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58,
    0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74,
    0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a,
    0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4,
    0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
    0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
    0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4,
    0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xff, 0xda, 0x00, 0x0c, 0x03, 0x01, 0x00, 0x02, 0x11, 0x03, 0x11, 0x00,
    0x3f, 0x00, 0x28, 0x03, 0xff, 0xd9
};

KD_TEST(data_images_jpeg_and_unlabeled_flat_folder) {
    const char *dir = kd_test_tmpdir();
    char p[1200];
    snprintf(p, sizeof p, "%s/one.jpg", dir);
    CHECK(kd_test_write_file(p, gray128_jpg, sizeof gray128_jpg) == 0);
    snprintf(p, sizeof p, "%s/two.JPEG", dir);
    CHECK(kd_test_write_file(p, gray128_jpg, sizeof gray128_jpg) == 0);
    kd_data_source src = folder_source(dir, 1, 8, 8);
    src.unlabeled = 1;
    kd_dataset *ds = NULL;
    kd_err err;
    CHECK_EQ_INT(kd_dataset_open(&ds, &src, NULL, &err), KD_OK);
    if (!ds) {
        printf("    %s\n", err.msg);
        return;
    }
    CHECK_EQ_INT(kd_dataset_info(ds)->n, 2);
    CHECK_EQ_INT(kd_dataset_info(ds)->has_labels, 0);
    CHECK_EQ_INT(kd_dataset_info(ds)->n_classes, 0);
    size_t idx[2] = {0, 1};
    float x[128];
    int32_t y[2] = {5, 5};
    CHECK_EQ_INT(kd_dataset_get(ds, idx, 2, x, y, NULL, &err), KD_OK);
    CHECK_EQ_INT(y[0], -1);
    CHECK_EQ_INT(y[1], -1);
    /* A flat gray JPEG decodes to (nearly) its level: lossy, so within 2 levels. */
    for (int k = 0; k < 128; k++) CHECK_CLOSE(x[k], 128 / 255.0, 2 / 255.0, 0);
    kd_dataset_close(ds);
}

KD_TEST(data_images_loader_thread_matches_direct_decoding) {
    const char *dir = kd_test_tmpdir();
    const char *cls[3] = {"a", "b", "c"};
    char sub[1200], name[64];
    for (int c = 0; c < 3; c++) {
        mkdir_p2(dir, cls[c]);
        snprintf(sub, sizeof sub, "%s/%s", dir, cls[c]);
        for (int i = 0; i < 8 - c; i++) {  /* 8 + 7 + 6 = 21 images */
            snprintf(name, sizeof name, "%02d.png", i);
            write_gray(sub, name, 5, 6, 20 * c + i);
        }
    }
    kd_data_source src = folder_source(dir, 1, 4, 4);  /* resize 6x5 -> 4x4 */
    kd_dataset *ds = NULL;
    kd_err err;
    CHECK_EQ_INT(kd_dataset_open(&ds, &src, NULL, &err), KD_OK);
    if (!ds) {
        printf("    %s\n", err.msg);
        return;
    }
    size_t n = kd_dataset_info(ds)->n;
    CHECK_EQ_INT(n, 21);
    size_t order[21];
    for (size_t i = 0; i < n; i++) order[i] = i;
    kd_rng r;
    kd_rng_seed(&r, 3);
    kd_rng_shuffle(&r, order, n);
    for (int mode = KD_LOADER_AUTO; mode <= KD_LOADER_THREAD; mode++) {
        kd_loader *l = NULL;
        CHECK_EQ_INT(kd_loader_open_mode(&l, ds, order, n, 5, (kd_loader_mode)mode, &err), KD_OK);
        if (!l) continue;
        size_t seen = 0, batches = 0;
        kd_batch b;
        float want[5 * 16];
        int32_t wy[5];
        while (kd_loader_next(l, &b, &err) == KD_OK && b.n > 0) {
            CHECK(b.n == (batches < 4 ? 5u : 1u));
            CHECK_EQ_INT(kd_dataset_get(ds, order + seen, b.n, want, wy, NULL, &err), KD_OK);
            CHECK_FLOATS(b.x, want, b.n * 16, 0, 0);
            for (size_t i = 0; i < b.n; i++) CHECK_EQ_INT(b.y[i], wy[i]);
            seen += b.n;
            batches++;
        }
        CHECK_EQ_INT(seen, 21);
        CHECK_EQ_INT(batches, 5);
        /* After the end, next keeps answering "no more". */
        CHECK_EQ_INT(kd_loader_next(l, &b, &err), KD_OK);
        CHECK_EQ_INT(b.n, 0);
        kd_loader_close(l);
    }
    /* Closing a threaded loader early (worker blocked on a full queue) must not hang or leak. */
    kd_loader *l = NULL;
    CHECK_EQ_INT(kd_loader_open_mode(&l, ds, order, n, 2, KD_LOADER_THREAD, &err), KD_OK);
    kd_batch b;
    CHECK_EQ_INT(kd_loader_next(l, &b, &err), KD_OK);
    kd_loader_close(l);
    kd_dataset_close(ds);
}

static void expect_open_fails(const kd_data_source *src, kd_status code, const char *frag1,
                              const char *frag2) {
    kd_dataset *ds = (kd_dataset *)1;
    kd_err err;
    kd_err_clear(&err);
    CHECK_EQ_INT(kd_dataset_open(&ds, src, NULL, &err), code);
    CHECK(ds == NULL);
    CHECK_CONTAINS(err.msg, frag1);
    if (frag2) CHECK_CONTAINS(err.msg, frag2);
}

KD_TEST(data_images_rejections_and_skip_bad) {
    const char *dir = kd_test_tmpdir();
    char root[1200], p[1300];
    kd_data_source src;

    snprintf(root, sizeof root, "%s/empty", dir);
    mkdir(root, 0700);
    src = folder_source(root, 1, 4, 4);
    expect_open_fails(&src, KD_EINPUT, "empty: no class subfolders", NULL);
    src.unlabeled = 1;
    expect_open_fails(&src, KD_EINPUT, "empty: no images", NULL);

    snprintf(root, sizeof root, "%s/noimg", dir);
    mkdir(root, 0700);
    mkdir_p2(root, "cls");
    snprintf(p, sizeof p, "%s/cls/readme.txt", root);
    kd_test_write_file(p, "hi", 2);
    src = folder_source(root, 1, 4, 4);
    expect_open_fails(&src, KD_EINPUT, "no images (.png, .jpg, .jpeg)", NULL);

    snprintf(root, sizeof root, "%s/missing", dir);
    src = folder_source(root, 1, 4, 4);
    expect_open_fails(&src, KD_EINPUT, "missing: cannot open folder", NULL);

    /* Bad settings. */
    snprintf(root, sizeof root, "%s/bad", dir);
    mkdir(root, 0700);
    mkdir_p2(root, "k");
    snprintf(p, sizeof p, "%s/k", root);
    write_gray(p, "good.png", 4, 4, 0);
    src = folder_source(root, 2, 4, 4);
    expect_open_fails(&src, KD_EUSAGE, "data.channels: expected 1 or 3, got 2", NULL);
    src = folder_source(root, 1, 8193, 4);
    expect_open_fails(&src, KD_EUSAGE, "data.height/width", NULL);
    /* 0 takes the first image's side (4), the other given values stay. */
    {
        kd_dataset *ds = NULL;
        kd_err err;
        src = folder_source(root, 3, 0, 2);
        CHECK_EQ_INT(kd_dataset_open(&ds, &src, NULL, &err), KD_OK);
        const kd_shape *sh = ds ? &kd_dataset_info(ds)->shape : NULL;
        CHECK(sh && sh->rank == 3 && sh->d[0] == 3 && sh->d[1] == 4 && sh->d[2] == 2);
        kd_dataset_close(ds);
    }

    /* An undecodable file: an error naming it, or skipped and counted with skip_bad. */
    snprintf(p, sizeof p, "%s/k/broken.png", root);
    kd_test_write_file(p, "this is not a png at all", 24);
    src = folder_source(root, 1, 4, 4);
    expect_open_fails(&src, KD_EINPUT, "broken.png: cannot decode image", "skip_bad");
    src.skip_bad = 1;
    kd_dataset *ds = NULL;
    kd_err err;
    CHECK_EQ_INT(kd_dataset_open(&ds, &src, NULL, &err), KD_OK);
    if (ds) {
        const kd_data_info *info = kd_dataset_info(ds);
        CHECK_EQ_INT(info->n, 1);
        CHECK_EQ_INT(info->n_skipped, 1);
        CHECK_CONTAINS(info->skip_note, "skipped 1 undecodable image (first: ");
        CHECK_CONTAINS(info->skip_note, "broken.png");
        kd_dataset_close(ds);
    }

    /* Larger than the dimension cap: refused from the header, before decoding. */
    snprintf(p, sizeof p, "%s/k", root);
    write_gray(p, "wide.png", KD_IMAGE_MAX_SIDE + 1, 1, 0);
    src = folder_source(root, 1, 4, 4);
    snprintf(p, sizeof p, "%s/k/broken.png", root);
    remove(p);
    expect_open_fails(&src, KD_EINPUT, "wide.png: image is 8193x1", "expected sides of 1 to 8192");
    snprintf(p, sizeof p, "%s/k/wide.png", root);
    remove(p);

    /* A PNG whose structure is fine (every chunk whole) but whose compressed data is damaged:
     * passes the open-time check, fails at decode. Without skip_bad the loader reports it by
     * name; with it, the sample is left out of its batch (never an all-zero stand-in), counted,
     * and the first failure kept for the report. */
    unsigned char px[64 * 64];
    uint32_t lcg = 1;  /* noise, so the compressed data is long enough to damage */
    for (int i = 0; i < 64 * 64; i++) {
        lcg = lcg * 1664525u + 1013904223u;
        px[i] = (unsigned char)(lcg >> 24);
    }
    int len = 0;
    unsigned char *png = stbi_write_png_to_mem(px, 64, 64, 64, 1, &len);
    CHECK(png && len > 400);
    if (!png) return;
    memset(png + 100, 0xff, 64);  /* inside the IDAT data (it starts at byte 41) */
    snprintf(p, sizeof p, "%s/k/cut.png", root);
    kd_test_write_file(p, png, (size_t)len);
    free(png);
    src = folder_source(root, 1, 4, 4);
    CHECK_EQ_INT(kd_dataset_open(&ds, &src, NULL, &err), KD_OK);
    if (ds) {
        CHECK_EQ_INT(kd_dataset_info(ds)->n, 2);
        size_t order[2] = {0, 1};  /* cut.png sorts before good.png */
        kd_loader *l = NULL;
        CHECK_EQ_INT(kd_loader_open(&l, ds, order, 2, 2, &err), KD_OK);
        kd_batch b;
        CHECK_EQ_INT(kd_loader_next(l, &b, &err), KD_EINPUT);
        CHECK_CONTAINS(err.msg, "cut.png: cannot decode image");
        kd_err_clear(&err);
        CHECK_EQ_INT(kd_loader_next(l, &b, &err), KD_EINPUT);  /* sticky */
        kd_loader_close(l);
        kd_dataset_close(ds);
    }
    src.skip_bad = 1;
    CHECK_EQ_INT(kd_dataset_open(&ds, &src, NULL, &err), KD_OK);
    if (ds) {
        size_t order[2] = {0, 1}, n_got = 99;
        float x[32], want[16];
        int32_t y[2] = {-7, -7};
        CHECK_EQ_INT(kd_dataset_get(ds, order, 2, x, y, &n_got, &err), KD_OK);
        CHECK_EQ_INT(n_got, 1);  /* cut.png left out: good.png is row 0 */
        CHECK_EQ_INT(kd_dataset_get(ds, order + 1, 1, want, NULL, NULL, &err), KD_OK);
        CHECK_FLOATS(x, want, 16, 0, 0);
        CHECK_EQ_INT(y[0], 0);
        CHECK_EQ_INT(y[1], -7);  /* untouched */
        CHECK_EQ_INT(kd_dataset_n_decode_failures(ds), 1);
        CHECK_CONTAINS(kd_dataset_decode_note(ds), "cut.png: cannot decode image");
        /* Without n_out (a caller that needs every sample) the failure is the error. */
        CHECK_EQ_INT(kd_dataset_get(ds, order, 2, x, y, NULL, &err), KD_EINPUT);
        /* The loader: a batch of the good sample with the skipped count, in both modes; a
         * slice whose samples all fail is no batch (n = 0 stays the end). */
        for (int mode = KD_LOADER_SYNC; mode <= KD_LOADER_THREAD; mode++) {
            kd_loader *l = NULL;
            size_t ord3[3] = {0, 0, 1};
            CHECK_EQ_INT(kd_loader_open_mode(&l, ds, ord3, 3, 1, (kd_loader_mode)mode, &err),
                         KD_OK);
            kd_batch b;
            CHECK_EQ_INT(kd_loader_next(l, &b, &err), KD_OK);
            CHECK_EQ_INT(b.n, 1);
            CHECK_EQ_INT(b.n_skipped, 2);
            CHECK_EQ_INT(b.slices, 3);
            CHECK_EQ_INT(kd_loader_next(l, &b, &err), KD_OK);
            CHECK_EQ_INT(b.n, 0);
            kd_loader_close(l);
        }
        kd_dataset_close(ds);
    }
}
/* The whole path with data.skip_bad: an image whose structure passes the open-time check but
 * whose pixels do not decode is left out of every training batch (not trained on as zeros),
 * the count is printed with each epoch and recorded in metrics.jsonl ("skipped"), and without
 * skip_bad the run stops with exit 3 naming the file. */
KD_TEST(data_images_skip_bad_at_batch_time_in_training) {
    const char *dir = kd_test_tmpdir();
    char root[1024], p[1200], cfg[1200], cmd[4096];
    static char out[65536];
    snprintf(root, sizeof root, "%s/imgs", dir);
    mkdir(root, 0700);
    mkdir_p2(root, "a");
    mkdir_p2(root, "b");
    for (int i = 0; i < 6; i++) {
        char name[32];
        snprintf(name, sizeof name, "a%d.png", i);
        snprintf(p, sizeof p, "%s/a", root);
        write_gray(p, name, 6, 6, 10 + i);
        snprintf(name, sizeof name, "b%d.png", i);
        snprintf(p, sizeof p, "%s/b", root);
        write_gray(p, name, 6, 6, 150 + i);
    }
    /* Noise compresses badly, so damaging the middle of its data leaves the chunks whole. */
    unsigned char px[64 * 64];
    uint32_t lcg = 7;
    for (int i = 0; i < 64 * 64; i++) {
        lcg = lcg * 1664525u + 1013904223u;
        px[i] = (unsigned char)(lcg >> 24);
    }
    int len = 0;
    unsigned char *png = stbi_write_png_to_mem(px, 64, 64, 64, 1, &len);
    CHECK(png && len > 400);
    if (!png) return;
    memset(png + 100, 0xff, 64);
    snprintf(p, sizeof p, "%s/a/damaged.png", root);
    kd_test_write_file(p, png, (size_t)len);
    free(png);
    for (int skip = 1; skip >= 0; skip--) {
        snprintf(cfg, sizeof cfg, "%s/skip%d.json", dir, skip);
        char json[2048];
        int n = snprintf(json, sizeof json,
                         "{\"data\": {\"train\": {\"format\": \"images\", \"path\": \"%s\", "
                         "\"height\": 6, \"width\": 6, \"skip_bad\": %s}, \"validation_split\": 0, "
                         "\"preprocess\": {\"flatten\": true}},"
                         " \"model\": {\"layers\": [{\"type\": \"dense\", \"units\": 2}]},"
                         " \"optimizer\": {\"name\": \"sgd\", \"lr\": 0.1},"
                         " \"train\": {\"epochs\": 2, \"batch_size\": 4, \"seed\": 1}}",
                         root, skip ? "true" : "false");
        CHECK(kd_test_write_file(cfg, json, (size_t)n) == 0);
        snprintf(cmd, sizeof cmd, "'%s' train --config '%s' --out '%s/run%d'", kd_test_distill(),
                 cfg, dir, skip);
        int rc = kd_test_run(cmd, out, sizeof out);
        if (!skip) {
            CHECK_EQ_INT(rc, 3);
            CHECK_CONTAINS(out, "damaged.png: cannot decode image");
            continue;
        }
        CHECK_EQ_INT(rc, 0);
        CHECK_CONTAINS(out, "skipped 1 undecodable");
        CHECK_CONTAINS(out, "WARNING: epoch 2: 1 training image could not be decoded and was "
                            "left out (data.skip_bad; first: ");
        CHECK_CONTAINS(out, "damaged.png: cannot decode image");
        char *metrics = NULL;
        size_t mlen = 0;
        kd_err err;
        snprintf(p, sizeof p, "%s/run1/metrics.jsonl", dir);
        CHECK_EQ_INT(kd_read_file(p, 1 << 20, &metrics, &mlen, &err), KD_OK);
        /* Both epochs: 12 samples trained on, 1 left out. */
        const char *first = metrics ? strstr(metrics, "\"skipped\":1") : NULL;
        CHECK(first != NULL);
        CHECK(first && strstr(first + 1, "\"skipped\":1") != NULL);
        free(metrics);
    }
}
