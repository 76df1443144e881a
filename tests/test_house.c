/* test_house.c - the house-rule checks (.ci/check_layers.sh, .ci/check_rules.sh) pass on this
 * tree and fail, naming the violation, on a scratch copy with one planted: a back edge by
 * include and by symbol, an unknown module, a 121-line function, a 701-line file, "quantise".
 * The cases live in tests/house_checks.sh; each runs one of them. */
#include <stdio.h>
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
