#!/usr/bin/env bash
# Installs what this machine needs (Debian/Ubuntu, as root) and the project's virtualenv. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "bootstrap: run as root (the lab needs namespaces, mounts and cgroups)" >&2
  exit 1
fi
# openssh-server only for `sshd -t` of rendered drop-ins in the tests; its service is not started here.
packages=(debootstrap nftables iproute2 openssh-client openssh-server openssl zstd util-linux mount procps python3 python3-venv ca-certificates)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # No package's service may start on this machine (a host sshd would listen on port 22).
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d && made_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import hardened_cluster' 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ]; then
  python3 -m venv .venv
  if ! .venv/bin/pip install -q --disable-pip-version-check -e '.[test]' > .venv/install.log 2>&1; then
    cat .venv/install.log >&2
    exit 1
  fi
  touch .venv/.installed
fi
