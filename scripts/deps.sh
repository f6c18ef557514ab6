#!/usr/bin/env bash
# Installs what hutch's build, tests and demo need (Debian/Ubuntu, apt-get).
# Idempotent: installs only what is missing, runs `apt-get update` at most
# once. Never starts or enables the host's sshd: services are held back with
# a temporary policy-rc.d, and a freshly installed openssh-server is marked
# with /etc/ssh/sshd_not_to_be_run (the tests run their own private sshd).
set -euo pipefail

PKGS=(
  build-essential pkg-config libpam0g-dev libpam-modules
  openssh-server openssh-client openssh-sftp-server rsync
  mmdebstrap debootstrap ca-certificates busybox-static
  iproute2 nftables libnftables-dev util-linux procps passwd login coreutils python3
  # make deb, and the VM tier (tests/vm): installing qemu-system-x86 replaces
  # bookworm-backports' qemu-utils with bookworm's.
  debhelper dpkg-dev qemu-system-x86 qemu-utils e2fsprogs xz-utils
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "deps.sh: missing packages: ${missing[*]}; run as root (sudo make test)" >&2
    exit 1
  fi
  echo "deps.sh: installing ${missing[*]}"
  fresh_sshd=0
  if [[ " ${missing[*]} " == *" openssh-server "* ]]; then
    fresh_sshd=1
    mkdir -p /etc/ssh
    if [[ ! -e /etc/ssh/sshd_not_to_be_run ]]; then
      echo "deps.sh: creating /etc/ssh/sshd_not_to_be_run so the host's sshd stays off (remove it to run one)"
      : >/etc/ssh/sshd_not_to_be_run
    fi
  fi
  own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    own_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if ((fresh_sshd)) && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
  fi
  if ((own_policy)); then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
fi

if ! command -v cargo >/dev/null; then
  echo "deps.sh: cargo not found; install a Rust toolchain >= 1.85 (https://rustup.rs)" >&2
  exit 1
fi
echo "deps.sh: all dependencies present"
