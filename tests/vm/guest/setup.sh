#!/usr/bin/env bash
# Runs as root in the guest, from the 9p share: the README's install steps,
# word for word, plus the test's own user and limits.
#   setup.sh DEB TEMPLATE_TAR PUBKEY
set -euxo pipefail
DEB=$1 TAR=$2 PUB=$3
export DEBIAN_FRONTEND=noninteractive

# README: Install
cp "$DEB" /root/ && cd /root
apt-get install -y "./${DEB##*/}"
# (observed, not a step: what the package itself wired)
grep -l '^[^#]*session.*pam_hutch\.so' /etc/pam.d/cron /etc/pam.d/atd >/root/wired-by-deb || true
hutchctl template build default --from-tar "$TAR"
hutchctl setup --pam-service sshd
hutchctl setup --pam-service systemd-user
hutchctl setup --pam-service cron
hutchctl setup --pam-service atd
hutchctl check
useradd -m alice
usermod -s /usr/sbin/hutch-shell alice

# The test's user: key login, and limits small enough to prove with workloads.
install -d -m 0700 -o alice -g alice /home/alice/.ssh
install -m 0600 -o alice -g alice "$PUB" /home/alice/.ssh/authorized_keys
cat >/etc/hutch/hutch.d/50-vmtest.toml <<'TOML'
# The test samples usage when it wants to (hutch-metrics.service), not once a minute.
[host]
usage_interval = 0

[users.alice]
memory = "96M"
swap = "0"
cpu = "20%"
pids = 40
io = [ { device = "/dev/vda", write_bps = "1M" } ]
TOML

# A second user on VLAN 100 of a dummy parent (the development host's kernel
# has no 802.1Q; this one has): eth0 of kind vlan in the container.
useradd -m -s /usr/sbin/hutch-shell bob
install -d -m 0700 -o bob -g bob /home/bob/.ssh
install -m 0600 -o bob -g bob "$PUB" /home/bob/.ssh/authorized_keys
ip link add dummy0 type dummy
ip link set dummy0 up
cat >/etc/hutch/hutch.d/51-vmtest-vlan.toml <<'TOML'
[users.bob]
network = "vlan"
net_device = "dummy0"
vlan_id = 100
TOML
hutchctl check
# hutch.service loads built templates when it starts (at boot).
systemctl restart hutch.service
