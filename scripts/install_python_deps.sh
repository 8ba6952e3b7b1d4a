#!/usr/bin/env bash
# Installs cardiotwin and its Python dependencies into the venv given as $1.
# torch's CUDA wheels from PyPI are several GB; when the disk fills up (pip's wheel cache and its
# unpack directory on top of the venv), the install is retried once without pip's cache and with the
# unpack directory beside the venv, after freeing pip's cache. The disk's free space is printed either way.
set -euo pipefail
py="$1/bin/python"
show_space() { echo "free disk space:"; df -h "$1" "${TMPDIR:-/tmp}" "$HOME" 2>/dev/null | sort -u || true; }
"$py" -m pip install -q --upgrade pip
log="$1/pip-install.log"
if "$py" -m pip install -q -e '.[dev]' 2>"$log"; then cat "$log" >&2; exit 0; fi
cat "$log" >&2
if ! grep -q 'No space left on device' "$log"; then exit 1; fi
echo "pip ran out of disk space; retrying without pip's cache" >&2
show_space "$1" >&2
"$py" -m pip cache purge >/dev/null 2>&1 || true
tmp="$(cd "$1" && pwd)/pip-tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
if ! TMPDIR="$tmp" "$py" -m pip install -q --no-cache-dir -e '.[dev]'; then
  show_space "$1" >&2
  echo "error: installing cardiotwin's Python dependencies failed (see above); torch's CUDA wheels need about 8 GB free" >&2
  exit 1
fi
