/* checkpoint.c - binds models (and training state) to safetensors checkpoint files.
 *
 * Checkpoint format ("distill/1"): a safetensors file (docs/design.md) holding
 *
 * Tensors, in this order (offsets contiguous from 0):
 *   1. The model's tensors in torch.nn.Sequential state_dict order (kd_model.tensors: by
 *      layer, then weight, bias, running_mean, running_var, num_batches_tracked), named
 *      "<layer index>.<suffix>" exactly as PyTorch names them. Parameters and batch-norm
 *      running statistics are F32 with PyTorch's shapes (dense weight [out, in], conv weight
 *      [out, in, kh, kw]); "<i>.num_batches_tracked" is an I64 scalar (shape []).
 *   2. Training checkpoints only, for each trainable parameter P in the same order:
 *      "optim.m.P" and "optim.v.P" (F32, P's shape): the optimizer's first and second moment
 *      buffers (SGD keeps its momentum in m; v is then all zeros). Then "train.order" (I64 [n]):
 *      the current epoch's training-sample order, so a resumed run continues the same epoch.
 *   Tensors of no layer (a feature loss's adapter, "adapters.<entry>.weight" / ".bias", F32)
 *   come after the layers' in 1 and 2: saved with the model, never part of its arch.
 *
 * __metadata__ (all values strings, as safetensors requires):
 *   format      "distill/1"
 *   arch        the model as JSON: {"input":[1,28,28],"layers":[{"type":"dense","units":10},...]}
 *               (kd_model_arch_json); a file without it loads when the caller supplies one.
 *   classes     JSON array of class names, when the dataset has them: ["cat","dog"]
 *   preprocess  JSON {"scale":0.00392156886,"mean":[m...],"std":[s...],"flatten":false}
 *               (kd_preprocess; mean/std have one entry per normalised channel)
 *   run         free-form JSON from the trainer (config, metrics, partial-epoch sums)
 *   Training checkpoints also have:
 *   train.step            optimizer steps taken (decimal)
 *   train.epoch           completed epochs (decimal)
 *   train.batch_in_epoch  batches done in the current epoch, 0 at an epoch boundary (decimal)
 *   train.rng             the run's xoshiro256** state: 4 words of 16 hex digits, space-separated
 *   train.best_val        best validation accuracy so far (%.17g, exact round trip)
 *
 * Loading decodes every export dtype through the codecs of kd_dtype.h: any float dtype
 * (F32/F16/BF16) for parameters and buffers, and int8 quantized weights as `distill export
 * --dtype int8` writes them: "<name>" I8 with "<name>_scale" F32 of shape [out], symmetric per
 * output row (w[r][c] = q[r][c] * scale[r]).
 * num_batches_tracked may be any integer dtype. Every tensor the architecture expects must
 * be present with its exact shape; any other tensor is an error unless the caller allows
 * extras, except training state ("optim.*", "train.*") and feature losses' adapters
 * ("adapters.*": the trainer's, kd_ckpt_load_adapters), which are always allowed. */
#include "kd_checkpoint.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint_impl.h"
#include "kd_dtype.h"

#define MAX_META 16

void kd_free_strings(char **s, size_t n) {
    if (!s) return;
    for (size_t i = 0; i < n; i++) free(s[i]);
    free(s);
}

/* Training state, and the adapters of feature losses (trained with the model, not part of it). */
static int is_train_state_name(const char *name) {
    return strncmp(name, "optim.", 6) == 0 || strncmp(name, "train.", 6) == 0 ||
           strncmp(name, "adapters.", 9) == 0;
}

static char *classes_json(char **names, size_t n) {
    cJSON *a = cJSON_CreateArray();
    char *out = NULL;
    if (!a) return NULL;
    for (size_t i = 0; i < n; i++)
        if (!cJSON_AddItemToArray(a, cJSON_CreateString(names[i] ? names[i] : ""))) goto cleanup;
    out = cJSON_PrintUnformatted(a);
cleanup:
    cJSON_Delete(a);
    return out;
}

