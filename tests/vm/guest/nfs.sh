#!/usr/bin/env bash
# Runs as root in the VM tier's guest: a kernel NFS server (nfs-kernel-server)
# exporting homes with root_squash, served from a network namespace and a
# mount namespace of its own, and mounted by the guest over that network
# namespace's loopback. The guest's own network and boot services are not
# used (customize.sh masks the NFS units).
#
#   nfs.sh up USER     serve, mount at /nfs, USER's 0700 home in a 0710 tree
#   nfs.sh down        unmount, stop the server, remove the namespace
#   nfs.sh left        prints what of it is left (nothing: exit 0)
#
# The server side, in network namespace hutchnfs (ip netns) and in a mount
# namespace made inside it (unshare --mount, private):
#   - nfsd's control file system at /proc/fs/nfsd is that namespace's own
#     mount: nfsd keeps one instance per network namespace, so its threads,
#     exports cache and rpcbind registrations are the namespace's;
#   - /var/lib/nfs (etab, rmtab) is a tmpfs there and /etc/exports a file
#     bound over the guest's: exportfs -ra, rpc.mountd and rpc.nfsd see only
#     this export;
#   - rpcbind and rpc.mountd run there (by pid in /run/hutch-nfs), rpc.nfsd
#     starts 4 threads there.
# The client: mount(2) called from inside hutchnfs (nsenter --net), so the
# NFS client's transport is that namespace's (127.0.0.1 of hutchnfs), while
# the mount itself lands in the guest's mount namespace where sshd, PAM and
# the keepers see it. NFSv3 over TCP, nolock: no statd or lockd is needed.
#
# The export: /srv/hutch-nfs (0755 root) / staff (0710 root:staff) / USER
# (0700 USER) — root on the client is squashed to nobody, who may not even
# search staff/: root's own open of the home is refused (EACCES), the user's
# (a member of staff) is not.
set -euo pipefail
NS=hutchnfs
RUN=/run/hutch-nfs
EXPORT=/srv/hutch-nfs
MNT=/nfs
OPTS=rw,sync,root_squash,no_subtree_check

log() { echo "nfs.sh: $*" >&2; }
# The server's namespaces, through the pid of the rpcbind it runs.
in_server() { nsenter --target "$(cat "$RUN/rpcbind.pid")" --mount --net -- "$@"; }

up() {
    local user=$1
    mkdir -p "$RUN"
    modprobe nfsd
    getent group staff >/dev/null || groupadd staff
    id "$user" >/dev/null 2>&1 || useradd -M -d "$MNT/staff/$user" -s /usr/sbin/hutch-shell -G staff "$user"

    # The server's disk: the tree a file server holds.
    install -d -m 0755 "$EXPORT"
    install -d -m 0710 -g staff "$EXPORT/staff"
    install -d -m 0700 -o "$user" -g "$user" "$EXPORT/staff/$user" "$EXPORT/staff/$user/.ssh" "$EXPORT/staff/$user/project"
    echo "from the file server" >"$EXPORT/staff/$user/hello"
    echo "plan" >"$EXPORT/staff/$user/project/plan"
    install -m 0600 -o "$user" -g "$user" /mnt/share/alice.pub "$EXPORT/staff/$user/.ssh/authorized_keys"
    chown "$user:$user" "$EXPORT/staff/$user/hello" "$EXPORT/staff/$user/project/plan"
    echo "$EXPORT 127.0.0.1($OPTS)" >"$RUN/exports"

    ip netns add "$NS"
    ip -n "$NS" link set lo up
    ip netns exec "$NS" unshare --mount --propagation private -- bash -euo pipefail -c '
        RUN=$1
        mount -t tmpfs -o mode=0755 hutch-nfs-state /var/lib/nfs
        mkdir -p /var/lib/nfs/v4recovery /var/lib/nfs/sm
        mount --bind "$RUN/exports" /etc/exports
        mount -t nfsd nfsd /proc/fs/nfsd
        setsid rpcbind -f -w </dev/null >"$RUN/rpcbind.log" 2>&1 &
        echo $! >"$RUN/rpcbind.pid"
        for _ in $(seq 50); do rpcinfo -p 127.0.0.1 >/dev/null 2>&1 && break; sleep 0.2; done
        exportfs -ra
        setsid rpc.mountd -F --no-nfs-version 4 </dev/null >"$RUN/mountd.log" 2>&1 &
        echo $! >"$RUN/mountd.pid"
        rpc.nfsd --no-nfs-version 4 4
        for _ in $(seq 50); do rpcinfo -p 127.0.0.1 | grep -q mountd && break; sleep 0.2; done
        exportfs -v
    ' hutch-nfs-server "$RUN" >&2

    mkdir -p "$MNT"
    nsenter --net=/run/netns/"$NS" -- \
        mount -t nfs -o vers=3,proto=tcp,mountproto=tcp,nolock,hard "127.0.0.1:$EXPORT" "$MNT"
    findmnt -n "$MNT" >&2
}

down() {
    local rc=0
    if mountpoint -q "$MNT"; then
        umount "$MNT" || umount -f "$MNT" || { umount -l "$MNT"; rc=1; }
    fi
    rmdir "$MNT" 2>/dev/null || true
    if [[ -s $RUN/rpcbind.pid ]] && kill -0 "$(cat "$RUN/rpcbind.pid")" 2>/dev/null; then
        in_server exportfs -ua || rc=1
        in_server rpc.nfsd 0 || rc=1
    fi
    for d in mountd rpcbind; do
        [[ -s $RUN/$d.pid ]] || continue
        local pid
        pid=$(cat "$RUN/$d.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 25); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    done
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$RUN"
    return $rc
}

# What of the server and the mount is left: nfsd threads, rpcbind or mountd,
# the namespace, the mount.
left() {
    local what=()
    pgrep -x nfsd >/dev/null && what+=("nfsd threads: $(pgrep -x nfsd | tr '\n' ' ')")
    pgrep -x rpcbind >/dev/null && what+=("rpcbind")
    pgrep -x rpc.mountd >/dev/null && what+=("rpc.mountd")
    ip netns list | grep -qw "$NS" && what+=("netns $NS")
    grep -q " $MNT " /proc/mounts && what+=("mount $MNT")
    grep -q " nfs" /proc/mounts && what+=("an nfs mount: $(grep ' nfs' /proc/mounts)")
    [[ -e $RUN ]] && what+=("$RUN")
    ((${#what[@]} == 0)) || { printf '%s\n' "${what[@]}"; return 1; }
}

case ${1:-} in
    up) up "${2:?user}" ;;
    down) down ;;
    left) left ;;
    *) echo "usage: nfs.sh up USER | down | left" >&2; exit 2 ;;
esac
