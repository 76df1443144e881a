/* cli.h - private to src/cli and main.c: the subcommand table entry, the one option parser every
 * subcommand uses, and the helpers through which subcommands report (only the CLI prints). */
#ifndef KD_CLI_H
#define KD_CLI_H

#include <cJSON.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>

#include "kd_common.h"
#include "kd_eval.h"
#include "kd_quant.h"
#include "kd_safetensors.h"
#include "kd_train.h"

typedef struct {
    const char *name;
    const char *summary;   /* one line for `distill --help` */
    const char *usage;     /* full text for `distill help NAME` / `distill NAME --help` */
    int (*run)(int argc, char **argv);  /* argv[0] is the command name; returns the exit code */
} kd_command;

extern const kd_command kd_cmd_logits, kd_cmd_train, kd_cmd_eval, kd_cmd_export, kd_cmd_predict, kd_cmd_info,
    kd_cmd_plot;

/* ---- Options ---------------------------------------------------------------------------- */

/* What an option's value is. Every kind takes `--name VALUE` and `--name=VALUE` alike; the
 * value is taken verbatim (even when it starts with '-', so `--threads -1` reports a range
 * error) and must not be empty. */
typedef enum {
    KD_OPT_FLAG,    /* no value; sets *to.flag = 1 */
    KD_OPT_STRING,  /* *to.str = the value; one of `choices` when those are given */
    KD_OPT_INT,     /* *to.num = a decimal integer in [min, max] */
    KD_OPT_SIZE     /* *to.size = a decimal integer in [min, max], min >= 0 */
} kd_opt_kind;

struct kd_cli_opt;

/* One occurrence of an option that records into a list, in command-line order. */
typedef struct {
    const struct kd_cli_opt *opt;
    const char *value;   /* the text given */
    long long num;       /* the value of a KD_OPT_INT / KD_OPT_SIZE option, else 0 */
} kd_cli_item;

/* Repeatable options (train's --set) append here instead of overwriting. A list is its own
 * thing rather than a kind because several options can share one and keep their relative
 * order: --set, --epochs, --seed and --threads all become config overrides, and a later one
 * wins over an earlier one for the same path. */
typedef struct {
    kd_cli_item *items;  /* (cap), caller-owned */
    size_t n, cap;
} kd_cli_list;

typedef struct kd_cli_opt {
    const char *name;       /* the long form with its dashes: "--batch" */
    char short_name;        /* 'q' for -q, or 0 */
    kd_opt_kind kind;
    union {                 /* where the value goes (may be NULL when only `list` is wanted) */
        int *flag;
        const char **str;   /* points into argv */
        long long *num;
        size_t *size;
    } to;
    kd_cli_list *list;      /* also append every occurrence here, or NULL */
    long long min, max;     /* KD_OPT_INT / KD_OPT_SIZE: the accepted range */
    const char *const *choices;  /* KD_OPT_STRING: NULL-terminated accepted values, or NULL */
    const char *needs;      /* what the value is, for "--out needs a folder"; NULL: "a value",
                               or the range / the choices */
} kd_cli_opt;

typedef struct {
    const kd_cli_opt *opts;
    size_t n_opts;
    size_t max_args;        /* positional arguments accepted (SIZE_MAX: any number) */
    const char *usage;      /* printed for -h / --help */
} kd_cli_spec;

/* The limits and words of the options several commands share, so every command checks and
 * reports them alike. 1024 threads matches the config's train.threads range. */
#define KD_CLI_MAX_BATCH 65536
#define KD_CLI_MAX_THREADS 1024
#define KD_CLI_OPT_BATCH(dst)                                                              \
    {.name = "--batch", .kind = KD_OPT_SIZE, .to.size = (dst), .min = 1,                   \
     .max = KD_CLI_MAX_BATCH}
#define KD_CLI_OPT_THREADS(dst, lst)                                                       \
    {.name = "--threads", .kind = KD_OPT_INT, .to.num = (dst), .list = (lst), .min = 0,    \
     .max = KD_CLI_MAX_THREADS}
extern const char *const kd_cli_splits[];  /* "test", "validation" */
#define KD_CLI_OPT_SPLIT(dst)                                                              \
    {.name = "--split", .kind = KD_OPT_STRING, .to.str = (dst), .choices = kd_cli_splits}
#define KD_CLI_N_OPTS(table) (sizeof(table) / sizeof((table)[0]))

/* Parses argv[1..argc) (argv[0] is the command name) against spec: `--opt value`,
 * `--opt=value`, short forms, `--` (everything after it is positional), -h / --help (stops
 * parsing and sets *help). Positional arguments are moved, in order, to argv[1..*n_args].
 * Returns KD_OK, or KD_EUSAGE with err saying which argument is wrong and, for a mistyped
 * option or choice, the nearest known one. */
