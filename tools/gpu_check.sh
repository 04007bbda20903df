#!/usr/bin/env bash
# Issue 7's GPU numbers in one short run: tools/bench.py on CUDA (softmax, sigmoid, relu, cnn) and
# full trainings of the sigmoid and cnn configs, whose summaries give the training seconds per epoch
# and, for the CNN, the time to 99% test accuracy (test_accuracy_99).
#
#   OUT=gpu-check bash tools/gpu_check.sh          # from the repo root, on a machine with a GPU
#   DEVICE=cpu EPOCHS=0.05 OUT=/tmp/g bash tools/gpu_check.sh   # the same steps on a CPU, to check the script
#
# BENCH_CONFIGS (default "softmax sigmoid relu cnn") picks the benchmarked configs; PYTHON the interpreter.
#
# Everything lands flat in $OUT (at most 8 files): device.txt, bench.txt, bench-<device>.json,
# train-<config>.log and summary-<config>.json.
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

extra=()
if [ -n "${EPOCHS:-}" ]; then extra=("train.epochs=$EPOCHS"); fi
logs=$(mktemp -d)
for cfg in sigmoid cnn; do
  "$py" -m nnhw.train "configs/$cfg.toml" "run.device=$device" "run.log_dir=$logs" "${extra[@]}" > "$out/train-$cfg.log" 2>&1
  run_dir=$(tail -n 1 "$out/train-$cfg.log")
  cp "$run_dir/summary.json" "$out/summary-$cfg.json"
  "$py" -c "
import json, sys
s = json.load(open(sys.argv[1]))
first = s['test_accuracy_99']
print(f\"{s['name']}: {s['passes']:g} passes, {s['train_seconds'] / s['passes']:.3f} s of training per pass, \"
      f\"lowest test error {s['lowest_test_error']:.2f}%, 99% test accuracy: \"
      + (f\"epoch {first['epoch']:.2f} after {first['train_seconds']:.1f} s\" if first else 'not reached'))
" "$out/summary-$cfg.json"
done
