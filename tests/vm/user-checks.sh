# user-checks.sh: sourced by run.sh (its groot, check, expect, eventually,
# SSH_OPTS, WORK, SHARE, CG). The user's side of a container on cgroup v2
# (issue 14), for erin: memory = 512M, cpu = 1 and a persistent writable
# layer of 64M. Inside, `nproc` shows her one CPU (her cpuset; `free -m`
# is printed, not yet checked: see below), `hutch
# status --json` answers her limits and what persists, a file she writes
# outside home survives the teardown of her container, the layer's size
# stops a `dd`, and `hutchctl reset` discards the layer. Nothing of erin is
# left for the purge checks.
#
# Not yet part of the full tier: run with HUTCH_VM_ONLY=user (passed on
# 2026-12-03, 20 checks, on a guest with Debian's lxcfs added to image.sh's
# PKGS; without lxcfs the "lxcfs is mounted" check fails). To do: lxcfs in
# the image, `free -m` checked, then called from the full run.

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
    local fig total cpus
    fig=$(gerin 'free -m | awk "/^Mem:/ {print \$2}"; nproc' 2>&1 | tr '\n' ' ' || true)
    read -r total cpus _ <<<"$fig"
    expect "figures: nproc is 1 (her cpuset)" 1 "$cpus"
    # Known gap (issue 14, open): on this v2 guest `free -m` inside still
    # showed the guest's 1966 MB on 2026-12-03, with lxcfs mounted (on v1,
    # tests/tests/figures.rs proves 512). Printed, not yet checked.
    log "figures: free -m total inside erin's 512M container: $total (not yet checked on v2)"
    echo "$fig" >"$SHARE/out/figures-erin.txt"

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
