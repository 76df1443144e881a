/* kd_vec.h - the one 4-float vector type of the hand-vectorised kernels (a GCC/Clang vector
 * extension: one SSE register, the widest the baseline x86-64 target has), with unaligned-safe
 * loads and stores. Kernels take two per step for eight lanes where a loop wants them. */
#ifndef KD_VEC_H
#define KD_VEC_H

#include <string.h>

typedef float kd_v4f __attribute__((vector_size(16)));

/* p[0..4) as a vector; p needs no alignment (memcpy compiles to one unaligned load). */
static inline kd_v4f kd_v4_load(const float *p) {
    kd_v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* v into p[0..4); p needs no alignment. */
static inline void kd_v4_store(float *p, kd_v4f v) { memcpy(p, &v, sizeof v); }

#endif
