/* fuzz_safetensors.c - libFuzzer target: the safetensors reader (header, UTF-8, JSON, dtypes,
 * shapes, offsets, file size) and, for files that pass, the full checkpoint validation that
 * loading does (architecture metadata, every tensor against it, preprocessing and class
 * metadata, and the resume state of training checkpoints); a qint8 file through the integer
 * model's reader and, once accepted, one forward pass of its kernels. */
#include "fuzz_common.h"
#include "kd_checkpoint.h"
#include "kd_quant.h"

/* A file that was accepted describes itself consistently: tensors tile the data section in
 * offset order and every byte count matches its dtype and shape. */
static void check_accepted(const kd_st_file *f, size_t size) {
    FUZZ_CHECK(f->blob_size == size);
    FUZZ_CHECK(8 + f->header_len <= size);
    uint64_t pos = 0;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const kd_st_tensor *t = &f->tensors[i];
        FUZZ_CHECK(t->begin == pos && t->end >= t->begin);
        FUZZ_CHECK(t->end - t->begin == t->numel * kd_dtype_size(t->dtype));
        FUZZ_CHECK(t->data == f->blob + 8 + f->header_len + t->begin);
        FUZZ_CHECK(t->rank >= 0 && t->rank <= KD_ST_MAX_RANK);
        pos = t->end;
    }
    FUZZ_CHECK(8 + f->header_len + pos == size);
    for (size_t i = 0; i < f->n_meta; i++) FUZZ_CHECK(kd_st_meta(f, f->meta_keys[i]) != NULL);
    /* Every element converts (the reader vouched for the bytes behind each tensor). */
    for (size_t i = 0; i < f->n_tensors; i++) {
        const kd_st_tensor *t = &f->tensors[i];
        float *out = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *out);
        FUZZ_CHECK(out != NULL);
        kd_st_to_f32(t, out);
        if (t->numel) (void)kd_st_get_i64(t, t->numel - 1);
        free(out);
    }
}

/* A full-integer model: every check of its reader, then the kernels on a zero input (an
 * accepted file must never make them read or write out of bounds). */
static void check_qint8(const kd_st_file *f, const char *path) {
    kd_qmodel q;
    kd_err err;
    kd_err_clear(&err);
    kd_status st = kd_qmodel_read(f, &q, &err);
    fuzz_check_status(st, &err, path);
    if (st != KD_OK) return;
    size_t total = 0;
    for (size_t v = 0; v < q.n_values; v++) total += q.values[v].numel;
    if (total <= ((size_t)1 << 22)) {
        float *x = calloc(q.values[0].numel, sizeof *x);
        int8_t *z = malloc(q.n_classes);
        FUZZ_CHECK(x && z);
        st = kd_qmodel_forward(&q, x, 1, z, NULL, &err);
        FUZZ_CHECK(st == KD_OK || st == KD_EIO);
        free(x), free(z);
    }
    kd_qmodel_free(&q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(data, size);
    kd_st_file f = {0};
    kd_err err;
    kd_err_clear(&err);
    kd_status st = kd_st_read(&f, path, &err);
    fuzz_check_status(st, &err, path);
    if (st != KD_OK) {
        FUZZ_CHECK(f.blob == NULL && f.n_tensors == 0);
        return 0;
    }
    check_accepted(&f, size);
    const char *dtype = kd_st_meta(&f, "dtype");
    if (dtype && strcmp(dtype, "qint8") == 0) check_qint8(&f, path);
    int has_arch = kd_st_meta(&f, "arch") != NULL, has_train = kd_st_meta(&f, "train.step") != NULL;
    kd_st_free(&f);
    if (!has_arch) return 0;

    kd_model m;
    kd_preprocess pp;
    int has_pp = 0;
    char **classes = NULL;
    size_t n_classes = 0;
    st = kd_ckpt_load(path, NULL, 0, 1, &m, &pp, &has_pp, &classes, &n_classes, &err);
    fuzz_check_status(st, &err, path);
    if (st == KD_OK) {
        FUZZ_CHECK(m.n_layers > 0 && m.params != NULL);
        kd_free_strings(classes, n_classes);
    }
    kd_model_free(&m);
    if (st != KD_OK || !has_train) return 0;

    kd_train_state ts;
    char *run = NULL;
    st = kd_ckpt_load_resume(path, NULL, &m, &ts, &run, &err);
    fuzz_check_status(st, &err, path);
    if (st == KD_OK) FUZZ_CHECK(m.m != NULL && m.v != NULL);
    kd_model_free(&m);
    free(ts.order);
    free(run);
    return 0;
}
