/* seed_images.c - writes the JPEG seeds of the image fuzz target (PNG seeds come from
 * make_corpus.sh, which writes bit depths and colour types stb_image_write cannot): gray and
 * RGB, several sizes and qualities, each a real encoder's output for the fuzzer to mutate.
 *   usage: seed_images OUTDIR */
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 2;
    }
    static const struct { int w, h, comp, quality; } seeds[] = {
        {8, 8, 1, 95}, {8, 8, 3, 95}, {17, 9, 3, 50}, {16, 16, 1, 10}, {33, 20, 3, 90},
    };
    unsigned char px[33 * 20 * 3];
    for (size_t k = 0; k < sizeof seeds / sizeof seeds[0]; k++) {
        int w = seeds[k].w, h = seeds[k].h, c = seeds[k].comp;
        /* A gradient with a seeded wobble: enough detail for nonzero AC coefficients. */
        unsigned s = 12345u + (unsigned)k;
        for (int i = 0; i < w * h * c; i++) {
            s = s * 1103515245u + 12345u;
            px[i] = (unsigned char)((i * 7) % 256 ^ ((s >> 16) & 31));
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/jpeg-%dx%dx%d-q%d.jpg", argv[1], w, h, c, seeds[k].quality);
        if (!stbi_write_jpg(path, w, h, c, px, seeds[k].quality)) {
            fprintf(stderr, "seed_images: cannot write %s\n", path);
            return 1;
        }
    }
    return 0;
}
