#!/usr/bin/env bash
# Make sure the Debian packages a make target needs are present.
# Usage: ensure-system.sh <command>=<debian-package> ...
# Installs what is missing when run as root with apt-get; otherwise prints the exact command and fails.
set -euo pipefail
missing=()
for pair in "$@"; do
  cmd="${pair%%=*}"; pkg="${pair#*=}"
  case "$cmd" in
    venv) python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=("$pkg") ;;
    font:*) fc-list 2>/dev/null | grep -qi "${cmd#font:}" || missing+=("$pkg") ;;  # e.g. font:WenQuanYi=fonts-wqy-microhei
    *) command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("$pkg") ;;
  esac
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "tiyi: missing system packages: ${missing[*]}" >&2
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "tiyi: installing them with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian mosquitto package starts a system broker; our tests start their own on free ports.
  exit 0
fi
echo "tiyi: please run:  sudo apt-get install ${missing[*]}" >&2
exit 1
