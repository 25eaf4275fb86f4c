#!/usr/bin/env bash
# Install PrivacyCam into ./.venv (Python >= 3.10) with its MediaPipe models.
#   bash scripts/install.sh            the product
#   bash scripts/install.sh --dev      plus the torch extra and the test tools
# Which torch build --dev installs (README, "Torch backends"):
#   PRIVACYCAM_TORCH=auto   (default) the CPU build, unless an NVIDIA GPU is present
#   PRIVACYCAM_TORCH=cpu    the CPU build, from PRIVACYCAM_TORCH_CPU_INDEX (PyTorch's CPU wheel index)
#   PRIVACYCAM_TORCH=cuda   PyPI's default build, with CUDA (about 5 GB more in .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
dev=0; [ "${1:-}" = "--dev" ] && dev=1
# pip's own warnings about index folders this machine does not have: noise.
quiet() { grep -v -e 'ignored: it is neither a file nor a directory' || true; }

has_nvidia_gpu() { [ -e /proc/driver/nvidia/version ] || nvidia-smi -L >/dev/null 2>&1; }

# torch/torchvision: the versions that ship as CPU-usable wheels for this
# platform; a bare `torch` may pull a multi-GB build.
install_torch() {
  local variant=${PRIVACYCAM_TORCH:-auto}
  local cpu_index=${PRIVACYCAM_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
  local torch torchvision
  case "$(uname -m)" in
    x86_64)  torch=2.14.1; torchvision=0.29.1 ;;
    aarch64) torch=2.9.1; torchvision=0.24.1 ;;
    *)       torch=""; torchvision="" ;;
  esac
  case "$variant" in
    auto) if has_nvidia_gpu; then variant=cuda; else variant=cpu; fi ;;
    cpu|cuda) ;;
    *) echo "PRIVACYCAM_TORCH=$variant is not one of auto, cpu, cuda" >&2; exit 2 ;;
  esac
  if [ -z "$torch" ]; then
    echo "== installing torch extra (torch torchvision, newest for $(uname -m))"
    .venv/bin/pip install -q torch torchvision 2> >(quiet >&2)
    return
  fi
  if [ "$variant" = cpu ] && [ "$(uname -m)" = aarch64 ]; then
    variant=cuda  # PyPI's aarch64 wheels are the CPU build already
  fi
  if [ "$variant" = cpu ]; then
    echo "== installing torch extra, CPU build (torch==$torch+cpu torchvision==$torchvision+cpu from $cpu_index)"
    # The +cpu pins make pip replace a CUDA build left in .venv by an earlier install.
    local pip_errors
    pip_errors=$(mktemp)
    if .venv/bin/pip install -q --retries 1 --index-url "$cpu_index" \
        "torch==$torch+cpu" "torchvision==$torchvision+cpu" 2>"$pip_errors"; then
      rm -f "$pip_errors"
      return
    fi
    if [ "${PRIVACYCAM_TORCH:-auto}" = cpu ]; then
      quiet <"$pip_errors" >&2; rm -f "$pip_errors"
      echo "== the CPU build of torch could not be installed from $cpu_index: point PRIVACYCAM_TORCH_CPU_INDEX at a reachable copy of that index, or use PRIVACYCAM_TORCH=cuda" >&2
      exit 1
    fi
    rm -f "$pip_errors"  # pip's words for an index out of reach: a retry warning and a "conflict"
    # PyPI has no CPU build of torch for x86_64, and its torchvision needs the
    # CUDA libraries, so where that index is out of reach this is what works.
    echo "== $cpu_index is out of reach: installing PyPI's torch instead, a CUDA build (about 5 GB more in .venv); set PRIVACYCAM_TORCH_CPU_INDEX to a reachable copy of the CPU index to avoid that"
  fi
  echo "== installing torch extra, PyPI build with CUDA (torch==$torch torchvision==$torchvision) - large, takes a few minutes"
  .venv/bin/pip install -q "torch==$torch" "torchvision==$torchvision" 2> >(quiet >&2)
}

# Where the `privacycam` command is, and how to have it on PATH: said, never done behind the user's back.
say_where_the_command_is() {
  local command_path here
  command_path="$PWD/.venv/bin/privacycam"
  here=$PWD
  if [ "$(command -v privacycam || true)" = "$command_path" ]; then
    echo "== done: privacycam is $command_path (on your PATH)"
    return
  fi
  echo "== done: the command is $command_path, which is not on your PATH."
  echo "   Run it as .venv/bin/privacycam, or put it on PATH (the systemd unit expects ~/.local/bin/privacycam), either:"
  echo "     mkdir -p ~/.local/bin && ln -s $command_path ~/.local/bin/privacycam"
  echo "     pipx install $here      # a venv of its own, its command in ~/.local/bin"
  case ":$PATH:" in
    *":$HOME/.local/bin:"*) ;;
    *) echo "   ~/.local/bin is not on your PATH either: add it, e.g. echo 'export PATH=\"\$HOME/.local/bin:\$PATH\"' >> ~/.bashrc" ;;
  esac
}

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi

if [ "$dev" = 1 ]; then
  install_torch
  echo "== installing privacycam[torch,test]"
  .venv/bin/pip install -q -e '.[torch,test]' 2> >(quiet >&2)
else
  echo "== installing privacycam"
  .venv/bin/pip install -q -e . 2> >(quiet >&2)
fi

echo "== installing the MediaPipe selfie-segmentation models"
.venv/bin/privacycam models install
say_where_the_command_is
