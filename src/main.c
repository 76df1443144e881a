/* main.c - `distill`: dispatches to a subcommand; nothing else happens here. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "kd_gemm.h"
#include "kd_suggest.h"

static const kd_command *const commands[] = {&kd_cmd_train,   &kd_cmd_logits, &kd_cmd_eval,
                                             &kd_cmd_export,  &kd_cmd_predict, &kd_cmd_info,
                                             &kd_cmd_plot};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void print_help(FILE *f) {
    fprintf(f,
            "distill %s - knowledge-distillation trainer\n\n"
            "Usage: distill <command> [options]\n\nCommands:\n",
            KD_VERSION);
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-8s %s\n", commands[i]->name, commands[i]->summary);
    fprintf(f, "  %-8s %s\n", "help", "show help for a command: distill help <command>");
    fprintf(f,
            "\nOptions:\n  -h, --help     this help\n  --version      print the version and those of the libraries\n\n"
            "Exit codes: 0 ok, 1 internal/I-O failure, 2 usage or config error,\n"
            "            3 bad input file, 4 numeric failure (NaN/Inf).\n");
}

static const kd_command *find_command(const char *name) {
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i]->name, name) == 0) return commands[i];
    return NULL;
}

/* "unknown command 'trian' (did you mean train?)". */
static int unknown_command(const char *name) {
    const char *names[N_COMMANDS + 1];
    for (size_t i = 0; i < N_COMMANDS; i++) names[i] = commands[i]->name;
    names[N_COMMANDS] = "help";
    const char *near = name[0] == '-' ? NULL : kd_suggest(name, names, N_COMMANDS + 1);
    fprintf(stderr, "distill: unknown %s '%s'", name[0] == '-' ? "option" : "command", name);
    if (near) fprintf(stderr, " (did you mean %s?)", near);
    fprintf(stderr, "\nTry 'distill --help'.\n");
    return KD_EUSAGE;
}

/* The commands whose speed is sgemm's say when OPENBLAS_CORETYPE holds OpenBLAS below the CPU
 * (figures measured under a pin are not the machine's); their help, --quiet runs and --json
 * output (often read with both streams merged) stay as they are. */
static void blas_pin_note(const char *name, int argc, char **argv) {
    static const char *const quiet[] = {"-h", "--help", "-q", "--quiet", "--json"};
    char note[320];
    if (strcmp(name, "train") && strcmp(name, "eval") && strcmp(name, "logits")) return;
    for (int i = 2; i < argc; i++)
        for (size_t k = 0; k < sizeof quiet / sizeof quiet[0]; k++)
            if (strcmp(argv[i], quiet[k]) == 0) return;
    if (kd_blas_pin_note(note, sizeof note)) fprintf(stderr, "note: %s\n", note);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        print_help(stderr);
        return KD_EUSAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0) {
        print_help(stdout);
        return 0;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
        kd_cli_print_version(stdout);
        return 0;
    }
    if (strcmp(name, "help") == 0) {
        if (argc < 3 || strcmp(argv[2], "help") == 0) {
            print_help(stdout);
            return 0;
        }
        const kd_command *c = find_command(argv[2]);
        if (!c) return unknown_command(argv[2]);
        fputs(c->usage, stdout);
        return 0;
    }
    const kd_command *c = find_command(name);
    if (!c) return unknown_command(name);
    blas_pin_note(name, argc, argv);
    /* The command's own parser handles -h / --help like any other option. */
    return c->run(argc - 1, argv + 1);
}
