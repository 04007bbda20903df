#!/usr/bin/env bash
# The GPU numbers in one short run: tools/bench.py on CUDA (softmax, sigmoid, relu, cnn), its
# time-to-99% table (configs/fast.toml, the same recipe in built-ins, the pytorch/examples recipe), and
# full trainings of the sigmoid, cnn and fast configs, whose summaries give the training seconds per
# pass and the time to 98%, 99% and 99.5% test accuracy (time_to_accuracy).
#
#   OUT=gpu-check bash tools/gpu_check.sh          # from the repo root, on a machine with a GPU
#   DEVICE=cpu EPOCHS=0.05 OUT=/tmp/g bash tools/gpu_check.sh   # the same steps on a CPU, to check the script
#
# BENCH_CONFIGS (default "softmax sigmoid relu cnn") picks the benchmarked configs; TRAIN_CONFIGS
# (default "fast cnn sigmoid") the trained ones; TRAIN_ARGS adds overrides to their trainings (the
# test's "eval.max_points=1000"); TIME_TO_99=0 skips that table; PYTHON the interpreter.
#
# Everything lands flat in $OUT (at most 8 files): device.txt, bench.txt (both tables), bench-<device>.json,
# time-to-99-<device>.json, train.log and summary-<config>.json for each trained config.
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
# shellcheck disable=SC2086  # a list of config names
"$py" tools/bench.py --configs ${BENCH_CONFIGS:-softmax sigmoid relu cnn} --device "$device" --no-loader --out "$out/bench-$device.json" | tee "$out/bench.txt"

if [ "${TIME_TO_99:-1}" != 0 ]; then
  "$py" tools/bench.py --time-to-99 --device "$device" --max-seconds "${MAX_SECONDS:-300}" --out "$out/time-to-99-$device.json" | tee -a "$out/bench.txt"
fi

extra=()
if [ -n "${EPOCHS:-}" ]; then extra=("train.epochs=$EPOCHS"); fi
# shellcheck disable=SC2206  # more section.key=value overrides for every trained config, split on spaces
if [ -n "${TRAIN_ARGS:-}" ]; then extra+=($TRAIN_ARGS); fi
logs=$(mktemp -d)
for cfg in ${TRAIN_CONFIGS:-fast cnn sigmoid}; do
  "$py" -m nnhw.train "configs/$cfg.toml" "run.device=$device" "run.log_dir=$logs" "${extra[@]}" > "$logs/train-$cfg.log" 2>&1
  cat "$logs/train-$cfg.log" >> "$out/train.log"
  run_dir=$(tail -n 1 "$logs/train-$cfg.log")
  cp "$run_dir/summary.json" "$out/summary-$cfg.json"
  "$py" -c "
import json, sys
s = json.load(open(sys.argv[1]))
firsts = ', '.join(f\"{mark} at {f['train_seconds']:.2f} s (epoch {f['epoch']:.2f})\" if f else f'{mark} never' for mark, f in s['time_to_accuracy'].items())
print(f\"{s['name']}: {s['passes']:g} passes, {s['train_seconds'] / s['passes']:.3f} s of training per pass, \"
      f\"final test error {s['final']['test_error']:.2f}%; test accuracy {firsts}\")
" "$out/summary-$cfg.json"
done
