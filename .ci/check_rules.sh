#!/usr/bin/env bash
# check_rules.sh - the house rules that keep the code readable, checked (run by .ci/run beside
# make check-layers): no file of src/ over 700 lines, no function of src/ over 120 (split by
# job, not by cutting in the middle), and one spelling, "quantize" (as ONNX's QuantizeLinear
# and PyTorch write it): no "quantis" in src/, include/, docs/, README.md or configs/.
#   usage: check_rules.sh [-r ROOT]     (ROOT defaults to the repository)
# A function is a column-0 definition whose line ending in "{" has a ")" before it, up to the
# next column-0 "}"; its length counts the lines from that "{" to that "}".
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
while getopts "r:" opt; do
    case $opt in
        r) root="$(cd "$OPTARG" && pwd)" ;;
        *) echo "usage: check_rules.sh [-r ROOT]" >&2; exit 2 ;;
    esac
done
cd "$root"
MAX_FILE=700
MAX_FUNCTION=120

# Every exception in one place, none today: "PATH RULE [NAME]" per line (RULE: file, function
# or spelling; NAME: the function, or the word spelled; without it the rule is off for PATH).
# The check prints the ones here on every run and fails on one no longer needed.
exceptions="
"

found=$(
    find src -name '*.[ch]' | sort | xargs wc -l |
        awk -v max="$MAX_FILE" '$2 != "total" && $1 > max { print $2 " file " $1 " lines (at most " max ")" }'
    find src -name '*.[ch]' | sort | xargs awk -v max="$MAX_FUNCTION" '
        FNR == 1 { in_fn = 0; cand = 0 }
        !in_fn && /^[A-Za-z_]/ { cand = 1; name = $0 }
        !in_fn && cand && /\)[ \t]*\{[ \t]*$/ && !/=[ \t]*\{[ \t]*$/ { in_fn = 1; start = FNR; next }
        !in_fn && /;[ \t]*$/ { cand = 0 }
        in_fn && /^}/ {
            in_fn = 0; cand = 0
            if (FNR - start + 1 > max) {
                fn = name; sub(/\(.*/, "", fn); sub(/.*[ *]/, "", fn)
                print FILENAME ":" start " function " fn " " FNR - start + 1 " lines (at most " max ")"
            }
        }'
    for p in src include docs README.md configs; do [ -e "$p" ] && echo "$p"; done |
        { xargs -r grep -rnoiI --exclude-dir=.git '[A-Za-z_]*quantis[A-Za-z_]*' || true; } |
        awk -F: '{ print $1 ":" $2 " spelling " $3 " (write quantize)" }'
)

echo "$found" | awk -v exc="$exceptions" '
    BEGIN {
        n = split(exc, lines, "\n")
        for (i = 1; i <= n; i++) if (lines[i] != "") {
            split(lines[i], w, " ")
            key = w[1] " " w[2] (w[3] != "" ? " " w[3] : "")
            allowed[key] = 0; order[++k] = key
        }
    }
    $0 == "" { next }
    {
        path = $1; sub(/:.*/, "", path)
        if ((path " " $2 " " $3) in allowed) { allowed[path " " $2 " " $3]++; next }
        if ((path " " $2) in allowed) { allowed[path " " $2]++; next }
        print $0; bad = 1
    }
    END {
        for (i = 1; i <= k; i++) {
            if (allowed[order[i]]) print "check-rules: TEMPORARY exception " order[i]
            else { print "check-rules: exception " order[i] " is no longer needed: delete it"; bad = 1 }
        }
        if (bad) exit 1
        print "check-rules: every file of src/ within 700 lines and every function within 120, " \
              "one spelling of quantize"
    }'
