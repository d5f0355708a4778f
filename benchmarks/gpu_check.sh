#!/usr/bin/env bash
# Issue 13's GPU check: one script that, on one GPU, proves and measures the GPU path.
#
#   bash benchmarks/gpu_check.sh          # GPU if torch sees one, else the CPU fallback
#   bash benchmarks/gpu_check.sh --cpu    # the CPU fallback: the same code at tiny sizes
#   bash benchmarks/gpu_check.sh --speed  # issue 27 only: env, then the gpu_speed option (add --cpu to rehearse)
#
# Writes `name: value` lines to stdout and to $OUT/gpu_check.txt (build/gpu_check/ when OUT is
# unset), everything else to $OUT/gpu_check.log (the two demo trainings: gpu_check_train_*.log). Parts, each in its own process under its own
# time cap (a part that fails or runs out of time records `<part>_status: error (...)` and the
# rest go on), within a total budget (SNNET_GPU_CHECK_BUDGET seconds: 450 on a GPU, 900 for the
# CPU fallback, whose caps are also 3x longer: SNNET_GPU_CHECK_CAP_SCALE):
#   env         GPU name (nvidia-smi), driver, torch/CUDA/timm/Ray versions, the bf16 peak
#   throughput  supernet vs plain timm DeiT-B training: img/s ratio, peak memory, MFU, uniform
#   eval        evaluation img/s of all 71 DeiT-Ti/S/B stitches (bf16)
#   demo_gpu    python -m orchestrator.train on the demo with --gpu (nccl, 1 worker, 1 epoch)
#   demo_cpu    the same run on CPU (gloo), same seed; then `demo_*` lines compare the two
#               catalogs' top-1 (mean over stitched stitches and each anchor)
#   compile     regional compilation (snnet.compile): speedup, warm-up, recompiles over 200 steps
#   speed       (--speed, instead of the parts above) the gpu_speed option (issue 27; benchmarks/gpu_train.py):
#               eager against each measure and `on` under uniform sampling, warm-up and break-even, 200-step
#               loss curves, the plain-anchor path, MFU, evaluation; the headline `gpu_uniform_speedup`
#
# On a bare, offline machine (no Ray, fvcore, ...) it first installs the wheels carried in
# .whl/ (see benchmarks/gpu_wheels.py) into a private folder, and uses the demo anchors'
# pretrained cache carried in .whl/demo-cache/ if present (else the demo pretrains them).
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODE=auto
SPEED=0
for arg in "$@"; do
  case "$arg" in
    --cpu) MODE=cpu ;;
    --gpu) MODE=gpu ;;
    --speed) SPEED=1 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "error: unknown argument '$arg' (use --cpu, --gpu, --speed or nothing)" >&2; exit 2 ;;
  esac
done

RES="${OUT:-$ROOT/build/gpu_check}"  # build/ is git-ignored
mkdir -p "$RES"
TXT="$RES/gpu_check.txt"
LOG="$RES/gpu_check.log"
: >"$TXT"
: >"$LOG"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/snnet-gpu-check.XXXXXX")"
BUDGET="${SNNET_GPU_CHECK_BUDGET:-}"
CAPX="${SNNET_GPU_CHECK_CAP_SCALE:-}"  # multiplies every part's cap (CPU fallback: 3)
T0=$(date +%s)
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 RAY_DISABLE_DOCKER_CPU_WARNING=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

emit() { echo "$1: $2" | tee -a "$TXT"; }
note() { echo "[gpu_check] $(date +%H:%M:%S) $*" >>"$LOG"; }
elapsed() { echo $(( $(date +%s) - T0 )); }

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3 python; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import torch' >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi
if [ -z "$PY" ]; then emit gpu_check "error (no python with torch found)"; exit 1; fi

