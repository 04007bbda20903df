#!/usr/bin/env bash
# The GPU numbers in one short run. First a smoke run of every committed config (a few steps and one
# small evaluation each, all at once), so that a config that cannot run on the device shows its reason
# before the long steps; then tools/bench.py on CUDA (softmax, sigmoid, relu, cnn), tools/time_to_99.py's
# table (configs/fast.toml, the same recipe in built-ins, the pytorch/examples recipe), and full
# trainings of the fast, cnn and sigmoid configs, whose summaries give the training seconds per pass
# and the time to 98%, 99% and 99.5% test accuracy (time_to_accuracy).
#
#   OUT=gpu-check bash tools/gpu_check.sh          # from the repo root, on a machine with a GPU
#   DEVICE=cpu EPOCHS=0.05 OUT=/tmp/g bash tools/gpu_check.sh   # the same steps on a CPU, to check the script
#
# SMOKE=0 skips the smoke runs, SMOKE_CONFIGS (default every config) picks them; BENCH_CONFIGS (default "softmax sigmoid relu cnn") picks the benchmarked
# configs, BENCH=0 skips them, BENCH_REPEATS (default 5) sets its timed repeats; TRAIN_CONFIGS (default "fast cnn sigmoid") the trained ones; TRAIN_ARGS
# adds overrides to their trainings (the test's "eval.max_points=1000"); TIME_TO_99=0 skips that table,
# MAX_SECONDS bounds each of its recipes (default 300); PYTHON the interpreter.
#
# Everything lands flat in $OUT, written as it goes, so that a failure or a time limit leaves the reason
# (7 files): device.txt, smoke.log, bench.txt (both tables), bench-<device>.json,
# time-to-99-<device>.json, train.log (every training's log, then its one-line result) and
# summaries.json ({config: summary.json}).
# MNIST comes from NNHW_DATA_ROOT, else ../shared/data, else the gzipped raw files in .mnist/
# (git-ignored; for a machine that cannot download, make it with
#  mkdir .mnist && for f in ../shared/data/MNIST/raw/*-ubyte; do gzip -c "$f" > .mnist/"${f##*/}".gz; done).
set -euo pipefail
out=${OUT:-gpu-check}
device=${DEVICE:-cuda}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONPATH=. PYTHONUNBUFFERED=1

if [ -z "${NNHW_DATA_ROOT:-}" ]; then
  if [ -f ../shared/data/MNIST/raw/train-images-idx3-ubyte ]; then
    export NNHW_DATA_ROOT=../shared/data
  elif compgen -G ".mnist/*.gz" >/dev/null; then
    mkdir -p /tmp/nnhw-mnist/MNIST/raw
    for f in .mnist/*.gz; do gunzip -c "$f" > "/tmp/nnhw-mnist/MNIST/raw/$(basename "$f" .gz)"; done
    export NNHW_DATA_ROOT=/tmp/nnhw-mnist
  else
    echo "gpu_check: no MNIST: set NNHW_DATA_ROOT, or put the four gzipped raw files in .mnist/" >&2
    exit 2
  fi
fi

"$py" -c "import torch, platform; print('torch', torch.__version__, '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA', '|', platform.processor() or platform.machine())" | tee "$out/device.txt"

logs=$(mktemp -d)
if [ "${SMOKE:-1}" != 0 ]; then
  # every config at once, each for a few batches (1,000 images) and one evaluation of 500 images
  pids=()
  all=$(for path in configs/*.toml; do basename "$path" .toml; done)
  for cfg in ${SMOKE_CONFIGS:-$all}; do
    OMP_NUM_THREADS=1 "$py" -m nnhw.train "configs/$cfg.toml" "run.device=$device" "run.log_dir=$logs/smoke" "run.name=$cfg" \
      train.epochs=0.02 data.train_points=1000 eval.every=1000 eval.max_points=500 \
      > "$logs/smoke-$cfg.log" 2>&1 &
    pids+=("$!:$cfg")
  done
  failed=0
  for entry in "${pids[@]}"; do
    cfg=${entry#*:}
    if wait "${entry%%:*}"; then result=ok; else result=FAILED; failed=1; fi
    { echo "== $cfg: $result"; tail -n 3 "$logs/smoke-$cfg.log"; } >> "$out/smoke.log"
  done
  if [ "$failed" != 0 ]; then
    grep -A3 FAILED "$out/smoke.log" >&2
    echo "gpu_check: a config failed its smoke run on $device (above; every log in $out/smoke.log)" >&2
    exit 1
  fi
  echo "smoke: every config took its steps on $device"
fi

if [ "${BENCH:-1}" != 0 ]; then
  # shellcheck disable=SC2086  # a list of config names
  "$py" tools/bench.py --configs ${BENCH_CONFIGS:-softmax sigmoid relu cnn} --device "$device" --repeats "${BENCH_REPEATS:-5}" --no-loader --out "$out/bench-$device.json" | tee "$out/bench.txt"
fi

if [ "${TIME_TO_99:-1}" != 0 ]; then
  "$py" tools/time_to_99.py --device "$device" --max-seconds "${MAX_SECONDS:-300}" --out "$out/time-to-99-$device.json" | tee -a "$out/bench.txt"
fi

extra=()
if [ -n "${EPOCHS:-}" ]; then extra=("train.epochs=$EPOCHS"); fi
# shellcheck disable=SC2206  # more section.key=value overrides for every trained config, split on spaces
if [ -n "${TRAIN_ARGS:-}" ]; then extra+=($TRAIN_ARGS); fi
echo "{}" > "$out/summaries.json"
for cfg in ${TRAIN_CONFIGS:-fast cnn sigmoid}; do
  echo "== $cfg" >> "$out/train.log"
  "$py" -m nnhw.train "configs/$cfg.toml" "run.device=$device" "run.log_dir=$logs" "${extra[@]}" 2>&1 | tee "$logs/train-$cfg.log" >> "$out/train.log"
  run_dir=$(tail -n 1 "$logs/train-$cfg.log")
  "$py" -c "
import json, sys
out, cfg, run_dir = sys.argv[1:]
s = json.load(open(run_dir + '/summary.json'))
every = json.load(open(out + '/summaries.json'))
every[cfg] = s
json.dump(every, open(out + '/summaries.json', 'w'), indent=1)
firsts = ', '.join(f\"{mark} at {f['train_seconds']:.2f} s (epoch {f['epoch']:.2f})\" if f else f'{mark} never' for mark, f in s['time_to_accuracy'].items())
print(f\"{s['name']}: {s['passes']:g} passes, {s['train_seconds'] / s['passes']:.3f} s of training per pass, \"
      f\"final test error {s['final']['test_error']:.2f}%; test accuracy {firsts}\")
" "$out" "$cfg" "$run_dir" | tee -a "$out/train.log"
done
