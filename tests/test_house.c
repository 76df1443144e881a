/* test_house.c - the house rules, tested. The checks (.ci/check_layers.sh, .ci/check_rules.sh)
 * pass on this tree and fail, naming the violation, on a scratch copy with one planted: a back
 * edge by include and by symbol, an unknown module, a 121-line function, a 701-line file,
 * "quantise" (the cases live in tests/house_checks.sh; each KD_TEST runs one of them). And the
 * release binary carries no test hook: none of the names src/core/test_hooks.h declares is a
 * symbol (nm) or a string (strings) of it, while the test build carries them all. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_test.h"

static void run_case(const char *name) {
    char cmd[128], out[16384];
    snprintf(cmd, sizeof cmd, "bash tests/house_checks.sh %s", name);
    int rc = kd_test_run(cmd, out, sizeof out);
    if (rc != 0) kd_test_fail(__FILE__, __LINE__, "%s exited %d:\n%s", cmd, rc, out);
    CHECK(strstr(out, "FAIL") == NULL);
}

KD_TEST(house_checks_pass_on_this_tree) { run_case("real"); }
KD_TEST(house_layers_fail_on_an_include_back_edge) { run_case("back_edge"); }
KD_TEST(house_layers_fail_on_a_symbol_back_edge) { run_case("symbol_edge"); }
KD_TEST(house_layers_fail_on_an_unknown_module_or_a_cycle) { run_case("unowned"); }
KD_TEST(house_rules_fail_on_a_121_line_function) { run_case("function_length"); }
KD_TEST(house_rules_fail_on_a_701_line_file) { run_case("file_length"); }
KD_TEST(house_rules_fail_on_the_other_spelling) { run_case("spelling"); }

/* The hook names of src/core/test_hooks.h, one a line, into path: each "extern ... NAME;" or
 * "extern ... (*NAME)(...);" declaration and each KD_HOOK_ENV_* string, plus kd_fault_now.
 * Returns how many. */
static int write_hook_names(const char *path) {
    FILE *in = fopen("src/core/test_hooks.h", "r"), *out = fopen(path, "w");
    int n = 0;
    char line[512];
    while (in && out && fgets(line, sizeof line, in)) {
        char name[128];
        const char *p;
        if (strncmp(line, "extern ", 7) == 0) {
            /* The name is the identifier before "(" of a function pointer, else before ";". */
            const char *end = strstr(line, "(*") ? strstr(line, "(*") + 2 : NULL;
            if (end) {
                if (sscanf(end, "%127[A-Za-z0-9_]", name) != 1) continue;
            } else {
                const char *semi = strchr(line, ';');
                if (!semi) continue;
                p = semi;
                while (p > line && (p[-1] == '_' || (p[-1] >= 'a' && p[-1] <= 'z') ||
                                    (p[-1] >= '0' && p[-1] <= '9') || (p[-1] >= 'A' && p[-1] <= 'Z')))
                    p--;
                snprintf(name, sizeof name, "%.*s", (int)(semi - p), p);
            }
        } else if (strncmp(line, "#define KD_HOOK_ENV_", 20) == 0 && (p = strchr(line, '"'))) {
            if (sscanf(p + 1, "%127[A-Za-z0-9_]", name) != 1) continue;
        } else {
            continue;
        }
        fprintf(out, "%s\n", name);
        n++;
    }
    if (out) fprintf(out, "kd_fault_now\n");
    if (in) fclose(in);
    if (out) fclose(out);
    return in && out ? n + 1 : -1;
}

/* How many lines of `nm` and of `strings -a` of bin name a hook. */
static void count_hooks(const char *bin, const char *names, int *in_nm, int *in_strings) {
    char cmd[2048], out[256];
    snprintf(cmd, sizeof cmd, "nm -a '%s' | awk '{print $NF}' | grep -cxF -f '%s'", bin, names);
    kd_test_run(cmd, out, sizeof out);
    *in_nm = atoi(out);
    snprintf(cmd, sizeof cmd, "strings -a '%s' | grep -cF -f '%s'", bin, names);
    kd_test_run(cmd, out, sizeof out);
    *in_strings = atoi(out);
}

KD_TEST(house_release_binary_has_no_test_hook) {
    const char *release = getenv("KD_DISTILL_RELEASE") ? getenv("KD_DISTILL_RELEASE") : "./distill";
    char names[1024], list[4096] = "";
    snprintf(names, sizeof names, "%s/hooks.txt", kd_test_tmpdir());
    int n = write_hook_names(names);
    /* 4 faults, 3 sgemm hooks, kd_par_min, 2 data hooks, the train variable, kd_fault_now. */
    CHECK(n >= 12);
    FILE *f = fopen(names, "r");
    if (f) {
        list[fread(list, 1, sizeof list - 1, f)] = '\0';
        fclose(f);
    }
    CHECK_CONTAINS(list, "kd_par_min\nkd_idx_last_alloc");
    CHECK_CONTAINS(list, "kd_hook_gemm_shape\n");
    CHECK_CONTAINS(list, "KD_TRAIN_STOP_AFTER_STEPS\n");
    int in_nm = -1, in_strings = -1;
    count_hooks(release, names, &in_nm, &in_strings);
    if (in_nm != 0 || in_strings != 0)
        kd_test_fail(__FILE__, __LINE__, "%s: %d hook symbols (nm), %d strings naming a hook; "
                     "see: nm -a %s | grep -F -f %s", release, in_nm, in_strings, release, names);
    /* The same scan finds every symbol hook (n - 1: all but the variable) in the test build,
     * and the variable's name among its strings: the scan can see what it looks for. */
    count_hooks(kd_test_distill(), names, &in_nm, &in_strings);
    CHECK_EQ_INT(in_nm, n - 1);
    CHECK(in_strings >= 1);
}
