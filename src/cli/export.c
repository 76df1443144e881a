/* export.c - `distill export` (placeholder until its issue lands). */
#include "kd_cli.h"

static int run(int argc, char **argv) {
    (void)argc;
    return kd_cli_usage_error(argv[0], "not available in this build yet");
}

const kd_command kd_cmd_export = {"export", "(not yet available)", "distill export: not yet available\n", run};
