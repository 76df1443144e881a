#!/usr/bin/env bash
# experiments.sh - reproduces the numbers in the README's "Results": trains a teacher once, then
# every student pair (distilled vs from scratch) over several seeds, and prints test accuracy
# as mean and spread. Slow (tens of minutes on 2 cores); not part of the tests.
#   bash configs/experiments.sh mlp     # the fmnist-* configs (issue: train)
#   bash configs/experiments.sh cnn     # the fmnist-cnn-* configs (issue: convolutional teachers)
#   bash configs/experiments.sh cnn-aug # the CNN teacher's students on augmented batches: compact
#                                       # MLP 30 epochs, shifts of 2 + flips; small CNN 24 epochs,
#                                       # shifts of 2; distilled vs from scratch
#   bash configs/experiments.sh cache   # the compact student distilled online and from caches of
#                                       # the MLP teacher (f32, f16, top-k 4): accuracy, cache
#                                       # size and build time against one online epoch
#   bash configs/experiments.sh ensemble  # the compact student from an ensemble of 3 CNN teachers
#                                       # through the soft-target cache, EPOCHS (100) epochs, with
#                                       # a small grid on each side chosen on validation (see
#                                       # ensemble_suite below); then the label-scarce run
#   bash configs/experiments.sh losses  # issue 27: the small CNN and the small ResNet student, each
#                                       # from its teacher: scratch, KL, DKD, KL + hint, KL + AT,
#                                       # a small grid per arm chosen on validation
#   bash configs/experiments.sh ptq     # issue 28: post-training qint8 of the compact, small CNN
#                                       # and small ResNet students from scratch (SEEDS), float
#                                       # against integer test accuracy
#   bash configs/experiments.sh onnx-teacher  # issue 26: the compact and the small CNN student
#                                       # distilled from the small ResNet teacher's .onnx export
#                                       # (through the cache) against the same from scratch
# Environment: DISTILL (binary, default ./distill), RUNS (default runs/exp), SEEDS ("1 2 3"),
#              EPOCHS (ensemble suite, 100), THREADS (ensemble suite's students, 1; onnx-teacher
#              suite's every run, 1), TEACHER_EPOCHS (onnx-teacher suite's teacher, 1),
#              STUDENTS (ptq suite's configs, default all three; losses suite's students, default
#              both), THREADS (also every run of the losses suite; default: the config's).
# A run is redone only when its log has no summary line; --overwrite then moves the folder of
# the unfinished attempt to DIR.N (distill never writes over a run folder).
set -euo pipefail
cd "$(dirname "$0")/.."
DISTILL=${DISTILL:-./distill}
RUNS=${RUNS:-runs/exp}
SEEDS=${SEEDS:-1 2 3}
suite=${1:-mlp}
case "$suite" in
mlp) teacher=fmnist-teacher
     pairs="fmnist-student:fmnist-student-scratch fmnist-compact:fmnist-compact-scratch fmnist-scarce-kd:fmnist-scarce-scratch" ;;
cnn) teacher=fmnist-cnn-teacher
     pairs="fmnist-cnn-compact:fmnist-cnn-compact-scratch fmnist-cnn-small:fmnist-cnn-small-scratch" ;;
cnn-aug) teacher=fmnist-cnn-teacher  # pair fields: kd:scratch:epochs:shift:flip
     pairs="fmnist-cnn-compact:fmnist-cnn-compact-scratch:30:2:true fmnist-cnn-small:fmnist-cnn-small-scratch:24:2:false" ;;
ensemble|cache|losses|onnx-teacher|ptq) ;;
*) echo "usage: experiments.sh mlp|cnn|cnn-aug|ensemble|cache|losses|onnx-teacher|ptq" >&2; exit 2 ;;
esac
mkdir -p "$RUNS"
summary_field() { grep '^summary:' "$1" | grep -o " $2 [0-9.]*" | head -1 | cut -d' ' -f3; }
# "NAME mean +- sd (n=..., seeds: ...)" of the numbers after NAME, in percent.
mean_sd() { awk '{ n = NF - 1; s = 0; q = 0;
    for (i = 2; i <= NF; i++) { s += $i; q += $i * $i }
    m = s / n; sd = n > 1 ? sqrt((q - n * m * m) / (n - 1)) : 0;
    printf "%-44s %.2f%% +- %.2f (n=%d, seeds:", $1, 100 * m, 100 * sd, n;
    for (i = 2; i <= NF; i++) printf " %.2f", 100 * $i;
    printf ")\n" }'; }

