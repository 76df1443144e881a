/* wg_frozen.h - private to conv2d.c: a frozen model's 3x3 stride-1 convolution of one sample by
 * Winograd's F(2x2, 3x3) (wg_frozen.c), its weights transformed once when the model is frozen.
 * Where the packed kernel (conv_packed.h) makes 9 multiply-adds per input channel and output,
 * this makes 4 (16 per 2x2 tile), at the cost of the data transforms (winograd.h's). The
 * tiles run in chunks of tile rows whose transforms stay in L2, each chunk's 16 products by a
 * kernel of 8 output channels by 48 tiles; a banded forward's threads take tile rows or
 * blocks of output channels. */
#ifndef KD_WG_FROZEN_H
#define KD_WG_FROZEN_H

#include <stddef.h>

#include "conv_direct.h"
#include "conv_packed.h"

/* Whether this CPU and shape take it (3x3, stride 1, output channels in 8s, AVX-512), and the
 * release rule: where it beats the packed kernel (enough input channels and tiles, transformed
 * weights that a core's L2 holds). Tests: kd_wg_frozen_on (0 never, 1 wherever the shape
 * allows, -1 the rule). */
int kd_wgf_shape(const kd_cd_dims *d);
int kd_wgf_fits(const kd_cd_dims *d);
/* Floats of the transformed weights u (16, O, C) (winograd.h's kd_wg_weights), and making them. */
size_t kd_wgf_floats(const kd_cd_dims *d);
void kd_wgf_pack(const kd_cd_dims *d, const float *w, float *u);
/* Tile rows of the output ((OH + 1) / 2), and the workspace floats of a call. */
size_t kd_wgf_tile_rows(const kd_cd_dims *d);
size_t kd_wgf_workspace(const kd_cd_dims *d);
/* Output channels [o0, o1) (multiples of 8) of tile rows [r0, r1) (output rows 2 r0 to 2 r1,
 * within OH) of one sample x (C, H, W) into out->y (O, OH, OW), as kd_conv_packed_part's out
 * says: y = act(scale s + shift + res), s the convolution's sum by Winograd's transforms (within
 * a few roundings of the direct sum). Every output is made the same way whatever the part, so
 * the bits depend on neither the thread count nor the split. On the calling thread; ws:
 * kd_wgf_workspace floats. */
void kd_wgf_part(const kd_cd_dims *d, const float *x, const float *u, const kd_cp_out *out,
                 float *ws, size_t r0, size_t r1, size_t o0, size_t o1);

#endif
