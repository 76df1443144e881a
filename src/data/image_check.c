/* image_check.c - what an image file must pass before stb_image sees it: distill's caps (side,
 * pixel count) and structure checks for inputs that stb_image 2.27 (Debian 12's libstb) mishandles,
 * each found by the image fuzz target (tests/fuzz/fuzz_image.c) and kept as a regression test
 * (tests/test_fuzz_regress.c):
 *   - a JPEG Huffman table (DHT) declaring more than 256 codes: stbi__build_huffman writes past
 *     its 257-entry size array (fixed upstream in 2.28);
 *   - a JPEG scan using a Huffman or quantization table that was never defined: stb decodes with
 *     uninitialised memory and indexes out of bounds. A baseline scan uses its AC table even when
 *     it declares no AC coefficients (stb sets the spectral end to 63);
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

/* What the JPEG walk knows when it reaches a scan: the tables defined so far (Huffman: bit
 * class * 4 + id; quantization: bit id) and the frame (SOF) stb decodes with: the first of
 * SOF0-2, its component ids and their quantization tables. */
typedef struct {
    unsigned huffman, quant;
    int have_frame, progressive, n_comp;
    unsigned comp_id[4], comp_tq[4];
} jpeg_walk;

/* A byte as stb reads it: past the end of a whole file it reads 0; of a prefix, -1 says the
 * rest is not here to judge. */
static int byte_at(const unsigned char *b, size_t len, int whole, size_t i) {
    return i < len ? b[i] : whole ? 0 : -1;
}

static void jpeg_frame(const unsigned char *b, size_t len, int whole, size_t body, unsigned m,
                       jpeg_walk *w) {
    if (w->have_frame) return;  /* stb decodes with the first frame header */
    w->have_frame = 1;
    w->progressive = m == 0xC2;
    int n = byte_at(b, len, whole, body + 5);
    w->n_comp = n >= 1 && n <= 4 ? n : 0;  /* any other count: stb refuses the frame */
    for (int c = 0; c < w->n_comp; c++) {
        w->comp_id[c] = (unsigned)byte_at(b, len, whole, body + 6 + 3 * c);
        w->comp_tq[c] = (unsigned)byte_at(b, len, whole, body + 8 + 3 * c);
    }
}

/* A scan (SOS) must find every table stb will use already defined: stb's decoder struct is
 * malloc'd, so an undefined table is whatever the heap held. A baseline scan reads both its DC
 * and AC tables; a progressive one its DC tables when it starts at coefficient 0 (Ss = 0), its
 * AC tables otherwise. Components are matched to the frame by id, as stb does. */
static int jpeg_sos_check(const unsigned char *b, size_t len, int whole, size_t body,
                          const jpeg_walk *w, char *why, size_t cap) {
    int ns = byte_at(b, len, whole, body);
    if (ns < 1 || ns > 4 || !w->have_frame) return 0;  /* stb refuses the scan itself */
    int ss = byte_at(b, len, whole, body + 1 + 2 * (size_t)ns);
    if (ss < 0) return 0;
    int need_dc = !w->progressive || ss == 0, need_ac = !w->progressive || ss > 0;
    for (int k = 0; k < ns; k++) {
        int id = byte_at(b, len, whole, body + 1 + 2 * (size_t)k);
        int sel = byte_at(b, len, whole, body + 2 + 2 * (size_t)k);
        if (id < 0 || sel < 0) return 0;
        int c = 0;
        while (c < w->n_comp && w->comp_id[c] != (unsigned)id) c++;
        if (c == w->n_comp) return 0;  /* stb refuses a scan naming no frame component */
        unsigned td = (unsigned)sel >> 4, ta = (unsigned)sel & 15, tq = w->comp_tq[c];
        int bad_dc = need_dc && (td > 3 || !(w->huffman & (1u << td)));
        int bad_ac = need_ac && (ta > 3 || !(w->huffman & (1u << (4 + ta))));
        if (bad_dc || bad_ac) {
            snprintf(why, cap, "JPEG scan at byte %zu uses Huffman table %s %u, which no DHT "
                     "defined before it", body - 4, bad_dc ? "DC" : "AC", bad_dc ? td : ta);
            return -1;
        }
        if (tq <= 3 && !(w->quant & (1u << tq))) {
            snprintf(why, cap, "JPEG scan at byte %zu uses quantization table %u, which no DQT "
                     "defined before it", body - 4, tq);
            return -1;
        }
    }
    return 0;
}

/* DQT: 1 + 64 or 1 + 128 bytes per table (8- or 16-bit entries), until the segment's declared
 * length is used up, as stb reads it. */
static void jpeg_dqt(const unsigned char *b, size_t len, int whole, size_t body, size_t seg_len,
                     jpeg_walk *w) {
    long L = (long)seg_len - 2;
    size_t p = body;
    while (L > 0) {
        int q = byte_at(b, len, whole, p);
        if (q < 0 || (q >> 4) > 1) return;  /* not here, or a precision stb refuses */
        if ((q & 15) <= 3) w->quant |= 1u << (q & 15);
        size_t n = (q >> 4) ? 129 : 65;
        L -= (long)n;
        p += n;
    }
}

/* JPEG: every DHT segment's tables, read as stb reads them (17 bytes: class/id and 16 code
 * counts, then as many symbols as codes, until the segment's declared length is used up). A
 * table may hold at most 256 codes (ITU T.81, B.2.4.2). Every scan's tables must exist. Markers
 * are found the way a decoder finds them: 0xFF followed by anything but 0x00 (a stuffed byte),
 * 0xFF (fill) or a restart. */
static int jpeg_check(const unsigned char *b, size_t len, int whole, size_t start, char *why,
                      size_t cap) {
    size_t i = start;
    jpeg_walk w = {0};
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
                for (size_t k = 1; k <= 16; k++) n += (unsigned)byte_at(b, len, 1, p + k);
                if (n > 256) {
                    snprintf(why, cap, "JPEG Huffman table at byte %zu declares %u codes (at most "
                             "256)", p, n);
                    return -1;
                }
                if (p < len && (b[p] >> 4) <= 1 && (b[p] & 15) <= 3)
                    w.huffman |= 1u << ((b[p] >> 4) * 4 + (b[p] & 15));
                L -= 17 + (long)n;
                p += 17 + n;
            }
        }
        if (m == 0xDB) jpeg_dqt(b, len, whole, body, seg_len, &w);
        if (m >= 0xC0 && m <= 0xC2) jpeg_frame(b, len, whole, body, m, &w);
        if (m == 0xDA && jpeg_sos_check(b, len, whole, body, &w, why, cap)) return -1;
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
    if (soi > 0 && soi < len && buf[soi] == 0xD8 &&
        jpeg_check(buf, len, whole, soi + 1, why, cap))
        return KD_IMAGE_BAD;
    if (len >= 8 && memcmp(buf, "\x89PNG\r\n\x1a\n", 8) == 0 &&
        png_check(buf, len, whole, why, cap))
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
