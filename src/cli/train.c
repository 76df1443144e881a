/* train.c - `distill train`: argument parsing, config with overrides, run folder, progress
 * printing and Ctrl-C handling around kd_train_run (src/train/trainer.c). */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/test_hooks.h"
#include "cli.h"
#include "kd_config.h"
#include "kd_dist.h"
#include "kd_train.h"

#define MAX_OVERRIDES 256
#define EXIT_INTERRUPTED 130  /* 128 + SIGINT, as shells report it: "interrupted, resumable" */

static const char usage[] =
    "Usage: distill train --config FILE.json [options]\n"
    "\n"
    "Trains the model of a config on labels, or distils it from a teacher checkpoint when the\n"
    "config has a teacher section. Writes config.json, metrics.jsonl, last.safetensors (every\n"
    "epoch, resumable) and best.safetensors (best validation accuracy) into the run folder\n"
    "(default runs/<config name>/) and ends with a summary line.\n"
    "\n"
    "Options:\n"
    "  --config FILE        the run's JSON config (see configs/README.md)\n"
    "  --set PATH=VALUE     override a config value by its JSON path, e.g.\n"
    "                       --set optimizer.lr=0.01 (repeatable; VALUE is JSON or a string)\n"
    "  --epochs N           same as --set train.epochs=N\n"
    "  --seed N             same as --set train.seed=N\n"
    "  --threads N          same as --set train.threads=N (BLAS and own loops; 0 = all cores)\n"
    "  --out DIR            run folder (overrides the config's output folder). A folder that\n"
    "                       holds a run is never written over: train refuses (exit 2)\n"
    "  --overwrite          start anew in a folder that holds a run: the old folder is moved\n"
    "                       to DIR.1 (or the first free DIR.N), never deleted\n"
    "  --resume RUN         continue an interrupted run: RUN is a run folder (uses\n"
    "                       RUN/last.safetensors, and RUN/config.json when --config is not\n"
    "                       given) or a checkpoint file. The final weights are bitwise identical\n"
    "                       to an uninterrupted run with the same seed and thread count.\n"
    "  --quiet              print only errors, one line per epoch and the summary line\n"
    "  --verbose            also print the resolved config (always saved as config.json)\n"
    "  -h, --help           this help\n"
    "\n"
    "Ctrl-C finishes the current step, writes a resumable last.safetensors and exits 130.\n"
    "Exit codes: 0 ok, 1 internal/I-O failure, 2 usage or config error, 3 bad input file\n"
    "(dataset, checkpoint), 4 numeric failure (NaN/Inf; the last good checkpoint is kept),\n"
    "130 interrupted (resumable).\n";

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

/* The first Ctrl-C asks for a clean stop; SA_RESETHAND makes a second one kill at once.
 * Without the handlers training still works, only a stop loses the current epoch: a warning,
 * not a reason to refuse the run. */
static void install_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND;
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0)
        fprintf(stderr, "distill: warning: cannot catch Ctrl-C (%s); an interrupted run will "
                        "not write a resumable checkpoint\n", strerror(errno));
}

static int is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

#ifdef KD_TEST_HOOKS
static int parse_count(const char *s, unsigned long long *out) {
    if (!s || !*s || *s == '-' || *s == '+') return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}
#endif

/* "key=\"value\"" with value escaped as a JSON string (a folder named "123" or "true" must
 * stay a string). Returns -1 if it does not fit. */
static int json_string_override(char *buf, size_t cap, const char *key, const char *value) {
    size_t n = (size_t)snprintf(buf, cap, "%s=\"", key);
    const unsigned char *c = (const unsigned char *)value;
    for (; *c && n + 8 < cap; c++) {
        if (*c == '"' || *c == '\\') {
            buf[n++] = '\\';
            buf[n++] = (char)*c;
        } else if (*c < 0x20) {
            n += (size_t)snprintf(buf + n, cap - n, "\\u%04x", *c);
        } else {
            buf[n++] = (char)*c;
        }
    }
    if (*c || n + 2 >= cap) return -1;
    buf[n++] = '"';
    buf[n] = '\0';
    return 0;
}

