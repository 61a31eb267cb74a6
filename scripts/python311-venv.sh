#!/bin/sh
# Makes DEST/venv, a venv with pip, from a Python 3.12 or 3.11: the host's where
# there is one; otherwise Debian 12's python3.11 packages are unpacked into
# DEST/python (they need only sonames that Debian 13 still ships), with no root
# and no chroot. For the side runtimes whose wheels the environment's Python
# (3.13, Debian 13) lacks: the serving runtime's TensorFlow, the weight
# converter's torch.
#   usage: python311-venv.sh DEST
set -eu
dest=${1:?usage: python311-venv.sh DEST}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest"

python=""
for candidate in python3.12 python3.11; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import venv' 2>/dev/null; then
        python=$(command -v "$candidate"); break
    fi
done
if [ -z "$python" ]; then
    mirror=$(grep -hoE 'https?://[^ ]+/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
             | grep -v security | head -n1)
    echo "deb ${mirror:-http://deb.debian.org/debian} bookworm main" >"$work/sources.list"
    mkdir -p "$work/lists/partial" "$work/archives/partial" "$work/cache"; : >"$work/status"
    apt_opts="-o Dir::Etc::SourceList=$work/sources.list -o Dir::Etc::SourceParts=/nonexistent
              -o Dir::State::Lists=$work/lists -o Dir::Cache=$work/cache
              -o Dir::Cache::Archives=$work/archives -o Dir::State::status=$work/status -o Debug::NoLocking=1 -o APT::Sandbox::User=root"
    # shellcheck disable=SC2086
    apt-get -qq $apt_opts update
    # shellcheck disable=SC2086
    (cd "$work" && apt-get -qq $apt_opts download \
        python3.11-minimal libpython3.11-minimal libpython3.11-stdlib python3-pip-whl)
    for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$dest/python"; done
    python="$dest/python/usr/bin/python3.11"
fi

"$python" -m venv --without-pip "$dest/venv"
# pip, bootstrapped from its own wheel: Debian's python3-pip-whl where Python came
# from Debian 12's packages, else the index (through whatever pip is at hand).
wheel=$(ls "$dest"/python/usr/share/python-wheels/pip-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
    "$python" -m pip download -q --no-deps --dest "$work" pip 2>/dev/null \
        || python3 -m pip download -q --no-deps --dest "$work" pip
    wheel=$(ls "$work"/pip-*.whl)
fi
"$dest/venv/bin/python" "$wheel/pip" install -q --disable-pip-version-check "$wheel"
