/* test_cli.c - the command line: help, version, unknown commands and flags, and the one
 * option parser every subcommand uses. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../src/cli/cli.h"
#include "kd_common.h"
#include "kd_test.h"

static int run_distill(const char *args, char *out, size_t cap) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s", kd_test_distill(), args);
    return kd_test_run(cmd, out, cap);
}

KD_TEST(cli_help_lists_every_command) {
    static char out[8192];
    CHECK_EQ_INT(run_distill("--help", out, sizeof out), 0);
    static const char *const cmds[] = {"train", "eval", "export", "predict", "info", "help"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) CHECK_CONTAINS(out, cmds[i]);
    CHECK_CONTAINS(out, "Exit codes");
    /* No arguments: the same help, on stderr, as a usage error. */
    CHECK_EQ_INT(run_distill("", out, sizeof out), 2);
    CHECK_CONTAINS(out, "Usage: distill");
}

KD_TEST(cli_version) {
    char out[256];
    CHECK_EQ_INT(run_distill("--version", out, sizeof out), 0);
    CHECK_CONTAINS(out, "distill " KD_VERSION);
}

KD_TEST(cli_help_for_each_command_shows_its_usage) {
    static char out[16384], out2[16384];
    static const char *const cmds[] = {"train", "eval", "export", "predict", "info"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char args[64];
        snprintf(args, sizeof args, "help %s", cmds[i]);
        CHECK_EQ_INT(run_distill(args, out, sizeof out), 0);
        CHECK_CONTAINS(out, cmds[i]);
        CHECK(strlen(out) > 200); /* a real usage text, not a placeholder line */
        /* `distill CMD --help` prints the same text. */
        snprintf(args, sizeof args, "%s --help", cmds[i]);
        CHECK_EQ_INT(run_distill(args, out2, sizeof out2), 0);
        CHECK(strcmp(out, out2) == 0);
    }
}

KD_TEST(cli_unknown_command_or_flag_exits_2_with_hint) {
    char out[1024];
    CHECK_EQ_INT(run_distill("trian", out, sizeof out), 2);
    CHECK_CONTAINS(out, "unknown command 'trian'");
    CHECK_CONTAINS(out, "distill --help");
    CHECK_EQ_INT(run_distill("--frobnicate", out, sizeof out), 2);
    CHECK_CONTAINS(out, "unknown option '--frobnicate'");
    CHECK_EQ_INT(run_distill("help nosuch", out, sizeof out), 2);
    CHECK_CONTAINS(out, "nosuch");
    static const char *const cmds[] = {"train", "eval", "export", "predict", "info"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char args[64];
        snprintf(args, sizeof args, "%s --no-such-flag", cmds[i]);
        CHECK_EQ_INT(run_distill(args, out, sizeof out), 2);
        CHECK_CONTAINS(out, "--no-such-flag");
    }
}

/* ---- the option parser (src/cli/options.c), in-process ---------------------------------- */

/* A table with one option of each kind, shaped like the real commands'. */
typedef struct {
    const char *config, *split;
    long long threads;
    size_t batch;
    int json, quiet;
    kd_cli_item items[4];
    kd_cli_list sets;
} parsed;

static kd_status parse(parsed *p, size_t max_args, char **argv, int argc, size_t *n_args,
                       int *help, kd_err *err) {
    memset(p, 0, sizeof *p);
    p->threads = -1;
    p->batch = 256;
    p->sets = (kd_cli_list){p->items, 0, 4};
    const kd_cli_opt opts[] = {
        {.name = "--config", .kind = KD_OPT_STRING, .to.str = &p->config, .needs = "a file"},
        {.name = "--set", .kind = KD_OPT_STRING, .list = &p->sets, .needs = "PATH=VALUE"},
        {.name = "--epochs", .kind = KD_OPT_INT, .list = &p->sets, .min = 0, .max = LLONG_MAX},
        KD_CLI_OPT_SPLIT(&p->split),
        KD_CLI_OPT_BATCH(&p->batch),
        KD_CLI_OPT_THREADS(&p->threads, NULL),
        {.name = "--json", .kind = KD_OPT_FLAG, .to.flag = &p->json},
        {.name = "--quiet", .short_name = 'q', .kind = KD_OPT_FLAG, .to.flag = &p->quiet},
    };
    const kd_cli_spec spec = {opts, KD_CLI_N_OPTS(opts), max_args, "usage"};
    kd_err_clear(err);
    return kd_cli_parse_args(&spec, argc, argv, n_args, help, err);
}

