#!/usr/bin/env bash
# Idempotent set-up: a venv in .venv with the requirements of one profile.
#   scripts/setup.sh service   -> what the service needs (no torch)
#   scripts/setup.sh dev       -> training, export, tests, linters, and Debian's chromium for browser tests
# Re-running is cheap: a stamp keyed on the requirement files skips pip when nothing changed.
set -euo pipefail
profile="${1:-dev}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$profile"
digest="$(cat requirements/*.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r "requirements/$profile.txt"
  echo "$digest" > "$stamp"
fi

if [ "$profile" = "dev" ] && ! command -v chromium >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" = "0" ] || sudo="sudo"
  echo "installing Debian's chromium for the browser tests" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
