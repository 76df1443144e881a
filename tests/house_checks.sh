#!/usr/bin/env bash
# house_checks.sh - tests of the house-rule checks themselves: .ci/check_layers.sh and
# .ci/check_rules.sh must pass on the real tree, and fail, naming it, on a scratch copy of the
# tree with one violation planted (each at the limit and one past it where there is a limit).
#   usage: house_checks.sh CASE   CASE: real, back_edge, symbol_edge, unowned, function_length,
#                                 file_length, spelling
# Exits 0 when the checks behaved as they must; otherwise prints what went wrong.
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
case_name="${1:?usage: house_checks.sh CASE}"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
status=0

# A copy of what the checks read (src, include, .ci, README.md, configs, docs).
copy_tree() {
    local t="$scratch/tree"
    mkdir -p "$t"
    for p in src include .ci README.md configs docs; do
        [ -e "$repo/$p" ] && cp -r "$repo/$p" "$t/"
    done
    echo "$t"
}

# expect STATUS PATTERN CMD...: CMD must exit with STATUS and print PATTERN (grep -E).
expect() {
    local want=$1 pattern=$2 out rc
    shift 2
    out=$("$@" 2>&1); rc=$?
    if [ "$rc" -ne "$want" ]; then
        echo "FAIL: '$*' exited $rc, expected $want; its output:"; echo "$out"; status=1
    elif [ -n "$pattern" ] && ! grep -qE -- "$pattern" <<< "$out"; then
        echo "FAIL: '$*' did not print /$pattern/; its output:"; echo "$out"; status=1
    else
        echo "ok: '$*' exited $rc${pattern:+ and printed /$pattern/}"
    fi
}

# A C function of n lines from its "{" to its "}", appended to file.
plant_function() {
    local file=$1 name=$2 n=$3 i
    { echo "int $name(int x) {"
      for ((i = 0; i < n - 3; i++)); do echo "    x += $i;"; done
      echo "    return x;"
      echo "}"; } >> "$file"
}

layers() { bash "$repo/.ci/check_layers.sh" "$@"; }
rules() { bash "$repo/.ci/check_rules.sh" "$@"; }

case $case_name in
real)
    expect 0 "no edge against the order" layers -r "$repo"
    expect 0 "within 700 lines" rules -r "$repo"
    ;;
back_edge)
    t=$(copy_tree)
    expect 0 "no edge against the order" layers -r "$t"
    sed -i '1a #include "kd_train.h"' "$t/src/core/rng.c"
    expect 1 "src/core/rng.c:2: core includes train's kd_train.h" layers -r "$t"
    expect 1 "back edge core -> train" layers -r "$t"
    # A private header of a higher module, by relative path, is an edge too.
    sed -i '2d' "$t/src/core/rng.c"
    echo '#include "../cli/cli.h"' >> "$t/src/data/mem.c"
    expect 1 "data includes cli's \.\./cli/cli\.h" layers -r "$t"
    ;;
symbol_edge)
    # Two objects, one in core calling a function the other (in cli) defines, with no include:
    # only the symbol check can see it; the same call from cli into core is in order.
    t=$(copy_tree)
    mkdir -p "$t/obj/src/core" "$t/obj/src/cli"
    echo 'int kd_planted_cli(void); int kd_planted_core(void) { return kd_planted_cli(); }' \
        > "$scratch/core.c"
    echo 'int kd_planted_cli(void) { return 1; }' > "$scratch/cli.c"
    cc -c "$scratch/core.c" -o "$t/obj/src/core/planted.o" && cc -c "$scratch/cli.c" -o "$t/obj/src/cli/planted.o" ||
        { echo "FAIL: cannot compile the planted objects"; exit 1; }
    expect 1 "obj/src/core/planted.o: core uses cli's symbol kd_planted_cli" \
        layers -r "$t" "$t/obj/src/core/planted.o" "$t/obj/src/cli/planted.o"
    echo 'int kd_planted_core(void) { return 1; }' > "$scratch/core.c"
    echo 'int kd_planted_core(void); int kd_planted_cli(void) { return kd_planted_core(); }' \
        > "$scratch/cli.c"
    cc -c "$scratch/core.c" -o "$t/obj/src/core/planted.o" && cc -c "$scratch/cli.c" -o "$t/obj/src/cli/planted.o"
    expect 0 "no edge against the order" \
        layers -r "$t" "$t/obj/src/core/planted.o" "$t/obj/src/cli/planted.o"
    ;;
unowned)
    # A folder or public header the order does not know, and an order with a cycle.
    t=$(copy_tree)
    mkdir "$t/src/newmod" && echo '/* x.c - planted. */' > "$t/src/newmod/x.c"
    expect 1 "src/newmod/x.c: belongs to no module" layers -r "$t"
    rm -r "$t/src/newmod"; echo '/* kd_new.h - planted. */' > "$t/include/kd_new.h"
    expect 1 "include/kd_new.h: belongs to no module" layers -r "$t"
    rm "$t/include/kd_new.h"
    sed -i 's/^module core:.*/module core: cli/' "$t/.ci/layers.txt"
    expect 2 "core may include cli, which does not stand on an earlier line" layers -r "$t"
    ;;
function_length)
    t=$(copy_tree)
    plant_function "$t/src/core/rng.c" kd_planted_at_limit 120
    expect 0 "within 700 lines and every function within 120" rules -r "$t"
    plant_function "$t/src/core/rng.c" kd_planted_past_limit 121
    expect 1 "src/core/rng.c:[0-9]+ function kd_planted_past_limit 121 lines" rules -r "$t"
    # An exception nothing needs any more fails too, so the list cannot go stale.
    sed -i 's#^exceptions="$#exceptions="\nsrc/core/rng.c function kd_gone#' "$t/.ci/check_rules.sh"
    sed -i '/kd_planted_past_limit/,$d' "$t/src/core/rng.c"
    expect 1 "exception src/core/rng.c function kd_gone is no longer needed" \
        bash "$t/.ci/check_rules.sh" -r "$t"
    ;;
file_length)
    t=$(copy_tree)
    for ((i = 0; i < 700; i++)); do echo "/* line $i */"; done > "$t/src/core/planted.h"
    expect 0 "within 700 lines" rules -r "$t"
    echo "/* line 700 */" >> "$t/src/core/planted.h"
    expect 1 "src/core/planted.h file 701 lines" rules -r "$t"
    ;;
spelling)
    t=$(copy_tree)
    mkdir -p "$t/docs" && echo "Weights are quantized per row." > "$t/docs/planted.md"
    expect 0 "one spelling of quantize" rules -r "$t"
    echo "The exporter Quantises each row." >> "$t/docs/planted.md"
    expect 1 "docs/planted.md:2 spelling Quantises" rules -r "$t"
    rm "$t/docs/planted.md"
    echo "int quantise_rows;" >> "$t/src/core/rng.c"
    expect 1 "src/core/rng.c:[0-9]+ spelling quantise_rows" rules -r "$t"
    ;;
*)
    echo "house_checks.sh: unknown case $case_name" >&2; exit 2 ;;
esac
exit $status