#define ARGV(...) ((char *[]){"cmd", __VA_ARGS__})
#define ARGC(...) ((int)(sizeof((char *[]){"cmd", __VA_ARGS__}) / sizeof(char *)))
#define PARSE(p, max, ...) parse(p, max, ARGV(__VA_ARGS__), ARGC(__VA_ARGS__), &n, &help, &err)

KD_TEST(cli_parser_both_value_forms_flags_and_positionals) {
    parsed p;
    size_t n;
    int help;
    kd_err err;
    char *argv[] = {"cmd", "a.st", "--config", "c.json", "--batch=64", "-q", "b.st", "--threads",
                    "0", "--split=validation", "--json", "-", "--", "--json", "-h"};
    CHECK_EQ_INT(parse(&p, SIZE_MAX, argv, (int)(sizeof argv / sizeof argv[0]), &n, &help, &err),
                 KD_OK);
    CHECK(p.config && strcmp(p.config, "c.json") == 0);
    CHECK_EQ_INT(p.batch, 64);
    CHECK_EQ_INT(p.threads, 0);
    CHECK(p.split && strcmp(p.split, "validation") == 0);
    CHECK_EQ_INT(p.json, 1);
    CHECK_EQ_INT(p.quiet, 1);
    CHECK_EQ_INT(help, 0); /* -h after "--" is an argument */
    /* Positionals in order at argv[1..n]: "-" is one, and everything after "--". */
    CHECK_EQ_INT(n, 5);
    const char *want[] = {"a.st", "b.st", "-", "--json", "-h"};
    for (size_t i = 0; i < 5 && i < n; i++) CHECK(strcmp(argv[1 + i], want[i]) == 0);
    /* The last of a repeated plain option wins; --opt=value keeps '=' inside the value. */
    CHECK_EQ_INT(PARSE(&p, 0, "--config=a=b", "--batch", "8", "--batch", "9"), KD_OK);
    CHECK(p.config && strcmp(p.config, "a=b") == 0);
    CHECK_EQ_INT(p.batch, 9);
    /* -h / --help stop parsing before a later mistake. */
    CHECK_EQ_INT(PARSE(&p, 0, "--json", "--help", "--bogus"), KD_OK);
    CHECK_EQ_INT(help, 1);
}

KD_TEST(cli_parser_list_keeps_command_line_order) {
    parsed p;
    size_t n;
    int help;
    kd_err err;
    CHECK_EQ_INT(PARSE(&p, 0, "--set", "a.b=1", "--epochs=7", "--set=c=2", "--epochs", "3"), KD_OK);
    CHECK_EQ_INT(p.sets.n, 4);
    if (p.sets.n != 4) return;
    CHECK(strcmp(p.items[0].opt->name, "--set") == 0 && strcmp(p.items[0].value, "a.b=1") == 0);
    CHECK(strcmp(p.items[1].opt->name, "--epochs") == 0 && p.items[1].num == 7);
    CHECK(strcmp(p.items[2].value, "c=2") == 0);
    CHECK(p.items[3].num == 3);
    /* A full list is a usage error, not an overflow. */
    CHECK_EQ_INT(PARSE(&p, 0, "--set", "a=1", "--set", "a=1", "--set", "a=1", "--set", "a=1",
                       "--epochs", "1"),
                 KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "too many options like --epochs");
}

