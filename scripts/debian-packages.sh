#!/usr/bin/env bash
# Installs the Debian packages the test suite needs (listed one per line in requirements/debian/*.txt),
# with a clear message; does nothing when they are all there. Run by `make test` and `.ci/run`.
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob
lists=(requirements/debian/*.txt)
[ ${#lists[@]} -eq 0 ] && exit 0
wanted=$(cat "${lists[@]}" | sed 's/#.*//' | tr -s ' \n' '\n' | sed '/^$/d' | sort -u)
[ -z "$wanted" ] && exit 0
missing=()
for pkg in $wanted; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "switchboard: installing Debian packages the tests need: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
  echo "switchboard: cannot install ${missing[*]}: run as root or install them with apt-get" >&2; exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "switchboard: installed ${missing[*]}"