# -- install: a no-op where the project's imports already work ------------------------------
have_deps() { "$PY" -c 'import snnet, orchestrator.train.launch, ray, ray.train.torch, timm, fvcore, pyarrow' >/dev/null 2>&1; }
DEPS=missing
have_deps && DEPS=present
if [ "$DEPS" = missing ]; then
  note "dependencies missing; installing"
  if ls .whl/*.whl >/dev/null 2>&1; then
    SITE="$WORK/site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl >>"$LOG" 2>&1 \
      || note "pip install of .whl/ failed"
    if [ -f .whl/ray-stripped.zip ]; then  # a wheel's contents; keep the files' modes (raylet, gcs_server)
      "$PY" - "$SITE" .whl/ray-stripped.zip >>"$LOG" 2>&1 <<'EOF' || note "unpacking ray-stripped.zip failed"
import os, sys, zipfile
site, path = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(path) as z:
    for info in z.infolist():
        out = z.extract(info, site)
        mode = (info.external_attr >> 16) & 0o777
        if mode:
            os.chmod(out, mode)
        elif info.filename.endswith(("/raylet", "/gcs_server")) or "/bin/" in info.filename:
            os.chmod(out, 0o755)
EOF
    fi
    export PYTHONPATH="$ROOT:$SITE${PYTHONPATH#$ROOT}"
    export PATH="$SITE/bin:$PATH"
  else
    "$PY" -m pip install -q -e . >>"$LOG" 2>&1 || note "pip install -e . failed"
  fi
  have_deps && DEPS=installed
fi
if [ "$DEPS" != missing ]; then emit install "$DEPS ($(elapsed)s)"; else
  emit install "error (imports still fail: $("$PY" -c 'import snnet, orchestrator.train.launch, ray, ray.train.torch, timm, fvcore, pyarrow' 2>&1 | tail -1))"
fi

if [ "$MODE" = auto ]; then
  if "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then MODE=gpu; else MODE=cpu; fi
fi
DEV=cuda; [ "$MODE" = cpu ] && DEV=cpu
if [ "$MODE" = cpu ]; then BUDGET=${BUDGET:-900}; CAPX=${CAPX:-3}; else BUDGET=${BUDGET:-450}; CAPX=${CAPX:-1}; fi
emit gpu_check_mode "$MODE"
emit gpu_check_date "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
if git rev-parse --short HEAD >/dev/null 2>&1; then
  emit gpu_check_commit "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- 2>/dev/null || echo '+dirty')"
else
  emit gpu_check_commit "unknown (no git checkout here)"
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  emit nvidia_smi "$(nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm --format=csv,noheader 2>&1 | head -1)"
else
  emit nvidia_smi "none"
fi

# -- run one part under its cap, inside the total budget -------------------------------------
# part NAME CAP_SECONDS command...: the command's `name: value` lines go to stdout and TXT.
part() {
  local name=$1 cap=$(( $2 * CAPX )); shift 2
  local left=$(( BUDGET - $(elapsed) - 5 ))
  if [ "$left" -lt 15 ]; then emit "${name}_status" "error (skipped: the ${BUDGET}s budget is spent)"; return 1; fi
  [ "$cap" -gt "$left" ] && cap=$left
  note "part $name (cap ${cap}s): $*"
  local t=$(date +%s) rc
  timeout -k 10 "$cap" "$@" 2>>"$LOG" | grep --line-buffered -E '^[A-Za-z0-9_]+: ' | tee -a "$TXT"
  rc=${PIPESTATUS[0]}
  local took=$(( $(date +%s) - t ))
  case $rc in
    0) emit "${name}_status" "ok (${took}s)" ;;
    124|137) emit "${name}_status" "error (timed out after ${cap}s; figures above are partial)" ;;
    *) emit "${name}_status" "error (exit $rc after ${took}s; see gpu_check.log)" ;;
  esac
  return "$rc"
}

TINY=""
if [ "$MODE" = cpu ]; then
  TINY="--tiny"
  # inductor's CPU code generation needs minutes of C++ compiling on a small box: capture and
  # AOT-autograd only (the GPU run uses inductor)
  export SNNET_GPU_COMPILE_BACKEND="${SNNET_GPU_COMPILE_BACKEND:-aot_eager}"
fi
part env 60 "$PY" -m benchmarks.gpu_bench env --device "$DEV"
if [ "$SPEED" = 1 ]; then  # issue 27: the whole budget (450 s on a GPU) goes to the speed option
  part speed 420 "$PY" -m benchmarks.gpu_train --device "$DEV" $TINY
  emit gpu_check_total_s "$(elapsed)"
  note "work folder $WORK"
  exit 0
fi
part throughput 120 "$PY" -m benchmarks.gpu_bench throughput --device "$DEV" $TINY
part eval 60 "$PY" -m benchmarks.gpu_bench eval --device "$DEV" $TINY

# -- the demo trained with orchestrator.train on the GPU and on CPU --------------------------
export SNNET_CACHE="$WORK/demo-cache"
mkdir -p "$SNNET_CACHE"
if ls .whl/demo-cache/*.pth >/dev/null 2>&1; then
  cp .whl/demo-cache/*.pth .whl/demo-cache/*.json "$SNNET_CACHE/" 2>>"$LOG"; note "demo anchors from .whl/demo-cache"
fi
CAT="$WORK/catalog"
train() {  # train TRIAL [--gpu]
  local trial=$1; shift
  local tlog="$RES/gpu_check_train_$trial.log"  # its own file, whole even if the part times out
  "$PY" -m orchestrator.train --epochs "${SNNET_GPU_DEMO_EPOCHS:-1}" --workers 1 --seed 0 \
    --catalog "$CAT" --sweep gpucheck --trial-id "$trial" --storage "$WORK/runs-$trial" "$@" >"$tlog" 2>&1
  local rc=$?
  echo "demo_${trial}_train_exit: $rc"
  grep -E '^time: ' "$tlog" | sed "s/^time: */demo_${trial}_train_time: /"
  [ $rc = 0 ] || tail -3 "$tlog" | tr -s ' \n' ' ' | sed "s/^/demo_${trial}_train_error: /; s/\$/\n/"
  return $rc
}
# the demo's tiny anchors: copied from the cache above, else pretrained here once (CPU work)
part demo_pretrain 180 "$PY" -c "
import time; t = time.perf_counter()
from orchestrator.data.demo_anchors import demo_anchor_specs
specs = demo_anchor_specs(progress=None)
print('demo_pretrain_s:', round(time.perf_counter() - t, 1))"
if [ "$MODE" = gpu ]; then
  part demo_gpu 120 bash -c "$(declare -f train); PY='$PY' CAT='$CAT' WORK='$WORK' RES='$RES' train gpu --gpu"
fi
part demo_cpu 120 bash -c "$(declare -f train); PY='$PY' CAT='$CAT' WORK='$WORK' RES='$RES' train cpu"
part demo_compare 45 "$PY" -m benchmarks.gpu_bench catalog --catalog "$CAT" --sweep gpucheck
if [ "$MODE" = gpu ] && [ -d "$CAT" ]; then  # keep the two catalogs' files with the results
  (cd "$WORK" && tar czf "$RES/gpu_check_catalog.tgz" catalog) 2>>"$LOG"
fi

# last: its warm-up (inductor compiling each distinct block) is the least predictable part
part compile 180 "$PY" -m benchmarks.gpu_bench compile --device "$DEV" $TINY

emit gpu_check_total_s "$(elapsed)"
note "work folder $WORK"
exit 0
