# nfs-checks.sh: sourced by run.sh (its groot, check, expect, eventually,
# SSH_OPTS, PORT, WORK, SHARE, CG). NFS homes: a kernel NFS server exporting
# with root_squash from a network namespace of its own in the guest
# (guest/nfs.sh), mounted at /nfs; carol's 0700 home is on it, in a 0710
# root:staff tree that squashed root may not even search. She logs in over
# the guest's real sshd, her home (opened by a child that became her: root
# is refused) and a policy mount from inside it are bound into her
# container, sftp and rsync write through to the server's disk, the last
# logout leaves the NFS mount alone, a symlink she plants where the policy
# mount's source was is refused (the open as her follows no symlink), and
# the server, its namespace and the mount go away without a trace. A check
# that fails does not stop the rest: `nfs.sh down` runs whatever happened
# before it (and a run that dies kills the guest, with all of it inside).

gcarol() { ssh "${SSH_OPTS[@]}" -i "$WORK/alice" carol@127.0.0.1 "$@"; }
CAROL_HOME=/nfs/staff/carol
SERVER_HOME=/srv/hutch-nfs/staff/carol
# journal_says TEXT: the journal holds TEXT within 20 s (journald, not the
# test, decides when a line is readable).
journal_says() {
    local i
    for ((i = 0; i < 10; i++)); do
        groot "journalctl -b --no-pager | grep -qF '$1'" && return 0
        sleep 2
    done
    return 1
}
carol_gone() {
    eventually "$1" 30 "! test -e $CG/users/carol && ! test -e /run/hutch/users/carol && ! pgrep -u carol >/dev/null"
}

nfs_checks() {
    log "NFS homes: kernel nfsd with root_squash in its own netns, carol's home on it"
    if groot "bash /mnt/share/nfs.sh up carol" >"$SHARE/out/nfs-up.log" 2>&1; then
        pass "nfs: served from netns hutchnfs, mounted at /nfs over its loopback"
    else
        fail "nfs: up" "$(tail -n 5 "$SHARE/out/nfs-up.log" | tr '\n' ' ')"
    fi
    check "nfs: exported with root_squash, no_subtree_check" \
        grep -Eq '^/srv/hutch-nfs[[:space:]]+127\.0\.0\.1\(.*no_subtree_check.*[^_]root_squash' "$SHARE/out/nfs-up.log"
    # The policy mount's source is inside the 0700 home: only carol reaches it.
    groot 'cat >/etc/hutch/hutch.d/52-vmtest-nfs.toml' <<'TOML'
[users.carol]
mounts = [ { source = "{home}/project", target = "/srv/project", mode = "rw" } ]
TOML
    check "nfs: policy drop-in checks clean" groot 'hutchctl check'

    # The premise: root is squashed (to nobody, who may not search staff/);
    # carol, a member of staff, reads her home.
    check "nfs: root cannot reach the home (root_squash)" \
        groot "out=\$(stat $CAROL_HOME 2>&1); [ \$? -ne 0 ] && echo \"\$out\" | grep -q 'Permission denied'"
    expect "nfs: carol can" "from the file server" \
        "$(groot "setpriv --reuid=carol --regid=carol --init-groups cat $CAROL_HOME/hello" 2>&1 || true)"

    local out want
    out=$(gcarol 'pwd; cat hello; cat /srv/project/plan; cat /proc/1/comm; stat -fc %T .' 2>&1 || true)
    want=$(printf '%s\n' "$CAROL_HOME" "from the file server" plan hutch-init nfs)
    expect "nfs: login lands in the container with the NFS home and the mount from inside it" "$want" "$out"

    echo "sent by sftp" >"$WORK/sftp-up.txt"
    out=$(printf 'put %s up.txt\n' "$WORK/sftp-up.txt" | sftp -b - "${SFTP_OPTS[@]}" carol@127.0.0.1 2>&1 || true)
    expect "nfs: sftp put lands on the server's disk, owned by carol" "carol sent by sftp" \
        "$(groot "stat -c %U $SERVER_HOME/up.txt && cat $SERVER_HOME/up.txt" 2>&1 | tr '\n' ' ' | sed 's/ $//' || true)"
    mkdir -p "$WORK/tree/a"
    echo "sent by rsync" >"$WORK/tree/a/b.txt"
    rsync -a -e "ssh ${SSH_OPTS[*]} -i $WORK/alice" "$WORK/tree/" carol@127.0.0.1:tree/ >"$SHARE/out/nfs-rsync.log" 2>&1 || true
    expect "nfs: rsync lands on the server's disk, owned by carol" "carol sent by rsync" \
        "$(groot "stat -c %U $SERVER_HOME/tree/a/b.txt && cat $SERVER_HOME/tree/a/b.txt" 2>&1 | tr '\n' ' ' | sed 's/ $//' || true)"

    carol_gone "nfs: teardown: carol's cgroup, state, processes gone"

    # dave, not in staff, has carol's home as his: root is refused, and so
    # is dave; the probe (a login's container build) says so.
    groot "useradd -M -d $CAROL_HOME -s /usr/sbin/hutch-shell dave" || true
    out=$(groot 'hutchctl check --probe dave' 2>&1 || true)
    echo "$out" >"$SHARE/out/nfs-probe-dave.txt"
    if [[ $out == *"opening (as the user, root was refused) $CAROL_HOME"*"Permission denied"* ]]; then
        pass "nfs: a home its user cannot open either is refused, naming the path and the errno"
    else
        fail "nfs: dave's probe" "$(echo "$out" | tail -n 3 | tr '\n' ' ')"
    fi
    groot 'userdel dave' || true
    check "nfs: teardown left the NFS mount and its files alone" \
        groot "[ \"\$(findmnt -n -o FSTYPE /nfs)\" = nfs ] && setpriv --reuid=carol --regid=carol --init-groups cat $CAROL_HOME/tree/a/b.txt"

    # carol plants a symlink (to /etc) where the policy mount's source was:
    # the next login opens it as her (root is refused) and is refused.
    out=$(gcarol 'rm -r project && ln -s /etc project && readlink project' 2>&1 || true)
    expect "nfs: carol planted project -> /etc" /etc "$out"
    carol_gone "nfs: teardown after the planting"
    local rc=0
    out=$(gcarol 'cat /srv/project/hostname' 2>&1) || rc=$?
    # (The motd's uname line names the guest too; the file alone is a line.)
    if [[ $rc -ne 0 ]] && ! grep -qx hutch-vm <<<"$out" &&
        journal_says "$CAROL_HOME/project is a symlink or has one in its path; hutch does not follow symlinks here"; then
        pass "nfs: a planted symlink is not followed: the login is refused, the journal names it"
    else
        fail "nfs: planted symlink" "rc $rc: $(echo "$out" | tail -n 2 | tr '\n' ' ')"
    fi
    carol_gone "nfs: the refused login left nothing"
    groot "journalctl -b --no-pager | grep -F carol" >"$SHARE/out/nfs-journal.txt" 2>&1 || true

    if groot "bash /mnt/share/nfs.sh down" >"$SHARE/out/nfs-down.log" 2>&1; then
        pass "nfs: unmounted, exports dropped, rpc.nfsd 0, daemons stopped, netns deleted"
    else
        fail "nfs: down" "$(tail -n 5 "$SHARE/out/nfs-down.log" | tr '\n' ' ')"
    fi
    check "nfs: nothing left (nfsd threads, rpcbind, mountd, netns, mounts)" groot 'bash /mnt/share/nfs.sh left'
    groot 'rm -f /etc/hutch/hutch.d/52-vmtest-nfs.toml' || true
}
