#!/bin/sh
# podman as it runs on these machines: the runc runtime (crun refuses: "cgroups in
# hybrid mode not supported"), the cgroupfs manager (no systemd) and no default
# ulimits (scripts/containers.conf). Arguments are podman's.
#   usage: scripts/podman.sh build ... | run ... | system service ...
here=$(cd "$(dirname "$0")" && pwd)
command -v podman >/dev/null 2>&1 || {
    echo "podman is not installed: apt-get install podman runc (as root)" >&2; exit 127; }
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
exec podman --runtime runc --cgroup-manager cgroupfs "$@"
