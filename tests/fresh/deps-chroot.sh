#!/usr/bin/env bash
# deps-chroot.sh: scripts/deps.sh on a fresh Debian 12, the way it once
# failed. Makes a minbase bookworm chroot whose qemu-utils comes from
# bookworm-backports, runs deps.sh in it, and checks every command, file and
# pkg-config module the build, the tests and the demo need, independently of
# deps.sh's own check. Two machines, from the same base:
#   image      backports' qemu-utils installed, backports not in the sources
#              (the machine image this project runs on: bookworm's
#              qemu-system-x86 makes apt remove qemu-utils);
#   backports  backports still in the sources (apt refuses the install:
#              qemu-utils Breaks bookworm's qemu-system-common).
# Run by tests/tests/fresh_deps.rs (make test); as root:
#
#   tests/fresh/deps-chroot.sh
#
# Environment: HUTCH_FRESH_CACHE (downloaded .debs kept between runs,
# default /var/cache/hutch-tests/fresh-apt), HUTCH_FRESH_MIRROR (default
# http://deb.debian.org). Everything it starts runs in a pid and mount
# namespace of its own, and the chroot is removed at exit.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${HUTCH_FRESH_CACHE:-/var/cache/hutch-tests/fresh-apt}
MIRROR=${HUTCH_FRESH_MIRROR:-http://deb.debian.org}
T0=$SECONDS
log() { printf '[fresh +%4ds] %s\n' $((SECONDS - T0)) "$*" >&2; }

[[ $(id -u) -eq 0 ]] || { echo "deps-chroot.sh: run as root" >&2; exit 2; }
command -v mmdebstrap >/dev/null || { echo "deps-chroot.sh: mmdebstrap missing (scripts/deps.sh)" >&2; exit 2; }

ROOT=$(mktemp -d /tmp/hutch-fresh.XXXXXX)
cleanup() {
    local rc=$?
    # Nothing was mounted outside the private namespace; the tree can go.
    rm -rf --one-file-system "$ROOT"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$CACHE"

log "mmdebstrap a minbase bookworm with qemu-utils from bookworm-backports"
mmdebstrap --quiet --mode=root --variant=minbase --include=ca-certificates \
    --customize-hook='chroot "$1" apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-utils' \
    bookworm "$ROOT/fs" \
    "deb $MIRROR/debian bookworm main" \
    "deb $MIRROR/debian bookworm-updates main" \
    "deb $MIRROR/debian-security bookworm-security main" \
    "deb $MIRROR/debian bookworm-backports main" >&2
before=$(chroot "$ROOT/fs" dpkg-query -W -f='${Version}' qemu-utils)
case $before in
    *bpo12*) log "qemu-utils $before (backports) installed" ;;
    *) echo "deps-chroot.sh: qemu-utils $before is not from backports" >&2; exit 1 ;;
esac

cat >"$ROOT/check.sh" <<'CHECK'
#!/bin/bash
# Every need, checked here without deps.sh's help.
set -u
fail=0
for c in qemu-img qemu-system-x86_64 mmdebstrap debootstrap sshd ssh ssh-keygen nft ip rsync \
         busybox unshare nsenter flock su login useradd pgrep timeout python3 cc make \
         pkg-config dh dpkg-buildpackage mkfs.ext4 xz sudo cron crontab atd at slapd slapadd \
         ldapsearch nslcd squashfuse mksquashfs promtool prometheus-node-exporter lintian \
         mkfs.xfs lxcfs lxc-execute; do
    command -v "$c" >/dev/null || [ -x "/usr/sbin/$c" ] || { echo "MISSING command $c"; fail=1; }
done
# The distribution's PAM stacks the tests build their private services
# from (confine_paths.rs): new files of new packages, which deps.sh's
# restore of /etc/pam.d once deleted.
for f in /usr/include/security/pam_modules.h /usr/lib/openssh/sftp-server \
         /etc/pam.d/cron /etc/pam.d/atd /etc/pam.d/sudo; do
    [ -e "$f" ] || { echo "MISSING file $f"; fail=1; }
done
ls /lib/*/security/pam_unix.so >/dev/null 2>&1 || { echo "MISSING pam_unix.so"; fail=1; }
echo "qemu-utils $(dpkg-query -W -f='${Version}' qemu-utils): $(qemu-img --version | head -n 1)"
exit $fail
CHECK
chmod +x "$ROOT/check.sh"

# Runs deps.sh twice (the second must find nothing to do) and the check, in
# the chroot $1, inside a private mount and pid namespace: /proc, /dev and
# the apt cache are mounted only there, and every process the install
# starts dies with it.
run_in() {
    local fs=$1
    cp "$REPO/scripts/deps.sh" "$fs/deps.sh"
    cp "$ROOT/check.sh" "$fs/check.sh"
    unshare --mount --pid --fork --propagation private -- bash -c '
        set -e
        fs=$1 cache=$2
        mount -t proc proc "$fs/proc"
        mount --rbind /dev "$fs/dev"
        mount --bind "$cache" "$fs/var/cache/apt/archives"
        cp /etc/resolv.conf "$fs/etc/resolv.conf" 2>/dev/null || true
        inroot() { chroot "$fs" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEPS_SKIP_CARGO=1 "$@"; }
        inroot bash /deps.sh
        echo "--- second run:"
        out=$(inroot bash /deps.sh)
        echo "$out"
        case $out in *installing*) echo "FAIL: the second run installed again"; exit 1 ;; esac
        echo "--- independent check:"
        inroot /check.sh
    ' fresh "$fs" "$CACHE"
}

cp -a "$ROOT/fs" "$ROOT/bpo"
# The machine image: qemu-utils stays from backports, the source goes.
sed -i '/bookworm-backports/d' "$ROOT/fs/etc/apt/sources.list"
rc=0
log "machine 'image': deps.sh with backports' qemu-utils and no backports source"
run_in "$ROOT/fs" || rc=1
log "machine 'backports': deps.sh with backports still in the sources"
run_in "$ROOT/bpo" || rc=1
log "done (rc $rc)"
exit $rc