kd_status kd_ckpt_save(const char *path, const kd_model *m, const kd_ckpt_meta *meta,
                       const kd_train_state *ts, kd_err *err) {
    kd_status st = KD_OK;
    size_t n_out = 0, n_meta = 0;
    size_t cap = m->n_tensors * 3 + 1;
    kd_st_out *outs = calloc(cap, sizeof *outs);
    char (*names)[KD_TENSOR_NAME_MAX + 16] = calloc(cap, sizeof *names);
    int64_t *order = NULL;
    char *arch = kd_model_arch_json(m), *classes = NULL, *pp = NULL;
    const char *mk[MAX_META], *mv[MAX_META];
    char step[32], epoch[32], bie[32], rng[80], best[40];
    if (!outs || !names || !arch) {
        st = kd_err_set(err, KD_EIO, "%s: out of memory", path);
        goto cleanup;
    }
    for (size_t i = 0; i < m->n_tensors; i++) {
        const kd_tensor *t = &m->tensors[i];
        kd_st_out *o = &outs[n_out++];
        o->name = t->name;
        if (t->kind == KD_TENSOR_COUNTER) {
            o->dtype = KD_DT_I64; /* a scalar, as torch stores num_batches_tracked */
            o->rank = 0;
            o->data = t->counter;
            continue;
        }
        o->dtype = KD_DT_F32;
        o->rank = t->shape.rank;
        for (int d = 0; d < t->shape.rank; d++) o->shape[d] = t->shape.d[d];
        o->data = t->data;
    }
    if (ts) {
        if (!m->m || !m->v) {
            st = kd_err_set(err, KD_EIO, "%s: internal error: training state without optimizer "
                            "buffers (model built without gradients)", path);
            goto cleanup;
        }
        for (int which = 0; which < 2; which++)
            for (size_t i = 0; i < m->n_tensors; i++) {
                const kd_tensor *t = &m->tensors[i];
                if (t->kind != KD_TENSOR_PARAM) continue;
                kd_st_out *o = &outs[n_out];
                snprintf(names[n_out], sizeof names[n_out], "optim.%c.%s", which ? 'v' : 'm',
                         t->name);
                n_out++;
                o->name = names[n_out - 1];
                o->dtype = KD_DT_F32;
                o->rank = t->shape.rank;
                for (int d = 0; d < t->shape.rank; d++) o->shape[d] = t->shape.d[d];
                o->data = (which ? m->v : m->m) + t->offset;
            }
        if (ts->order) {
            order = malloc((ts->n_order ? ts->n_order : 1) * sizeof *order);
            if (!order) {
                st = kd_err_set(err, KD_EIO, "%s: out of memory", path);
                goto cleanup;
            }
            for (size_t i = 0; i < ts->n_order; i++) order[i] = (int64_t)ts->order[i];
            outs[n_out++] = (kd_st_out){"train.order", KD_DT_I64, 1, {ts->n_order}, order};
        }
    }

    mk[n_meta] = "format", mv[n_meta++] = KD_FORMAT;
    mk[n_meta] = "arch", mv[n_meta++] = arch;
    if (meta && meta->class_names && meta->n_classes) {
        if (!(classes = classes_json(meta->class_names, meta->n_classes))) {
            st = kd_err_set(err, KD_EIO, "%s: out of memory", path);
            goto cleanup;
        }
        mk[n_meta] = "classes", mv[n_meta++] = classes;
    }
    if (meta && meta->pp) {
        if (!(pp = kd_ckpt_preprocess_json(meta->pp))) {
            st = kd_err_set(err, KD_EIO, "%s: out of memory", path);
            goto cleanup;
        }
        mk[n_meta] = "preprocess", mv[n_meta++] = pp;
    }
    if (meta && meta->extra_json) mk[n_meta] = "run", mv[n_meta++] = meta->extra_json;
    if (ts) {
        snprintf(step, sizeof step, "%" PRIu64, ts->step);
        snprintf(epoch, sizeof epoch, "%" PRIu64, ts->epoch);
        snprintf(bie, sizeof bie, "%" PRIu64, ts->batch_in_epoch);
        snprintf(rng, sizeof rng, "%016" PRIx64 " %016" PRIx64 " %016" PRIx64 " %016" PRIx64,
                 ts->rng.s[0], ts->rng.s[1], ts->rng.s[2], ts->rng.s[3]);
        snprintf(best, sizeof best, "%.17g", ts->best_val);
        mk[n_meta] = "train.step", mv[n_meta++] = step;
        mk[n_meta] = "train.epoch", mv[n_meta++] = epoch;
        mk[n_meta] = "train.batch_in_epoch", mv[n_meta++] = bie;
        mk[n_meta] = "train.rng", mv[n_meta++] = rng;
        mk[n_meta] = "train.best_val", mv[n_meta++] = best;
    }
    KD_ASSERT(n_meta <= MAX_META && n_out <= cap);
    st = kd_st_write(path, outs, n_out, mk, mv, n_meta, err);
cleanup:
    free(outs);
    free(names);
    free(order);
    free(arch);
    free(classes);
    free(pp);
    return st;
}

