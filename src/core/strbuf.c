/* strbuf.c - the growable text buffer of kd_strbuf.h. */
#include "kd_strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_common.h"

void kd_strbuf_put(kd_strbuf *b, const char *s, size_t n) {
    size_t need;
    if (b->oom) return;
    if (kd_add_size(b->len, n, &need) || kd_add_size(need, 1, &need)) {
        b->oom = 1;
        return;
    }
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < need && cap <= SIZE_MAX / 2) cap *= 2;
        if (cap < need) cap = need;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

void kd_strbuf_puts(kd_strbuf *b, const char *s) { kd_strbuf_put(b, s, strlen(s)); }

void kd_strbuf_printf(kd_strbuf *b, const char *fmt, ...) {
    char small[256];
    va_list ap, ap2;
    if (b->oom) return;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
    } else if ((size_t)n < sizeof small) {
        kd_strbuf_put(b, small, (size_t)n);
    } else {
        /* Longer than the stack buffer: format again into a heap copy of the right size. */
        char *big = malloc((size_t)n + 1);
        if (big && vsnprintf(big, (size_t)n + 1, fmt, ap2) == n) kd_strbuf_put(b, big, (size_t)n);
        else b->oom = 1;
        free(big);
    }
    va_end(ap2);
}

void kd_strbuf_free(kd_strbuf *b) {
    if (!b) return;
    free(b->s);
    memset(b, 0, sizeof *b);
}
