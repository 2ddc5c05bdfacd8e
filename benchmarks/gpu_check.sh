#!/usr/bin/env bash
# The GPU check: one command that measures what matters most on one GPU, most important first,
# in under 8 minutes on one H100 (machine start and transfers aside):
#
#   1 folds     CIFAR-10's 50,000 training images: the fast fold recipe's seconds and its
#               accuracy on the 10,000 test images (benchmarks/fold_recipe.py --cifar10)
#   2 scan      the default `noisefind scan` of the CIFAR-10 training folder (10% of the labels
#               made wrong), each stage's seconds from its summary.json (rows scanned: 10,000)
#   3 search    the flip search batched against one example at a time (digits)
#   4 cifar10n  CIFAR-10N random1 on all 40,000 labelled images: the default order against
#               confident learning on the same fold models (5,000 rows scored)
#
# Every step runs under its own time limit (80 + 190 + 50 + 150 s), writes its JSON under
# benchmarks/results/ as soon as it ends and copies it to $OUT (the device tool brings that
# folder back); a step that runs out of time is recorded as such and the next one starts.
#
#   bash benchmarks/gpu_check.sh
#
# Data: $NOISEFIND_DATASETS (default: ../shared/datasets beside the repository) must hold
# cifar10-jpg.tar.gz and cifar10n-labels.csv. The device machine sees only the repository, so
# before calling it, here:
#   mkdir -p .data && cp ../shared/datasets/{cifar10-jpg.tar.gz,cifar10n-labels.csv} .data/
#   echo /.data/ >> .git/info/exclude
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#       cleanlab==2.9.0 termcolor==3.3.0     # not on the device image; pure Python
#   echo /.whl/ >> .git/info/exclude
# then run with carry [".data", ".whl"] and NOISEFIND_DATASETS=.data.
#
# NOISEFIND_GPU_CHECK_SMOKE=1 runs every step at toy size on the CPU (tests/test_gpu_check.py):
# a check that this script works, not a measurement; its files go to $OUT or a temporary folder.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD:$PWD/benchmarks:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
SMOKE=${NOISEFIND_GPU_CHECK_SMOKE:-0}
RESULTS=benchmarks/results
WORK=/tmp/noisefind-gpu-check
if [ "$SMOKE" = 1 ]; then RESULTS=$(mktemp -d); WORK=$RESULTS/work; fi
mkdir -p "$WORK" "$RESULTS"
STATUS=$RESULTS/gpu_check.json
echo "{}" > "$STATUS"

record() {  # record STEP SECONDS EXIT into gpu_check.json
    $PY - "$STATUS" "$@" <<'EOF'
import json, sys
path, step, seconds, code = sys.argv[1:5]
status = json.load(open(path))
status[step] = {"seconds": int(seconds), "exit": int(code), "timed_out": code in ("124", "137")}
json.dump(status, open(path, "w"), indent=1)
EOF
}

keep() {  # copy files to $OUT, where the device tool picks them up
    if [ -n "${OUT:-}" ]; then cp -r "$@" "$STATUS" "$OUT/" 2>/dev/null || true; fi
}

run_step() {  # run_step NAME LIMIT: step_NAME under a time limit
    local name=$1 limit=$2 start code
    echo "== $name (at most $limit s)"
    start=$(date +%s)
    timeout "$limit" bash -c "step_$name"
    code=$?
    record "$name" $(( $(date +%s) - start )) "$code"
    echo "== $name: exit $code after $(( $(date +%s) - start )) s"
}

setup() {
    if [ -d .whl ]; then
        $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    fi
    $PY -c "import torch, noisefind, cleanlab; print('torch', torch.__version__, 'cuda', \
torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
}

images() {  # the unpacked CIFAR-10 folder
    $PY -c "from cifar10n import SHARED, unpack; from pathlib import Path; \
print(unpack(SHARED / 'cifar10-jpg.tar.gz', Path('$WORK')))"
}

step_folds() {
    if [ "$SMOKE" = 1 ]; then
        $PY benchmarks/fold_recipe.py --cifar10 --subset 200 --fold-epochs 1 --work "$WORK" \
            --out "$RESULTS/fold_recipe-cifar10-gpu.json"
    else
        $PY benchmarks/fold_recipe.py --cifar10 --fold-epochs 20 --work "$WORK" \
            --out "$RESULTS/fold_recipe-cifar10-gpu.json"
    fi
}

step_scan() {
    local root out=$WORK/scan-cifar10
    rm -rf "$out"
    if [ "$SMOKE" = 1 ]; then  # the 200 images of the folds step's smoke run
        $PY -m noisefind scan "$WORK/fold-recipe-train-200.csv" --noise symmetric:0.1 \
            --epochs 1 --width 0.25 --folds 2 --fold-epochs 1 --limit 8 --out "$out" --quiet
    else
        root=$(images) || return 1
        $PY -m noisefind scan "$root/train" --noise symmetric:0.1 --limit 10000 --out "$out" \
            2> "$WORK/scan-cifar10.log"
    fi
    local code=$?
    cp "$out/summary.json" "$RESULTS/gpu_check-scan-cifar10.json" 2>/dev/null
    return $code
}

step_search() {
    if [ "$SMOKE" = 1 ]; then
        $PY benchmarks/scan_speed.py --data digits --width 0.25 --epochs 2 --examples 20 \
            --out "$RESULTS/scan_speed_digits_gpu.json"
    else
        $PY benchmarks/scan_speed.py --data digits --examples 1797 --reference-examples 200 \
            --out "$RESULTS/scan_speed_digits_gpu.json"
    fi
}

step_cifar10n() {
    if [ "$SMOKE" = 1 ]; then
        $PY benchmarks/cifar10n.py --labels random1 --size 200 --epochs 2 --width 0.25 \
            --limit 40 --folds 2 --fold-recipe fast --fold-epochs 2 --work "$WORK" \
            --out "$RESULTS/cifar10n-random1-all-gpu"
    else
        $PY benchmarks/cifar10n.py --labels random1 --size 40000 --epochs 20 --width 1 \
            --limit 5000 --fold-recipe fast --fold-epochs 20 --work "$WORK" \
            --out "$RESULTS/cifar10n-random1-all-gpu"
    fi
}

export PY SMOKE RESULTS WORK
export -f images step_folds step_scan step_search step_cifar10n
setup
if [ "$SMOKE" = 1 ]; then limits=(600 600 600 600); else limits=(80 190 50 150); fi
run_step folds "${limits[0]}"; keep "$RESULTS"/fold_recipe-cifar10-gpu.json
run_step scan "${limits[1]}"; keep "$RESULTS"/gpu_check-scan-cifar10.json
run_step search "${limits[2]}"; keep "$RESULTS"/scan_speed_digits_gpu.json
run_step cifar10n "${limits[3]}"; keep "$RESULTS"/cifar10n-random1-all-gpu
cat "$STATUS"