static void print_summary(const kd_train_result *r, int has_teacher) {
    char test[32], btest[32], val[32], best[32], tval[32], ttest[32];
    snprintf(test, sizeof test, isfinite(r->test_acc) ? "%.4f" : "n/a", r->test_acc);
    snprintf(btest, sizeof btest, isfinite(r->best_test_acc) ? "%.4f" : "n/a", r->best_test_acc);
    snprintf(val, sizeof val, isfinite(r->val_acc) ? "%.4f" : "n/a", r->val_acc);
    snprintf(best, sizeof best, isfinite(r->best_val) ? "%.4f" : "n/a", r->best_val);
    snprintf(tval, sizeof tval, isfinite(r->teacher_val_acc) ? "%.4f" : "n/a", r->teacher_val_acc);
    snprintf(ttest, sizeof ttest, isfinite(r->teacher_test_acc) ? "%.4f" : "n/a",
             r->teacher_test_acc);
    printf("summary: test_acc %s best_test_acc %s val_acc %s best_val %s params %zu", test, btest,
           val, best, r->n_params);
    if (has_teacher)
        printf(" teacher_test_acc %s teacher_val_acc %s teacher_params %zu", ttest, tval,
               r->teacher_params);
    printf(" samples_per_s %.0f seconds %.1f out %s\n",
           isfinite(r->samples_per_s) ? r->samples_per_s : 0.0, r->seconds, r->out_dir);
    fflush(stdout);
}

/* Prints the error; a data-parallel rank other than 0 says which it is. */
static int fail_on_rank(kd_err *err, int rank) {
    if (rank != 0) kd_err_prefix(err, "rank %d of %d", rank, kd_dist_size());
    return kd_cli_fail(err);
}

/* --set, --epochs, --seed and --threads as config overrides in command-line order (numbers:
 * the text of the numeric ones). Returns KD_CLI_GO, or 2 after a usage message. */
static int collect_overrides(const char *cmd, const kd_cli_list *given, const char **overrides,
                             char numbers[][48], size_t *n_over) {
    for (size_t i = 0; i < given->n; i++) {
        const kd_cli_item *it = &given->items[i];
        if (it->opt->kind == KD_OPT_STRING) {  /* --set PATH=VALUE */
            if (!strchr(it->value, '=') || it->value[0] == '=')
                return kd_cli_usage_error(cmd, "--set %s: expected PATH=VALUE", it->value);
            overrides[(*n_over)++] = it->value;
        } else {                               /* --epochs N: train.epochs=N */
            snprintf(numbers[i], 48, "train.%s=%lld", it->opt->name + 2, it->num);
            overrides[(*n_over)++] = numbers[i];
        }
    }
    return KD_CLI_GO;
}

/* The run's first lines: config and run folder, the resolved config's path (the whole of it
 * with --verbose: 60 lines for a CNN), and the loss formula. */
static void print_start(const char *config, const kd_config *cfg, int verbose) {
    char formula[256];
    kd_train_loss_formula(cfg, formula, sizeof formula);
    printf("distill train: config %s, run folder %s\n", config, cfg->out_dir);
    char *json = verbose ? kd_config_to_json(cfg) : NULL;
    if (json)
        printf("%s\n", json);
    else
        printf("resolved config: %s/config.json (--verbose prints it)\n", cfg->out_dir);
    free(json);
    printf("%s\n", formula);
    fflush(stdout);
}

/* --resume RUN: the checkpoint (RUN/last.safetensors, or RUN itself), and unless given, the
 * config (its folder's config.json) and the run folder. Each buffer holds KD_PATH_MAX bytes.
 * Returns KD_CLI_GO, or the exit code of a message already printed. */