KD_TEST(cli_parser_errors_name_the_argument) {
    parsed p;
    size_t n;
    int help;
    kd_err err;
    struct {
        char *args[3];
        int argc;
        const char *msg;
    } cases[] = {
        {{"--bach", "3"}, 2, "unknown option '--bach' (did you mean --batch?)"},
        {{"--thread=2"}, 1, "unknown option '--thread' (did you mean --threads?)"},
        {{"--frobnicate"}, 1, "unknown option '--frobnicate'"},
        {{"-x"}, 1, "unknown option '-x'"},
        {{"--batch", "0"}, 2, "--batch needs an integer in 1..65536, got \"0\""},
        {{"--batch=65537"}, 1, "--batch needs an integer in 1..65536, got \"65537\""},
        {{"--batch", "+5"}, 2, "--batch needs an integer in 1..65536, got \"+5\""},
        {{"--batch", " 5"}, 2, "--batch needs an integer in 1..65536, got \" 5\""},
        {{"--batch"}, 1, "--batch needs an integer in 1..65536"},
        {{"--threads", "-1"}, 2, "--threads needs an integer in 0..1024, got \"-1\""},
        {{"--threads", "1025"}, 2, "--threads needs an integer in 0..1024, got \"1025\""},
        {{"--epochs", "three"}, 2, "--epochs needs a non-negative integer, got \"three\""},
        {{"--epochs", "99999999999999999999"}, 2, "--epochs needs a non-negative integer"},
        {{"--config="}, 1, "--config needs a file"},
        {{"--config"}, 1, "--config needs a file"},
        {{"--split", "tset"}, 2, "--split needs test or validation, got \"tset\" (did you mean test?)"},
        {{"--json=1"}, 1, "--json takes no value"},
        {{"x.st"}, 1, "unexpected argument 'x.st'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *argv[4] = {"cmd", cases[i].args[0], cases[i].args[1], NULL};
        CHECK_EQ_INT(parse(&p, 0, argv, 1 + cases[i].argc, &n, &help, &err), KD_EUSAGE);
        CHECK_CONTAINS(err.msg, cases[i].msg);
    }
    /* A range error leaves the default in place. */
    CHECK_EQ_INT(PARSE(&p, 0, "--batch", "0"), KD_EUSAGE);
    CHECK_EQ_INT(p.batch, 256);
}

/* The shared options read and report the same in every command (one table entry each). */
KD_TEST(cli_shared_options_same_words_in_every_command) {
    char out[1024], args[128];
    static const char *const cmds[] = {"eval x.st", "export a.st b.st --dtype f16",
                                       "train --config x.json"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        snprintf(args, sizeof args, "%s --threads=2000", cmds[i]);
        CHECK_EQ_INT(run_distill(args, out, sizeof out), 2);
        CHECK_CONTAINS(out, "--threads needs an integer in 0..1024, got \"2000\"");
        CHECK_CONTAINS(out, "Try 'distill help ");
    }
    for (size_t i = 0; i < 2; i++) {
        snprintf(args, sizeof args, "%s --batch 0", cmds[i]);
        CHECK_EQ_INT(run_distill(args, out, sizeof out), 2);
        CHECK_CONTAINS(out, "--batch needs an integer in 1..65536, got \"0\"");
        snprintf(args, sizeof args, "%s --split=tset", cmds[i]);
        CHECK_EQ_INT(run_distill(args, out, sizeof out), 2);
        CHECK_CONTAINS(out, "--split needs test or validation, got \"tset\" (did you mean test?)");
    }
    /* Mistyped options and commands get a suggestion. */
    CHECK_EQ_INT(run_distill("info --jsn x.st", out, sizeof out), 2);
    CHECK_CONTAINS(out, "unknown option '--jsn' (did you mean --json?)");
    CHECK_EQ_INT(run_distill("predict --modle=m.st x.png", out, sizeof out), 2);
    CHECK_CONTAINS(out, "unknown option '--modle' (did you mean --model?)");
    CHECK_EQ_INT(run_distill("trian", out, sizeof out), 2);
    CHECK_CONTAINS(out, "(did you mean train?)");
    /* -h anywhere among the options is help, as --help is. */
    CHECK_EQ_INT(run_distill("eval --json -h", out, sizeof out), 0);
    CHECK_CONTAINS(out, "Usage: distill eval");
}
