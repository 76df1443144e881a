/* fuzz_config.c - libFuzzer target: the JSON run configuration (parse, validate against the
 * key table, --set overrides). The input is the config text, then any number of overrides,
 * each after a NUL byte. An accepted config must write a resolved JSON that parses back to the
 * same resolved JSON (README: "loading it again gives the same config"). */
#include "fuzz_common.h"

#include <cJSON.h>
#include "kd_config.h"

#define MAX_OVERRIDES 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size + 1);
    FUZZ_CHECK(buf != NULL);
    memcpy(buf, data, size);
    buf[size] = '\0';
    const char *ov[MAX_OVERRIDES];
    size_t n_ov = 0, text_len = strlen(buf);
    for (size_t i = text_len; i < size && n_ov < MAX_OVERRIDES; i++)
        if (buf[i] == '\0' && i + 1 <= size) ov[n_ov++] = buf + i + 1;
    kd_config c, c2;
    kd_err err;
    kd_err_clear(&err);
    kd_status st = kd_config_parse(&c, buf, text_len, "fuzz.json", "/nonexistent", ov, n_ov, &err);
    fuzz_check_status(st, &err, NULL);
    FUZZ_CHECK(st != KD_EINPUT);  /* a config's faults are usage errors (exit 2) */
    if (st == KD_OK) {
        char *json = kd_config_to_json(&c);
        FUZZ_CHECK(json != NULL);
        st = kd_config_parse(&c2, json, strlen(json), "resolved.json", "/nonexistent", NULL, 0,
                             &err);
        if (st != KD_OK) fprintf(stderr, "resolved config refused: %s\n%s\n", err.msg, json);
        FUZZ_CHECK(st == KD_OK);
        char *json2 = kd_config_to_json(&c2);
        FUZZ_CHECK(json2 != NULL);
        if (strcmp(json, json2) != 0) fprintf(stderr, "round trip differs:\n%s\n%s\n", json, json2);
        FUZZ_CHECK(strcmp(json, json2) == 0);
        free(json2);
        free(json);
        kd_config_free(&c2);
    }
    kd_config_free(&c);
    free(buf);
    return 0;
}
