#!/usr/bin/env bash
# Installs what hutch's build, tests and demo need (Debian/Ubuntu, apt-get),
# and then proves it: every need is a command, a file or a pkg-config module
# that is checked after the install, not a package name taken on trust.
#
# Why checks and not package names: a package that is installed can still be
# removed by the install itself. On a Debian 12 machine whose qemu-utils comes
# from bookworm-backports, `apt-get install qemu-system-x86` (bookworm)
# removes qemu-utils as a conflict, and qemu-img is gone. So:
#   1. every check that fails names its package; those packages are installed
#      in one apt-get call (after a simulation that reports every package the
#      call would remove);
#   2. the checks run again; the packages of those still failing are
#      installed again, alone (apt then takes the candidate version, which
#      fits what step 1 installed);
#   3. anything still failing is an error naming the check, the package and
#      what apt removed.
#
# Idempotent: with everything present it changes nothing and runs no apt-get.
# Never starts or enables the host's sshd: services are held back with a
# temporary policy-rc.d, and a freshly installed openssh-server is marked with
# /etc/ssh/sshd_not_to_be_run (the tests run their own private sshd).
#
# Environment: DEPS_SKIP_CARGO=1 skips the Rust toolchain check (the chroot
# test of this script has no toolchain); DEPS_LIST=1 prints the needs and
# exits.
set -euo pipefail

# package | check, one need a line. A check is cmd:NAME (on PATH, or in
# /usr/sbin or /sbin), file:GLOB (at least one match) or pc:MODULE
# (pkg-config --exists).
NEEDS='
build-essential     | cmd:cc
build-essential     | cmd:make
pkg-config          | cmd:pkg-config
libpam0g-dev        | file:/usr/include/security/pam_modules.h
libpam-modules      | file:/lib/*/security/pam_unix.so
openssh-server      | cmd:sshd
openssh-client      | cmd:ssh
openssh-client      | cmd:ssh-keygen
openssh-sftp-server | file:/usr/lib/openssh/sftp-server
rsync               | cmd:rsync
mmdebstrap          | cmd:mmdebstrap
debootstrap         | cmd:debootstrap
ca-certificates     | file:/etc/ssl/certs/ca-certificates.crt
busybox-static      | cmd:busybox
iproute2            | cmd:ip
nftables            | cmd:nft
libnftables-dev     | pc:libnftables
util-linux          | cmd:unshare
util-linux          | cmd:nsenter
util-linux          | cmd:flock
util-linux          | cmd:su
procps              | cmd:pgrep
passwd              | cmd:useradd
login               | cmd:login
sudo                | cmd:sudo
cron                | cmd:cron
cron                | cmd:crontab
at                  | cmd:atd
at                  | cmd:at
coreutils           | cmd:timeout
python3             | cmd:python3
debhelper           | cmd:dh
dpkg-dev            | cmd:dpkg-buildpackage
qemu-system-x86     | cmd:qemu-system-x86_64
qemu-utils          | cmd:qemu-img
e2fsprogs           | cmd:mkfs.ext4
xz-utils            | cmd:xz
'

say() { echo "deps.sh: $*"; }
die() { echo "deps.sh: $*" >&2; exit 1; }

check() {
    local kind=${1%%:*} what=${1#*:}
    case $kind in
        cmd) command -v "$what" >/dev/null 2>&1 || [[ -x /usr/sbin/$what || -x /sbin/$what ]] ;;
        file) compgen -G "$what" >/dev/null ;;
        pc) command -v pkg-config >/dev/null 2>&1 && pkg-config --exists "$what" ;;
        *) die "bad check $1 in NEEDS" ;;
    esac
}

# Prints "package check" for every need that is not met.
unmet() {
    local pkg chk
    while IFS='|' read -r pkg chk; do
        pkg=${pkg//[[:space:]]/}
        chk=${chk//[[:space:]]/}
        [[ -n $pkg ]] || continue
        check "$chk" || echo "$pkg $chk"
    done <<<"$NEEDS"
}

if [[ ${DEPS_LIST:-0} == 1 ]]; then
    sed '/^$/d; s/ *| */ /' <<<"$NEEDS"
    exit 0
fi

packages_of() { awk '{print $1}' | sort -u | xargs; }

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "$@"
}

removed=""
missing=$(unmet | packages_of)
if [[ -n ${missing// /} ]]; then
    [[ $(id -u) -eq 0 ]] || die "missing: $(unmet | tr '\n' ';') run as root (sudo make test)"
    # shellcheck disable=SC2086
    say "installing $missing"
    fresh_sshd=0
    if ! check cmd:sshd; then
        fresh_sshd=1
        mkdir -p /etc/ssh
        if [[ ! -e /etc/ssh/sshd_not_to_be_run ]]; then
            say "creating /etc/ssh/sshd_not_to_be_run so the host's sshd stays off (remove it to run one)"
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
    apt-get update -qq
    # What the install would remove, said before it happens.
    # shellcheck disable=SC2086
    removed=$(apt-get install -s --no-install-recommends $missing 2>/dev/null | sed -n 's/^Remv \([^ ]*\) \[\(.*\)\].*/\1 \2/p' || true)
    if [[ -n $removed ]]; then
        say "installing $missing makes apt remove: $(tr '\n' ';' <<<"$removed") (a conflict; what we need of them is checked and reinstalled after)"
    fi
    # shellcheck disable=SC2086
    apt_install $missing
    again=$(unmet | packages_of)
    if [[ -n ${again// /} ]]; then
        say "still missing after the install: $(unmet | tr '\n' ';') installing $again again"
        # shellcheck disable=SC2086
        apt_install $again
    fi
    if ((fresh_sshd)) && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
        systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
    fi
    if ((own_policy)); then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
fi

left=$(unmet)
if [[ -n $left ]]; then
    while read -r pkg chk; do
        echo "deps.sh: $chk is still missing: package $pkg did not provide it" >&2
    done <<<"$left"
    [[ -z $removed ]] || echo "deps.sh: apt removed, as a conflict: $(tr '\n' ';' <<<"$removed")" >&2
    die "cannot install what the build and tests need; see above"
fi

if [[ ${DEPS_SKIP_CARGO:-0} != 1 ]] && ! command -v cargo >/dev/null; then
    die "cargo not found; install a Rust toolchain >= 1.85 (https://rustup.rs)"
fi
say "all dependencies present ($(grep -c '|' <<<"$NEEDS") checks)"
