#!/usr/bin/env bash
# Builds the firmware (release) and runs it on QEMU's mps2-an386 (Cortex-M4F), returning the
# program's exit status: 0 only when the fine-tuning loss fell below its threshold.
#
# Needs the thumbv7em-none-eabihf target (rustup target add thumbv7em-none-eabihf) and
# qemu-system-arm (Debian: apt-get install qemu-system-arm). TIMEOUT (seconds, default 240)
# bounds the QEMU run; a run that exceeds it fails.
set -euo pipefail
cd "$(dirname "$0")"

TIMEOUT="${TIMEOUT:-240}"
target_dir="${CARGO_TARGET_DIR:-target}"
elf="$target_dir/thumbv7em-none-eabihf/release/dscl-firmware"

start=$(date +%s)
cargo build --release --target thumbv7em-none-eabihf
built=$(date +%s)
echo "build: $((built - start)) s"

# -semihosting-config target=native: the program's output goes to QEMU's stdout and its
# SYS_EXIT becomes QEMU's exit status. No serial, no monitor, no display.
status=0
timeout --foreground "$TIMEOUT" qemu-system-arm \
  -machine mps2-an386 -cpu cortex-m4 \
  -nographic -monitor none -serial none \
  -semihosting-config enable=on,target=native \
  -kernel "$elf" || status=$?
if [ "$status" = 124 ]; then
  echo "qemu: no exit within ${TIMEOUT} s" >&2
fi
echo "qemu: $(($(date +%s) - built)) s, exit status $status"
exit "$status"
