#!/usr/bin/env bash
# Build the Switchboard image with podman on a machine with no container registry (Debian 12, root).
#
#   deploy/image/build.sh [--engine] [--tag NAME:TAG] [--base-image NAME:TAG]
#
# 1. installs podman, runc and mmdebstrap when missing (requirements/debian/containers.txt);
# 2. builds the base image localhost/debian-bookworm-python:base from Debian packages when it is missing
#    and no other --base-image was given (about 30 s, once per machine);
# 3. builds the Containerfile at the repository root (a few seconds when cached).
#
# Prints the image name on the last line. With --engine the offline speech engine is included and the
# default tag gets an "-engine" suffix. Podman's settings come from a containers.conf this script writes
# under var/ (runc, cgroupfs, ulimits within the machine's hard limits): /etc/containers is not touched.
set -euo pipefail
cd "$(dirname "$0")/../.."

BASE_DEFAULT=localhost/debian-bookworm-python:base
engine=0
base_image=$BASE_DEFAULT
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
tag=""
while [ $# -gt 0 ]; do
  case "$1" in
    --engine) engine=1 ;;
    --tag) tag=$2; shift ;;
    --base-image) base_image=$2; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$tag" ] || tag="localhost/switchboard:${version}$([ "$engine" = 1 ] && echo -engine || true)"

missing=()
for pkg in $(sed 's/#.*//' requirements/debian/containers.txt); do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "build.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

conf_dir=var/containers
mkdir -p "$conf_dir"
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
nproc=$(ulimit -Hu)
{ [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
cat > "$conf_dir/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
export CONTAINERS_CONF="$PWD/$conf_dir/containers.conf"

if [ "$base_image" = "$BASE_DEFAULT" ] && ! podman image exists "$base_image"; then
  echo "build.sh: building $base_image from Debian packages (once per machine)" >&2
  sources=/etc/apt/sources.list.d/debian.sources
  [ -f "$sources" ] || sources=/etc/apt/sources.list
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$work/base.tar" "$sources"
  podman import --quiet --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' "$work/base.tar" "$base_image" >/dev/null
fi

# Everything the image is made from; an image already built from exactly these inputs is kept as it is
# (podman's layer cache would rebuild nothing either, but still spends ~20 s checking a 500 MB venv).
inputs=$( { printf '%s\n' "$engine" "$(podman image inspect --format '{{.Id}}' "$base_image")";
  find Containerfile .containerignore pyproject.toml README.md LICENSE requirements src -type f \
    ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum; } | sha256sum | cut -c1-64)
if [ "$(podman image inspect --format '{{ index .Labels "io.switchboard.inputs" }}' "$tag" 2>/dev/null)" = "$inputs" ]; then
  echo "build.sh: $tag is up to date" >&2
  echo "$tag"
  exit 0
fi

secret=()
# pip inside the build reaches PyPI through this machine's CA bundle (it may hold a local CA).
[ -s /etc/ssl/certs/ca-certificates.crt ] && secret=(--secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt)
podman build --quiet --network host --runtime runc --layers \
  --build-arg BASE_IMAGE="$base_image" --build-arg ENGINE="$engine" "${secret[@]}" \
  --label io.switchboard.inputs="$inputs" \
  --tag "$tag" --file Containerfile . >/dev/null
echo "$tag"
