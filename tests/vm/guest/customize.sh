#!/usr/bin/env bash
# mmdebstrap customize hook for the VM tier's guest. $1: rootfs, $2: the
# public key root logs in with. The guest has no network but the host's
# loopback forward to its sshd, and nothing periodic runs in it.
set -euo pipefail
R=$1
PUB=$2
echo hutch-vm >"$R/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 hutch-vm\n::1 localhost\n' >"$R/etc/hosts"
cat >"$R/etc/fstab" <<'FSTAB'
/dev/vda  /           ext4  defaults,errors=remount-ro  0 0
share     /mnt/share  9p    trans=virtio,version=9p2000.L,msize=262144,nofail,noauto,x-systemd.automount  0 0
FSTAB
mkdir -p "$R/mnt/share" "$R/etc/systemd/network"
printf '[Match]\nName=en* eth*\n[Network]\nDHCP=ipv4\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n' \
    >"$R/etc/systemd/network/10-vm.network"
chroot "$R" systemctl enable systemd-networkd.service
chroot "$R" systemctl mask systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer \
    e2scrub_all.timer e2scrub_reap.service fstrim.timer modprobe@drm.service 2>/dev/null || true
install -d -m 0700 "$R/root/.ssh"
install -m 0600 "$PUB" "$R/root/.ssh/authorized_keys"
printf 'UseDNS no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n' \
    >"$R/etc/ssh/sshd_config.d/10-vm.conf"
# The strictest logind setting: a session's processes die with it. The keeper
# must survive it (it lives in hutch.service's subtree, not in a session scope).
mkdir -p "$R/etc/systemd/logind.conf.d" "$R/etc/systemd/journald.conf.d"
printf '[Login]\nKillUserProcesses=yes\n' >"$R/etc/systemd/logind.conf.d/10-vm.conf"
printf '[Journal]\nStorage=volatile\n' >"$R/etc/systemd/journald.conf.d/10-vm.conf"
# The NFS server and its helpers run only inside the network and mount
# namespaces tests/vm/guest/nfs.sh makes (nfsd is per network namespace):
# none of them starts in the guest's own at boot.
chroot "$R" systemctl mask nfs-server.service nfs-mountd.service nfs-idmapd.service nfsdcld.service \
    rpc-statd.service rpc-statd-notify.service rpcbind.service rpcbind.socket nfs-blkmap.service \
    proc-fs-nfsd.mount rpc_pipefs.target run-rpc_pipefs.mount var-lib-nfs-rpc_pipefs.mount 2>/dev/null || true
: >"$R/etc/machine-id"