/* ---- loading ---------------------------------------------------------------------------- */

static const char *model_shape_str(const kd_tensor *t, char *buf, size_t cap) {
    if (t->kind == KD_TENSOR_COUNTER) return snprintf(buf, cap, "[]"), buf;
    return kd_shape_str(&t->shape, buf, cap);
}

/* Exact shape match; a counter is a scalar ([] as torch writes it, or [1]). */
static int same_shape(const kd_tensor *t, const kd_st_tensor *s) {
    if (t->kind == KD_TENSOR_COUNTER) return s->rank == 0 || (s->rank == 1 && s->shape[0] == 1);
    if (s->rank != t->shape.rank) return 0;
    for (int i = 0; i < s->rank; i++)
        if (s->shape[i] != (uint64_t)t->shape.d[i]) return 0;
    return 1;
}

static int is_float_dtype(kd_dtype d) { return d == KD_DT_F32 || d == KD_DT_F16 || d == KD_DT_BF16; }

/* Checks one expected tensor against the file and copies its values into the model. */
static kd_status load_tensor(const kd_st_file *f, const char *prefix, kd_tensor *t,
                             kd_err *err) {
    char a[96], b[96], full[512];
    snprintf(full, sizeof full, "%s%s", prefix, t->name);
    const kd_st_tensor *s = kd_st_find(f, full);
    if (!s) {
        char found[700];
        kd_ckpt_names_found(f, found, sizeof found);
        return kd_err_set(err, KD_EINPUT, "%s: tensor %s: missing (the architecture expects "
                          "shape %s); the file has: %s", f->path, full,
                          model_shape_str(t, a, sizeof a), found);
    }
    if (!same_shape(t, s))
        return kd_err_set(err, KD_EINPUT, "%s: tensor %s: expected shape %s, found %s", f->path,
                          t->name, model_shape_str(t, a, sizeof a), kd_st_shape_str(s, b, sizeof b));
    if (t->kind == KD_TENSOR_COUNTER) {
        if (is_float_dtype(s->dtype))
            return kd_err_set(err, KD_EINPUT, "%s: tensor %s: dtype %s, expected an integer (I64)",
                              f->path, t->name, kd_dtype_name(s->dtype));
        *t->counter = kd_st_get_i64(s, 0);
        return KD_OK;
    }
    const kd_codec *c = kd_codec_for(s->dtype);
    if (c && !c->row_scales) {
        c->decode(s->data, NULL, 1, t->numel, t->data);
        return KD_OK;
    }
    if (c && t->kind == KD_TENSOR_PARAM && t->shape.rank >= 1) {
        char sname[KD_TENSOR_NAME_MAX + 16];
        if (kd_codec_scale_name(full, sname, sizeof sname))
            return kd_err_set(err, KD_EINPUT, "%s: tensor %s: name too long", f->path, t->name);
        const kd_st_tensor *sc = kd_st_find(f, sname);
        size_t rows = t->shape.d[0];
        if (!sc)
            return kd_err_set(err, KD_EINPUT,
                              "%s: tensor %s: %s weights need their per-row scales in tensor %s, "
                              "which is missing", f->path, t->name, c->name, sname);
        if (sc->dtype != KD_DT_F32 || sc->rank != 1 || sc->shape[0] != rows)
            return kd_err_set(err, KD_EINPUT, "%s: tensor %s: expected F32 [%zu] (one scale per "
                              "output row), found %s %s", f->path, sname, rows,
                              kd_dtype_name(sc->dtype), kd_st_shape_str(sc, b, sizeof b));
        for (size_t r = 0; r < rows; r++) {
            float scale;
            memcpy(&scale, sc->data + 4 * r, sizeof scale);
            if (!isfinite(scale))
                return kd_err_set(err, KD_EINPUT, "%s: tensor %s: scale %zu is not finite",
                                  f->path, sname, r);
        }
        c->decode(s->data, sc->data, rows, rows ? t->numel / rows : 0, t->data);
        return KD_OK;
    }
    return kd_err_set(err, KD_EINPUT,
                      "%s: tensor %s: dtype %s cannot be loaded into a float %s (expected F32, F16, "
                      "BF16%s)", f->path, t->name, kd_dtype_name(s->dtype),
                      t->kind == KD_TENSOR_PARAM ? "parameter" : "buffer",
                      t->kind == KD_TENSOR_PARAM ? ", or I8 with a <name>_scale tensor" : "");
}

