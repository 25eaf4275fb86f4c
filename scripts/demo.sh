#!/usr/bin/env bash
# Install PrivacyCam and run it on a built-in demo: the webcam if there is one,
# else a clip of real people from ../shared/data, else a synthetic scene.
# Output: the PrivacyCam virtual camera if v4l2loopback is loaded, else demo-output.mp4.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh

input=synthetic
for node in /sys/class/video4linux/video*; do
  [ -e "$node" ] || continue
  case "$(readlink -f "$node")" in */virtual/*) ;; *) input=/dev/$(basename "$node"); break ;; esac
done
if [ "$input" = synthetic ] && [ -d ../shared/data/davis2016_lucia/frames ]; then
  input=../shared/data/davis2016_lucia/frames
fi

if grep -qx PrivacyCam /sys/class/video4linux/video*/name 2>/dev/null; then
  echo "== PrivacyCam: $input -> virtual camera 'PrivacyCam' (Ctrl+C to stop)"
  exec .venv/bin/privacycam run --input "$input" --output vcam
fi
echo "== PrivacyCam: $input -> demo-output.mp4 (300 frames at most)"
.venv/bin/privacycam run --input "$input" --output demo-output.mp4 --frames 300
echo "== done: open demo-output.mp4 (e.g. xdg-open demo-output.mp4)"
