#!/usr/bin/env bash
# Install PrivacyCam into ./.venv (Python >= 3.10) with its MediaPipe models.
#   bash scripts/install.sh            the product
#   bash scripts/install.sh --dev      plus the torch extra and the test tools
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
dev=0; [ "${1:-}" = "--dev" ] && dev=1
# pip's own warnings about index folders this machine does not have: noise.
quiet() { grep -v -e 'ignored: it is neither a file nor a directory' || true; }

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi

if [ "$dev" = 1 ]; then
  # torch/torchvision: the versions that ship as CPU-usable wheels for this
  # platform (see README, "Torch backends"); a bare `torch` may pull a multi-GB build.
  case "$(uname -m)" in
    x86_64)  TORCH="torch==2.14.1 torchvision==0.29.1" ;;
    aarch64) TORCH="torch==2.9.1 torchvision==0.24.1" ;;
    *)       TORCH="torch torchvision" ;;
  esac
  echo "== installing torch extra ($TORCH) - large, takes a few minutes"
  .venv/bin/pip install -q $TORCH 2> >(quiet >&2)
  echo "== installing privacycam[torch,test]"
  .venv/bin/pip install -q -e '.[torch,test]' 2> >(quiet >&2)
else
  echo "== installing privacycam"
  .venv/bin/pip install -q -e . 2> >(quiet >&2)
fi

echo "== installing the MediaPipe selfie-segmentation models"
.venv/bin/privacycam models install