/* Is file tensor `name` one the model consumed (itself or a row-scaled weight's scales)?
 * Every name carries prefix (the one stripped, or ""). */
static int expected_name(kd_model *m, const kd_st_file *f, const char *prefix,
                         const char *name) {
    const size_t np = strlen(prefix);
    if (kd_model_tensor(m, name + np)) return 1;
    size_t n = strlen(name), ns = strlen(KD_CODEC_SCALE_SUFFIX);
    if (n > ns && strcmp(name + n - ns, KD_CODEC_SCALE_SUFFIX) == 0) {
        char base[80];
        if (n - ns >= sizeof base) return 0;
        memcpy(base, name, n - ns);
        base[n - ns] = '\0';
        const kd_st_tensor *w = kd_st_find(f, base);
        const kd_codec *c = w ? kd_codec_for(w->dtype) : NULL;
        return c && c->row_scales && kd_model_tensor(m, base + np);
    }
    return 0;
}

/* Compares the file's own architecture with the one the caller supplied, layer by layer. */
static kd_status compare_arch(const kd_st_file *f, const kd_model *fm, const kd_model *m,
                              kd_err *err) {
    kd_status st = KD_OK;
    char *a = kd_model_arch_json(fm), *b = kd_model_arch_json(m);
    cJSON *ja = a ? cJSON_Parse(a) : NULL, *jb = b ? cJSON_Parse(b) : NULL;
    const cJSON *la = cJSON_GetObjectItemCaseSensitive(ja, "layers");
    const cJSON *lb = cJSON_GetObjectItemCaseSensitive(jb, "layers");
    if (!la || !lb) {
        st = kd_err_set(err, KD_EIO, "%s: out of memory comparing architectures", f->path);
        goto cleanup;
    }
    if (fm->n_layers != m->n_layers) {
        st = kd_err_set(err, KD_EINPUT,
                        "%s: the file's architecture has %zu layers but the supplied one has %zu",
                        f->path, fm->n_layers, m->n_layers);
        goto cleanup;
    }
    size_t i = 0;
    for (const cJSON *x = la->child, *y = lb->child; x && y; x = x->next, y = y->next, i++) {
        if (cJSON_Compare(x, y, 1)) continue;
        char *sx = cJSON_PrintUnformatted(x), *sy = cJSON_PrintUnformatted(y);
        st = kd_err_set(err, KD_EINPUT,
                        "%s: layer %zu is %.200s in the file's architecture but %.200s in the "
                        "supplied one", f->path, i, sx ? sx : "?", sy ? sy : "?");
        free(sx);
        free(sy);
        goto cleanup;
    }
    if (kd_shape_numel(&fm->input) != kd_shape_numel(&m->input)) {
        char s1[64], s2[64];
        st = kd_err_set(err, KD_EINPUT,
                        "%s: the file's architecture takes inputs %s but the supplied one %s",
                        f->path, kd_shape_str(&fm->input, s1, sizeof s1),
                        kd_shape_str(&m->input, s2, sizeof s2));
    }
cleanup:
    cJSON_Delete(ja);
    cJSON_Delete(jb);
    free(a);
    free(b);
    return st;
}

