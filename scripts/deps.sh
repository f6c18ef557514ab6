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
#      call would remove). Where backports is still in the sources, apt
#      refuses that call instead (qemu-utils Breaks bookworm's
#      qemu-system-common): each installed package apt names as breaking it
#      is then replaced, in the same call, by the version apt would take were
#      it not installed;
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
# The directory tier (slapd, nslcd + libnss-ldapd) must not change the host
# for other processes either: the tests run their own slapd and nslcd in a
# private mount namespace with its own /etc/nsswitch.conf. What the packages'
# maintainer scripts do, and what is done about it:
#   - slapd's postinst makes a default database (debconf defaults) and
#     `update-rc.d slapd defaults` + `invoke-rc.d slapd start`; nslcd's writes
#     /etc/nslcd.conf, adds the system user nslcd and starts nslcd the same
#     way. policy-rc.d refuses the starts; every boot service (init script or
#     systemd unit) a package freshly installed here ships is then disabled,
#     so nothing of theirs runs at the next boot either;
#   - libnss-ldapd's postinst edits /etc/nsswitch.conf only for the maps
#     debconf names (libnss-ldapd/nsswitch has no default: none,
#     noninteractive), libnss-ldapd installs no PAM module (libpam-ldapd is
#     not installed), and sssd is not used because libnss-sss and libpam-sss
#     (which sssd-common depends on) add `sss` to nsswitch.conf and run
#     pam-auth-update;
#   - /etc/nsswitch.conf and /etc/pam.d are compared with a copy taken before
#     the install; a change to a file that was there is undone and reported
#     (never expected); a new PAM service file that a package owns (cron's,
#     atd's, sudo's) is kept, since the tests read those stacks.
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
util-linux          | cmd:unshare
util-linux          | cmd:nsenter
util-linux          | cmd:flock
util-linux          | cmd:su
procps              | cmd:pgrep
passwd              | cmd:useradd
login               | cmd:login
sudo                | cmd:sudo
sudo                | file:/etc/pam.d/sudo
cron                | cmd:cron
cron                | cmd:crontab
cron                | file:/etc/pam.d/cron
at                  | cmd:atd
at                  | cmd:at
at                  | file:/etc/pam.d/atd
coreutils           | cmd:timeout
python3             | cmd:python3
debhelper           | cmd:dh
dpkg-dev            | cmd:dpkg-buildpackage
qemu-system-x86     | cmd:qemu-system-x86_64
qemu-utils          | cmd:qemu-img
e2fsprogs           | cmd:mkfs.ext4
xz-utils            | cmd:xz
slapd               | cmd:slapd
slapd               | cmd:slapadd
ldap-utils          | cmd:ldapsearch
nslcd               | cmd:nslcd
libnss-ldapd        | file:/lib/*-linux-gnu/libnss_ldap.so.2
squashfuse          | cmd:squashfuse
squashfs-tools      | cmd:mksquashfs
prometheus          | cmd:promtool
prometheus-node-exporter | cmd:prometheus-node-exporter
lintian             | cmd:lintian
xfsprogs            | cmd:mkfs.xfs
lxcfs               | cmd:lxcfs
lxc                 | cmd:lxc-execute
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

# The version of $1 apt would take were it not installed: the highest pin
# priority, then the highest version (apt-cache policy's version table).
default_version() {
    apt-cache policy "$1" | awk '/^ (\*\*\*|   ) [^ ]+ [0-9]+$/ {print $(NF), $(NF-1)}' |
        while read -r prio ver; do
            [[ $(dpkg-query -W -f='${Version}' "$1" 2>/dev/null) == "$ver" ]] && continue
            echo "$prio $ver"
        done | sort -k1,1nr | {
            best="" bp=""
            while read -r prio ver; do
                if [[ -z $best ]]; then best=$ver bp=$prio; continue; fi
                [[ $prio == "$bp" ]] || break
                dpkg --compare-versions "$ver" gt "$best" && best=$ver
            done
            echo "$best"
        }
}

packages_of() { awk '{print $1}' | sort -u | xargs; }

# Disables every boot service (init script, systemd unit) of the packages this
# run installed, so none of them starts at the next boot: before the install
# none existed. $1: the snapshot dir with packages.before.
disable_boot_services() {
    local pkg f name
    dpkg-query -W -f '${Package}\n' | sort | comm -13 "$1/packages.before" - | while read -r pkg; do
        dpkg -L "$pkg" 2>/dev/null | while read -r f; do
            case $f in
                /etc/init.d/*)
                    [[ -f $f ]] || continue
                    name=${f#/etc/init.d/}
                    say "disabling boot service $name (package $pkg; the tests start their own)"
                    update-rc.d "$name" disable >/dev/null 2>&1 || true ;;
                /lib/systemd/system/*.service | /lib/systemd/system/*.socket | /usr/lib/systemd/system/*.service | /usr/lib/systemd/system/*.socket)
                    [[ -f $f ]] && command -v systemctl >/dev/null || continue
                    name=${f##*/}
                    [[ $name == *@* ]] && continue
                    systemctl disable "$name" >/dev/null 2>&1 || true ;;
            esac
        done
    done
}

