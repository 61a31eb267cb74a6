#!/bin/sh
# Creates a virtual environment at $1 and installs Thaw's Python dependencies,
# pinned by requirements.lock. Shared by the Docker image, the Debian 13 rootfs
# and plain venvs on hosts with glibc >= 2.39, so every environment is the same.
#   usage: install-python-deps.sh VENV_DIR [PYTHON] [--no-dev]
# --no-dev leaves out requirements-dev.in (the test tools): the Docker image.
set -eu
venv=${1:?usage: install-python-deps.sh VENV_DIR [PYTHON] [--no-dev]}
python=${2:-python3}
root=$(cd "$(dirname "$0")/.." && pwd)
dev="-r $root/requirements-dev.in"
[ "${3:-}" = "--no-dev" ] && dev=""
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# The lock is a constraints file: every package resolves to its pinned version,
# so the resolver has nothing to search and the install is reproducible.
# shellcheck disable=SC2086
"$venv/bin/python" -m pip install -q -r "$root/requirements.in" $dev -c "$root/requirements.lock"
"$venv/bin/python" -m pip check
