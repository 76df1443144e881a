/* options.c - the one command-line parser of every subcommand: a declarative option table per
 * command, `--opt value` and `--opt=value` alike, `--`, -h/--help, positional arguments, and
 * one wording for every mistake ("unknown option '--bach' (did you mean --batch?)"). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "kd_suggest.h"

#define MAX_OPTS 32      /* options of one command (the suggestion list is on the stack) */
#define MAX_CHOICES 16

const char *const kd_cli_splits[] = {"test", "validation", NULL};

static const kd_cli_opt *find_long(const kd_cli_spec *s, const char *name, size_t len) {
    for (size_t i = 0; i < s->n_opts; i++)
        if (strncmp(s->opts[i].name, name, len) == 0 && s->opts[i].name[len] == '\0')
            return &s->opts[i];
    return NULL;
}

static const kd_cli_opt *find_short(const kd_cli_spec *s, char c) {
    for (size_t i = 0; i < s->n_opts; i++)
        if (s->opts[i].short_name && s->opts[i].short_name == c) return &s->opts[i];
    return NULL;
}

/* The first len bytes of arg are the option as typed (without "=value"). */
static kd_status unknown_option(const kd_cli_spec *s, const char *arg, size_t len, kd_err *err) {
    const char *cands[MAX_OPTS + 1];
    size_t n = 0;
    KD_ASSERT(s->n_opts <= MAX_OPTS);
    for (size_t i = 0; i < s->n_opts; i++) cands[n++] = s->opts[i].name + 2;
    cands[n++] = "help";
    size_t dashes = strspn(arg, "-");
    char word[64];
    snprintf(word, sizeof word, "%.*s", (int)(len - dashes), arg + dashes);
    const char *near = kd_suggest(word, cands, n);
    if (near)
        return kd_err_set(err, KD_EUSAGE, "unknown option '%.*s' (did you mean --%s?)", (int)len,
                          arg, near);
    return kd_err_set(err, KD_EUSAGE, "unknown option '%.*s'", (int)len, arg);
}

static size_t count_choices(const char *const *choices) {
    size_t n = 0;
    while (choices[n]) n++;
    KD_ASSERT(n <= MAX_CHOICES);
    return n;
}

/* What the option's value must be: "a folder", "an integer in 1..65536", "test or validation". */
static const char *describe(const kd_cli_opt *o, char *buf, size_t cap) {
    if (o->needs) return o->needs;
    if (o->kind == KD_OPT_INT || o->kind == KD_OPT_SIZE) {
        if (o->max < LLONG_MAX)
            snprintf(buf, cap, "an integer in %lld..%lld", o->min, o->max);
        else if (o->min == 0)
            snprintf(buf, cap, "a non-negative integer");
        else
            snprintf(buf, cap, "an integer >= %lld", o->min);
        return buf;
    }
    if (o->choices) {
        size_t n = count_choices(o->choices), len = 0;
        buf[0] = '\0';
        for (size_t i = 0; i < n && len < cap; i++)
            len += (size_t)snprintf(buf + len, cap - len, "%s%s",
                                    i == 0 ? "" : (i + 1 == n ? " or " : ", "), o->choices[i]);
        return buf;
    }
    return "a value";
}

/* "--batch needs an integer in 1..65536, got \"0\"" (no "got" when the value is missing). */
static kd_status bad_value(const kd_cli_opt *o, const char *v, kd_err *err) {
    char words[160];
    const char *what = describe(o, words, sizeof words);
    if (!v || !*v) return kd_err_set(err, KD_EUSAGE, "%s needs %s", o->name, what);
    /* No guess for a one-character value: "2" is as near to "1" as to "3". */
    const char *near = o->choices && v[1] ? kd_suggest(v, o->choices, count_choices(o->choices))
                                          : NULL;
    if (near)
        return kd_err_set(err, KD_EUSAGE, "%s needs %s, got \"%s\" (did you mean %s?)", o->name,
                          what, v, near);
    return kd_err_set(err, KD_EUSAGE, "%s needs %s, got \"%s\"", o->name, what, v);
}

/* Decimal digits only (a '-' where negatives are allowed): no sign, blank or base prefix that
 * strtoll would let through. */
static int parse_integer(const char *v, long long min, long long *out) {
    const char *d = v + (v[0] == '-' && min < 0);
    if (*d < '0' || *d > '9') return -1;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || *end) return -1;
    *out = x;
    return 0;
}

static kd_status take_value(const kd_cli_opt *o, const char *v, kd_err *err) {
    long long num = 0;
    if (!v || !*v) return bad_value(o, v, err);
    if (o->kind == KD_OPT_STRING) {
        if (o->choices) {
            size_t i = 0;
            while (o->choices[i] && strcmp(o->choices[i], v) != 0) i++;
            if (!o->choices[i]) return bad_value(o, v, err);
        }
        if (o->to.str) *o->to.str = v;
    } else {
        KD_ASSERT(o->kind == KD_OPT_INT || o->kind == KD_OPT_SIZE);
        KD_ASSERT(o->kind == KD_OPT_INT || o->min >= 0);
        if (parse_integer(v, o->min, &num) || num < o->min || num > o->max)
            return bad_value(o, v, err);
        if (o->kind == KD_OPT_INT && o->to.num) *o->to.num = num;
        if (o->kind == KD_OPT_SIZE && o->to.size) *o->to.size = (size_t)num;
    }
    if (o->list) {
        if (o->list->n >= o->list->cap)
            return kd_err_set(err, KD_EUSAGE, "too many options like %s (at most %zu)", o->name,
                              o->list->cap);
        o->list->items[o->list->n++] = (kd_cli_item){o, v, num};
    }
    return KD_OK;
}

kd_status kd_cli_parse_args(const kd_cli_spec *spec, int argc, char **argv, size_t *n_args,
                            int *help, kd_err *err) {
    size_t n = 0;
    int only_args = 0;
    *help = 0;
    *n_args = 0;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        /* "-" alone is an argument (a file name by convention), as is anything after "--". */
        if (only_args || a[0] != '-' || a[1] == '\0') {
            if (n >= spec->max_args)
                return kd_err_set(err, KD_EUSAGE, "unexpected argument '%s'", a);
            argv[1 + n++] = a;  /* n < i: never overwrites what is still to be read */
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_args = 1;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            *help = 1;
            return KD_OK;
        }
        size_t len = strlen(a);
        const char *v = NULL;
        const kd_cli_opt *o = NULL;
        if (a[1] == '-') {
            const char *eq = strchr(a, '=');
            if (eq) {
                len = (size_t)(eq - a);
                v = eq + 1;
            }
            o = find_long(spec, a, len);
        } else if (len == 2) {
            o = find_short(spec, a[1]);
        }
        if (!o) return unknown_option(spec, a, len, err);
        if (o->kind == KD_OPT_FLAG) {
            if (v) return kd_err_set(err, KD_EUSAGE, "%s takes no value, got '%s'", o->name, a);
            *o->to.flag = 1;
            continue;
        }
        if (!v && i + 1 < argc) v = argv[++i];
        kd_status st = take_value(o, v, err);
        if (st) return st;
    }
    *n_args = n;
    return KD_OK;
}

int kd_cli_parse(const kd_cli_spec *spec, int argc, char **argv, size_t *n_args) {
    kd_err err;
    int help;
    kd_err_clear(&err);
    if (kd_cli_parse_args(spec, argc, argv, n_args, &help, &err) != KD_OK)
        return kd_cli_usage_error(argv[0], "%s", err.msg);
    if (help) {
        fputs(spec->usage, stdout);
        return 0;
    }
    return KD_CLI_GO;
}
