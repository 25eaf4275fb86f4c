#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian/Ubuntu machine and run it.
set -euo pipefail
cd "$(dirname "$0")/.."

# System tools the tests drive: a virtual X server and key sender (hotkey test),
# systemd-analyze (unit checks), libseccomp (the unit's seccomp filter, rebuilt
# by tests/unit_seccomp.py), ffmpeg, a private D-Bus session bus and
# desktop-file-validate (desktop tests), and what pip needs to build dbus-python
# for python-dbusmock (headers, pkg-config, a C compiler). The e2e test installs
# its own qemu bits.
need=()
command -v Xvfb >/dev/null || need+=(xvfb)
command -v xdotool >/dev/null || need+=(xdotool)
command -v systemd-analyze >/dev/null || need+=(systemd)
ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2 ' || need+=(libseccomp2)
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v dbus-daemon >/dev/null || need+=(dbus)
command -v desktop-file-validate >/dev/null || need+=(desktop-file-utils)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v cc >/dev/null || need+=(gcc libc6-dev)
pkg-config --exists dbus-1 2>/dev/null || need+=(libdbus-1-dev)
pkg-config --exists glib-2.0 2>/dev/null || need+=(libglib2.0-dev)
"${PYTHON:-python3}" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null \
  || need+=(python3-dev)
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
