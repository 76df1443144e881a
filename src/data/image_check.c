/* image_check.c - what an image file must pass before stb_image sees it: distill's caps (side,
 * pixel count) and structure checks for inputs that stb_image 2.27 (Debian 12's libstb) mishandles,
 * each found by the image fuzz target (tests/fuzz/fuzz_image.c) and kept as a regression test
 * (tests/test_image_check.c):
 *   - a JPEG Huffman table (DHT) declaring more than 256 codes: stbi__build_huffman writes past
 *     its 257-entry size array (fixed upstream in 2.28);
 *   - a JPEG scan using a Huffman table that was never defined: stb decodes with uninitialised
 *     memory and indexes out of bounds;
 *   - a PNG whose first IDAT chunk is empty: stb adds 0 to a NULL buffer (undefined behaviour);
 *   - a PNG chunk longer than the file: stb allocates the declared length before reading.
 * Both checks only walk the marker/chunk structure; they never decode pixels. */
#include <limits.h>
#include <stb_image.h>
#include <stdio.h>
#include <string.h>

#include "data_impl.h"

static unsigned be16(const unsigned char *p) { return (unsigned)p[0] << 8 | p[1]; }
static size_t be32(const unsigned char *p) {
    return (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
}

/* A JPEG scan (SOS) whose components use a Huffman table no DHT defined before it: stb_image
 * 2.27 decodes with the uninitialised table (its decoder struct is malloc'd), reading out of
 * bounds. A scan needs its DC tables when it starts at coefficient 0 (Ss = 0) and its AC tables
 * when it goes past it (Se > 0), as in stb's baseline and progressive paths. defined has bit
 * (class * 4 + id) for every table defined so far. */
static int jpeg_sos_check(const unsigned char *b, size_t len, size_t body, unsigned defined,
                          char *why, size_t cap) {
    if (body >= len) return 0;
    size_t ns = b[body], end = body + 1 + 2 * ns;
    if (end + 1 >= len) return 0;  /* not all here: stb stops there itself */
    int need_dc = b[end] == 0, need_ac = b[end + 1] > 0;
    for (size_t c = 0; c < ns; c++) {
        unsigned sel = b[body + 2 + 2 * c], td = sel >> 4, ta = sel & 15;
        int bad_dc = need_dc && (td > 3 || !(defined & (1u << td)));
        int bad_ac = need_ac && (ta > 3 || !(defined & (1u << (4 + ta))));
        if (bad_dc || bad_ac) {
            snprintf(why, cap, "JPEG scan at byte %zu uses Huffman table %s %u, which no DHT "
                     "defined before it", body - 4, bad_dc ? "DC" : "AC", bad_dc ? td : ta);
            return -1;
        }
    }
    return 0;
}

/* JPEG: every DHT segment's tables, read as stb reads them (17 bytes: class/id and 16 code
 * counts, then as many symbols as codes, until the segment's declared length is used up). A
 * table may hold at most 256 codes (ITU T.81, B.2.4.2). Every scan's tables must exist. Markers
 * are found the way a decoder finds them: 0xFF followed by anything but 0x00 (a stuffed byte),
 * 0xFF (fill) or a restart. */
static int jpeg_check(const unsigned char *b, size_t len, size_t start, char *why, size_t cap) {
    size_t i = start;
    unsigned defined = 0;
    while (i + 1 < len) {
        if (b[i] != 0xFF) { i++; continue; }
        unsigned m = b[i + 1];
        if (m == 0xFF) { i++; continue; }
        if (m == 0x00 || m == 0x01 || m == 0xD8 || (m >= 0xD0 && m <= 0xD7)) { i += 2; continue; }
        if (m == 0xD9 || i + 4 > len) break;
        size_t seg_len = be16(b + i + 2), body = i + 4;
        if (m == 0xC4) {
            /* L counts down as in stb: the 17-byte table head, then its symbols. */
            long L = (long)seg_len - 2;
            size_t p = body;
            while (L > 0) {
                unsigned n = 0;
                for (size_t k = 1; k <= 16; k++) n += p + k < len ? b[p + k] : 0;
                if (n > 256) {
                    snprintf(why, cap, "JPEG Huffman table at byte %zu declares %u codes (at most "
                             "256)", p, n);
                    return -1;
                }
                if (p < len && (b[p] >> 4) <= 1 && (b[p] & 15) <= 3)
                    defined |= 1u << ((b[p] >> 4) * 4 + (b[p] & 15));
                L -= 17 + (long)n;
                p += 17 + n;
            }
        }
        if (m == 0xDA && jpeg_sos_check(b, len, body, defined, why, cap)) return -1;
        i = body + (seg_len >= 2 ? seg_len - 2 : 0);
    }
    return 0;
}

/* PNG: the chunk list up to IEND. In a whole file every chunk's data and CRC must be there:
 * stb_image 2.27 grows its buffer to an IDAT's declared length before reading it, so a
 * 100-byte file declaring a 1.8 GB chunk would allocate 1.8 GB. The first data may not be an
 * empty IDAT: stb would copy 0 bytes to a NULL pointer. */
static int png_check(const unsigned char *b, size_t len, int whole, char *why, size_t cap) {
    size_t i = 8;
    int have_data = 0;
    while (i + 8 <= len) {
        size_t n = be32(b + i);
        const unsigned char *type = b + i + 4;
        if (n > len - i - 8 || len - i - 8 - n < 4) {
            if (!whole) break;  /* a prefix: the rest is not here to judge */
            snprintf(why, cap, "PNG chunk at byte %zu declares %zu bytes, past the end of the "
                     "%zu-byte file", i, n, len);
            return -1;
        }
        if (memcmp(type, "IDAT", 4) == 0) {
            if (n == 0 && !have_data) {
                snprintf(why, cap, "PNG chunk IDAT at byte %zu is empty", i);
                return -1;
            }
            have_data = 1;
        }
        if (memcmp(type, "IEND", 4) == 0) break;
        i += 12 + n;
    }
    return 0;
}

kd_image_verdict kd_image_header(const unsigned char *buf, size_t len, int whole, int *w, int *h,
                                 char *why, size_t cap) {
    int comp;
    *w = *h = 0;
    why[0] = '\0';
    if (len > INT_MAX) len = INT_MAX;  /* stb counts in int; a header is within the first bytes */
    /* A JPEG as stb_image finds one: any number of 0xFF fill bytes, then the SOI marker. */
    size_t soi = 0;
    while (soi < len && buf[soi] == 0xFF) soi++;
    if (soi > 0 && soi < len && buf[soi] == 0xD8 && jpeg_check(buf, len, soi + 1, why, cap))
        return KD_IMAGE_BAD;
    if (len >= 8 && memcmp(buf, "\x89PNG\r\n\x1a\n", 8) == 0 && png_check(buf, len, whole, why, cap))
        return KD_IMAGE_BAD;
    if (!stbi_info_from_memory(buf, (int)len, w, h, &comp)) {
        const char *r = stbi_failure_reason();
        snprintf(why, cap, "%s", r ? r : "not a PNG or JPEG image");
        return KD_IMAGE_BAD;
    }
    /* Caps before any pixel is decoded: each side, and their product (the decode's size). */
    if (*w <= 0 || *h <= 0 || *w > KD_IMAGE_MAX_SIDE || *h > KD_IMAGE_MAX_SIDE ||
        (size_t)*w * (size_t)*h > KD_IMAGE_MAX_PIXELS) {
        snprintf(why, cap, "image is %dx%d: expected sides of 1 to %d and at most %zu pixels", *w,
                 *h, KD_IMAGE_MAX_SIDE, (size_t)KD_IMAGE_MAX_PIXELS);
        return KD_IMAGE_TOO_LARGE;
    }
    return KD_IMAGE_OK;
}
