#!/usr/bin/env bash
# Builds the Dockerfile with podman (scripts/podman.sh) on a machine that may
# reach no image registry: `make image`.
#   usage: scripts/build-image.sh                # tag thaw:latest (CPU)
#          GPU=true scripts/build-image.sh       # tag thaw-gpu:latest, tensorflow[and-cuda]
#          BACKBONE=false scripts/build-image.sh # without the converted EfficientNet-Lite0 (no torch stage)
#   THAW_IMAGE=NAME:TAG overrides the tag. Prints the tag on its last line.
# The Dockerfile's base, debian:trixie-slim, is pulled when a registry answers;
# else it is made here from Debian's packages (debootstrap --variant=minbase
# trixie) and imported under that name, so the Dockerfile stays an ordinary one.
# The build's RUN steps see the host's CA bundle and pip settings (mounted, not
# copied into the image): outbound HTTPS may pass a proxy only that bundle
# trusts, and pip may be configured with local indexes (torch's CPU wheel).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
podman=("$root/scripts/podman.sh")
GPU=${GPU:-false}
BACKBONE=${BACKBONE:-true}
default_tag=thaw:latest; [ "$GPU" = true ] && default_tag=thaw-gpu:latest
tag=${THAW_IMAGE:-$default_tag}
base=docker.io/library/debian:trixie-slim
log() { echo "build-image: $*" >&2; }
die() { echo "build-image: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "podman here runs as root (runc, cgroupfs); run as root"
if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
    log "installing podman and runc"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc >/dev/null; } \
        || die "needs podman and runc and could not install them with apt-get"
fi

debian_mirror() {
    if [ -n "${THAW_DEBIAN_MIRROR:-}" ]; then echo "$THAW_DEBIAN_MIRROR"; return; fi
    local uri
    uri=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
          | grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -n1 | tr -d ' ')
    echo "${uri:-http://deb.debian.org/debian}"
}

ensure_base() {
    "${podman[@]}" image exists "$base" && return 0
    log "pulling $base"
    if timeout 60 "${podman[@]}" pull -q "$base" >/dev/null 2>&1; then return 0; fi
    command -v debootstrap >/dev/null || {
        log "installing debootstrap"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    } || die "no registry has $base and debootstrap could not be installed"
    local rootfs mirror
    rootfs=$(mktemp -d /var/tmp/thaw-base.XXXXXX)
    trap 'rm -rf "$rootfs"' RETURN
    mirror=$(debian_mirror)
    log "no registry answered; making $base with debootstrap (minbase, trixie, $mirror)"
    debootstrap --variant=minbase trixie "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
        || die "debootstrap failed (is the Debian registry reachable?); see $rootfs.log"
    rm -f "$rootfs.log"
    # As the slim image: no apt caches, docs or man pages.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
           "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
    tar -C "$rootfs" -c . | "${podman[@]}" import --change 'CMD ["bash"]' - "$base" >/dev/null
}

# The host's pip settings for the build: its index, local indexes and
# constraints (each mounted at its own path), and the host's CA bundle.
pip_mounts() {
    local conf=$1 key value p
    printf '[global]\ncert = /run/thaw-host/ca.crt\n' >"$conf"
    mounts+=(-v /etc/ssl/certs/ca-certificates.crt:/run/thaw-host/ca.crt:ro -v "$conf:/etc/pip.conf:ro")
    command -v pip3 >/dev/null || return 0
    declare -A seen=()
    while IFS='=' read -r key value; do
        key=${key#*.}; value=${value#\'}; value=${value%\'}
        case "$key" in index-url|extra-index-url|find-links|constraint) ;; *) continue ;; esac
        [ -n "${seen[$key]:-}" ] && continue
        seen[$key]=1
        echo "$key = $value" >>"$conf"
        for p in $value; do
            p=${p#file://}; p=${p%/}; p=${p%/simple}
            [ -e "$p" ] && [ "${p#/}" != "$p" ] && mounts+=(-v "$p:$p:ro")
        done
    done < <(pip3 config list 2>/dev/null)
}

ensure_base
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mounts=()
pip_mounts "$work/pip.conf"
log "building $tag (GPU=$GPU BACKBONE=$BACKBONE)"
started=$(date +%s)
"${podman[@]}" build --network host "${mounts[@]}" \
    --build-arg GPU="$GPU" --build-arg BACKBONE="$BACKBONE" \
    -t "$tag" -f "$root/Dockerfile" "$root" >&2
log "built $tag in $(( $(date +%s) - started )) s; $("${podman[@]}" image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.2f GB", $1/1e9}')"
echo "$tag"
