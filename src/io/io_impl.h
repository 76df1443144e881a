/* io_impl.h - private to src/io: how a checkpoint's tensor names meet a model's (ckpt_names.c):
 * a prefix every tensor shares (torch's "module." or a wrapper's "net."), and the names found
 * for a message about a missing one. */
#ifndef KD_IO_IMPL_H
#define KD_IO_IMPL_H

#include "kd_nn.h"
#include "kd_safetensors.h"

/* When the model's first tensor is not in f under its own name but is under one prefix that
 * every tensor of f carries (ending in '.'), puts that prefix in out and returns 1; else 0
 * (out = ""). */
int kd_ckpt_common_prefix(const kd_st_file *f, const kd_model *m, char *out, size_t cap);
/* "a, b, c, ... (N in all)": the first names of f's tensors, for a missing-tensor message. */
void kd_ckpt_names_found(const kd_st_file *f, char *out, size_t cap);

#endif
