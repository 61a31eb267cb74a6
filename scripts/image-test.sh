#!/usr/bin/env bash
# Builds the image (`make image`, layer cache allowed) and runs the tests that
# need it (tests/e2e/test_container_run.py): the compiled spec with every task
# in a container of the image (kfp.local's DockerRunner over podman's
# Docker-compatible API), and `thaw run` in it as a pod runs it. `make image-test`.
#   usage: scripts/image-test.sh [PYTEST ARGS...]
#   BACKBONE=false leaves the torch conversion stage out of the build;
#   THAW_TIMINGS_JSON=FILE keeps the per-task times.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
started=$(date +%s)
tag=$("$root/scripts/build-image.sh" | tail -n1)
# As podman's API lists it, so kfp.local finds it there instead of trying to pull it.
case "$tag" in */*) ;; *) tag="localhost/$tag" ;; esac
built=$(date +%s)
sock=$(mktemp -u /tmp/thaw-podman.XXXXXX.sock)
"$root/scripts/podman.sh" system service --time=0 "unix://$sock" &
service=$!
trap 'kill "$service" 2>/dev/null; wait "$service" 2>/dev/null; rm -f "$sock"' EXIT
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.2; done
[ -S "$sock" ] || { echo "image-test: podman's API socket $sock did not appear" >&2; exit 1; }
status=0
# A basetemp of its own: the tasks' containers bind it, and pytest would prune shared ones.
basetemp=$(mktemp -d /tmp/thaw-image-test.XXXXXX)
DOCKER_HOST="unix://$sock" THAW_TEST_IMAGE="$tag" "$root/bin/thaw-env" python -m pytest -p no:cacheprovider \
    --basetemp "$basetemp" "$root/tests/e2e/test_container_run.py" -rs "$@" || status=$?
[ "$status" = 0 ] && rm -rf "$basetemp"
echo "image-test: image step $(( built - started )) s, container tests $(( $(date +%s) - built )) s" >&2
exit "$status"
