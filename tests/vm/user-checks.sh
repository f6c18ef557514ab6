# user-checks.sh: sourced by run.sh (its groot, check, expect, eventually,
# SSH_OPTS, WORK, SHARE, CG). The user's side of a container on cgroup v2
# (issue 14), for erin: memory = 512M, cpu = 1 and a persistent writable
# layer of 64M. Inside, `free -m` shows her 512M (the guest's lxcfs, bound
# in: it answers from her init's cgroup, the leaf, which needs a memory
# controller of its own), `nproc` and lxcfs's /proc/cpuinfo her one CPU
# (her cpuset); `hutch status --json` answers her limits and what
# persists, a file she writes outside home survives the teardown of her
# container, the layer's size stops a `dd`, and `hutchctl reset` discards
# the layer. Nothing of erin is left for the purge checks.
#
# Part of the full tier (after the NFS checks); HUTCH_VM_ONLY=user runs
# only these after the install.

gerin() { ssh "${SSH_OPTS[@]}" -i "$WORK/alice" erin@127.0.0.1 "$@"; }
erin_gone() {
    eventually "$1" 30 "! test -e $CG/users/erin && ! test -e /run/hutch/users/erin && ! pgrep -u erin >/dev/null"
}

user_checks() {
    log "the user's side on v2 (erin): figures, hutch status, a persistent layer"
    groot 'useradd -m -s /usr/sbin/hutch-shell erin && install -d -m 0700 -o erin -g erin /home/erin/.ssh &&
        install -m 0600 -o erin -g erin /home/alice/.ssh/authorized_keys /home/erin/.ssh/authorized_keys' >/dev/null 2>&1 || true
    groot 'cat >/etc/hutch/hutch.d/52-vmtest-erin.toml' >/dev/null 2>&1 <<'TOML' || true
[users.erin]
memory = "512M"
cpu = "1"
writable = "persistent"
writable_size = "64M"
TOML
    check "figures: the guest's lxcfs is mounted" groot 'mountpoint -q /var/lib/lxcfs'
    local fig total cpus bound listed
    # Her meminfo as free reads it, her CPUs, whether lxcfs answers her /proc/meminfo, the CPUs its cpuinfo lists.
    fig=$(gerin 'free -m | awk "/^Mem:/ {print \$2}"; nproc; awk "\$5 == \"/proc/meminfo\" && / - fuse.lxcfs / {n++} END {print n + 0}" /proc/self/mountinfo;
        grep -c ^processor /proc/cpuinfo; { grep lxcfs /proc/self/mountinfo; head -n 3 /proc/meminfo; cat /proc/self/cgroup; } >&2' 2>"$SHARE/out/figures-erin-diag.txt" | tr '\n' ' ' || true)
    echo "$fig" >"$SHARE/out/figures-erin.txt"
    read -r total cpus bound listed _ <<<"$fig"
    expect "figures: lxcfs's meminfo is bound over erin's /proc/meminfo" 1 "$bound"
    if [[ $total =~ ^[0-9]+$ ]] && ((total >= 500 && total <= 530)); then
        pass "figures: free -m inside erin's 512M container shows $total MB total"
    else
        fail "figures: free -m shows her limit" "want 500..530, got '$total' ($(tr '\n' ' ' <"$SHARE/out/figures-erin-diag.txt" | head -c 300))"
    fi
    expect "figures: nproc is 1 (her cpuset)" 1 "$cpus"
    expect "figures: lxcfs's /proc/cpuinfo lists her one CPU" 1 "$listed"

    local status
    status=$(gerin 'hutch status --json' 2>&1 || true)
    echo "$status" >"$SHARE/out/status-erin.json"
    if python3 -c '
import json, sys
s = json.load(sys.stdin)
l = s["limits"]
assert s["user"] == "erin", s["user"]
assert l["memory"] == 512 << 20, l
assert l["cpu"] == 1.0, l
assert l["writable_size"] == 64 << 20, l
assert s["persists"]["writable"] == "persistent", s["persists"]
assert len(s["sessions"]) == 1, s["sessions"]
' <<<"$status" 2>"$SHARE/out/status-erin.err"; then
        pass "hutch status --json: erin's limits, one session, a persistent layer"
    else
        fail "hutch status --json" "$(tail -n 1 "$SHARE/out/status-erin.err") $(head -c 200 <<<"$status")"
    fi

    gerin 'echo kept-across-teardown >/var/tmp/kept' >/dev/null 2>&1 || true
    erin_gone "persistent: erin's container torn down after her session"
    check "persistent: the layer is an image under lib_dir" groot 'test -f /var/lib/hutch/users/erin/layer.img'
    expect "persistent: a file written outside home survives the teardown" kept-across-teardown \
        "$(gerin 'cat /var/tmp/kept' 2>&1)"
    local dd
    dd=$(gerin 'dd if=/dev/zero of=/var/tmp/big bs=1M count=100 2>&1; rm -f /var/tmp/big' 2>&1 || true)
    if [[ $dd == *"No space left on device"* ]]; then pass "persistent: the layer's size (64M) stops a dd"; else fail "persistent: size limit" "$(tr '\n' ' ' <<<"$dd")"; fi
    erin_gone "persistent: torn down again"
    check "persistent: hutchctl reset discards the layer" groot 'hutchctl reset erin && ! test -e /var/lib/hutch/users/erin/layer.img'
    groot 'rm -f /etc/hutch/hutch.d/52-vmtest-erin.toml; userdel -r erin' >/dev/null 2>&1 || true
}
