#!/usr/bin/env bash
# Installs everything ViT-CIFAR needs into a virtual environment (.venv by default).
# Idempotent: running it again only checks that the packages are there.
#   bash setup.sh            # creates/updates .venv
#   VENV=/path bash setup.sh # somewhere else
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -r requirements.txt
"$VENV/bin/python" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())"
echo "ready: activate with 'source $VENV/bin/activate'"
