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

/* One CSV text being read: where the reader is, and what the first record decided. */
typedef struct {
    const kd_data_source *src;
    const char *path;
    char delim;
    char *p, *end;        /* the text still to read */
    size_t line;          /* the line number at p */
    size_t first_line;    /* the first record's line */
    size_t ncol;          /* columns of every record: the first record's count */
    char **fields;        /* (ncol) the fields of the record last split, in place in the text */
    long label_col;       /* the label's column; -1 when unlabeled */
    int header;           /* 1: the first record is a header, not data */
} csv_reader;

static void skip_line(csv_reader *r) {
    while (r->p < r->end && *r->p != '\n') r->p++;
    if (r->p < r->end) r->p++;
    r->line++;
}

/* The text of the file (plain or gzip, ".csv.gz", as IDX files), which must not hold a NUL. */
static kd_status read_text(const char *path, char **text, size_t *len, kd_err *err) {
    int compressed = 0;
    kd_status st = kd_data_read_all(path, KD_DATA_MAX_BYTES, text, len, &compressed, err);
    if (st) return st;
    const char *nul = memchr(*text, '\0', *len);
    if (nul)
        return kd_err_set(err, KD_EINPUT, "%s: byte %zu%s: a NUL byte: not CSV text%s", path,
                          (size_t)(nul - *text), compressed ? " of the decompressed data" : "",
                          compressed ? "" : " (a compressed file must be gzip)");
    return KD_OK;
}

/* Header step, 1: past a UTF-8 byte order mark and blank lines, splits the first record, which
 * fixes the column count (a dry run counts its fields by the same rules as every record). */
static kd_status read_first_record(csv_reader *r, kd_err *err) {
    if (r->end - r->p >= 3 && (unsigned char)r->p[0] == 0xEF && (unsigned char)r->p[1] == 0xBB &&
        (unsigned char)r->p[2] == 0xBF)
        r->p += 3;
    while (r->p < r->end && is_blank_line(r->p, r->end)) skip_line(r);
    if (r->p >= r->end)
        return kd_err_set(err, KD_EINPUT, "%s: no data rows (the file is empty)", r->path);
    r->first_line = r->line;
    kd_status st = next_record(r->path, &r->p, r->end, r->delim, NULL, 0, &r->ncol, &r->line, err);
    if (st) return st;
    r->fields = malloc(r->ncol * sizeof(char *));
    if (!r->fields) return kd_err_set(err, KD_EIO, "out of memory");
    size_t n_first;
    st = next_record(r->path, &r->p, r->end, r->delim, r->fields, r->ncol, &n_first, &r->line, err);
    KD_ASSERT(st || n_first == r->ncol);
    return st;
}

/* Header step, 2: the label column given by index (data.label_column "3", "-1"; "" is the
 * last), or *by_name when it is given by its header name; -1 when unlabeled ("none"). */
static kd_status label_index(csv_reader *r, int *by_name, kd_err *err) {
    const char *lc = r->src->label_column;
    *by_name = 0;
    r->label_col = -1;
    if (strcmp(lc, "none") == 0) return KD_OK;
    if (!lc[0]) {
        r->label_col = (long)r->ncol - 1;
        return KD_OK;
    }
    char *e;
    long v = strtol(lc, &e, 10);
    if (*e != '\0') {
        *by_name = 1;
        return KD_OK;
    }
    if (v < 0) v += (long)r->ncol;
    if (v < 0 || v >= (long)r->ncol)
        return kd_err_set(err, KD_EINPUT, "%s: line %zu: label column %s: expected an index from 0 "
                          "to %zu (the line has %zu columns)",
                          r->path, r->first_line, lc, r->ncol - 1, r->ncol);
    r->label_col = v;
    return KD_OK;
}

/* Header step, 3: whether the first record is a header (data.header, else: one of its feature
 * fields is not a number; a string in the label column alone is a string label), and the
 * label column a name refers to. */