static kd_status parse_classes(const kd_st_file *f, const char *text, char ***out, size_t *n_out,
                               kd_err *err) {
    kd_status st = KD_OK;
    cJSON *a = cJSON_Parse(text);
    size_t n = cJSON_IsArray(a) ? (size_t)cJSON_GetArraySize(a) : 0;
    char **names = NULL;
    if (!cJSON_IsArray(a)) {
        st = kd_err_set(err, KD_EINPUT, "%s: metadata classes: expected a JSON array of strings",
                        f->path);
        goto cleanup;
    }
    names = calloc(n ? n : 1, sizeof *names);
    if (!names) {
        st = kd_err_set(err, KD_EIO, "%s: out of memory", f->path);
        goto cleanup;
    }
    size_t i = 0;
    for (const cJSON *c = a->child; c; c = c->next, i++) {
        if (!cJSON_IsString(c)) {
            st = kd_err_set(err, KD_EINPUT, "%s: metadata classes[%zu]: expected a string",
                            f->path, i);
            goto cleanup;
        }
        if (!(names[i] = strdup(c->valuestring))) {
            st = kd_err_set(err, KD_EIO, "%s: out of memory", f->path);
            goto cleanup;
        }
    }
    *out = names;
    *n_out = n;
    names = NULL;
cleanup:
    kd_free_strings(names, n);
    cJSON_Delete(a);
    return st;
}

/* Builds m from the file (its own "arch", or arch_json checked against it) and loads every
 * tensor the architecture expects. On failure m may be half built: the caller frees it. */
