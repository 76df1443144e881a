/* info.c - `distill info` (placeholder until its issue lands). */
#include "kd_cli.h"

static int run(int argc, char **argv) {
    (void)argc;
    return kd_cli_usage_error(argv[0], "not available in this build yet");
}

const kd_command kd_cmd_info = {"info", "(not yet available)", "distill info: not yet available\n", run};