static int resolve_resume(const char *cmd, const char *resume_arg, const char **config,
                          const char **out, char *resume_ckpt, char *resume_cfg,
                          char *resume_out) {
    if (is_dir(resume_arg)) {
        snprintf(resume_ckpt, KD_PATH_MAX, "%s/last.safetensors", resume_arg);
        snprintf(resume_cfg, KD_PATH_MAX, "%s/config.json", resume_arg);
        snprintf(resume_out, KD_PATH_MAX, "%s", resume_arg);
    } else {
        snprintf(resume_ckpt, KD_PATH_MAX, "%s", resume_arg);
        snprintf(resume_out, KD_PATH_MAX, "%s", resume_arg);
        char *slash = strrchr(resume_out, '/');
        if (slash)
            *slash = '\0';
        else
            snprintf(resume_out, KD_PATH_MAX, ".");
        snprintf(resume_cfg, KD_PATH_MAX, "%s/config.json", resume_out);
    }
    if (access(resume_ckpt, R_OK) != 0) {
        fprintf(stderr, "distill: --resume %s: cannot read %s: %s\n", resume_arg, resume_ckpt,
                strerror(errno));
        return KD_EINPUT;
    }
    if (!*config) {
        if (access(resume_cfg, R_OK) != 0)
            return kd_cli_usage_error(cmd, "--resume %s: no %s to take the config from; give "
                                      "--config", resume_arg, resume_cfg);
        *config = resume_cfg;
    }
    if (!*out) *out = resume_out;
    return KD_CLI_GO;
}

