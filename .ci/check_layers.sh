#!/usr/bin/env bash
# check_layers.sh - fails on any edge between modules of src/ that runs against the order of
# .ci/layers.txt, naming each one. An edge is an #include "..." in src/**/*.c, src/**/*.h or
# include/kd_*.h (the header's module is the one layers.txt gives it), and, when an object
# objects are given, a symbol an object uses that another module's object defines (nm): a call
# into a module that was never included (a private function, a hand-written declaration).
#   usage: check_layers.sh [-r ROOT] [-l LAYERS] [OBJECT.o ...]
# ROOT (default: the repository) holds src/ and include/; LAYERS defaults to ROOT/.ci/layers.txt;
# an object's module is the folder after "src/" in its path (.../src/main.o is "main").
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
layers=""
while getopts "r:l:" opt; do
    case $opt in
        r) root="$(cd "$OPTARG" && pwd)" ;;
        l) layers="$OPTARG" ;;
        *) echo "usage: check_layers.sh [-r ROOT] [-l LAYERS] [OBJECT.o ...]" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
layers="${layers:-$root/.ci/layers.txt}"
objects=()
for o in "$@"; do objects+=("$(realpath --relative-to="$root" "$o")"); done
[ -r "$layers" ] || { echo "check-layers: cannot read $layers" >&2; exit 2; }
cd "$root"

# "F PATH" for every file (each must belong to a module), then one line per edge:
# "FILE:LINE FROM_PATH TO_PATH WHAT", module names left to awk. An include names a file beside
# the includer (or by a relative path) or one of include/; others (system, generated) are left.
edges() {
    local files
    files=$(find src include -name '*.[ch]' | sort)
    { echo "$files" | sed 's/^/F /'
      echo "$files" | xargs grep -Hn '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' || true
    } | awk '
        function norm(p,   n, i, k, part, out) {
            n = split(p, part, "/"); k = 0
            for (i = 1; i <= n; i++) {
                if (part[i] == "." || part[i] == "") continue
                if (part[i] == ".." && k > 0 && out[k] != "..") { k--; continue }
                out[++k] = part[i]
            }
            p = out[1]; for (i = 2; i <= k; i++) p = p "/" out[i]
            return p
        }
        $1 == "F" { have[$2] = 1; print; next }
        {
            split($0, a, ":"); f = a[1]; line = a[2]
            inc = $0; sub(/^[^"]*"/, "", inc); sub(/".*/, "", inc)
            dir = f; sub(/\/[^\/]*$/, "", dir)
            t = norm(dir "/" inc)
            if (!(t in have)) t = ("include/" inc) in have ? "include/" inc : ""
            if (t != "") print f ":" line, f, t, inc
        }'
}

# Symbol edges: "OBJECT OBJECT_PATH DEFINING_OBJECT_PATH SYMBOL", the paths cut to "src/...".
symbol_edges() {
    local o
    for o in ${objects[@]+"${objects[@]}"}; do
        nm -g --defined-only "$o" | awk -v o="$o" 'NF == 3 {print "D", $3, o}'
        nm -u "$o" | awk -v o="$o" '{print "U", $NF, o}'
    done | awk '
        function src_path(p) { sub(/.*\/src\//, "src/", p); return p }
        $1 == "D" { def[$2] = $3; next }
        { use[++n] = $2; user[n] = $3 }
        END {
            for (i = 1; i <= n; i++) if (use[i] in def)
                print user[i], src_path(user[i]), src_path(def[use[i]]), use[i]
        }'
}

{ edges; symbol_edges; } | awk -v layers="$layers" '
    function fail_cfg(msg) { print layers ": " msg > "/dev/stderr"; bad_cfg = 1 }
    BEGIN {
        while ((getline l < layers) > 0) {
            ln++
            sub(/#.*/, "", l)
            if (l ~ /^[ \t]*$/) continue
            if (match(l, /^module [a-z_0-9]+:/)) {
                split(substr(l, 8), a, ":"); m = a[1]
                if (m in pos) fail_cfg("line " ln ": module " m " stands twice")
                pos[m] = ++n_mod
                k = split(a[2], d, " ")
                for (i = 1; i <= k; i++) {
                    if (!(d[i] in pos)) fail_cfg("line " ln ": " m " may include " d[i] \
                                                 ", which does not stand on an earlier line")
                    ok[m, d[i]] = 1
                }
            } else if (match(l, /^headers [a-z_0-9]+:/)) {
                split(substr(l, 9), a, ":"); m = a[1]
                if (!(m in pos)) fail_cfg("line " ln ": headers of " m " before its module line")
                k = split(a[2], d, " ")
                for (i = 1; i <= k; i++) owner["include/" d[i]] = m
            } else if (match(l, /^except [a-z_0-9]+ -> [a-z_0-9]+:/)) {
                split(substr(l, 8), a, ":"); split(a[1], e, " ")
                sub(/^[ \t]+/, "", a[2])
                exc[e[1], e[3]] = 1; exc_why[e[1], e[3]] = a[2]; exc_list[++n_exc] = e[1] SUBSEP e[3]
            } else fail_cfg("line " ln ": not a module, headers or except line: " l)
        }
        if (bad_cfg) exit 2
    }
    function module_of(p,   parts) {
        if (p ~ /^include\//) {
            if (!(p in owner)) { missing[p] = 1; return "" }
            return owner[p]
        }
        if (p == "src/main.c" || p == "src/main.o") return "main"
        split(p, parts, "/")
        if (!(parts[2] in pos)) { missing[p] = 1; return "" }
        return parts[2]
    }
    $1 == "F" { module_of($2); next }
    {
        from = module_of($2); to = module_of($3)
        if (from == "" || to == "" || from == to || ok[from, to]) next
        kind = $1 ~ /\.o$/ ? "uses " to "'"'"'s symbol" : "includes " to "'"'"'s"
        if ((from, to) in exc) { used_exc[from, to] = 1; next }
        print $1 ": " from " " kind " " $4 ", against the order of " layers
        back[from " -> " to] = 1
        bad = 1
    }
    END {
        if (bad_cfg) exit 2
        for (p in missing) {
            print p ": belongs to no module of " layers " (add a module or headers line)"
            bad = 1
        }
        for (i = 1; i <= n_exc; i++) {
            split(exc_list[i], e, SUBSEP)
            printf "check-layers: TEMPORARY exception %s -> %s (%s)%s\n", e[1], e[2],
                   exc_why[e[1], e[2]], used_exc[e[1], e[2]] ? "" : " is no longer needed: delete it"
        }
        if (bad) {
            for (b in back) print "check-layers: back edge " b
            exit 1
        }
        print "check-layers: " n_mod " modules, no edge against the order"
    }'
