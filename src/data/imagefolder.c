/* imagefolder.c - the image-folder format: an index of files (root/<class>/<file>.png|jpg|jpeg,
 * or a flat unlabeled folder) built at open, and per-image decoding with stb_image, forced
 * channel count and bilinear resize when a sample is read. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <stb_image.h>

#include "data_impl.h"
#include "kd_path.h"

/* A growable list of malloc'd strings. */
typedef struct {
    char **v;
    size_t n, cap;
} strlist;

static int strlist_push(strlist *l, const char *s) {
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        char **nv = realloc(l->v, nc * sizeof(char *));
        if (!nv) return -1;
        l->v = nv;
        l->cap = nc;
    }
    if (!(l->v[l->n] = strdup(s))) return -1;
    l->n++;
    return 0;
}

static void strlist_free(strlist *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int kd_data_image_name(const char *path) {
    return kd_path_has_suffix(path, ".png", 1) || kd_path_has_suffix(path, ".jpg", 1) ||
           kd_path_has_suffix(path, ".jpeg", 1);
}

/* Lists dir's entries (not starting with '.') that are directories (want_dirs) or image
 * files, sorted by name. */
static kd_status list_dir(const char *dir, int want_dirs, strlist *out, kd_err *err) {
    DIR *d = opendir(dir);
    if (!d) return kd_err_set(err, KD_EINPUT, "%s: cannot open folder: %s", dir, strerror(errno));
    kd_status st = KD_OK;
    struct dirent *e;
    char path[KD_PATH_MAX + 256];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (stat(path, &sb) != 0) continue;
        int ok = want_dirs ? S_ISDIR(sb.st_mode) : (S_ISREG(sb.st_mode) && kd_data_image_name(e->d_name));
        if (ok && strlist_push(out, e->d_name)) {
            st = kd_err_set(err, KD_EIO, "out of memory");
            break;
        }
    }
    closedir(d);
    if (!st && out->n > 1) qsort(out->v, out->n, sizeof(char *), cmp_str);
    return st;
}

void kd_image_index_free(kd_image_index *ix) {
    if (!ix) return;
    free(ix->pool);
    free(ix->offsets);
    free(ix->labels);
    if (ix->class_names)
        for (size_t i = 0; i < ix->n_classes; i++) free(ix->class_names[i]);
    free(ix->class_names);
    free(ix->skip_note);
    memset(ix, 0, sizeof *ix);
}

/* The index-time check: the first bytes of the file through kd_image_header (structure and
 * caps), without decoding pixels or reading whole files. A header that does not fit in the
 * first KD_IMAGE_PREFIX bytes (large metadata before a JPEG's frame header) is looked for in the
 * whole file. Returns the verdict and the reason in why. */
#define KD_IMAGE_PREFIX ((size_t)64 << 10)
static kd_image_verdict check_image_header(const char *path, int *w, int *h, char *why,
                                           size_t cap) {
    unsigned char prefix[KD_IMAGE_PREFIX];
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(why, cap, "cannot open: %s", strerror(errno));
        return KD_IMAGE_BAD;
    }
    size_t n = fread(prefix, 1, sizeof prefix, f);
    int more = n == sizeof prefix && fgetc(f) != EOF;
    fclose(f);
    kd_image_verdict v = kd_image_header(prefix, n, !more, w, h, why, cap);
    if (v == KD_IMAGE_BAD && more) {
        char *all = NULL;
        size_t len = 0;
        kd_err err;
        if (kd_read_file(path, KD_IMAGE_MAX_FILE, &all, &len, &err) != KD_OK) {
            snprintf(why, cap, "%s", err.msg);
            return KD_IMAGE_BAD;
        }
        v = kd_image_header((const unsigned char *)all, len, 1, w, h, why, cap);
        free(all);
    }
    return v;
}

/* Appends one file to the index (after the header check). */
typedef struct {
    size_t pool_cap, pool_used, idx_cap;
} index_caps;

