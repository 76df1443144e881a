/* conv_reference.c - conv_reference.h. */
#include "conv_reference.h"

#include <math.h>

#include "../src/nn/fused.h"

void kd_conv_reference(const kd_cd_dims *d, const float *x, const float *w, const float *bias,
                       double *y, double *mag) {
    for (size_t o = 0; o < d->O; o++)
        for (size_t oh = 0; oh < d->OH; oh++)
            for (size_t ow = 0; ow < d->OW; ow++) {
                double s = bias ? bias[o] : 0.0, a = bias ? fabs(bias[o]) : 0.0;
                for (size_t c = 0; c < d->C; c++)
                    for (size_t i = 0; i < d->KH; i++)
                        for (size_t j = 0; j < d->KW; j++) {
                            const long h = (long)(d->S * oh + i) - (long)d->P,
                                       v = (long)(d->S * ow + j) - (long)d->P;
                            if (h < 0 || v < 0 || h >= (long)d->H || v >= (long)d->W) continue;
                            const double t = (double)w[((o * d->C + c) * d->KH + i) * d->KW + j] *
                                             (double)x[(c * d->H + (size_t)h) * d->W + (size_t)v];
                            s += t;
                            a += fabs(t);
                        }
                const size_t k = (o * d->OH + oh) * d->OW + ow;
                y[k] = s;
                mag[k] = a;
            }
}

size_t kd_conv_epilogue_misses(const kd_cd_dims *d, const float *y, const double *ref,
                               const double *mag, const float *scale, const float *shift,
                               const float *res, int act, double bound, size_t *first) {
    size_t bad = 0;
    for (size_t k = 0; k < d->O * d->OH * d->OW; k++) {
        const size_t o = k / (d->OH * d->OW);
        const double want = kd_act_value((float)(scale[o] * ref[k] + shift[o] +
                                                 (res ? res[k] : 0.0)), act);
        if (!(fabs((double)y[k] - want) <= scale[o] * mag[k] * bound + 1e-6) && !bad++)
            *first = k;
    }
    return bad;
}

int kd_test_cpu_avx512(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return !!__builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}