kd_status kd_cli_parse_args(const kd_cli_spec *spec, int argc, char **argv, size_t *n_args,
                            int *help, kd_err *err);

/* What kd_cli_parse returns when the command should go on. */
#define KD_CLI_GO (-1)
/* kd_cli_parse_args for a subcommand: prints the usage on -h / --help (returns 0), or the
 * error with the "Try 'distill help NAME'." hint (returns 2); else returns KD_CLI_GO. */
int kd_cli_parse(const kd_cli_spec *spec, int argc, char **argv, size_t *n_args);

/* ---- Reporting -------------------------------------------------------------------------- */

/* Prints "distill: <msg>" to stderr and returns the error's code as an exit status. */
int kd_cli_fail(const kd_err *err);
/* Prints "distill NAME: <msg>\nTry 'distill help NAME'." and returns 2. */
int kd_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "distill: warning: <msg>" to stderr when a call that succeeded left a warning in err
 * (err->code KD_OK, a message set: see kd_write_atomic). */
void kd_cli_warn_if_any(const kd_err *err);

/* Adds item to parent: under key in an object, appended to an array when key is NULL. A NULL
 * item (a failed cJSON_Create*), a NULL parent or a failed add sets *failed and frees item,
 * so a command builds a whole document and checks once before printing it (cJSON's own adders
 * report failure by return values that are easy to drop). Returns item, or NULL. */
cJSON *kd_cli_json_add(cJSON *parent, const char *key, cJSON *item, int *failed);
/* Prints doc (pretty) and a newline on stdout and frees doc. KD_EIO with err set when the
 * document is incomplete (*failed) or cannot be printed. */
kd_status kd_cli_json_print(cJSON *doc, int failed, kd_err *err);

/* `distill info` for a soft-target cache file (info_cache.c): verifies and describes it (JSON
 * with json); returns the exit code. */
int kd_cli_info_cache(const char *path, int json);
/* info of a qint8 file f (info_qint8.c): its reader's checks, then every op; the exit code. */
int kd_cli_info_qint8(const char *path, const kd_st_file *f, int json);

/* A qint8 file run by eval and predict (qnet.c): the integer reference as an evaluation net
 * (logits dequantized); n_weights its int8 weights, the "params" of a qint8 column. */
typedef struct {
    kd_qmodel q;
    kd_eval_net net;
    size_t n_weights, cap;
    float *logits;
    int8_t *logits_q;
} kd_cli_qnet;
/* 1 when path's safetensors header has metadata dtype "qint8" (the header only is read). */
int kd_cli_is_qint8(const char *path);
/* Reads and checks the qint8 file at path (KD_EINPUT naming it), with the preprocessing and
 * class names its source recorded (as kd_ckpt_load returns them). */
kd_status kd_cli_qnet_load(const char *path, kd_cli_qnet *qn, kd_preprocess *pp, int *has_pp,
                           char ***classes, size_t *n_classes, kd_err *err);
void kd_cli_qnet_free(kd_cli_qnet *qn);  /* NULL-safe, idempotent */

/* `distill --version` (version.c): distill's version and those of the libraries it runs with. */
void kd_cli_print_version(FILE *f);
/* export --dtype qint8 (export_qint8.c): quantize `in` with calibration samples from config's
 * training split, write `out` (format "c": a C header named c_name; "onnx": a QDQ model with
 * the given metadata; else safetensors with it), print the float and integer accuracy on
 * config's split. */
typedef struct {
    const char *in, *out, *config, *split, *format, *c_name;
    size_t calibrate, batch;
    const char *const *keys, *const *vals;
    size_t n_md;
} kd_cli_qint8;
kd_status kd_cli_export_qint8(const kd_cli_qint8 *job, kd_err *err);

/* ---- Progress of train and logits (progress.c) ----------------------------------------- */
typedef struct {
    unsigned long long stop_after;  /* test build only (src/core/test_hooks.h): act as if Ctrl-C
                                       came during step N (0 = off), for exact interruption tests */
    int quiet;
    int bar;               /* live progress bar on stderr (a terminal) */
    double last_draw;
    double epoch_t0;
    size_t epoch_batch0;   /* batches already done when the epoch (re)started */
    int bar_shown;
    int distilling;        /* the config has a teacher */
    volatile sig_atomic_t *stop;  /* set by the stop_after hook */
    int silent;            /* a data-parallel rank other than 0: rank 0 speaks for the job */
} kd_cli_printer;

/* kd_train_progress_fn: prints to stdout (notes, setup, epochs) and stderr (warnings, bar). */
void kd_cli_on_progress(const kd_train_event *ev, void *user);
void kd_cli_clear_bar(kd_cli_printer *p);  /* erases a live bar before other output */

#endif
