#!/bin/sh
# Installs the Debian packages listed in scripts/system-packages.txt.
# Shared by the Docker image and the Debian 13 rootfs, so both are built the same way.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
packages=$(grep -v '^#' "$here/system-packages.txt" | tr '\n' ' ')
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $packages >/dev/null
apt-get clean
rm -rf /var/lib/apt/lists/*
