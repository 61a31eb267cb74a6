#!/bin/sh
# Re-resolves requirements.in and requirements-dev.in from scratch in a
# throwaway venv and writes every resolved version to requirements.lock.
# Run it through `make lock`, so it uses the environment's own Python and the
# lock matches the platform the environments are built on.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --upgrade pip
"$tmp/venv/bin/python" -m pip install -q -r "$root/requirements.in" -r "$root/requirements-dev.in"
"$tmp/venv/bin/python" -m pip check
{
    echo "# Exact versions of every Python package in Thaw's environment ($("$tmp/venv/bin/python" -V), Debian 13),"
    echo "# used as a constraints file by scripts/install-python-deps.sh."
    echo "# Regenerate with \`make lock\` after changing requirements.in or requirements-dev.in."
    "$tmp/venv/bin/python" -m pip freeze --exclude-editable
} >"$root/requirements.lock"
echo "wrote $root/requirements.lock"
