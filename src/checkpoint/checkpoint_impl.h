/* checkpoint_impl.h - private to src/checkpoint: how a checkpoint's tensor names meet a model's (ckpt_names.c):
 * a prefix every tensor shares (torch's "module." or a wrapper's "net."), and the names found
 * for a message about a missing one. */
#ifndef KD_IO_IMPL_H
#define KD_IO_IMPL_H

#include "kd_data.h"
#include "kd_nn.h"
#include "kd_safetensors.h"

/* When the model's first tensor is not in f under its own name but is under one prefix that
 * every tensor of f carries (ending in '.'), puts that prefix in out and returns 1; else 0
 * (out = ""). */
int kd_ckpt_common_prefix(const kd_st_file *f, const kd_model *m, char *out, size_t cap);
/* "a, b, c, ... (N in all)": the first names of f's tensors, for a missing-tensor message. */
void kd_ckpt_names_found(const kd_st_file *f, char *out, size_t cap);

/* The checkpoint's "preprocess" metadata (ckpt_preprocess.c): written (malloc'd JSON, NULL
 * when out of memory) and read back (pp owns its per-feature statistics: kd_preprocess_free).
 * A malformed one is KD_EINPUT naming path. */
char *kd_ckpt_preprocess_json(const kd_preprocess *pp);
kd_status kd_ckpt_parse_preprocess(const char *path, const char *text, kd_preprocess *pp,
                                   kd_err *err);

#endif
