#!/usr/bin/env bash
# The one GPU check (tools/gpu_check.py): run from the repository root on a GPU machine, with the
# machine's own Python. Unpacks the CIFAR-10 JPEG copy (carried as .carry/cifar10-jpeg.tar.gz, or
# ../shared/data/cifar10-jpeg.tar.gz) and writes everything under results/<date>-<gpu>/.
#   bash tools/gpu_check.sh [extra gpu_check.py flags]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
gpu=$($PY -c "import torch; print(torch.cuda.get_device_name().split()[-1].lower() if torch.cuda.is_available() else 'cpu')")
out=${OUT_DIR:-results/$(date +%Y-%m-%d)-$gpu}
mkdir -p "$out"
archive=""
for a in .carry/cifar10-jpeg.tar.gz ../shared/data/cifar10-jpeg.tar.gz; do
  if [ -f "$a" ]; then archive=$a; break; fi
done
data_flag=()
if [ -n "$archive" ]; then
  data=${DATA_DIR:-/tmp/cifar10-jpeg}
  if [ ! -d "$data/train" ]; then
    mkdir -p "$data" && tar -xzf "$archive" -C "$data"
    # The archive holds one top folder; point at the folder that has train/ and test/.
  fi
  root=$(dirname "$(find "$data" -maxdepth 3 -type d -name train | head -1)")
  data_flag=(--data-dir "$root")
fi
export PYTHONUNBUFFERED=1
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee "$out/versions.log"
$PY tools/gpu_check.py --out "$out" "${data_flag[@]}" "$@" 2>&1 | tee "$out/gpu_check.log"
