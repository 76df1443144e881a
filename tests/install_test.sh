#!/usr/bin/env bash
# install_test.sh - `make install` into a temporary DESTDIR, checked from the outside: exactly
# the three files land there; the installed binary runs; its man page renders with no groff
# warning and lists, per command, exactly the options of that command's --help; the completion
# script, sourced in plain bash, completes a command, an option, a choice and a file name; and
# `make uninstall` removes those three files and nothing else. Prints "install test: ok" or the
# first failure (exit 1).
#   usage: install_test.sh DISTILL_BINARY     (run by tests/test_docs.c)
set -euo pipefail
bin=$(cd "$(dirname "${1:?usage: install_test.sh DISTILL_BINARY}")" && pwd)/$(basename "$1")
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "install test: FAIL: $*"; exit 1; }
dest=$tmp/dest
prefix=/usr/local
# A make started from the test runner must not inherit the outer make's jobserver.
unset MAKEFLAGS MFLAGS MAKELEVEL
# -o: the binary under test is installed as it is, never rebuilt with other flags.
make -C "$root" -s --no-print-directory -o "$bin" install DESTDIR="$dest" PREFIX="$prefix" \
    BIN="$bin" MAN_PAGE="$tmp/distill.1" >"$tmp/make.out" 2>&1 || fail "make install: $(cat "$tmp/make.out")"

want="$dest$prefix/bin/distill
$dest$prefix/share/bash-completion/completions/distill
$dest$prefix/share/man/man1/distill.1"
got=$(find "$dest" -type f | sort)
[ "$got" = "$want" ] || fail "installed files: $got"
installed=$dest$prefix/bin/distill
page=$dest$prefix/share/man/man1/distill.1
[ -x "$installed" ] || fail "the installed binary is not executable"

# The installed binary runs on its own.
"$installed" --version >"$tmp/version" || fail "installed distill --version failed"
grep -q '^distill [0-9]' "$tmp/version" || fail "--version: $(cat "$tmp/version")"
for lib in OpenBLAS cJSON zlib protobuf-c; do
    grep -qE "^$lib [0-9]" "$tmp/version" || fail "--version names no $lib version"
done
"$installed" help train >/dev/null || fail "installed distill help train failed"

# The man page: no warning at all from groff, and man(1) renders it.
groff -man -Tutf8 -ww "$page" >/dev/null 2>"$tmp/groff.err" || fail "groff failed"
[ ! -s "$tmp/groff.err" ] || fail "groff warnings: $(cat "$tmp/groff.err")"
MANWIDTH=100 man -l "$page" 2>"$tmp/man.err" | col -b |
    sed 's/\xe2\x80\x90/-/g; s/\xe2\x88\x92/-/g' >"$tmp/man.txt" || fail "man -l failed"
[ ! -s "$tmp/man.err" ] || fail "man -l: $(cat "$tmp/man.err")"
grep -q '^EXIT STATUS' "$tmp/man.txt" || fail "the man page has no EXIT STATUS section"
for code in 0 1 2 3 4 130; do
    grep -qE "^       $code( |$)" "$tmp/man.txt" || fail "the man page's exit status list lacks $code"
done
grep -q 'configs/README.md' "$tmp/man.txt" || fail "the man page does not point at configs/README.md"

# Options of a help text: the names on its option lines (two to six spaces, then a dash).
help_opts() { sed -nE 's/^ {2,6}((-[A-Za-z]), )?(--[a-z][a-z0-9-]*).*/\2\n\3/p' | grep . | sort -u; }
# Options of a man page section: its tagged paragraphs' terms (seven spaces, then a dash).
man_opts() { sed -nE 's/^ {7}((-[A-Za-z]), )?(--[a-z][a-z0-9-]*).*/\2\n\3/p' | grep . | sort -u; }
# A section runs from its heading to the next heading: a line at column 0 or 3.
section() { awk -v h="$1" '$0 == h { on = 1; next } on && (/^[A-Za-z]/ || /^   [A-Za-z]/) { exit } on'; }
commands=$("$installed" --help | awk '/^Commands:/ { on = 1; next } on && /^$/ { exit } on { print $1 }')
[ -n "$commands" ] || fail "no commands in distill --help"
n=0
for c in $commands; do
    [ "$c" = help ] && continue
    h=$("$installed" help "$c" | help_opts)
    m=$(section "   distill $c" <"$tmp/man.txt" | man_opts)
    [ -n "$h" ] || fail "distill help $c lists no options"
    [ "$h" = "$m" ] || fail "options of $c: help says $(echo $h), the man page $(echo $m)"
    n=$((n + 1))
done
h=$("$installed" --help | awk '/^Options:/ { on = 1; next } on && /^$/ { exit } on' | help_opts)
m=$(section "GENERAL OPTIONS" <"$tmp/man.txt" | man_opts)
[ "$h" = "$m" ] || fail "general options: help says $(echo $h), the man page $(echo $m)"

# The completion, in plain bash (no bash-completion package), against the installed binary.
mkdir -p "$tmp/work/cfg" && touch "$tmp/work/cfg/teacher.json"
complete_words() {
    (cd "$tmp/work" && PATH="$dest$prefix/bin:$PATH" bash --norc --noprofile -c '
        source "$1"; shift
        COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _distill
        printf "%s\n" "${COMPREPLY[@]}"' _ "$dest$prefix/share/bash-completion/completions/distill" "$@")
}
[ "$(complete_words distill tra)" = train ] || fail "completing 'distill tra': $(complete_words distill tra)"
[ "$(complete_words distill help ex)" = export ] || fail "completing 'distill help ex'"
[ "$(complete_words distill train --con)" = --config ] || fail "completing 'distill train --con'"
[ "$(complete_words distill export a b --dtype i)" = int8 ] || fail "completing '--dtype i'"
[ "$(complete_words distill train --config cfg/t)" = cfg/teacher.json ] ||
    fail "completing a file name: $(complete_words distill train --config cfg/t)"

# make uninstall removes exactly what install put there.
touch "$dest$prefix/bin/other-tool"
make -C "$root" -s --no-print-directory uninstall DESTDIR="$dest" PREFIX="$prefix" >"$tmp/make.out" 2>&1 ||
    fail "make uninstall: $(cat "$tmp/make.out")"
got=$(find "$dest" -type f | sort)
[ "$got" = "$dest$prefix/bin/other-tool" ] || fail "after uninstall: $got"
echo "install test: ok ($n commands' options match the man page)"
