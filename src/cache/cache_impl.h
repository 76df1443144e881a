/* cache_impl.h - private to the cache file's reader and writer (cache_read.c, cache_write.c),
 * and to its tests and fuzz target: the byte layout the header implies, the meta's ranges, and
 * the checksum repair that lets tests and the fuzzer reach the checks behind the checksums. */
#ifndef KD_CACHE_IMPL_H
#define KD_CACHE_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "kd_cache.h"
#include "kd_dtype.h"

/* "KDCACHE1", u32 header_len, u32 header_crc. */
#define KD_CACHE_PREAMBLE 16
#define KD_CACHE_FORMAT "distill-cache/1"
/* view_seed is a JSON number: whole numbers are exact up to 2^53 - 1. */
#define KD_CACHE_MAX_SEED ((uint64_t)9007199254740991)

/* Where everything of a cache with this meta and header length lies. Entry e (view v, row r:
 * e = v * n_rows + r) is in block e / KD_CACHE_BLOCK_ROWS; a block is its entries, then a u32
 * crc32 of them. All offsets are from the start of the file. */
typedef struct {
    size_t header_len;
    size_t value_bytes;  /* 4 (f32) or 2 (f16) */
    size_t row_bytes;    /* one teacher row */
    size_t entry_bytes;  /* n_teachers rows */
    size_t n_entries;    /* views * n_rows */
    size_t n_blocks;
    size_t index_off;    /* the index: n_rows u32, then its crc */
    size_t blocks_off;   /* the first block */
    size_t block_stride; /* KD_CACHE_BLOCK_ROWS * entry_bytes + 4: a full block with its crc */
    size_t file_size;
} kd_cache_layout;

/* An open cache: the whole file in memory, verified (cache_read.c). */
struct kd_cache {
    char *name;            /* the path, for messages */
    kd_cache_meta meta;
    kd_cache_layout lay;
    const kd_codec *codec;
    uint8_t *data;         /* the whole file (lay.file_size bytes) */
    uint32_t *index;       /* (n_rows) */
};

/* The layout of meta (its counts already within their ranges); -1 if a size overflows. */
int kd_cache_layout_of(const kd_cache_meta *meta, size_t header_len, kd_cache_layout *out);
/* Block b's entry bytes: [*begin, *begin + *len); its crc follows them. */
void kd_cache_block_span(const kd_cache_layout *lay, size_t b, size_t *begin, size_t *len);

/* 0 when every field of meta is within its range (kd_cache.h) and the fields' names are
 * distinct; else -1 and "FIELD: expected ..., got ..." in msg, FIELD a header key. */
int kd_cache_meta_invalid(const kd_cache_meta *meta, char *msg, size_t cap);

/* Takes data (len bytes, malloc'd; freed also on failure) into a new cache once all of it is
 * verified (kd_cache_open's checks); name stands for the path in messages. */
kd_status kd_cache_adopt(kd_cache **out, uint8_t *data, size_t len, const char *name,
                         kd_err *err);

/* Little-endian u32 at any alignment. */
uint32_t kd_cache_get_u32(const uint8_t *p);
void kd_cache_put_u32(uint8_t *p, uint32_t v);

/* Rewrites, in data[0..len), every checksum that can be located: the header's (when its
 * declared length fits), and, when the header is a valid one, the index's and each block's
 * that lies within len. Tests use it to build files that are wrong only where they mean them
 * to be, and the fuzz target to get past the checksums to the checks behind them. */
void kd_cache_fix_checksums(uint8_t *data, size_t len);

#endif
