/* kd_cli.h - the subcommands. Each lives in its own file under src/cli/ and returns the
 * process exit code (README "Exit codes"); only these print errors. */
#ifndef KD_CLI_H
#define KD_CLI_H

#include "kd_common.h"

typedef struct {
    const char *name;
    const char *summary;   /* one line for `distill --help` */
    const char *usage;     /* full text for `distill help NAME` / `distill NAME --help` */
    int (*run)(int argc, char **argv);  /* argv[0] is the command name */
} kd_command;

extern const kd_command kd_cmd_train, kd_cmd_eval, kd_cmd_export, kd_cmd_predict, kd_cmd_info;

/* Prints "distill: <msg>" to stderr and returns the error's code as an exit status. */
int kd_cli_fail(const kd_err *err);
/* Prints "distill NAME: <msg>\nTry 'distill help NAME'." and returns 2. */
int kd_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* True if argv has -h or --help. */
int kd_cli_wants_help(int argc, char **argv);

#endif