static kd_status model_from_file(const kd_st_file *f, const char *arch_json, int with_grads,
                                 int allow_extra, kd_model *m, kd_err *err) {
    kd_status st = KD_OK;
    kd_model fm = {0};
    const char *format = kd_st_meta(f, "format");
    if (format && strncmp(format, "distill/", 8) == 0 && strcmp(format, KD_FORMAT) != 0) {
        st = kd_err_set(err, KD_EINPUT, "%s: format \"%.40s\" is not supported (this build reads %s)",
                        f->path, format, KD_FORMAT);
        goto cleanup;
    }
    const char *dtype = kd_st_meta(f, "dtype");
    if (dtype && strcmp(dtype, "qint8") == 0) {
        st = kd_err_set(err, KD_EUSAGE, "%s is a full-integer (qint8) model: eval, predict and "
                        "info read it; training (as the student, a teacher or an ensemble "
                        "member), logits and the exports take float checkpoints", f->path);
        goto cleanup;
    }
    const char *file_arch = kd_st_meta(f, "arch");
    if (!file_arch && !arch_json) {
        st = kd_err_set(err, KD_EUSAGE,
                        "%s has no arch metadata: give the architecture in the config (teacher.layers)",
                        f->path);
        goto cleanup;
    }
    if (file_arch) {
        /* The file describes itself: a broken description is a bad input file. */
        /* Sized by the file: the values it declares must fit in its data section. */
        size_t data_bytes = f->blob_size - 8 - f->header_len;
        st = kd_model_init_arch_capped(arch_json ? &fm : m, file_arch, arch_json ? 0 : with_grads,
                                       data_bytes, err);
        if (st) {
            if (st == KD_EUSAGE) err->code = st = KD_EINPUT;
            kd_err_prefix(err, "%s: metadata", f->path);
            goto cleanup;
        }
    }
    if (arch_json) {
        if ((st = kd_model_init_arch(m, arch_json, with_grads, err)) != KD_OK) goto cleanup;
        if (file_arch && (st = compare_arch(f, &fm, m, err)) != KD_OK) goto cleanup;
    }

    /* A plain PyTorch state_dict of a wrapped module: its one common prefix is stripped. */
    char prefix[128] = "";
    if (!file_arch && kd_ckpt_common_prefix(f, m, prefix, sizeof prefix))
        kd_err_set(err, KD_OK, "note: %s: every tensor name starts with \"%s\"; loaded them "
                   "without it (\"%s%s\" as \"%s\")", f->path, prefix, prefix,
                   m->tensors[0].name, m->tensors[0].name);
    for (size_t i = 0; i < m->n_tensors; i++)
        if ((st = load_tensor(f, prefix, &m->tensors[i], err)) != KD_OK) goto cleanup;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const char *name = f->tensors[i].name;
        if (allow_extra || is_train_state_name(name) || expected_name(m, f, prefix, name))
            continue;
        st = kd_err_set(err, KD_EINPUT,
                        "%s: tensor %s: not part of the architecture (%zu layers, %zu tensors "
                        "expected)", f->path, name, m->n_layers, m->n_tensors);
        goto cleanup;
    }
cleanup:
    kd_model_free(&fm);
    return st;
}

kd_status kd_ckpt_load(const char *path, const char *arch_json, int with_grads, int allow_extra,
                       kd_model *m, kd_preprocess *out_pp, int *has_pp, char ***out_classes,
                       size_t *out_n_classes, kd_err *err) {
    kd_status st = KD_OK;
    kd_st_file f = {0};
    memset(m, 0, sizeof *m);
    if (has_pp) *has_pp = 0;
    if (out_pp) memset(out_pp, 0, sizeof *out_pp);
    if (out_classes) *out_classes = NULL;
    if (out_n_classes) *out_n_classes = 0;

    if ((st = kd_st_read(&f, path, err)) != KD_OK) goto cleanup;
    if ((st = model_from_file(&f, arch_json, with_grads, allow_extra, m, err)) != KD_OK)
        goto cleanup;

    st = kd_ckpt_read_meta(&f, out_pp, has_pp, out_classes, out_n_classes, err);
cleanup:
    if (st != KD_OK) kd_model_free(m);
    kd_st_free(&f);
    return st;
}

kd_status kd_ckpt_read_meta(const kd_st_file *f, kd_preprocess *out_pp, int *has_pp,
                            char ***out_classes, size_t *out_n_classes, kd_err *err) {
    kd_status st = KD_OK;
    char **classes = NULL;
    size_t n_classes = 0;
    kd_preprocess pp;
    if (has_pp) *has_pp = 0;
    if (out_pp) memset(out_pp, 0, sizeof *out_pp);
    if (out_classes) *out_classes = NULL;
    if (out_n_classes) *out_n_classes = 0;
    const char *pp_text = kd_st_meta(f, "preprocess");
    if (pp_text && out_pp) {
        if ((st = kd_ckpt_parse_preprocess(f->path, pp_text, &pp, err)) != KD_OK) goto cleanup;
        *out_pp = pp;
        if (has_pp) *has_pp = 1;
    }
    const char *cl_text = kd_st_meta(f, "classes");
    if (cl_text && out_classes) {
        if ((st = parse_classes(f, cl_text, &classes, &n_classes, err)) != KD_OK) goto cleanup;
        *out_classes = classes;
        if (out_n_classes) *out_n_classes = n_classes;
        classes = NULL;
    }
cleanup:
    if (st != KD_OK) {
        if (has_pp) *has_pp = 0;
        if (pp_text && out_pp) kd_preprocess_free(out_pp);
    }
    kd_free_strings(classes, n_classes);
    return st;
}