# Puts /etc/nsswitch.conf and /etc/pam.d back as they were before the install
# if a maintainer script changed them (never expected; see the header). A
# file that is new in /etc/pam.d and belongs to a package (a freshly
# installed cron's, at's, sudo's own service) is the package's and stays:
# the tests read those stacks, and no existing service changes by it.
restore_login_config() {
    local snap=$1
    if [[ -f $snap/nsswitch.conf ]] && ! cmp -s "$snap/nsswitch.conf" /etc/nsswitch.conf; then
        echo "deps.sh: the install changed /etc/nsswitch.conf; restoring it:" >&2
        diff "$snap/nsswitch.conf" /etc/nsswitch.conf >&2 || true
        cp -a "$snap/nsswitch.conf" /etc/nsswitch.conf
    fi
    [[ -d $snap/pam.d ]] || return 0
    local f name owner
    for f in /etc/pam.d/*; do
        name=${f##*/}
        if [[ -e $snap/pam.d/$name ]]; then
            cmp -s "$snap/pam.d/$name" "$f" && continue
            echo "deps.sh: the install changed $f; restoring it:" >&2
            diff "$snap/pam.d/$name" "$f" >&2 || true
            cp -a "$snap/pam.d/$name" "$f"
        elif owner=$(dpkg-query -S "$f" 2>/dev/null); then
            say "new PAM service $name from ${owner%%:*} (kept)"
        else
            echo "deps.sh: the install made $f, which no package owns; removing it" >&2
            rm -f "$f"
        fi
    done
    for f in "$snap"/pam.d/*; do
        name=${f##*/}
        [[ -e /etc/pam.d/$name ]] && continue
        echo "deps.sh: the install removed /etc/pam.d/$name; restoring it" >&2
        cp -a "$f" "/etc/pam.d/$name"
    done
}

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
    fi
    # What the install must leave as it was (see the header).
    snap=$(mktemp -d /tmp/deps-snap.XXXXXX)
    cp -a /etc/nsswitch.conf "$snap/" 2>/dev/null || true
    cp -a /etc/pam.d "$snap/pam.d" 2>/dev/null || true
    dpkg-query -W -f '${Package}\n' 2>/dev/null | sort >"$snap/packages.before" || true
    apt_err=$(mktemp)
    on_exit() {
        if ((own_policy)); then rm -f /usr/sbin/policy-rc.d; fi
        rm -rf "$apt_err" "$snap"
    }
    trap on_exit EXIT
    apt-get update -qq
    # What the install would remove, said before it happens.
    # shellcheck disable=SC2086
    removed=$(apt-get install -s --no-install-recommends $missing 2>/dev/null | sed -n 's/^Remv \([^ ]*\) \[\(.*\)\].*/\1 \2/p' || true)
    if [[ -n $removed ]]; then
        say "installing $missing makes apt remove: $(tr '\n' ';' <<<"$removed") (a conflict; what we need of them is checked and reinstalled after)"
    fi
    # shellcheck disable=SC2086
    if ! apt_install $missing; then
        # apt explains what breaks only when not quiet: ask it again.
        # shellcheck disable=SC2086
        apt-get install -s --no-install-recommends $missing >"$apt_err" 2>&1 || true
        # An installed package from another suite (backports) that Breaks
        # what the install brings: take the default suite's version of it in
        # the same transaction, as apt does by itself when that suite is not
        # in the sources.
        breakers=$(sed -n 's/^ \([^ ]*\) : Breaks: .*/\1/p' "$apt_err" | sort -u | xargs)
        [[ -n $breakers ]] || { cat "$apt_err" >&2; die "apt-get install $missing failed (above)"; }
        pins=()
        for b in $breakers; do
            v=$(default_version "$b")
            [[ -n $v ]] || die "apt-get install $missing failed: $b breaks it, and no other version of $b is available"
            say "$b $(dpkg-query -W -f='${Version}' "$b" 2>/dev/null) breaks the install; replacing it with $v"
            removed+="$b $(dpkg-query -W -f='${Version}' "$b" 2>/dev/null) (replaced by $v)"$'\n'
            pins+=("$b=$v")
        done
        # shellcheck disable=SC2086
        apt_install --allow-downgrades $missing "${pins[@]}"
    fi
    again=$(unmet | packages_of)
    if [[ -n ${again// /} ]]; then
        say "still missing after the install: $(unmet | tr '\n' ';') installing $again again"
        # --reinstall: a package can be installed and still lack a file we
        # need (a deleted conffile, such as /etc/pam.d/cron, which only
        # --force-confmiss brings back).
        # shellcheck disable=SC2086
        apt_install --reinstall -o Dpkg::Options::=--force-confmiss $again
    fi
    if ((fresh_sshd)) && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
        systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
    fi
    disable_boot_services "$snap"
    restore_login_config "$snap"
    on_exit
    trap - EXIT
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
