/* im2col.h - private to the convolutions (conv2d.c): a sample's column matrix (im2col), its
 * adjoint (col2im) and the row sums the bias gradient needs (im2col.c). */
#ifndef KD_IM2COL_H
#define KD_IM2COL_H

#include <stddef.h>

typedef struct {
    size_t C, H, W;      /* input */
    size_t O, OH, OW;    /* output */
    size_t KH, KW, S, P;
    size_t G;            /* groups: group g maps input channels [g*C/G, (g+1)*C/G) to outputs
                          * [g*O/G, (g+1)*O/G) */
    size_t K;            /* C * KH * KW: rows of the column matrix */
    size_t KG;           /* K / G: the rows of one group's columns, a weight row's length */
    size_t OHW;          /* OH * OW: columns per sample */
} kd_conv_dims;

/* One sample's columns (K rows of OH*OW floats) from its input x (C, H, W):
 * col[(c*KH + i)*KW + j][oh*OW + ow] = x[c][oh*S - P + i][ow*S - P + j], zero outside. */
void kd_im2col(const kd_conv_dims *d, const float *x, float *col);
/* Only the rows of input channels [c0, c1) (the team's share of one sample's columns). */
void kd_im2col_channels(const kd_conv_dims *d, const float *x, float *col, size_t c0,
                        size_t c1);
/* One sample's input gradient xs (C, H, W), overwritten, from its column gradient col (K rows
 * of OH*OW floats; used as scratch): the adjoint of kd_im2col. */
void kd_col2im(const kd_conv_dims *d, float *col, float *xs);
/* Whether a sample's input already is its column matrix (1x1, stride 1, no padding). */
int kd_cols_are_input(const kd_conv_dims *d);
/* kd_im2col into col, or x itself where it already is that matrix (kd_cols_are_input). */
const float *kd_sample_cols(const kd_conv_dims *d, const float *x, float *col);
/* Sum of src[0..n) in a fixed order (eight partial sums). */
float kd_row_sum(const float *src, size_t n);

#endif
