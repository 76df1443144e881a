/* logits.c - `distill logits`: builds the soft-target cache a config's teacher.cache describes
 * (kd_logits_run, src/train/logits.c), so that distillation runs read the teachers' outputs
 * from a file instead of running the teachers on every batch of every epoch. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "kd_config.h"
#include "kd_dist.h"
#include "kd_train.h"

#define MAX_SETS 255

static const char usage[] =
    "Usage: distill logits --config FILE.json [--set PATH=VALUE]... [--out FILE] [--force]\n"
    "                      [--threads N] [--quiet]\n"
    "\n"
    "Runs the config's teacher (or every teacher of teacher.ensemble) over the training samples\n"
    "once, in batches, and writes their logits to the file teacher.cache names: one row per\n"
    "sample (and per augmented view with teacher.cache.views > 1), keyed by the sample's index in\n"
    "the training data, so shuffling, subsets and the validation split cannot misalign samples\n"
    "and targets. The file records what it was made from (hashes of the teacher checkpoints and\n"
    "the data files, preprocessing, subset, augmentation, weights, dtype, top-k, views) and each\n"
    "teacher's validation accuracy. `distill train` with the same config then reads the targets\n"
    "from it and never runs the teachers (and builds it first when it does not exist).\n"
    "\n"
    "Options:\n"
    "  --config FILE   the run's JSON config, with a teacher.cache section (configs/README.md)\n"
    "  --set PATH=VALUE  override a config value, as for train (repeatable)\n"
    "  --out FILE      write here instead of teacher.cache.path\n"
    "  --force         replace an existing file (the old one stays until the new one is\n"
    "                  complete: written to a temporary file, synced, then renamed)\n"
    "  --threads N     threads (default: the config's train.threads)\n"
    "  --quiet         print only errors and the summary line\n"
    "  -h, --help      this help\n"
    "\n"
    "Exit codes: 0 ok, 1 I/O failure, 2 usage or config error (no teacher.cache, the file exists\n"
    "without --force), 3 bad input file (teacher checkpoint, data), 4 NaN/Inf teacher logits.\n"
    "\n"
    "Example:\n"
    "  distill logits --config configs/fmnist-compact-cached.json\n"
    "  distill info runs/fmnist-teacher/logits.kdc\n";

static int run(int argc, char **argv) {
    const char *config = NULL, *out = NULL;
    int force = 0, quiet = 0, code = 0;
    long long threads = -1;
    size_t n_args;
    char threads_set[48];
    kd_cli_item set_items[MAX_SETS];
    kd_cli_list sets = {set_items, 0, MAX_SETS};
    const char *overrides[MAX_SETS + 1];
    size_t n_over = 0;
    kd_config cfg;
    kd_err err;
    kd_err_clear(&err);
    memset(&cfg, 0, sizeof cfg);
    const kd_cli_opt cli_opts[] = {
        {.name = "--config", .kind = KD_OPT_STRING, .to.str = &config, .needs = "a file"},
        {.name = "--set", .kind = KD_OPT_STRING, .list = &sets, .needs = "PATH=VALUE"},
        {.name = "--out", .kind = KD_OPT_STRING, .to.str = &out, .needs = "a file"},
        {.name = "--force", .kind = KD_OPT_FLAG, .to.flag = &force},
        KD_CLI_OPT_THREADS(&threads, NULL),
        {.name = "--quiet", .short_name = 'q', .kind = KD_OPT_FLAG, .to.flag = &quiet},
    };
    const kd_cli_spec spec = {cli_opts, KD_CLI_N_OPTS(cli_opts), 0, usage};
    int rc = kd_cli_parse(&spec, argc, argv, &n_args);
    if (rc != KD_CLI_GO) return rc;
    if (!config) return kd_cli_usage_error(argv[0], "--config FILE is required");
    for (size_t i = 0; i < sets.n; i++) {
        if (!strchr(sets.items[i].value, '=') || sets.items[i].value[0] == '=')
            return kd_cli_usage_error(argv[0], "--set %s: expected PATH=VALUE",
                                      sets.items[i].value);
        overrides[n_over++] = sets.items[i].value;
    }
    if (threads >= 0) {
        snprintf(threads_set, sizeof threads_set, "train.threads=%lld", threads);
        overrides[n_over++] = threads_set;
    }
    /* Under mpirun (the MPI build) every rank computes a share of the samples and rank 0
     * writes the file; rank 0 alone prints. A failure on any rank ends the job. */
    if (kd_dist_init(&err) != KD_OK) return kd_cli_fail(&err);
    const int rank = kd_dist_rank();
    if (kd_config_load(&cfg, config, overrides, n_over, &err) != KD_OK) {
        code = kd_cli_fail(&err);
        goto done;
    }

    kd_cli_printer pr = {0};
    pr.silent = rank != 0;
    pr.quiet = quiet || pr.silent;
    pr.bar = isatty(STDERR_FILENO) && !pr.silent;
    kd_logits_opts o = {&cfg, out, force, kd_cli_on_progress, &pr};
    kd_logits_result res;
    kd_status st = kd_logits_run(&o, &res, &err);
    kd_cli_clear_bar(&pr);
    if (st) {
        if (rank != 0) kd_err_prefix(&err, "rank %d of %d", rank, kd_dist_size());
        code = kd_cli_fail(&err);
    } else if (rank == 0) {
        printf("summary: cache %s samples %zu views %zu teachers %zu bytes %lld seconds %.1f "
               "samples_per_s %.0f threads %d\n", res.path, res.n_rows, res.views, res.n_teachers,
               res.bytes, res.seconds, res.samples_per_s, res.threads);
    }
    if (!st) code = 0;
    kd_config_free(&cfg);
done:
    if (code != 0 && kd_dist_size() > 1) kd_dist_abort(code);
    kd_dist_finalize();
    return code;
}

const kd_command kd_cmd_logits = {"logits", "cache the teachers' logits for distillation runs",
                                  usage, run};
