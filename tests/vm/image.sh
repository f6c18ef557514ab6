#!/usr/bin/env bash
# image.sh: the Debian 12 guest for the VM tier, built once and cached by
# content. Prints the image directory (base.raw, vmlinux, initrd.img,
# id_ed25519) on stdout; logs go to stderr.
#
# mmdebstrap installs systemd, openssh-server and the Debian kernel into a
# directory (tmpfs when possible); `mkfs.ext4 -d` turns it into a raw image
# without loop devices. The kernel and initrd are copied out for -kernel and
# -initrd; the initrd carries only the virtio and ext4 modules.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${HUTCH_VM_CACHE:-/var/cache/hutch-tests}
SUITE=bookworm
IMG_SIZE=3G
PKGS=(systemd systemd-sysv udev dbus libpam-systemd libpam-modules libpam-runtime openssh-server
      passwd iproute2 kmod procps util-linux e2fsprogs linux-image-amd64 initramfs-tools zstd
      prometheus-node-exporter nfs-kernel-server cron at lxcfs)

log() { echo "vm-image: $*" >&2; }

mirror() {
    local m
    m=$(awk '/^URIs:/ && !/security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [[ -n $m ]] || m=$(awk '/^deb / && !/security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    echo "${HUTCH_DEBIAN_MIRROR:-${m:-http://deb.debian.org/debian}}"
}
security_mirror() {
    local m
    m=$(awk '/^URIs:/ && /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [[ -n $m ]] || m=$(awk '/^deb / && /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    echo "${m:-http://security.debian.org/debian-security}"
}

MIRROR=$(mirror)
SECMIRROR=$(security_mirror)
KEY="$SUITE $MIRROR $SECMIRROR ${PKGS[*]} $IMG_SIZE $(cat "$0" "$HERE/guest/customize.sh" | sha256sum | cut -c1-32)"
HASH=$(printf '%s' "$KEY" | sha256sum | cut -c1-16)
OUT=$CACHE/vm-$HASH
if [[ -s $OUT/base.raw && -s $OUT/stamp ]]; then
    echo "$OUT"
    exit 0
fi

mkdir -p "$CACHE/vm-apt-archives"
exec 9>"$CACHE/vm-$HASH.lock"
flock 9
if [[ -s $OUT/base.raw && -s $OUT/stamp ]]; then echo "$OUT"; exit 0; fi

T0=$SECONDS
TMP=$OUT.tmp
ROOTFS=$TMP/rootfs
cleanup() {
    mountpoint -q "$ROOTFS" 2>/dev/null && umount "$ROOTFS"
    rm -rf "$TMP"
}
trap cleanup EXIT
cleanup
mkdir -p "$ROOTFS"
mount -t tmpfs -o size=3G,mode=0755 hutch-vm-image "$ROOTFS" 2>/dev/null || log "no tmpfs, building on disk"
ssh-keygen -q -t ed25519 -N '' -C hutch-vm-test -f "$TMP/id_ed25519"

log "mmdebstrap $SUITE from $MIRROR into $ROOTFS"
. "$HERE/host-apt.sh"
mmdebstrap --quiet --mode=root --variant=minbase --format=directory "${HOST_APT_OPTS[@]}" \
    --include="$(IFS=,; echo "${PKGS[*]}")" \
    --aptopt='Acquire::Retries "3"' --dpkgopt=force-unsafe-io \
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
    --setup-hook="sync-in $CACHE/vm-apt-archives /var/cache/apt/archives/" \
    --essential-hook='mkdir -p "$1"/etc/initramfs-tools/conf.d "$1"/usr/share/initramfs-tools/modules.d' \
    --essential-hook='printf "MODULES=list\nCOMPRESS=zstd\n" > "$1"/etc/initramfs-tools/conf.d/vm.conf' \
    --essential-hook='printf "virtio_pci\nvirtio_blk\nvirtio_net\next4\n" > "$1"/usr/share/initramfs-tools/modules.d/vm' \
    --customize-hook="sync-out /var/cache/apt/archives $CACHE/vm-apt-archives" \
    --customize-hook="$HERE/guest/customize.sh \"\$1\" \"$TMP/id_ed25519.pub\"" \
    --skip=download/empty \
    "$SUITE" "$ROOTFS" \
    "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECMIRROR $SUITE-security main" >&2

KVER=$(ls "$ROOTFS/lib/modules" | sort -V | tail -n 1)
cp "$ROOTFS/boot/vmlinuz-$KVER" "$TMP/vmlinuz"
cp "$ROOTFS/boot/initrd.img-$KVER" "$TMP/initrd.img"
# qemu boots an uncompressed ELF vmlinux through PVH: no in-guest xz under TCG.
pos=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$TMP/vmlinuz" | head -n 1 | cut -d: -f1 || true)
if [[ -n $pos ]]; then
    tail -c +$((pos + 1)) "$TMP/vmlinuz" | xz -dc --single-stream >"$TMP/vmlinux" 2>/dev/null || true
fi
if [[ ! -s $TMP/vmlinux || $(head -c 4 "$TMP/vmlinux" | od -An -c | tr -d ' ') != '177ELF' ]]; then
    cp "$TMP/vmlinuz" "$TMP/vmlinux"
fi
mkfs.ext4 -q -F -L root -d "$ROOTFS" "$TMP/base.raw" "$IMG_SIZE" >&2   # it says "Creating regular file" on stdout
mountpoint -q "$ROOTFS" && umount "$ROOTFS"
rm -rf "$ROOTFS"
echo "$KEY" >"$TMP/stamp"
echo "$KVER" >"$TMP/kver"
rm -rf "$OUT"
mv "$TMP" "$OUT"
trap - EXIT
log "built $OUT (kernel $KVER) in $((SECONDS - T0)) s"
echo "$OUT"
