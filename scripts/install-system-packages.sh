#!/bin/sh
# Installs the Debian packages listed in scripts/system-packages.txt, and with
# --dev those in scripts/system-packages-dev.txt too (what only the tests need).
# Shared by the Docker image and the Debian 13 rootfs, so both are built the same way.
#   usage: install-system-packages.sh [--dev]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
lists="$here/system-packages.txt"
[ "${1:-}" = "--dev" ] && lists="$lists $here/system-packages-dev.txt"
# shellcheck disable=SC2086
packages=$(cat $lists | grep -v '^#' | tr '\n' ' ')
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $packages >/dev/null
apt-get clean
rm -rf /var/lib/apt/lists/*