# The compact student (flatten-dense128-dense10) distilled through the cache from three CNN
# teachers (seeds 1-3) against the same student from scratch. Same epoch budget both sides;
# each side's recipe is picked on the validation split (seed 1) from its own small grid, then
# run with every seed; the test accuracy of the best-validation checkpoint is reported.
#   scratch:   lr {0.001, 0.003} x augmentation {none, shifts of 2 drawn every step}
#   distilled: lr {0.001, 0.003} x (T, alpha) {(2, 0.5), (4, 0.9)} x
#              views {1 cache view without augmentation, 8 cached views of shifts of 2}
# Then label-scarce: the same student on the 55,000 training images without their labels
# (alpha 1), from the ensemble with the distilled side's chosen recipe.
ensemble_suite() {
    local E=${EPOCHS:-100} T=${THREADS:-1} base=configs/fmnist-cnn-compact.json
    local members="" s
    for s in 1 2 3; do
        local t="$RUNS/fmnist-cnn-teacher-s$s"
        if [ ! -r "$t/best.safetensors" ]; then
            "$DISTILL" train --overwrite --config configs/fmnist-cnn-teacher.json --seed "$s" --out "$t" \
                --quiet > "$t.log"
        fi
        echo "teacher seed $s: $(summary_field "$t.log" best_test_acc) test accuracy"
        members="$members${members:+, }{\"checkpoint\": \"$(cd "$t" && pwd)/best.safetensors\"}"
    done
    local rabs; rabs="$(cd "$RUNS" && pwd)"
    teacher_set() {  # $1: cache file, $2: views
        echo "teacher={\"ensemble\": [$members], \"cache\": {\"path\": \"$rabs/$1\", \"views\": $2}}"
    }
    local aug8=(--set data.augment.shift=2)
    for v in 1 8; do  # build both caches once, timed
        if [ ! -r "$RUNS/ensemble-v$v.kdc" ]; then
            local a=(); [ "$v" = 8 ] && a=("${aug8[@]}")
            "$DISTILL" logits --config "$base" --set "$(teacher_set ensemble-v$v.kdc $v)" \
                "${a[@]+"${a[@]}"}" --threads 2 --quiet > "$RUNS/ensemble-v$v.kdc.log"
        fi
        echo "cache views $v: $(grep -o 'bytes [0-9]*\|seconds [0-9.]*' "$RUNS/ensemble-v$v.kdc.log" | tr '\n' ' ')"
    done
    run() {  # $1 name, $2 seed, $3 config, rest: more train arguments
        local out="$RUNS/ens-$1-s$2" seed=$2 cfg=$3; shift 3
        if [ ! -r "$out.log" ] || ! grep -q '^summary:' "$out.log"; then
            "$DISTILL" train --overwrite --config "$cfg" --epochs "$E" --threads "$T" --seed "$seed" \
                --out "$out" --quiet "$@" > "$out.log"
        fi
    }
    local best_s="" best_sv=0 best_d="" best_dv=0 lr aug v ta name val seed
    for lr in 0.001 0.003; do
        for aug in 0 2; do
            name="scratch-lr$lr-shift$aug"
            run "$name" 1 "$base" --set teacher=null --set distill=null --set optimizer.lr=$lr \
                --set data.augment.shift=$aug
            val=$(summary_field "$RUNS/ens-$name-s1.log" best_val)
            echo "  $name: val $val"
            if awk -v a="$val" -v b="$best_sv" 'BEGIN { exit !(a > b) }'; then best_s=$name; best_sv=$val; fi
        done
        for ta in 2:0.5 4:0.9; do
            for v in 1 8; do
                name="kd-lr$lr-T${ta%%:*}-a${ta##*:}-v$v"
                local a=(); [ "$v" = 8 ] && a=("${aug8[@]}")
                run "$name" 1 "$base" --set "$(teacher_set ensemble-v$v.kdc $v)" --set optimizer.lr=$lr \
                    --set distill.temperature=${ta%%:*} --set distill.alpha=${ta##*:} "${a[@]+"${a[@]}"}"
                val=$(summary_field "$RUNS/ens-$name-s1.log" best_val)
                echo "  $name: val $val"
                if awk -v a="$val" -v b="$best_dv" 'BEGIN { exit !(a > b) }'; then best_d=$name; best_dv=$val; fi
            done
        done
    done
    echo "chosen on validation: scratch $best_s, distilled $best_d"
    local tacc; tacc=$(grep -o 'ensemble validation accuracy: [0-9.]*' "$RUNS/ens-$best_d-s1.log" 2>/dev/null || true)
    for name in "$best_s" "$best_d"; do
        local accs=""
        for seed in $SEEDS; do
            if [ "$seed" != 1 ]; then
                # the same arguments as the seed-1 run, from its saved config
                run "$name" "$seed" "$RUNS/ens-$name-s1/config.json"
            fi
            accs="$accs $(summary_field "$RUNS/ens-$name-s$seed.log" best_test_acc)"
        done
        echo "$name$accs" | mean_sd
    done
    # Label-scarce: the chosen distilled recipe with alpha 1 and no labels.
    local accs=""
    for seed in $SEEDS; do
        run "scarce-$best_d" "$seed" "$RUNS/ens-$best_d-s1/config.json" \
            --set data.use_labels=false --set distill.alpha=1
        accs="$accs $(summary_field "$RUNS/ens-scarce-$best_d-s$seed.log" best_test_acc)"
    done
    echo "no-labels-$best_d$accs" | mean_sd
}
# configs/fmnist-compact (KD from the MLP teacher, 15 epochs) online and from three caches.
cache_suite() {
    local t="$RUNS/fmnist-teacher" rabs
    if [ ! -r "$t/best.safetensors" ]; then
        "$DISTILL" train --overwrite --config configs/fmnist-teacher.json --out "$t" --quiet > "$t.log"
    fi
    rabs="$(cd "$RUNS" && pwd)"
    local tset="teacher.checkpoint=$rabs/fmnist-teacher/best.safetensors" kind c accs seed out
    for kind in online f32 f16 top4; do
        c=()
        case $kind in
        f32) c=(--set "teacher.cache={\"path\": \"$rabs/mlp-f32.kdc\"}") ;;
        f16) c=(--set "teacher.cache={\"path\": \"$rabs/mlp-f16.kdc\", \"dtype\": \"f16\"}") ;;
        top4) c=(--set "teacher.cache={\"path\": \"$rabs/mlp-top4.kdc\", \"top_k\": 4}") ;;
        esac
        if [ "$kind" != online ] && [ ! -r "$RUNS/mlp-$kind.kdc" ]; then
            "$DISTILL" logits --config configs/fmnist-compact.json --set "$tset" "${c[@]}" \
                --quiet > "$RUNS/mlp-$kind.kdc.log"
        fi
        [ "$kind" != online ] && echo "cache $kind: $(cat "$RUNS/mlp-$kind.kdc.log")"
        accs=""
        for seed in $SEEDS; do
            out="$RUNS/compact-$kind-s$seed"
            if [ ! -r "$out.log" ] || ! grep -q '^summary:' "$out.log"; then
                "$DISTILL" train --overwrite --config configs/fmnist-compact.json --seed "$seed" --out "$out" \
                    --quiet --set "$tset" "${c[@]+"${c[@]}"}" > "$out.log"
            fi
            accs="$accs $(summary_field "$out.log" best_test_acc)"
        done
        echo "compact-$kind$accs" | mean_sd
        # seconds of the first epoch (the teacher runs in it when online)
        echo "  first epoch: $(grep -o '"seconds":[0-9.]*' "$RUNS/compact-$kind-s1/metrics.jsonl" | head -1)"
    done
}
# Issue 27: the distillation losses on the same students, teachers and epoch budget. Each arm's
# recipe is picked on the validation split (seed 1) from its own grid, then run with every
# seed; the test accuracy of the best-validation checkpoint is reported per arm.
#   scratch: the config without teacher;  kl: (T, alpha) {(4, 0.9), (2, 0.5)};
#   dkd: beta {2, 8} with alpha 1, T 4, a ce term of weight 1 and 2 warm-up epochs;
#   hint, at: kl (T 4, alpha 0.9) plus the feature term, its weight from {0.1, 1} (hint) or
#   {100, 1000} (at: the normalised maps' mean squared difference is of order 1 / positions).
# Feature values: the CNN's last block ([32, 7, 7], index 5) against the CNN teacher's
# ([64, 7, 7], index 7); the ResNets' stage 2 (layer2.0.relu, [32 | 64, 14, 14]) for hint and
# stage 3 (layer3.0.relu, [64 | 128, 7, 7]) for at.
losses_suite() {
    local pair student teacher name val best bestv seed accs hs ht as at kl
    local th=(); [ -n "${THREADS:-}" ] && th=(--threads "$THREADS")
    for pair in fmnist-cnn-small:fmnist-cnn-teacher fmnist-resnet-student:fmnist-resnet-teacher; do
        IFS=: read -r student teacher <<< "$pair"
        [[ " ${STUDENTS:-fmnist-cnn-small fmnist-resnet-student} " == *" $student "* ]] || continue
        if [ "$student" = fmnist-cnn-small ]; then hs=5 ht=7 as=5 at=7
        else hs='"layer2.0.relu"' ht='"layer2.0.relu"' as='"layer3.0.relu"' at='"layer3.0.relu"'; fi
        kl='{"type":"kl","weight":0.9,"temperature":4},{"type":"ce","weight":0.1}'
        # a teacher counts as trained when its log has the summary line (a killed run leaves a
        # best.safetensors of an unfinished run, which must not be distilled from)
        if [ ! -r "$RUNS/$teacher.log" ] || ! grep -q '^summary:' "$RUNS/$teacher.log"; then
            "$DISTILL" train --overwrite --config "configs/$teacher.json" --out "$RUNS/$teacher" \
                "${th[@]+"${th[@]}"}" --quiet > "$RUNS/$teacher.log"
        fi
        local tdir tset
        tdir=$(cd "$RUNS/$teacher" && pwd)  # apart from local, so that a failed cd stops the run
        tset="teacher.checkpoint=$tdir/best.safetensors"
        run() {  # $1 arm name, $2 seed, rest: more train arguments
            local out="$RUNS/losses-$student-$1-s$2" seed=$2; shift 2
            if [ ! -r "$out.log" ] || ! grep -q '^summary:' "$out.log"; then
                "$DISTILL" train --overwrite --config "configs/$student.json" --seed "$seed" \
                    --out "$out" "${th[@]+"${th[@]}"}" --quiet "$@" > "$out.log"
            fi
        }
        declare -A grid=(
            [scratch]="--set teacher=null --set distill=null"
            [kl-T4-a0.9]="--set $tset --set distill={\"kind\":\"kl\",\"temperature\":4,\"alpha\":0.9}"
            [kl-T2-a0.5]="--set $tset --set distill={\"kind\":\"kl\",\"temperature\":2,\"alpha\":0.5}"
            [dkd-b2]="--set $tset --set distill={\"losses\":[{\"type\":\"dkd\",\"beta\":2,\"warmup_epochs\":2},{\"type\":\"ce\"}]}"
            [dkd-b8]="--set $tset --set distill={\"losses\":[{\"type\":\"dkd\",\"beta\":8,\"warmup_epochs\":2},{\"type\":\"ce\"}]}"
            [hint-w0.1]="--set $tset --set distill={\"losses\":[$kl,{\"type\":\"hint\",\"student\":$hs,\"teacher\":$ht,\"weight\":0.1}]}"
            [hint-w1]="--set $tset --set distill={\"losses\":[$kl,{\"type\":\"hint\",\"student\":$hs,\"teacher\":$ht,\"weight\":1}]}"
            [at-w100]="--set $tset --set distill={\"losses\":[$kl,{\"type\":\"at\",\"student\":$as,\"teacher\":$at,\"weight\":100}]}"
            [at-w1000]="--set $tset --set distill={\"losses\":[$kl,{\"type\":\"at\",\"student\":$as,\"teacher\":$at,\"weight\":1000}]}"
        )
        for arm in scratch kl dkd hint at; do
            best=""; bestv=0
            for name in "${!grid[@]}"; do
                [[ "$name" == "$arm"* ]] || continue
                # shellcheck disable=SC2086  # the grid's arguments are words
                run "$name" 1 ${grid[$name]}
                val=$(summary_field "$RUNS/losses-$student-$name-s1.log" best_val)
                echo "  $student $name: val $val"
                if awk -v a="$val" -v b="$bestv" 'BEGIN { exit !(a > b) }'; then best=$name; bestv=$val; fi
            done
            accs=""
            for seed in $SEEDS; do
                # shellcheck disable=SC2086
                run "$best" "$seed" ${grid[$best]}
                accs="$accs $(summary_field "$RUNS/losses-$student-$best-s$seed.log" best_test_acc)"
            done
            echo "$student-$arm:$best$accs" | mean_sd
        done
        unset grid
    done
}
# Issue 26: students distilled from an ONNX teacher. The small ResNet teacher
# (fmnist-resnet-teacher, seed 1) is trained once, TEACHER_EPOCHS epochs of cosine decay
# without warm-up (a short budget: the suite is meant to finish within an hour on one core),
# and written by `distill export --format onnx`; each student is then distilled from that .onnx
# file (teacher.checkpoint = the .onnx) through the soft-target cache, built once per student
# config by `distill logits`, against its -scratch twin with the same recipe (the config's lr,
# schedule and batch; epochs: compact 15 as configured, small CNN 4 instead of 8; T and alpha
# as configured on the distilled side). Seeds run in turn over all four cells, so a partial
# run still compares like with like; test accuracy of the best-validation checkpoint.
onnx_teacher_suite() {
    local T=${THREADS:-1} t="$RUNS/onnx-resnet-teacher" rabs kd scratch e cfg seed out
    if [ ! -r "$t/best.safetensors" ]; then
        "$DISTILL" train --overwrite --config configs/fmnist-resnet-teacher.json --seed 1 \
            --epochs "${TEACHER_EPOCHS:-1}" --set "schedule={\"name\": \"cosine\", \"min_lr\": 0}" --threads "$T" \
            --out "$t" --quiet > "$t.log"
    fi
    [ -r "$t.onnx" ] || "$DISTILL" export "$t/best.safetensors" "$t.onnx" --format onnx > /dev/null
    rabs="$(cd "$RUNS" && pwd)"
    echo "teacher: best-checkpoint test accuracy $(summary_field "$t.log" best_test_acc)"
    echo "teacher from its .onnx: $("$DISTILL" eval --config configs/fmnist-resnet-teacher.json \
        --threads "$T" "$t.onnx" | grep 'top-1 accuracy' | head -1)"
    local pairs="fmnist-compact:fmnist-compact-scratch:15 fmnist-cnn-small:fmnist-cnn-small-scratch:4"
    tset() {  # the distilled side's teacher: the .onnx file, through the cache of student $1
        printf '%s\n' --set "teacher.checkpoint=$rabs/onnx-resnet-teacher.onnx" \
            --set "teacher.cache={\"path\": \"$rabs/onnx-$1.kdc\"}"
    }
    for pair in $pairs; do
        IFS=: read -r kd scratch e <<< "$pair"
        if [ ! -r "$RUNS/onnx-$kd.kdc" ]; then
            mapfile -t a < <(tset "$kd")
            "$DISTILL" logits --config "configs/$kd.json" "${a[@]}" --threads "$T" --quiet \
                > "$RUNS/onnx-$kd.kdc.log"
        fi
    done
    for seed in $SEEDS; do
        for pair in $pairs; do
            IFS=: read -r kd scratch e <<< "$pair"
            for cfg in "$kd" "$scratch"; do
                out="$RUNS/onnx-$cfg-s$seed"
                if [ ! -r "$out.log" ] || ! grep -q '^summary:' "$out.log"; then
                    a=(); [ "$cfg" = "$kd" ] && mapfile -t a < <(tset "$kd")
                    "$DISTILL" train --overwrite --config "configs/$cfg.json" --seed "$seed" \
                        --epochs "$e" --threads "$T" --out "$out" --quiet "${a[@]+"${a[@]}"}" \
                        > "$out.log"
                fi
            done
        done
    done
    for pair in $pairs; do
        IFS=: read -r kd scratch e <<< "$pair"
        for cfg in "$kd" "$scratch"; do
            local accs=""
            for seed in $SEEDS; do accs="$accs $(summary_field "$RUNS/onnx-$cfg-s$seed.log" best_test_acc)"; done
            local label=$cfg-${e}ep; [ "$cfg" = "$kd" ] && label="$cfg-from-onnx-${e}ep"
            echo "$label$accs" | mean_sd
        done
    done
}
# Issue 28: post-training quantization. Each student is trained from scratch per seed (its
# config with teacher and distill removed: the losses suite's scratch arm, whose runs either
# suite reuses), exported as qint8 with activation ranges from the first 1,000 training samples
# (`distill export --dtype qint8 --calibrate 1000`), and both files are evaluated on the test
# split by `distill eval`: float and integer top-1 and their difference per seed; then the
# first seed's per-op scales and clamps (`distill info`), which bound the loss.
ptq_suite() {
    local student seed out json f q fl ql dl
    for student in ${STUDENTS:-fmnist-compact fmnist-cnn-small fmnist-resnet-student}; do
        fl="" ql="" dl=""
        for seed in $SEEDS; do
            out="$RUNS/losses-$student-scratch-s$seed"
            if [ ! -r "$out.log" ] || ! grep -q '^summary:' "$out.log"; then
                "$DISTILL" train --overwrite --config "configs/$student.json" --seed "$seed" \
                    --out "$out" --quiet --set teacher=null --set distill=null > "$out.log"
            fi
            "$DISTILL" export "$out/best.safetensors" "$out/best-qint8.safetensors" --dtype qint8 \
                --calibrate 1000 --config "configs/$student.json" > /dev/null
            json=$("$DISTILL" eval --config "configs/$student.json" --json \
                "$out/best.safetensors" "$out/best-qint8.safetensors")
            f=$(grep -o '"top1":[[:space:]]*[0-9.]*' <<< "$json" | sed -n 1p | grep -o '[0-9.]*$')
            q=$(grep -o '"top1":[[:space:]]*[0-9.]*' <<< "$json" | sed -n 2p | grep -o '[0-9.]*$')
            fl="$fl $f" ql="$ql $q" dl="$dl $(awk -v a="$q" -v b="$f" 'BEGIN { print a - b }')"
        done
        echo "$student-f32$fl" | mean_sd
        echo "$student-qint8$ql" | mean_sd
        echo "$student-qint8-minus-f32$dl" | mean_sd
        "$DISTILL" info "$RUNS/losses-$student-scratch-s${SEEDS%% *}/best-qint8.safetensors"
    done
}
if [ "$suite" = ptq ]; then ptq_suite; exit 0; fi
if [ "$suite" = onnx-teacher ]; then onnx_teacher_suite; exit 0; fi
if [ "$suite" = losses ]; then losses_suite; exit 0; fi
if [ "$suite" = ensemble ]; then ensemble_suite; exit 0; fi
if [ "$suite" = cache ]; then cache_suite; exit 0; fi

