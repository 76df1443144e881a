#!/usr/bin/env bash
# valgrind.sh - the end-to-end tests (the test files named as arguments) with every run of the
# test build of distill (build/hooks/distill) under valgrind memcheck: --leak-check=full,
# definite, indirect and possible leaks counted as errors, suppressions for OpenBLAS and
# libgomp internals in tests/valgrind.supp. A memory error makes distill exit 99 (not
# valgrind's usual 1, which a test expecting distill's own exit 1 would take for success) and
# leaves its report in build/valgrind/<pid>.log; the script fails if any report exists.
# Called by `make valgrind`.
#   usage: bash tests/valgrind.sh TEST-FILTER...
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
logs=$root/build/valgrind
rm -rf "$logs"
mkdir -p "$logs"
chmod 1777 "$logs"  # the permission test runs distill as an unprivileged user
# The tests quote KD_DISTILL as one path, so valgrind goes in through a wrapper.
cat > "$logs/distill" <<WRAP
#!/bin/sh
exec valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect,possible \\
  --suppressions="$root/tests/valgrind.supp" --log-file="$logs/%p.log" "$root/build/hooks/distill" "\$@"
WRAP
chmod +x "$logs/distill"
cd "$root"
KD_DISTILL="$logs/distill" build/run_tests "$@"
status=$?
reports=$(find "$logs" -name '*.log' -size +0 | sort)
if [ -n "$reports" ]; then
    echo "valgrind: memory errors or leaks reported:"
    for r in $reports; do echo "== $r"; head -40 "$r"; done
    status=1
else
    echo "valgrind: no memory errors or leaks in $(find "$logs" -name '*.log' | wc -l) runs of distill"
fi
exit $status
