#!/usr/bin/env bash
# Builds the Python 3.11 base image from Debian packages, for machines that cannot reach a container
# registry: mmdebstrap makes a minimal bookworm root filesystem with python3, venv, pip, CA certificates,
# git and an ssh client (the promote step runs git, over https or ssh), and `podman import` turns it into
# an image. The Makefile names the image after this file's hash, so a change here builds a new one.
#
#   containers/build-base.sh [IMAGE] [WORKDIR]
#
# Idempotent: when IMAGE already exists it is reused (repeated CI runs on one machine skip the ~1 minute
# bootstrap); nothing depends on it existing beforehand. CONTAINERS_CONF should point at
# containers/containers.conf (the Makefile does that).
set -euo pipefail

image="${1:-localhost/refinery-base:bookworm}"
workdir="${2:-build/base}"
suite=bookworm
packages=python3,python3-venv,python3-pip,ca-certificates,git,openssh-client

if podman image exists "$image"; then
    echo "base image $image exists; reusing it (podman rmi $image to rebuild)"
    exit 0
fi

mkdir -p "$workdir"
rootfs="$workdir/rootfs.tar"
trap 'rm -f "$rootfs"' EXIT

start=$SECONDS
# minbase: Essential packages and apt only; recommends are not installed, so no compilers come in with
# python3-pip. Documentation, man pages and translations are left out (copyright files are kept).
mmdebstrap --variant=minbase --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    "$suite" "$rootfs"

podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/usr/bin/python3"]' \
    --message "mmdebstrap --variant=minbase --include=$packages $suite" \
    "$rootfs" "$image"

echo "built $image in $((SECONDS - start)) s"