if [ ! -r "$RUNS/$teacher/best.safetensors" ]; then
    "$DISTILL" train --overwrite --config "configs/$teacher.json" --out "$RUNS/$teacher" --quiet \
        > "$RUNS/$teacher.log"
fi
tacc=$(summary_field "$RUNS/$teacher.log" best_test_acc)
echo "teacher $teacher: best-checkpoint test accuracy $tacc"
abs_teacher="$(cd "$RUNS/$teacher" && pwd)/best.safetensors"
for pair in $pairs; do
    IFS=: read -r kd scratch epochs shift flip <<< "$pair"
    args=()
    if [ -n "$epochs" ]; then
        args=(--epochs "$epochs" --set "data.augment.shift=$shift" --set "data.augment.flip=$flip")
    fi
    for cfg in $kd $scratch; do
        accs=""
        for seed in $SEEDS; do
            out="$RUNS/$cfg${epochs:+-aug$epochs}-s$seed"
            if [ ! -r "$out.log" ] || ! grep -q '^summary:' "$out.log"; then
                set_teacher=()
                grep -q '"teacher"' "configs/$cfg.json" && set_teacher=(--set "teacher.checkpoint=$abs_teacher")
                "$DISTILL" train --overwrite --config "configs/$cfg.json" --seed "$seed" --out "$out" --quiet \
                    "${set_teacher[@]+"${set_teacher[@]}"}" "${args[@]+"${args[@]}"}" > "$out.log"
            fi
            accs="$accs $(summary_field "$out.log" best_test_acc)"
        done
        echo "$cfg${epochs:+-aug$epochs}$accs" | awk -v t="$tacc" '{ n = NF - 1; s = 0; q = 0;
            for (i = 2; i <= NF; i++) { s += $i; q += $i * $i }
            m = s / n; sd = n > 1 ? sqrt((q - n * m * m) / (n - 1)) : 0;
            printf "%-30s test acc %.2f%% +- %.2f (n=%d, seeds:", $1, 100 * m, 100 * sd, n;
            for (i = 2; i <= NF; i++) printf " %.2f", 100 * $i;
            printf ")  retention %.1f%%\n", 100 * m / t }'
    done
done
