/* fuzz_image.c - libFuzzer target: image decoding through distill's caps (file size, side,
 * pixel count) with stb_image's PNG and JPEG decoders, forced channels and the bilinear resize.
 * The first byte picks the channel count and the output size (1..32 square or not); decoded
 * values must be bytes' worth: 0..255, give or take the rounding of the bilinear weights
 * (255 * (1 - w) + 255 * w may land one float step above 255). */
#include "fuzz_common.h"

#include <math.h>
#include "../../src/data/data_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int channels = (data[0] & 1) ? 3 : 1;
    const size_t h = 1 + ((data[0] >> 1) & 7) * 4, w = (data[0] & 0x80) ? h : 1 + ((data[0] >> 4) & 7) * 4;
    const char *path = fuzz_file(data + 1, size - 1);
    static float out[3 * 32 * 32];
    kd_err err;
    kd_err_clear(&err);
    kd_status st = kd_image_decode(path, channels, h, w, out, &err);
    fuzz_check_status(st, &err, path);
    if (st == KD_OK)
        for (size_t i = 0; i < (size_t)channels * h * w; i++)
            FUZZ_CHECK(out[i] >= -1e-3f && out[i] <= 255.001f);
    return 0;
}
