/* kd_strbuf.h - a growable NUL-terminated text buffer for writers that build a document in
 * memory before one atomic write (safetensors headers, SVG pictures). */
#ifndef KD_STRBUF_H
#define KD_STRBUF_H

#include <stddef.h>

/* Zero-initialise ({0}) before use. An allocation failure sets oom and makes every later call a
 * no-op, so a writer appends freely and checks oom once at the end. s is NULL until the first
 * append; the buffer owns it (kd_strbuf_free). */
typedef struct {
    char *s;
    size_t len, cap;
    int oom;
} kd_strbuf;

void kd_strbuf_put(kd_strbuf *b, const char *s, size_t n);
void kd_strbuf_puts(kd_strbuf *b, const char *s);
/* Appends formatted text of any length. */
void kd_strbuf_printf(kd_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void kd_strbuf_free(kd_strbuf *b);  /* NULL-safe, idempotent; leaves an empty buffer */

#endif
