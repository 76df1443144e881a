/* main.c - `distill`: dispatches to a subcommand; nothing else happens here. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kd_cli.h"

static const kd_command *const commands[] = {&kd_cmd_train, &kd_cmd_eval, &kd_cmd_export,
                                             &kd_cmd_predict, &kd_cmd_info};
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
            "\nOptions:\n  -h, --help     this help\n  --version      print the version\n\n"
            "Exit codes: 0 ok, 1 internal/I-O failure, 2 usage or config error,\n"
            "            3 bad input file, 4 numeric failure (NaN/Inf).\n");
}

static const kd_command *find_command(const char *name) {
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i]->name, name) == 0) return commands[i];
    return NULL;
}

int kd_cli_fail(const kd_err *err) {
    fprintf(stderr, "distill: %s\n", err->msg[0] ? err->msg : "unknown error");
    return err->code ? (int)err->code : 1;
}

int kd_cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "distill %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'distill help %s'.\n", cmd);
    return KD_EUSAGE;
}

int kd_cli_wants_help(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) return 1;
    return 0;
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
        printf("distill %s\n", KD_VERSION);
        return 0;
    }
    if (strcmp(name, "help") == 0) {
        if (argc < 3) {
            print_help(stdout);
            return 0;
        }
        const kd_command *c = find_command(argv[2]);
        if (!c) {
            fprintf(stderr, "distill: unknown command '%s'\nTry 'distill --help'.\n", argv[2]);
            return KD_EUSAGE;
        }
        fputs(c->usage, stdout);
        return 0;
    }
    const kd_command *c = find_command(name);
    if (!c) {
        fprintf(stderr, "distill: unknown %s '%s'\nTry 'distill --help'.\n",
                name[0] == '-' ? "option" : "command", name);
        return KD_EUSAGE;
    }
    if (kd_cli_wants_help(argc - 1, argv + 1)) {
        fputs(c->usage, stdout);
        return 0;
    }
    return c->run(argc - 1, argv + 1);
}
