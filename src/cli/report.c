/* report.c - how subcommands talk to the user: errors with their exit code, usage errors with
 * the help hint, warnings, and JSON documents checked before they are printed. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

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

void kd_cli_warn_if_any(const kd_err *err) {
    if (err->code == KD_OK && err->msg[0]) fprintf(stderr, "distill: warning: %s\n", err->msg);
}

cJSON *kd_cli_json_add(cJSON *parent, const char *key, cJSON *item, int *failed) {
    int ok = parent && item &&
             (key ? cJSON_AddItemToObject(parent, key, item) : cJSON_AddItemToArray(parent, item));
    if (ok) return item;
    cJSON_Delete(item);
    *failed = 1;
    return NULL;
}

kd_status kd_cli_json_print(cJSON *doc, int failed, kd_err *err) {
    char *text = failed || !doc ? NULL : cJSON_Print(doc);
    cJSON_Delete(doc);
    if (!text) return kd_err_set(err, KD_EIO, "out of memory printing JSON");
    printf("%s\n", text);
    free(text);
    return KD_OK;
}
