/* csv.c - CSV reader (plain or gzip): numeric feature columns plus one label column (numeric or
 * string), optional header row, any one-character delimiter, RFC 4180 quotes. Held as float rows: the
 * "csv" format (its ops at the end, over the shared in-memory reader of mem.c). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data_impl.h"

/* Splits one record in place: fields are unquoted and NUL-terminated inside the buffer (they
 * only shrink, so writing behind the read position is safe). A quoted field may span lines
 * (RFC 4180). Returns the position after the record. fields[] receives up to cap pointers;
 * *n_fields is the true count (may exceed cap); *n_lines the newlines the record consumed. With
 * write = 0 nothing is modified (a dry run that only counts, so the first record's count comes
 * from the same rules as every other). */
static char *split_line(char *p, char *end, char delim, char **fields, size_t cap,
                        size_t *n_fields, size_t *n_lines, int *bad_quote, int write) {
    size_t n = 0, lines = 0;
    *bad_quote = 0;
    for (;;) {
        char *w = p, *start = p;
        if (p < end && *p == '"') {
            p++;
            for (;;) {
                if (p >= end) { *bad_quote = 1; break; }
                if (*p == '"') {
                    if (p + 1 < end && p[1] == '"') {
                        if (write) *w = '"';
                        w++;
                        p += 2;
                        continue;
                    }
                    p++;
                    break;
                }
                lines += *p == '\n';
                if (write) *w = *p;
                w++, p++;
            }
            /* Anything between the closing quote and the delimiter is malformed. */
            if (p < end && *p != delim && *p != '\n' && *p != '\r') *bad_quote = 1;
            while (p < end && *p != delim && *p != '\n') p++;
        } else {
            while (p < end && *p != delim && *p != '\n') {
                if (write) *w = *p;
                w++, p++;
            }
            if (w > start && w[-1] == '\r' && (p >= end || *p == '\n')) w--;
        }
        int at_delim = p < end && *p == delim;
        if (n < cap) fields[n] = start;
        n++;
        if (write) *w = '\0';  /* may overwrite the delimiter/newline: already consumed above */
        if (!at_delim) {
            if (p < end) p++, lines++;  /* the '\n' */
            break;
        }
        p++;
    }
    *n_fields = n;
    *n_lines = lines;
    return p;
}

/* Splits the record at *p (the caps and the quote check included), advancing *p and *line. */
static kd_status next_record(const char *path, char **p, char *end, char delim, char **fields,
                             size_t cap, size_t *n_fields, size_t *line, kd_err *err) {
    int bad_quote;
    size_t lines;
    char *start = *p;
    char *next =
        split_line(start, end, delim, fields, cap, n_fields, &lines, &bad_quote, fields != NULL);
    if ((size_t)(next - start) > KD_CSV_MAX_LINE)
        return kd_err_set(err, KD_EINPUT, "%s: line %zu: %zu bytes long, more than the %zu-byte "
                          "limit of a CSV line", path, *line, (size_t)(next - start),
                          (size_t)KD_CSV_MAX_LINE);
    if (*n_fields > KD_CSV_MAX_COLUMNS)
        return kd_err_set(err, KD_EINPUT, "%s: line %zu: %zu columns, more than the limit of %zu",
                          path, *line, *n_fields, (size_t)KD_CSV_MAX_COLUMNS);
    if (bad_quote)
        return kd_err_set(err, KD_EINPUT, "%s: line %zu: unterminated or malformed quoted field",
                          path, *line);
    if (fields) {
        *line += lines;
        *p = next;
    }
    return KD_OK;
}

