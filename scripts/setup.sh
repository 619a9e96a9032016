#!/usr/bin/env bash
# Install what s3pvefs and its tests need on Debian 12 (as root), into ./.venv.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# Every program a test runs is here: a test whose tool is missing fails, it never skips.
APT_PACKAGES=(fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv
              zstd pigz lzop rsync tar qemu-utils curl fio faketime util-linux
              iproute2 iptables libnetfilter-queue-dev s3fs)
. scripts/apt.sh
ensure_apt_packages setup "${APT_PACKAGES[@]}"
[ -e /dev/fuse ] || { echo "setup: /dev/fuse is missing (modprobe fuse, or give the container the device)" >&2; exit 1; }

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.s3pvefs-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: pip install -e .[test]"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  touch "$stamp"
fi