static int run(int argc, char **argv) {
    const char *config = NULL, *out = NULL, *resume_arg = NULL;
    /* --set, --epochs, --seed and --threads become config overrides in command-line order;
     * one slot is kept for --out. */
    kd_cli_item given_items[MAX_OVERRIDES - 1];
    kd_cli_list given = {given_items, 0, MAX_OVERRIDES - 1};
    const char *overrides[MAX_OVERRIDES];
    char numbers[MAX_OVERRIDES][48];
    size_t n_over = 0, n_args;
    int quiet = 0, overwrite = 0, verbose = 0;
    kd_config cfg;
    int cfg_loaded = 0, code = 0;
    char out_set[2 * KD_PATH_MAX + 32];
    char resume_ckpt[KD_PATH_MAX], resume_cfg[KD_PATH_MAX], resume_out[KD_PATH_MAX];
    kd_err err;
    kd_err_clear(&err);
    memset(&cfg, 0, sizeof cfg);

    const kd_cli_opt cli_opts[] = {
        {.name = "--config", .kind = KD_OPT_STRING, .to.str = &config, .needs = "a file"},
        {.name = "--set", .kind = KD_OPT_STRING, .list = &given, .needs = "PATH=VALUE"},
        {.name = "--epochs", .kind = KD_OPT_INT, .list = &given, .min = 1, .max = 1000000},
        {.name = "--seed", .kind = KD_OPT_INT, .list = &given, .min = 0, .max = LLONG_MAX},
        KD_CLI_OPT_THREADS(NULL, &given),
        {.name = "--out", .kind = KD_OPT_STRING, .to.str = &out, .needs = "a folder"},
        {.name = "--resume", .kind = KD_OPT_STRING, .to.str = &resume_arg,
         .needs = "a run folder or checkpoint"},
        {.name = "--overwrite", .kind = KD_OPT_FLAG, .to.flag = &overwrite},
        {.name = "--quiet", .short_name = 'q', .kind = KD_OPT_FLAG, .to.flag = &quiet},
        {.name = "--verbose", .short_name = 'v', .kind = KD_OPT_FLAG, .to.flag = &verbose},
    };
    const kd_cli_spec spec = {cli_opts, KD_CLI_N_OPTS(cli_opts), 0, usage};
    int rc = kd_cli_parse(&spec, argc, argv, &n_args);
    if (rc != KD_CLI_GO) return rc;
    rc = collect_overrides(argv[0], &given, overrides, numbers, &n_over);
    if (rc != KD_CLI_GO) return rc;

    /* The handler goes in before anything slow, so an early Ctrl-C is a clean stop too. */
    install_handlers();

    if (resume_arg && overwrite)
        return kd_cli_usage_error(argv[0], "--overwrite starts a run anew and --resume "
                                  "continues one: give one of them");
    if (resume_arg) {
        rc = resolve_resume(argv[0], resume_arg, &config, &out, resume_ckpt, resume_cfg,
                            resume_out);
        if (rc != KD_CLI_GO) return rc;
    }
    if (!config) return kd_cli_usage_error(argv[0], "--config FILE is required");
    /* --out becomes output.dir, so the saved config.json names the folder it lives in. */
    if (out) {
        if (json_string_override(out_set, sizeof out_set, "output.dir", out) ||
            n_over >= MAX_OVERRIDES)
            return kd_cli_usage_error(argv[0], "--out %s: path too long", out);
        overrides[n_over++] = out_set;
    }

    /* Data-parallel under mpirun (the MPI build): every rank runs this same command; rank 0
     * prints and writes, and a failure on any rank ends the whole job (cleanup). */
    if (kd_dist_init(&err) != KD_OK) return kd_cli_fail(&err);
    const int rank = kd_dist_rank();
    if (kd_config_load(&cfg, config, overrides, n_over, &err) != KD_OK) {
        code = fail_on_rank(&err, rank);
        goto cleanup;
    }
    cfg_loaded = 1;

    kd_cli_printer pr = {0};
    pr.stop = &g_stop;
    pr.silent = rank != 0;
    pr.quiet = quiet || pr.silent;
    pr.bar = isatty(STDERR_FILENO) && !pr.silent;
    pr.distilling = cfg.has_teacher;
#ifdef KD_TEST_HOOKS
    const char *hook = getenv(KD_HOOK_ENV_STOP_AFTER_STEPS);
    if (hook && parse_count(hook, &pr.stop_after)) pr.stop_after = 0;
#endif
    if (!pr.quiet) print_start(config, &cfg, verbose);

    kd_train_opts opts = {0};
    opts.cfg = &cfg;
    opts.out_dir = NULL;
    opts.resume = resume_arg ? resume_ckpt : NULL;
    opts.overwrite = overwrite;
    opts.stop = &g_stop;
    opts.progress = kd_cli_on_progress;
    opts.user = &pr;
    kd_train_result res;
    kd_status st = kd_train_run(&opts, &res, &err);
    kd_cli_clear_bar(&pr);
    if (st != KD_OK) {
        code = fail_on_rank(&err, rank);
        goto cleanup;
    }
    if (res.interrupted) {
        code = EXIT_INTERRUPTED;
        if (rank == 0)
            fprintf(stderr, "distill: interrupted after %zu epoch%s, step %llu; resumable "
                    "checkpoint %s\nresume with: distill train --resume %s\n", res.epochs_done,
                    res.epochs_done == 1 ? "" : "s", (unsigned long long)res.steps, res.last_path,
                    res.out_dir);
        goto cleanup;
    }
    code = 0;
    if (rank != 0) goto cleanup;
    if (!quiet && cfg.has_test)
        printf("test_acc is the final model's; best_test_acc is best.safetensors' (the epoch "
               "with the best validation accuracy)\n");
    print_summary(&res, cfg.has_teacher);
cleanup:
    if (cfg_loaded) kd_config_free(&cfg);
    /* Under mpirun the others may be waiting in a collective for this rank: MPI_Abort ends
     * the job with this exit code (mpirun stops every rank). A stop (130) is agreed by all. */
    if (code != 0 && code != EXIT_INTERRUPTED && kd_dist_size() > 1) {
        fflush(stdout);
        kd_dist_abort(code);
    }
    kd_dist_finalize();
    return code;
}

const kd_command kd_cmd_train = {"train", "train a model on labels or distil it from a teacher",
                                 usage, run};