/* Parses a finite float; 0 if the text is not entirely one number. */
static int parse_float(const char *s, float *out) {
    while (*s == ' ' || *s == '\t') s++;
    if (!*s) return 0;
    char *e;
    errno = 0;
    float v = strtof(s, &e);
    while (*e == ' ' || *e == '\t') e++;
    if (*e || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

static int is_blank_line(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r')) p++;
    return p >= end || *p == '\n';
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

kd_status kd_csv_load(const kd_data_source *src, kd_data_mem *out, kd_err *err) {
    kd_status st = KD_OK;
    char *text = NULL, **fields = NULL, **label_str = NULL, **uniq = NULL;
    size_t len = 0, cap_rows = 0;
    const char *path = src->path;
    char delim = src->delimiter ? src->delimiter : ',';
    memset(out, 0, sizeof *out);
    if (delim == '"' || delim == '\n' || delim == '\r') {
        return kd_err_set(err, KD_EUSAGE, "data.delimiter: '%c' cannot be a CSV delimiter", delim);
    }
    /* Plain or gzip (".csv.gz"), as IDX files. */
    int compressed = 0;
    if ((st = kd_data_read_all(path, KD_DATA_MAX_BYTES, &text, &len, &compressed, err))) return st;
    const char *nul = memchr(text, '\0', len);
    if (nul) {
        st = kd_err_set(err, KD_EINPUT, "%s: byte %zu%s: a NUL byte: not CSV text%s", path,
                        (size_t)(nul - text), compressed ? " of the decompressed data" : "",
                        compressed ? "" : " (a compressed file must be gzip)");
        goto cleanup;
    }
    char *p = text, *end = text + len;
    size_t line = 1;
    /* Skip leading blank lines and a UTF-8 byte order mark. */
    if (len >= 3 && (unsigned char)p[0] == 0xEF && (unsigned char)p[1] == 0xBB &&
        (unsigned char)p[2] == 0xBF)
        p += 3;
    while (p < end && is_blank_line(p, end)) {
        while (p < end && *p != '\n') p++;
        if (p < end) p++;
        line++;
    }
    if (p >= end) {
        st = kd_err_set(err, KD_EINPUT, "%s: no data rows (the file is empty)", path);
        goto cleanup;
    }
    /* First record: fixes the column count, and may be the header. */
    size_t ncol = 0;
    const size_t first_line = line;
    char *next = p;
    if ((st = next_record(path, &next, end, delim, NULL, 0, &ncol, &line, err))) goto cleanup;
    fields = malloc(ncol * sizeof(char *));
    if (!fields) {
        st = kd_err_set(err, KD_EIO, "out of memory");
        goto cleanup;
    }
    size_t n_first;
    if ((st = next_record(path, &next, end, delim, fields, ncol, &n_first, &line, err)))
        goto cleanup;
    KD_ASSERT(n_first == ncol);

    /* Which column is the label. */
    int unlabeled = strcmp(src->label_column, "none") == 0;
    long label_col = -1;
    int label_by_name = 0;
    if (!unlabeled) {
        const char *lc = src->label_column;
        if (!lc[0]) {
            label_col = (long)ncol - 1;
        } else {
            char *e;
            long v = strtol(lc, &e, 10);
            if (*e == '\0') {
                if (v < 0) v += (long)ncol;
                if (v < 0 || v >= (long)ncol) {
                    st = kd_err_set(err, KD_EINPUT,
                                    "%s: line %zu: label column %s: expected an index from 0 to "
                                    "%zu (the line has %zu columns)",
                                    path, first_line, lc, ncol - 1, ncol);
                    goto cleanup;
                }
                label_col = v;
            } else {
                label_by_name = 1;
            }
        }
    }
    int header = src->has_header;
    if (label_by_name) {
        if (header == 0) {
            st = kd_err_set(err, KD_EUSAGE,
                            "data.label_column \"%s\" is a name, but data.header is false",
                            src->label_column);
            goto cleanup;
        }
        header = 1;
    }
    if (header < 0) {
        /* A first row is a header when one of its feature fields is not a number (a string in
         * the label column alone is a string label). */
        header = 0;
        float tmp;
        for (size_t c = 0; c < ncol; c++)
            if ((long)c != label_col && !parse_float(fields[c], &tmp)) header = 1;
    }
    if (label_by_name) {
        for (size_t c = 0; c < ncol; c++)
            if (strcmp(fields[c], src->label_column) == 0) label_col = (long)c;
        if (label_col < 0) {
            char cols[512] = "";
            for (size_t c = 0; c < ncol && strlen(cols) < 400; c++) {
                strncat(cols, c ? ", " : "", sizeof cols - strlen(cols) - 1);
                strncat(cols, fields[c], sizeof cols - strlen(cols) - 1);
            }
            st = kd_err_set(err, KD_EINPUT, "%s: line %zu: label column \"%s\" not found in the header (columns: %s)",
                            path, first_line, src->label_column, cols);
            goto cleanup;
        }
    }
    size_t nfeat = ncol - (label_col >= 0 ? 1 : 0);
    if (nfeat == 0) {
        st = kd_err_set(err, KD_EINPUT, "%s: line %zu: no feature columns (only the label column)", path, first_line);
        goto cleanup;
    }
    /* The first record is already split (in place); a data first row is consumed from fields. */
    int pending_first = !header;
    p = next;

    /* Data rows. Rows are at most one per line, so the line count bounds the allocation. */
    size_t max_rows = 1;
    for (char *q = p; q < end; q++) max_rows += (*q == '\n');
    max_rows += (size_t)pending_first;
    cap_rows = max_rows;
    size_t feat_bytes;
    if (kd_mul_size(cap_rows, nfeat, &feat_bytes) || kd_mul_size(feat_bytes, sizeof(float), &feat_bytes)) {
        st = kd_err_set(err, KD_EINPUT, "%s: too large", path);
        goto cleanup;
    }
    out->f32 = malloc(feat_bytes ? feat_bytes : 1);
    if (label_col >= 0) label_str = malloc(cap_rows * sizeof(char *));
    if (!out->f32 || (label_col >= 0 && !label_str)) {
        st = kd_err_set(err, KD_EIO, "out of memory");
        goto cleanup;
    }
    size_t n = 0;
    while (pending_first || p < end) {
        size_t nf = ncol, row_line = first_line;
        if (pending_first) {
            pending_first = 0;
            goto have_fields;
        }
        if (is_blank_line(p, end)) {
            while (p < end && *p != '\n') p++;
            if (p < end) p++;
            line++;
            continue;
        }
        row_line = line;
        if ((st = next_record(path, &p, end, delim, fields, ncol, &nf, &line, err))) goto cleanup;
        if (nf != ncol) {
            st = kd_err_set(err, KD_EINPUT, "%s: line %zu: expected %zu columns (as on line %zu), found %zu",
                            path, row_line, ncol, first_line, nf);
            goto cleanup;
        }
    have_fields:;
        float *row = out->f32 + n * nfeat;
        size_t k = 0;
        for (size_t c = 0; c < ncol; c++) {
            if ((long)c == label_col) {
                label_str[n] = fields[c];
                continue;
            }
            if (!parse_float(fields[c], &row[k])) {
                st = kd_err_set(err, KD_EINPUT,
                                "%s: line %zu, column %zu: expected a finite number, found \"%.40s\"",
                                path, row_line, c + 1, fields[c]);
                goto cleanup;
            }
            k++;
        }
        n++;
    }
    if (n == 0) {
        st = kd_err_set(err, KD_EINPUT, "%s: no data rows%s", path, header ? " after the header" : "");
        goto cleanup;
    }
    out->n = n;
    out->shape.rank = 1;
    out->shape.d[0] = nfeat;

    if (label_col >= 0) {
        out->labels = malloc(n * sizeof(int32_t));
        if (!out->labels) {
            st = kd_err_set(err, KD_EIO, "out of memory");
            goto cleanup;
        }
        /* Numeric labels when every label is a number; otherwise all are class names. */
        int numeric = 1;
        for (size_t i = 0; i < n && numeric; i++) {
            float v;
            if (!parse_float(label_str[i], &v)) numeric = 0;
        }
        size_t limit = src->n_classes ? src->n_classes : KD_MAX_CLASSES;
        if (numeric) {
            int32_t maxl = -1;
            for (size_t i = 0; i < n; i++) {
                float v = 0;  /* parse_float succeeded in the pass above */
                parse_float(label_str[i], &v);
                if (v != floorf(v) || v < 0 || v >= (float)limit) {
                    st = kd_err_set(err, KD_EINPUT,
                                    "%s: sample %zu, column %ld: label \"%s\": expected an integer "
                                    "class from 0 to %zu",
                                    path, i + 1, label_col + 1, label_str[i], limit - 1);
                    goto cleanup;
                }
                out->labels[i] = (int32_t)v;
                if (out->labels[i] > maxl) maxl = out->labels[i];
            }
            out->n_classes = src->n_classes ? src->n_classes : (size_t)maxl + 1;
            out->class_names = calloc(out->n_classes, sizeof(char *));
            if (!out->class_names) {
                st = kd_err_set(err, KD_EIO, "out of memory");
                goto cleanup;
            }
            for (size_t k = 0; k < out->n_classes; k++) {
                char buf[32];
                snprintf(buf, sizeof buf, "%zu", k);
                if (!(out->class_names[k] = strdup(buf))) {
                    st = kd_err_set(err, KD_EIO, "out of memory");
                    goto cleanup;
                }
            }
        } else {
            uniq = malloc(n * sizeof(char *));
            if (!uniq) {
                st = kd_err_set(err, KD_EIO, "out of memory");
                goto cleanup;
            }
            memcpy(uniq, label_str, n * sizeof(char *));
            qsort(uniq, n, sizeof(char *), cmp_str);
            size_t k = 0;
            for (size_t i = 0; i < n; i++)
                if (k == 0 || strcmp(uniq[k - 1], uniq[i]) != 0) uniq[k++] = uniq[i];
            if (k > limit) {
                st = kd_err_set(err, KD_EINPUT, "%s: %zu distinct string labels, expected at most %zu",
                                path, k, limit);
                goto cleanup;
            }
            for (size_t i = 0; i < n; i++) {
                char **hit = bsearch(&label_str[i], uniq, k, sizeof(char *), cmp_str);
                KD_ASSERT(hit);
                out->labels[i] = (int32_t)(hit - uniq);
            }
            out->n_classes = src->n_classes ? src->n_classes : k;
            out->class_names = calloc(out->n_classes, sizeof(char *));
            if (!out->class_names) {
                st = kd_err_set(err, KD_EIO, "out of memory");
                goto cleanup;
            }
            for (size_t c = 0; c < out->n_classes; c++) {
                char buf[32];
                snprintf(buf, sizeof buf, "%zu", c);
                if (!(out->class_names[c] = strdup(c < k ? uniq[c] : buf))) {
                    st = kd_err_set(err, KD_EIO, "out of memory");
                    goto cleanup;
                }
            }
        }
    }
    /* Give back the slack of the line-count bound. */
    if (n < cap_rows) {
        float *shrunk = realloc(out->f32, n * nfeat * sizeof(float));
        if (shrunk) out->f32 = shrunk;
    }

cleanup:
    free(text);
    free(fields);
    free(label_str);
    free(uniq);
    if (st) kd_data_mem_free(out);
    return st;
}

static kd_status csv_open(const kd_data_source *src, void **handle, kd_reader_info *info,
                          kd_err *err) {
    return kd_data_mem_open(src, kd_csv_load, handle, info, err);
}

const kd_format_ops kd_csv_format_ops = {csv_open, kd_data_mem_read, kd_data_mem_close, 0};
