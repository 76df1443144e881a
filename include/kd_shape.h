/* kd_shape.h - per-sample tensor shapes ({784}, {1, 28, 28}), shared by the data and nn modules. */
#ifndef KD_SHAPE_H
#define KD_SHAPE_H

#include <stddef.h>

#define KD_MAX_RANK 4
/* Per-sample shape (no batch dimension): {784} for vectors, {C, H, W} for images. */
typedef struct {
    int rank;
    size_t d[KD_MAX_RANK];
} kd_shape;

/* Product of the dimensions (1 for rank 0). */
size_t kd_shape_numel(const kd_shape *s);
/* "[1, 28, 28]" into buf; returns buf. */
const char *kd_shape_str(const kd_shape *s, char *buf, size_t cap);

#endif