static kd_status read_header(csv_reader *r, kd_err *err) {
    int by_name;
    kd_status st = label_index(r, &by_name, err);
    if (st) return st;
    r->header = r->src->has_header;
    if (by_name) {
        if (r->header == 0)
            return kd_err_set(err, KD_EUSAGE, "data.label_column \"%s\" is a name, but "
                              "data.header is false", r->src->label_column);
        r->header = 1;
    }
    if (r->header < 0) {
        r->header = 0;
        float tmp;
        for (size_t c = 0; c < r->ncol; c++)
            if ((long)c != r->label_col && !parse_float(r->fields[c], &tmp)) r->header = 1;
    }
    if (by_name) {
        for (size_t c = 0; c < r->ncol; c++)
            if (strcmp(r->fields[c], r->src->label_column) == 0) r->label_col = (long)c;
        if (r->label_col < 0) {
            char cols[512] = "";
            for (size_t c = 0; c < r->ncol && strlen(cols) < 400; c++) {
                strncat(cols, c ? ", " : "", sizeof cols - strlen(cols) - 1);
                strncat(cols, r->fields[c], sizeof cols - strlen(cols) - 1);
            }
            return kd_err_set(err, KD_EINPUT, "%s: line %zu: label column \"%s\" not found in the "
                              "header (columns: %s)", r->path, r->first_line,
                              r->src->label_column, cols);
        }
    }
    if (r->ncol - (r->label_col >= 0 ? 1 : 0) == 0)
        return kd_err_set(err, KD_EINPUT, "%s: line %zu: no feature columns (only the label "
                          "column)", r->path, r->first_line);
    return KD_OK;
}

/* Row step, one row: the fields just split into row (nfeat floats) and the label's text into
 * *label (NULL when unlabeled). */
static kd_status convert_row(const csv_reader *r, size_t row_line, float *row, char **label,
                             kd_err *err) {
    size_t k = 0;
    for (size_t c = 0; c < r->ncol; c++) {
        if ((long)c == r->label_col) {
            *label = r->fields[c];
            continue;
        }
        if (!parse_float(r->fields[c], &row[k]))
            return kd_err_set(err, KD_EINPUT, "%s: line %zu, column %zu: expected a finite number, "
                              "found \"%.40s\"", r->path, row_line, c + 1, r->fields[c]);
        k++;
    }
    return KD_OK;
}

/* Row step: every data row (the first record too when it is not a header) into out->f32, the
 * label texts into *label_str (pointers into the text; NULL when unlabeled). Rows are at most
 * one per line, so the line count bounds the allocation; the slack is given back. */
static kd_status read_rows(csv_reader *r, kd_data_mem *out, char ***label_str,
                           kd_err *err) {
    const size_t nfeat = r->ncol - (r->label_col >= 0 ? 1 : 0);
    size_t max_rows = 1 + (size_t)!r->header, bytes;
    for (char *q = r->p; q < r->end; q++) max_rows += (*q == '\n');
    if (kd_mul_size(max_rows, nfeat, &bytes) || kd_mul_size(bytes, sizeof(float), &bytes))
        return kd_err_set(err, KD_EINPUT, "%s: too large", r->path);
    out->f32 = malloc(bytes ? bytes : 1);
    if (r->label_col >= 0) *label_str = malloc(max_rows * sizeof(char *));
    if (!out->f32 || (r->label_col >= 0 && !*label_str))
        return kd_err_set(err, KD_EIO, "out of memory");
    kd_status st = KD_OK;
    if (!r->header && (st = convert_row(r, r->first_line, out->f32, *label_str, err))) return st;
    size_t n = !r->header;
    while (r->p < r->end) {
        if (is_blank_line(r->p, r->end)) {
            skip_line(r);
            continue;
        }
        size_t nf = r->ncol, row_line = r->line;
        st = next_record(r->path, &r->p, r->end, r->delim, r->fields, r->ncol, &nf, &r->line, err);
        if (st) return st;
        if (nf != r->ncol)
            return kd_err_set(err, KD_EINPUT, "%s: line %zu: expected %zu columns (as on line "
                              "%zu), found %zu", r->path, row_line, r->ncol, r->first_line, nf);
        char **label = *label_str ? *label_str + n : NULL;
        if ((st = convert_row(r, row_line, out->f32 + n * nfeat, label, err))) return st;
        n++;
    }
    if (n == 0)
        return kd_err_set(err, KD_EINPUT, "%s: no data rows%s", r->path,
                          r->header ? " after the header" : "");
    out->n = n;
    out->shape.rank = 1;
    out->shape.d[0] = nfeat;
    if (n < max_rows) {
        float *shrunk = realloc(out->f32, n * nfeat * sizeof(float));
        if (shrunk) out->f32 = shrunk;
    }
    return KD_OK;
}