static kd_status index_add(kd_image_index *ix, index_caps *cp, const char *path, int32_t label,
                           int skip_bad, kd_err *err) {
    int w, h;
    char why[256];
    kd_image_verdict v = check_image_header(path, &w, &h, why, sizeof why);
    if (v != KD_IMAGE_OK) {
        if (!skip_bad) {
            if (v == KD_IMAGE_TOO_LARGE)
                return kd_err_set(err, KD_EINPUT, "%s: %s", path, why);
            return kd_err_set(err, KD_EINPUT,
                              "%s: cannot decode image: %s (set data.skip_bad to skip such files)",
                              path, why);
        }
        if (ix->n_skipped++ == 0) {
            char note[KD_PATH_MAX + 256];
            snprintf(note, sizeof note, "%s: %s", path, why);
            free(ix->skip_note);
            if (!(ix->skip_note = strdup(note))) return kd_err_set(err, KD_EIO, "out of memory");
        }
        return KD_OK;
    }
    size_t len = strlen(path) + 1;
    if (cp->pool_used + len > cp->pool_cap) {
        size_t nc = cp->pool_cap ? cp->pool_cap * 2 : 1 << 16;
        while (nc < cp->pool_used + len) nc *= 2;
        char *np = realloc(ix->pool, nc);
        if (!np) return kd_err_set(err, KD_EIO, "out of memory");
        ix->pool = np;
        cp->pool_cap = nc;
    }
    if (ix->n == cp->idx_cap) {
        size_t nc = cp->idx_cap ? cp->idx_cap * 2 : 1024;
        size_t *no = realloc(ix->offsets, nc * sizeof(size_t));
        if (!no) return kd_err_set(err, KD_EIO, "out of memory");
        ix->offsets = no;
        int32_t *nl = realloc(ix->labels, nc * sizeof(int32_t));
        if (!nl) return kd_err_set(err, KD_EIO, "out of memory");
        ix->labels = nl;
        cp->idx_cap = nc;
    }
    memcpy(ix->pool + cp->pool_used, path, len);
    ix->offsets[ix->n] = cp->pool_used;
    cp->pool_used += len;
    ix->labels[ix->n] = label;
    ix->n++;
    return KD_OK;
}

