#!/usr/bin/env bash
# run.sh - runs the libFuzzer targets built by `make fuzz-build` (build-fuzz/fuzz/fuzz_*), each
# for FUZZ_SECONDS (default 60), from fresh seeds (make_corpus.sh) plus the corpus earlier runs
# kept in build-fuzz/corpus/work/<target>. Limits: 1 s per input (-timeout), 1 GiB RSS and
# 1 GiB per allocation; leaks are reported. Prints one line per target (executions, exec/s,
# edges, features, corpus size, peak RSS) and writes it to build-fuzz/fuzz-summary.txt.
# Any crash, timeout, leak or out-of-memory leaves its input in build-fuzz/crashes/<target>/
# and makes the script exit 1 (replay: build-fuzz/fuzz/fuzz_T FILE).
#   usage: [FUZZ_SECONDS=N] [FUZZ_JOBS=N] bash tests/fuzz/run.sh [TARGET...]
# FUZZ_JOBS > 1 runs that many fuzzing processes per target (libFuzzer -fork: the long run, on a
# quiet machine); its status lines count coverage differently (features), and report no RSS.
set -uo pipefail
# Every allocation up to 1 MiB starts as 0xbe bytes (ASan's default fills only 4 KiB), so a read
# of memory nothing wrote leads somewhere the sanitizers see instead of reading as zeros.
export ASAN_OPTIONS="max_malloc_fill_size=1048576${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
seconds=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-1}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors idx csv config image cache onnx)
bin=build-fuzz/fuzz
for t in "${targets[@]}"; do
    [ -x "$bin/fuzz_$t" ] || { echo "run.sh: $bin/fuzz_$t is missing: run 'make fuzz-build'" >&2; exit 2; }
done

seeds=build-fuzz/corpus/seed
# The test build of distill: the seeds include a run interrupted by KD_TRAIN_STOP_AFTER_STEPS.
bash tests/fuzz/make_corpus.sh "$seeds" build/hooks/distill "$bin/seed_images" || exit 1
# The config dictionary: JSON syntax plus every key and string value of the shipped configs.
dicts=build-fuzz/dict
mkdir -p "$dicts"
cp tests/fuzz/safetensors.dict tests/fuzz/cache.dict "$dicts/"
{ cat tests/fuzz/json.dict
  grep -oh '"[a-z_0-9.]*"' configs/*.json | sort -u | sed 's/"/\\"/g; s/.*/"&"/'; } > "$dicts/json.dict"

declare -A max_len=([safetensors]=8192 [idx]=8192 [csv]=4096 [config]=8192 [image]=16384 [cache]=8192 [onnx]=16384)
declare -A dict=([safetensors]=safetensors [config]=json [csv]="" [idx]="" [image]="" [cache]=cache [onnx]="")
status=0
summary=build-fuzz/fuzz-summary.txt
printf '%-12s %10s %8s %7s %7s %6s %7s %s\n' target executions exec/s edges features corpus rss_mb result \
    | tee "$summary"
for t in "${targets[@]}"; do
    work=build-fuzz/corpus/work/$t crashes=build-fuzz/crashes/$t log=build-fuzz/fuzz-$t.log
    mkdir -p "$work" "$crashes"
    args=(-max_total_time="$seconds" -timeout=1 -rss_limit_mb=1024 -malloc_limit_mb=1024
          -max_len="${max_len[$t]}" -print_final_stats=1 -artifact_prefix="$crashes/")
    [ -n "${dict[$t]}" ] && args+=(-dict="$dicts/${dict[$t]}.dict")
    if [ "$jobs" -gt 1 ]; then
        args+=(-fork="$jobs" -ignore_crashes=0)
    fi
    # Earlier crashers (tests/fuzz/regress/<target>) are replayed as seeds as well.
    regress=()
    [ -d "tests/fuzz/regress/$t" ] && regress=("tests/fuzz/regress/$t")
    "$bin/fuzz_$t" "${args[@]}" "$work" "$seeds/$t" "${regress[@]}" > "$log" 2>&1
    rc=$?
    # The last status line holds the coverage; the final stats the totals.
    line=$(grep -E '^#[0-9]+' "$log" | tail -1)
    execs=$(grep -o "stat::number_of_executed_units: *[0-9]*" "$log" | awk '{s+=$2} END {print s+0}')
    [ "$execs" -gt 0 ] || execs=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$line")
    rate=$(grep -o "stat::average_exec_per_sec: *[0-9]*" "$log" | awk '{s+=$2} END {print s+0}')
    [ "$rate" -gt 0 ] || rate=$(sed -n 's/.*exec\/s:\{0,1\} \([0-9]*\).*/\1/p' <<<"$line")
    rss=$(grep -o "stat::peak_rss_mb: *[0-9]*" "$log" | awk '{if ($2>m) m=$2} END {print m+0}')
    edges=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$line")
    feats=$(sed -n 's/.*ft: \([0-9]*\).*/\1/p' <<<"$line")
    corp=$(sed -n 's/.*corp: \([0-9]*\).*/\1/p' <<<"$line")
    found=$(find "$crashes" -type f | wc -l)
    result=ok
    if [ "$rc" -ne 0 ] || [ "$found" -gt 0 ]; then
        result="FAILED (exit $rc, $found inputs in $crashes; log $log)"
        status=1
    fi
    printf '%-12s %10s %8s %7s %7s %6s %7s %s\n' "$t" "${execs:-?}" "${rate:-?}" "${edges:-?}" \
        "${feats:-?}" "${corp:-?}" "$rss" "$result" | tee -a "$summary"
    [ "$result" = ok ] || grep -E 'ERROR|oracle|SUMMARY|==[0-9]+==' "$log" | head -5
done
exit $status