/* Strict decimal uint64: digits only, no sign, no overflow. */
static int parse_u64(const char *s, uint64_t *out) {
    uint64_t v = 0;
    if (!s || !*s) return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static int parse_rng(const char *s, kd_rng *r) {
    if (!s) return -1;
    for (int i = 0; i < 4; i++) {
        uint64_t v = 0;
        int digits = 0;
        for (; *s && *s != ' '; s++, digits++) {
            int h = (*s >= '0' && *s <= '9')   ? *s - '0'
                    : (*s >= 'a' && *s <= 'f') ? *s - 'a' + 10
                    : (*s >= 'A' && *s <= 'F') ? *s - 'A' + 10
                                               : -1;
            if (h < 0 || digits >= 16) return -1;
            v = (v << 4) | (uint64_t)h;
        }
        if (digits == 0) return -1;
        r->s[i] = v;
        if (i < 3) {
            if (*s != ' ') return -1;
            s++;
        }
    }
    if (*s) return -1;
    /* xoshiro's all-zero state is a fixed point: never a real run's state. */
    return (r->s[0] | r->s[1] | r->s[2] | r->s[3]) ? 0 : -1;
}

/* Optimizer moment `which` (0: m, 1: v) of parameter t from f into m's moments. */
static kd_status load_moment(const kd_st_file *f, const char *path, kd_model *m,
                             const kd_tensor *t, int which, kd_err *err) {
    if (t->kind != KD_TENSOR_PARAM) return KD_OK;
    char name[KD_TENSOR_NAME_MAX + 16], a[96], b[96];
    snprintf(name, sizeof name, "optim.%c.%s", which ? 'v' : 'm', t->name);
    const kd_st_tensor *s = kd_st_find(f, name);
    if (!s || s->dtype != KD_DT_F32 || !same_shape(t, s)) {
        kd_status st = kd_err_set(err, KD_EINPUT, "%s: tensor %s: expected F32 %s, %s%s%s",
                                  path, name, model_shape_str(t, a, sizeof a),
                                  s ? "found " : "missing", s ? kd_dtype_name(s->dtype) : "",
                                  s ? " " : "");
        if (s) {
            size_t len = strlen(err->msg);
            snprintf(err->msg + len, sizeof err->msg - len, "%s", kd_st_shape_str(s, b, sizeof b));
        }
        return st;
    }
    kd_st_to_f32(s, (which ? m->v : m->m) + t->offset);
    return KD_OK;
}

kd_status kd_ckpt_load_adapters(const char *path, kd_model *m, kd_err *err) {
    kd_st_file f = {0};
    kd_status st = kd_st_read(&f, path, err);
    for (size_t i = 0; !st && i < m->n_tensors; i++) {
        kd_tensor *t = &m->tensors[i];
        if (t->layer < m->n_layers) continue;
        st = load_tensor(&f, "", t, err);
        for (int which = 0; !st && which < 2 && m->m && m->v; which++)
            st = load_moment(&f, path, m, t, which, err);
    }
    kd_st_free(&f);
    return st;
}

/* Reads the resume state (metadata train.*, optimizer moments into m, train.order) of a file
 * already read. On failure ts->order may be allocated: the caller frees it. */
static kd_status train_state_from_file(const kd_st_file *f, kd_model *m, kd_train_state *ts,
                                       kd_err *err) {
    const char *path = f->path;
    if (!kd_st_meta(f, "train.step"))
        return kd_err_set(err, KD_EINPUT,
                          "%s: no training state (metadata train.step missing): not a training "
                          "checkpoint, cannot resume from it", path);
    if (!m->m || !m->v)
        return kd_err_set(err, KD_EIO, "%s: internal error: model built without optimizer buffers",
                          path);
    static const char *const keys[3] = {"train.step", "train.epoch", "train.batch_in_epoch"};
    uint64_t *dst[3] = {&ts->step, &ts->epoch, &ts->batch_in_epoch};
    for (int k = 0; k < 3; k++) {
        const char *v = kd_st_meta(f, keys[k]);
        if (parse_u64(v, dst[k]) != 0)
            return kd_err_set(err, KD_EINPUT, "%s: metadata %s: expected a non-negative integer, "
                              "got \"%.40s\"", path, keys[k], v ? v : "(missing)");
    }
    const char *rng = kd_st_meta(f, "train.rng");
    if (parse_rng(rng, &ts->rng) != 0)
        return kd_err_set(err, KD_EINPUT, "%s: metadata train.rng: expected 4 hexadecimal words "
                          "(not all zero) separated by spaces, got \"%.80s\"", path,
                          rng ? rng : "(missing)");
    const char *best = kd_st_meta(f, "train.best_val");
    char *end = NULL;
    ts->best_val = best ? strtod(best, &end) : 0;
    if (!best || end == best || *end || isnan(ts->best_val))
        return kd_err_set(err, KD_EINPUT, "%s: metadata train.best_val: expected a number, got "
                          "\"%.40s\"", path, best ? best : "(missing)");
    for (int which = 0; which < 2; which++)
        for (size_t i = 0; i < m->n_tensors; i++) {
            kd_status st = load_moment(f, path, m, &m->tensors[i], which, err);
            if (st) return st;
        }
    const kd_st_tensor *o = kd_st_find(f, "train.order");
    if (o) {
        if (o->dtype != KD_DT_I64 || o->rank != 1)
            return kd_err_set(err, KD_EINPUT, "%s: tensor train.order: expected I64 [n], found "
                              "%s of rank %d", path, kd_dtype_name(o->dtype), o->rank);
        ts->n_order = (size_t)o->numel;
        ts->order = malloc((ts->n_order ? ts->n_order : 1) * sizeof *ts->order);
        if (!ts->order) return kd_err_set(err, KD_EIO, "%s: out of memory", path);
        for (size_t i = 0; i < ts->n_order; i++) {
            int64_t v = kd_st_get_i64(o, i);
            if (v < 0)
                return kd_err_set(err, KD_EINPUT, "%s: tensor train.order: entry %zu is "
                                  "negative (%" PRId64 ")", path, i, v);
            ts->order[i] = (size_t)v;
        }
    }
    return KD_OK;
}

kd_status kd_ckpt_load_train_state(const char *path, kd_model *m, kd_train_state *ts,
                                   kd_err *err) {
    kd_st_file f = {0};
    memset(ts, 0, sizeof *ts);
    kd_status st = kd_st_read(&f, path, err);
    if (st == KD_OK) st = train_state_from_file(&f, m, ts, err);
    if (st != KD_OK) {
        free(ts->order);
        memset(ts, 0, sizeof *ts);
    }
    kd_st_free(&f);
    return st;
}

kd_status kd_ckpt_load_resume(const char *path, const char *arch_json, kd_model *m,
                              kd_train_state *ts, char **run_json, kd_err *err) {
    kd_st_file f = {0};
    memset(m, 0, sizeof *m);
    memset(ts, 0, sizeof *ts);
    *run_json = NULL;
    kd_status st = kd_st_read(&f, path, err);
    if (st == KD_OK) st = model_from_file(&f, arch_json, 1, 0, m, err);
    if (st == KD_OK) st = train_state_from_file(&f, m, ts, err);
    const char *run = kd_st_meta(&f, "run");
    if (st == KD_OK && run && !(*run_json = strdup(run)))
        st = kd_err_set(err, KD_EIO, "%s: out of memory", path);
    if (st != KD_OK) {
        kd_model_free(m);
        free(ts->order);
        memset(ts, 0, sizeof *ts);
    }
    kd_st_free(&f);
    return st;
}