kd_status kd_image_index_build(const kd_data_source *src, kd_image_index *out, kd_err *err) {
    kd_status st = KD_OK;
    strlist classes = {0}, files = {0};
    index_caps caps = {0, 0, 0};
    char path[2 * KD_PATH_MAX + 512];
    memset(out, 0, sizeof *out);
    const char *root = src->path;
    struct stat sb;
    if (stat(root, &sb) != 0)
        return kd_err_set(err, KD_EINPUT, "%s: cannot open folder: %s", root, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return kd_err_set(err, KD_EINPUT, "%s: expected a folder of images, found a file", root);
    if (src->unlabeled) {
        if ((st = list_dir(root, 0, &files, err))) goto cleanup;
        for (size_t i = 0; i < files.n; i++) {
            snprintf(path, sizeof path, "%s/%s", root, files.v[i]);
            if ((st = index_add(out, &caps, path, -1, src->skip_bad, err))) goto cleanup;
        }
        if (out->n == 0 && out->n_skipped == 0) {
            st = kd_err_set(err, KD_EINPUT, "%s: no images (.png, .jpg, .jpeg) in the folder", root);
            goto cleanup;
        }
    } else {
        if ((st = list_dir(root, 1, &classes, err))) goto cleanup;
        if (classes.n == 0) {
            st = kd_err_set(err, KD_EINPUT,
                            "%s: no class subfolders: expected root/<class>/*.png|jpg|jpeg "
                            "(or set data.unlabeled for a flat folder)",
                            root);
            goto cleanup;
        }
        if (src->n_classes && classes.n != src->n_classes) {
            st = kd_err_set(err, KD_EINPUT, "%s: %zu class subfolders, expected %zu", root, classes.n,
                            src->n_classes);
            goto cleanup;
        }
        if (classes.n > KD_MAX_CLASSES) {
            st = kd_err_set(err, KD_EINPUT, "%s: %zu class subfolders, expected at most %d", root,
                            classes.n, KD_MAX_CLASSES);
            goto cleanup;
        }
        for (size_t c = 0; c < classes.n; c++) {
            char dir[KD_PATH_MAX + 512];
            snprintf(dir, sizeof dir, "%s/%s", root, classes.v[c]);
            strlist_free(&files);
            if ((st = list_dir(dir, 0, &files, err))) goto cleanup;
            for (size_t i = 0; i < files.n; i++) {
                snprintf(path, sizeof path, "%s/%s", dir, files.v[i]);
                if ((st = index_add(out, &caps, path, (int32_t)c, src->skip_bad, err)))
                    goto cleanup;
            }
        }
        out->n_classes = classes.n;
        out->class_names = classes.v;  /* take ownership of the sorted names */
        classes.v = NULL;
        classes.n = classes.cap = 0;
    }
    if (out->n == 0) {
        if (out->n_skipped)
            st = kd_err_set(err, KD_EINPUT, "%s: no decodable images (all %zu skipped; first: %s)",
                            root, out->n_skipped, out->skip_note);
        else
            st = kd_err_set(err, KD_EINPUT, "%s: no images (.png, .jpg, .jpeg) in any class folder",
                            root);
        goto cleanup;
    }
    if (src->unlabeled) {
        free(out->labels);
        out->labels = NULL;
    }
    if (out->n_skipped) {
        char note[KD_PATH_MAX + 512];
        snprintf(note, sizeof note, "skipped %zu undecodable image%s (first: %s)", out->n_skipped,
                 out->n_skipped == 1 ? "" : "s", out->skip_note);
        free(out->skip_note);
        if (!(out->skip_note = strdup(note))) {
            st = kd_err_set(err, KD_EIO, "out of memory");
            goto cleanup;
        }
    }

cleanup:
    strlist_free(&classes);
    strlist_free(&files);
    if (st) kd_image_index_free(out);
    return st;
}

/* Half-pixel centres: destination index i samples source coordinate (i + 0.5) * r - 0.5
 * (r = source / destination size), clamped to the edge of the n source values: the two
 * neighbours *lo, *hi and the weight *w of *hi. The same for rows and columns. */
static void bilinear_tap(size_t i, double r, size_t n, size_t *lo, size_t *hi, float *w) {
    double f = ((double)i + 0.5) * r - 0.5;
    if (f < 0) f = 0;
    size_t a = (size_t)f;
    if (a > n - 1) a = n - 1;
    *lo = a;
    *hi = a + 1 < n ? a + 1 : n - 1;
    *w = (float)(f - (double)a);
}

void kd_resize_bilinear(const float *src, size_t sh, size_t sw, float *dst, size_t dh, size_t dw) {
    if (sh == dh && sw == dw) {
        memcpy(dst, src, sh * sw * sizeof(float));
        return;
    }
    double ry = (double)sh / (double)dh, rx = (double)sw / (double)dw;
    for (size_t i = 0; i < dh; i++) {
        size_t y0, y1;
        float wy;
        bilinear_tap(i, ry, sh, &y0, &y1, &wy);
        for (size_t j = 0; j < dw; j++) {
            size_t x0, x1;
            float wx;
            bilinear_tap(j, rx, sw, &x0, &x1, &wx);
            float top = src[y0 * sw + x0] * (1 - wx) + src[y0 * sw + x1] * wx;
            float bot = src[y1 * sw + x0] * (1 - wx) + src[y1 * sw + x1] * wx;
            dst[i * dw + j] = top * (1 - wy) + bot * wy;
        }
    }
}

kd_status kd_image_decode(const char *path, int channels, size_t height, size_t width, float *out,
                          kd_err *err) {
    kd_status st = KD_OK;
    unsigned char *pix = NULL;
    char *file = NULL;
    float *plane = NULL;
    size_t len = 0;
    int w = 0, h = 0, comp;
    /* One read of the file, then header check and decode from memory (half the syscalls of
     * stbi_info + stbi_load on the path). */
    if ((st = kd_read_file(path, KD_IMAGE_MAX_FILE, &file, &len, err))) return st;
    if (len > INT_MAX) {
        st = kd_err_set(err, KD_EINPUT, "%s: image file too large", path);
        goto cleanup;
    }
    const stbi_uc *buf = (const stbi_uc *)file;
    char why[256];
    kd_image_verdict v = kd_image_header(buf, len, 1, &w, &h, why, sizeof why);
    if (v != KD_IMAGE_OK) {
        st = kd_err_set(err, KD_EINPUT, v == KD_IMAGE_BAD ? "%s: cannot decode image: %s" : "%s: %s",
                        path, why);
        goto cleanup;
    }
    pix = stbi_load_from_memory(buf, (int)len, &w, &h, &comp, channels);
    if (!pix) {
        const char *r = stbi_failure_reason();
        st = kd_err_set(err, KD_EINPUT, "%s: cannot decode image: %s", path, r ? r : "unknown error");
        goto cleanup;
    }
    size_t W = (size_t)w, H = (size_t)h, C = (size_t)channels;
    plane = malloc(W * H * sizeof(float));
    if (!plane) {
        st = kd_err_set(err, KD_EIO, "out of memory decoding %s", path);
        goto cleanup;
    }
    /* stb gives interleaved HWC bytes; distill wants planar CHW. */
    for (size_t c = 0; c < C; c++) {
        for (size_t k = 0; k < W * H; k++) plane[k] = (float)pix[k * C + c];
        kd_resize_bilinear(plane, H, W, out + c * height * width, height, width);
    }

cleanup:
    free(plane);
    free(file);
    stbi_image_free(pix);
    return st;
}

/* The reader: the index plus the size every image is decoded to. */
typedef struct {
    kd_image_index ix;
    int channels;
    size_t height, width;
} image_reader;

static void images_close(void *handle) {
    image_reader *r = handle;
    if (!r) return;
    kd_image_index_free(&r->ix);
    free(r);
}

/* The channels (1 grey, 3 colour: alpha dropped), height and width of the first image, for
 * the shape a folder's samples take when the config gives none. */
static kd_status first_image_shape(const kd_image_index *ix, int *c, size_t *h, size_t *w,
                                   kd_err *err) {
    const char *path = ix->pool + ix->offsets[0];
    char *file = NULL;
    size_t len = 0;
    int iw = 0, ih = 0, comp = 0;
    kd_status st = kd_read_file(path, KD_IMAGE_MAX_FILE, &file, &len, err);
    if (st) return st;
    if (len > INT_MAX || !stbi_info_from_memory((const stbi_uc *)file, (int)len, &iw, &ih, &comp) ||
        iw < 1 || ih < 1)
        st = kd_err_set(err, KD_EINPUT, "%s: cannot read the image size (the first image sets "
                        "the folder's sample shape; give data.channels/height/width)", path);
    free(file);
    if (st) return st;
    *c = comp >= 3 ? 3 : 1;
    *h = (size_t)ih < KD_IMAGE_MAX_SIDE ? (size_t)ih : KD_IMAGE_MAX_SIDE;
    *w = (size_t)iw < KD_IMAGE_MAX_SIDE ? (size_t)iw : KD_IMAGE_MAX_SIDE;
    return KD_OK;
}

static kd_status images_open(const kd_data_source *src, void **handle, kd_reader_info *info,
                             kd_err *err) {
    *handle = NULL;
    if (src->channels != 0 && src->channels != 1 && src->channels != 3)
        return kd_err_set(err, KD_EUSAGE, "data.channels: expected 1 or 3, got %d", src->channels);
    if (src->height > KD_IMAGE_MAX_SIDE || src->width > KD_IMAGE_MAX_SIDE)
        return kd_err_set(err, KD_EUSAGE, "data.height/width: expected 1 to %d, got %zux%zu",
                          KD_IMAGE_MAX_SIDE, src->height, src->width);
    image_reader *r = calloc(1, sizeof *r);
    if (!r) return kd_err_set(err, KD_EIO, "out of memory");
    kd_status st = kd_image_index_build(src, &r->ix, err);
    if (st) {
        free(r);
        return st;
    }
    r->channels = src->channels;
    r->height = src->height;
    r->width = src->width;
    if ((!r->channels || !r->height || !r->width) && r->ix.n) {
        int c;
        size_t h, w;
        if ((st = first_image_shape(&r->ix, &c, &h, &w, err))) {
            images_close(r);
            return st;
        }
        if (!r->channels) r->channels = c;
        if (!r->height) r->height = h;
        if (!r->width) r->width = w;
    }
    if (!r->channels || !r->height || !r->width) {
        images_close(r);
        return kd_err_set(err, KD_EINPUT, "%s: no images to take the sample shape from",
                          src->path);
    }
    memset(info, 0, sizeof *info);
    info->n = r->ix.n;
    info->shape.rank = 3;
    info->shape.d[0] = (size_t)r->channels;
    info->shape.d[1] = r->height;
    info->shape.d[2] = r->width;
    info->labels = r->ix.labels;
    info->n_classes = r->ix.n_classes;
    info->class_names = r->ix.class_names;
    info->u8 = 1;
    info->n_skipped = r->ix.n_skipped;
    info->skip_note = r->ix.skip_note;
    *handle = r;
    return KD_OK;
}

static kd_status images_read(const void *handle, size_t s, float *out, kd_err *err) {
    const image_reader *r = handle;
    return kd_image_decode(r->ix.pool + r->ix.offsets[s], r->channels, r->height, r->width, out,
                           err);
}

const kd_format_ops kd_images_format_ops = {images_open, images_read, images_close, 1};