/* Convert step, numeric labels: integer classes below limit, named by their numbers. */
static kd_status numeric_labels(const csv_reader *r, kd_data_mem *out, char *const *label_str,
                                size_t limit, kd_err *err) {
    int32_t maxl = -1;
    for (size_t i = 0; i < out->n; i++) {
        float v = 0;  /* parse_float succeeded in the caller's pass */
        parse_float(label_str[i], &v);
        if (v != floorf(v) || v < 0 || v >= (float)limit)
            return kd_err_set(err, KD_EINPUT, "%s: sample %zu, column %ld: label \"%s\": expected "
                              "an integer class from 0 to %zu",
                              r->path, i + 1, r->label_col + 1, label_str[i], limit - 1);
        out->labels[i] = (int32_t)v;
        if (out->labels[i] > maxl) maxl = out->labels[i];
    }
    out->n_classes = r->src->n_classes ? r->src->n_classes : (size_t)maxl + 1;
    return kd_data_name_classes(out, NULL, 0, err);
}

/* Convert step, string labels: the distinct strings in sorted order are the classes. */
static kd_status string_labels(const csv_reader *r, kd_data_mem *out, char *const *label_str,
                               size_t limit, kd_err *err) {
    const size_t n = out->n;
    char **uniq = malloc(n * sizeof(char *));
    if (!uniq) return kd_err_set(err, KD_EIO, "out of memory");
    memcpy(uniq, label_str, n * sizeof(char *));
    qsort(uniq, n, sizeof(char *), cmp_str);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (k == 0 || strcmp(uniq[k - 1], uniq[i]) != 0) uniq[k++] = uniq[i];
    kd_status st = KD_OK;
    if (k > limit) {
        st = kd_err_set(err, KD_EINPUT, "%s: %zu distinct string labels, expected at most %zu",
                        r->path, k, limit);
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        char *const *hit = bsearch(&label_str[i], uniq, k, sizeof(char *), cmp_str);
        KD_ASSERT(hit);
        out->labels[i] = (int32_t)(hit - uniq);
    }
    out->n_classes = r->src->n_classes ? r->src->n_classes : k;
    st = kd_data_name_classes(out, uniq, k, err);
cleanup:
    free(uniq);
    return st;
}

/* Convert step: numeric labels when every label is a number; otherwise all are class names. */
static kd_status convert_labels(const csv_reader *r, kd_data_mem *out, char *const *label_str,
                                kd_err *err) {
    out->labels = malloc(out->n * sizeof(int32_t));
    if (!out->labels) return kd_err_set(err, KD_EIO, "out of memory");
    int numeric = 1;
    for (size_t i = 0; i < out->n && numeric; i++) {
        float v;
        if (!parse_float(label_str[i], &v)) numeric = 0;
    }
    size_t limit = r->src->n_classes ? r->src->n_classes : KD_MAX_CLASSES;
    return numeric ? numeric_labels(r, out, label_str, limit, err)
                   : string_labels(r, out, label_str, limit, err);
}

kd_status kd_csv_load(const kd_data_source *src, kd_data_mem *out, kd_err *err) {
    char *text = NULL, **label_str = NULL;
    size_t len = 0;
    csv_reader r = {.src = src, .path = src->path, .line = 1};
    r.delim = src->delimiter ? src->delimiter : ',';
    memset(out, 0, sizeof *out);
    if (r.delim == '"' || r.delim == '\n' || r.delim == '\r')
        return kd_err_set(err, KD_EUSAGE, "data.delimiter: '%c' cannot be a CSV delimiter",
                          r.delim);
    kd_status st = read_text(r.path, &text, &len, err);
    if (st) goto cleanup;
    r.p = text;
    r.end = text + len;
    if ((st = read_first_record(&r, err)) || (st = read_header(&r, err)) ||
        (st = read_rows(&r, out, &label_str, err)))
        goto cleanup;
    if (r.label_col >= 0) st = convert_labels(&r, out, label_str, err);

cleanup:
    free(text);
    free(r.fields);
    free(label_str);
    if (st) kd_data_mem_free(out);
    return st;
}

static kd_status csv_open(const kd_data_source *src, void **handle, kd_reader_info *info,
                          kd_err *err) {
    return kd_data_mem_open(src, kd_csv_load, handle, info, err);
}

const kd_format_ops kd_csv_format_ops = {csv_open, kd_data_mem_read, kd_data_mem_close, 0};
