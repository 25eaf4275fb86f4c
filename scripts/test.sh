#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian/Ubuntu machine and run it.
set -euo pipefail
cd "$(dirname "$0")/.."

# System tools the tests drive: a virtual X server and key sender (hotkey test),
# systemd-analyze (unit checks), libseccomp (the unit's seccomp filter, rebuilt
# by tests/unit_seccomp.py), ffmpeg. The e2e test installs its own qemu bits.
need=()
command -v Xvfb >/dev/null || need+=(xvfb)
command -v xdotool >/dev/null || need+=(xdotool)
command -v systemd-analyze >/dev/null || need+=(systemd)
ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2 ' || need+=(libseccomp2)
command -v ffmpeg >/dev/null || need+=(ffmpeg)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "== missing ${need[*]}: install them (sudo apt-get install ${need[*]}); tests that need them will skip"
  fi
fi

bash scripts/install.sh --dev
echo "== ruff"
.venv/bin/ruff check .
echo "== pytest"
exec .venv/bin/python -m pytest -ra "$@"
