#!/usr/bin/env bash
# run.sh: hutch on a real cgroup-v2 systemd host. Boots a Debian 12 guest
# under QEMU (KVM where the CPU has vmx/svm, TCG otherwise), installs the
# .deb in it as the README says, and logs in from this host with the real
# ssh client over a forwarded loopback port. Prints `N passed, M failed`;
# exits 0 only when every check passed.
#
#   HUTCH_DEB=path/to/hutch_*.deb tests/vm/run.sh
#
# Environment: HUTCH_VM_CACHE (image cache, /var/cache/hutch-tests),
# HUTCH_VM_RESULTS (where logs are copied, default target/vm-results),
# HUTCH_VM_KEEP=1 (leave the VM running and print how to reach it),
# HUTCH_VM_ONLY=nfs|user (install, then only the NFS homes checks, or only
# the user's side of user-checks.sh: for work on them), ACCEL=kvm|tcg. The
# guest's user-mode network is restrict=on: it reaches nothing but the
# forwarded port.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${HUTCH_VM_CACHE:-/var/cache/hutch-tests}
RESULTS=${HUTCH_VM_RESULTS:-$REPO/target/vm-results}
DEB=${HUTCH_DEB:?set HUTCH_DEB to the hutch .deb to test (make deb)}
DEB=$(realpath "$DEB")
BOOT_LIMIT=${HUTCH_VM_BOOT_LIMIT:-360}
T0=$SECONDS

log() { printf '[vm +%4ds] %s\n' $((SECONDS - T0)) "$*" >&2; }
die() { log "FATAL: $*"; exit 2; }

for tool in qemu-system-x86_64 qemu-img mmdebstrap ssh sftp rsync ssh-keygen mkfs.ext4 flock; do
    command -v "$tool" >/dev/null || die "missing $tool (scripts/deps.sh installs it)"
done

WORK=$(mktemp -d /tmp/hutch-vm.XXXXXX)
SHARE=$WORK/share
mkdir -p "$SHARE/out"
QEMU_PID=
BG_PIDS=()
cleanup() {
    local rc=$?
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [[ -n $QEMU_PID ]] && kill -0 "$QEMU_PID" 2>/dev/null; then
        if [[ ${HUTCH_VM_KEEP:-} == 1 ]]; then
            log "VM left running: pid $QEMU_PID, ssh -i $IMG/id_ed25519 -p $PORT root@127.0.0.1; work dir $WORK"
            exit $rc
        fi
        kill "$QEMU_PID" 2>/dev/null || true
        for _ in 1 2 3 4 5; do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 1; done
        kill -9 "$QEMU_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the image (cached by content) and the template tarball ---------------
IMG=$("$HERE/image.sh")
log "image $IMG"
TEMPLATE_TAR=$CACHE/vm-template-$(basename "$IMG" | sed 's/^vm-//').tar
if [[ ! -s $TEMPLATE_TAR ]]; then
    # A minbase bookworm: the harness's cached rootfs when there is one.
    src=$(ls -d "$CACHE"/rootfs-*/ 2>/dev/null | while read -r d; do [[ -x $d/bin/bash ]] && echo "$d" && break; done || true)
    if [[ -z $src ]]; then
        src=$WORK/template-rootfs
        log "mmdebstrap a minbase template rootfs"
        . "$HERE/host-apt.sh"
        mmdebstrap --quiet --mode=root --variant=minbase "${HOST_APT_OPTS[@]}" bookworm "$src" >&2
    fi
    log "template tarball from $src"
    tar -C "$src" -cf "$TEMPLATE_TAR.tmp" . && mv "$TEMPLATE_TAR.tmp" "$TEMPLATE_TAR"
fi
ln "$TEMPLATE_TAR" "$SHARE/template.tar" 2>/dev/null || cp "$TEMPLATE_TAR" "$SHARE/template.tar"
cp "$DEB" "$SHARE/"
cp "$HERE/guest/setup.sh" "$HERE/guest/nfs.sh" "$SHARE/"
ssh-keygen -q -t ed25519 -N '' -C alice -f "$WORK/alice"
cp "$WORK/alice.pub" "$SHARE/alice.pub"

# --- boot ------------------------------------------------------------------
if [[ -z ${ACCEL:-} ]]; then
    if [[ -w /dev/kvm ]] && grep -qwE 'vmx|svm' /proc/cpuinfo; then ACCEL=kvm; else ACCEL=tcg; fi
fi
case $ACCEL in
    kvm) ACCEL_ARGS=(-accel kvm -cpu host) ;;
    tcg) ACCEL_ARGS=(-accel tcg,thread=multi,tb-size=256 -cpu max) ;;
    *) die "ACCEL must be kvm or tcg" ;;
esac
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
SSH_OPTS=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
          -o BatchMode=yes -o ConnectTimeout=20 -o ServerAliveInterval=15 -p "$PORT")
SFTP_OPTS=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
           -o BatchMode=yes -o ConnectTimeout=20 -i "$WORK/alice" -P "$PORT")
groot() { ssh "${SSH_OPTS[@]}" -i "$IMG/id_ed25519" root@127.0.0.1 "$@"; }
galice() { ssh "${SSH_OPTS[@]}" -i "$WORK/alice" alice@127.0.0.1 "$@"; }
gbob() { ssh "${SSH_OPTS[@]}" -i "$WORK/alice" bob@127.0.0.1 "$@"; }

# boot: a fresh overlay on the cached image; true once root's ssh works.
# A hung or panicked guest (rare under TCG on a loaded host) is killed by pid.
boot() {
    rm -f "$WORK/disk.qcow2" "$WORK/qemu.pid"
    qemu-img create -q -f qcow2 -F raw -b "$IMG/base.raw" "$WORK/disk.qcow2"
    log "booting ($ACCEL, ssh on 127.0.0.1:$PORT)"
    qemu-system-x86_64 "${ACCEL_ARGS[@]}" -machine q35 -smp 2 -m 2048 \
        -kernel "$IMG/vmlinux" -initrd "$IMG/initrd.img" \
        -append "root=/dev/vda rw console=ttyS0 quiet panic=-1 softlockup_panic=1 hung_task_panic=1 hung_task_timeout_secs=60" \
        -drive "if=none,id=root,file=$WORK/disk.qcow2,format=qcow2,cache=unsafe" -device virtio-blk-pci,drive=root \
        -nic "user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:$PORT-:22" \
        -virtfs "local,path=$SHARE,mount_tag=share,security_model=none" \
        -display none -serial "file:$WORK/console.log" -no-reboot \
        -daemonize -pidfile "$WORK/qemu.pid"
    QEMU_PID=$(cat "$WORK/qemu.pid")
    local t0=$SECONDS
    until groot true 2>/dev/null; do
        if ! kill -0 "$QEMU_PID" 2>/dev/null; then log "qemu exited during boot"; return 1; fi
        if ((SECONDS - t0 >= BOOT_LIMIT)); then log "no sshd after ${BOOT_LIMIT}s"; return 1; fi
        sleep 3
    done
}
stop_qemu() {
    kill "$QEMU_PID" 2>/dev/null || true
    for _ in 1 2 3 4 5; do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 1; done
    kill -9 "$QEMU_PID" 2>/dev/null || true
    QEMU_PID=
}
if ! boot; then
    tail -n 30 "$WORK/console.log" >&2
    mkdir -p "$RESULTS" && cp "$WORK/console.log" "$RESULTS/console-failed-boot.log"
    stop_qemu
    log "retrying the boot once"
    boot || { tail -n 30 "$WORK/console.log" >&2; die "the guest did not boot twice"; }
fi
log "guest up: $(groot 'systemd-analyze time 2>/dev/null | head -n 1' || true)"

# --- checks ----------------------------------------------------------------
PASSED=0 FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "PASS $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $1${2:+: $2}"; }
# check NAME COMMAND...: passes when COMMAND exits 0 (run on the host).
check() { local n=$1; shift; if out=$("$@" 2>&1); then pass "$n"; else fail "$n" "$(echo "$out" | tail -n 3 | tr '\n' ' ')"; fi; }
# expect NAME WANT GOT
expect() { if [[ $3 == "$2" ]]; then pass "$1"; else fail "$1" "want '$2', got '$3'"; fi; }
# eventually NAME TRIES GUEST_COMMAND: passes once GUEST_COMMAND succeeds in the guest (every 2 s).
eventually() { local n=$1 tries=$2 i; for ((i = 0; i < tries; i++)); do groot "$3" && { pass "$n"; return; }; sleep 2; done; fail "$n" "not within $((tries * 2)) s"; }
# end_sessions: ends the background ssh sessions.
end_sessions() { for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; BG_PIDS=(); }

CG=/sys/fs/cgroup/system.slice/hutch.service/hutch
check "guest: systemd is PID 1 on cgroup2" groot '[ "$(cat /proc/1/comm)" = systemd ] && [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]'
log "install (README steps)"
if groot "bash /mnt/share/setup.sh /mnt/share/${DEB##*/} /mnt/share/template.tar /mnt/share/alice.pub" >"$SHARE/out/setup.log" 2>&1; then
    pass "install: apt install, template build, setup --pam-service sshd, usermod"
else
    fail "install" "$(tail -n 5 "$SHARE/out/setup.log" | tr '\n' ' ')"
fi
check "package: hutch-shell in /etc/shells" groot 'grep -qx /usr/sbin/hutch-shell /etc/shells'
if command -v lintian >/dev/null; then
    # Info tags are explained in debian/hutch.lintian-overrides.
    check "package: lintian reports no error or warning" lintian --fail-on error,warning "$DEB"
fi
check "package: conffile /etc/hutch/hutch.toml" groot 'dpkg-query -W -f="\${Conffiles}" hutch | grep -q /etc/hutch/hutch.toml'
check "package: module in the multiarch security dir" groot 'test -f /lib/x86_64-linux-gnu/security/pam_hutch.so'
check "package: man pages" groot 'for m in man8/pam_hutch.8 man8/hutch-shell.8 man8/hutchctl.8 man5/hutch.toml.5 man7/hutch-audit.7; do test -f /usr/share/man/$m.gz || exit 1; done'
check "package: bash and zsh completions" groot 'test -s /usr/share/bash-completion/completions/hutchctl && test -s /usr/share/zsh/vendor-completions/_hutchctl'
check "package: --version names the build" groot 'hutchctl --version | grep -Eq "^hutchctl [0-9.]+ \(git [0-9a-f]{12}\)$"'
check "unit: hutch-metrics.timer active" groot '[ "$(systemctl is-active hutch-metrics.timer)" = active ]'
check "unit: hutch.service active, Delegate=yes" groot '[ "$(systemctl is-active hutch.service)" = active ] && [ "$(systemctl show -P Delegate hutch.service)" = yes ]'
check "unit: loaded the template at start" groot 'ls -d /run/hutch/template/default/*/ >/dev/null'
check "setup: pam_hutch is the last session line of sshd" groot 'grep "^[^#]*session" /etc/pam.d/sshd | tail -n 1 | grep -q pam_hutch.so'

# finish: powers the guest off, copies the logs out, prints the summary.
finish() {
    groot 'systemctl poweroff' >/dev/null 2>&1 || true
    for _ in $(seq 30); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 1; done
    mkdir -p "$RESULTS"
    cp "$SHARE"/out/* "$WORK/console.log" "$RESULTS/" 2>/dev/null || true
    log "results in $RESULTS"
    echo "$PASSED passed, $FAILED failed"
    ((FAILED == 0))
}
# shellcheck source=tests/vm/nfs-checks.sh
. "$HERE/nfs-checks.sh"
# shellcheck source=tests/vm/user-checks.sh
. "$HERE/user-checks.sh"
if [[ ${HUTCH_VM_ONLY:-} == nfs ]]; then
    nfs_checks
    finish
    exit
fi
if [[ ${HUTCH_VM_ONLY:-} == user ]]; then
    user_checks
    finish
    exit
fi

log "first login as alice"
HOST_PIDNS=$(groot 'readlink /proc/1/ns/pid')
expect "login: hostname is the user's" alice "$(galice hostname 2>&1)"
ALICE_PIDNS=$(galice 'readlink /proc/self/ns/pid' 2>&1 || true)
if [[ $ALICE_PIDNS == pid:* && $ALICE_PIDNS != "$HOST_PIDNS" ]]; then pass "login: own pid namespace"; else fail "login: own pid namespace" "$ALICE_PIDNS vs host $HOST_PIDNS"; fi

# A session that holds the container open while the others come and go.
# ssh itself in the background (not a function's subshell), so that killing $! ends the connection.
ssh "${SSH_OPTS[@]}" -i "$WORK/alice" alice@127.0.0.1 'sleep 600' </dev/null &
BG_PIDS+=($!)
for _ in $(seq 30); do groot "test -d $CG/users/alice" && break; sleep 2; done
# The keeper is the hutch-keeper process in keepers/; its child, the container's init, is in users/.
KEEPER=$(groot 'for p in $(pgrep -f "hutch-keeper .* alice$"); do grep -q "^0::/system.slice/hutch.service/hutch/keepers/" /proc/$p/cgroup && echo $p; done' || true)
if [[ $KEEPER =~ ^[0-9]+$ ]]; then pass "cgroup: keeper in hutch.service's subtree (keepers/)"; else fail "cgroup: keeper in hutch.service's subtree" "keeper pids: $KEEPER"; KEEPER=1; fi
check "cgroup: session in <root>/users/alice" groot "p=\$(pgrep -u alice -x sleep | head -n 1); grep -q '^0::/system.slice/hutch.service/hutch/users/alice/' /proc/\$p/cgroup"
check "cgroup: v2 limits written" groot "[ \$(cat $CG/users/alice/memory.max) = 100663296 ] && grep -q '^20000 100000' $CG/users/alice/cpu.max && [ \$(cat $CG/users/alice/pids.max) = 40 ] && grep -q 'wbps=1048576' $CG/users/alice/io.max"
check "logind: alice has a session" groot 'loginctl list-sessions --no-legend | grep -q alice'
# A user manager (systemd --user) would run alice's own units on the host, outside her container:
# pam_hutch in the systemd-user service refuses it for confined users.
check "systemd-user: no user manager of alice on the host" groot '! systemctl is-active --quiet "user@$(id -u alice).service"'

log "metrics: the timer's textfile, scraped once through node_exporter"
groot 'systemctl start hutch-metrics.service' >/dev/null 2>&1 || true
check "metrics: textfile written by hutch-metrics.service" groot 'grep -q "^hutch_container_sessions{user=\"alice\"} 1$" /var/lib/prometheus/node-exporter/hutch.prom'
NE_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ssh "${SSH_OPTS[@]}" -i "$IMG/id_ed25519" -N -L "127.0.0.1:$NE_PORT:127.0.0.1:9100" root@127.0.0.1 </dev/null &
FWD=$!
SCRAPED=
for _ in $(seq 30); do
    SCRAPED=$(python3 -c "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$NE_PORT/metrics', timeout=5).read().decode())" 2>/dev/null) && break
    sleep 1
done
kill "$FWD" 2>/dev/null || true
wait "$FWD" 2>/dev/null || true
echo "$SCRAPED" | grep '^hutch_\|^# [A-Z]* hutch_' >"$SHARE/out/scraped-hutch.prom" || true
# node_exporter writes its own float form (1.00663296e+08): compare as numbers.
sample_is() { awk -v s="$1" -v v="$2" '$1 == s && $2 == v + 0 {ok = 1} END {exit !ok}'; }
if sample_is 'hutch_container_memory_limit_bytes{user="alice"}' 100663296 <"$SHARE/out/scraped-hutch.prom" \
    && sample_is 'hutch_container_pids_limit{user="alice"}' 40 <"$SHARE/out/scraped-hutch.prom" \
    && sample_is 'hutch_container_sessions{user="alice"}' 1 <"$SHARE/out/scraped-hutch.prom" \
    && sample_is node_textfile_scrape_error 0 <<<"$SCRAPED"; then
    pass "metrics: node_exporter serves hutch's series (v2 limits of alice)"
else
    fail "metrics: node_exporter scrape" "$(head -c 300 "$SHARE/out/scraped-hutch.prom" | tr '\n' ' ')"
fi
if command -v promtool >/dev/null; then
    check "metrics: promtool accepts the scraped series" promtool check metrics <"$SHARE/out/scraped-hutch.prom"
fi

log "quota workloads"
# A terminal of alice's (ssh -tt: a pty in the container's devpts): the limit notices reach it.
ssh "${SSH_OPTS[@]}" -tt -i "$WORK/alice" alice@127.0.0.1 'sleep 300' </dev/null >"$SHARE/out/alice-tty.log" 2>&1 &
TTY_PID=$!
BG_PIDS+=($TTY_PID)
for _ in $(seq 30); do groot "ls -l /proc/\$(pgrep -u alice -x sleep | tail -n 1)/fd/0 2>/dev/null | grep -q pts" && break; sleep 2; done
rc=0; galice 'tail /dev/zero' >/dev/null 2>&1 || rc=$?
check "memory.max: the hog is OOM-killed (rc $rc)" groot "[ $rc -ne 0 ] && awk '/^oom_kill /{exit !(\$2 > 0)}' $CG/users/alice/memory.events"
# The sleeps must outlast the loop even when forks are slow under TCG (a 5 s sleep once exited
# before 40 were running): 20 s leaves ~0.5 s per fork.
galice 'i=0; while [ $i -lt 60 ]; do sleep 20 & i=$((i+1)); done 2>/dev/null; wait' >/dev/null 2>&1 || true
check "pids.max: forks refused at the limit" groot "awk '/^max /{exit !(\$2 > 0)}' $CG/users/alice/pids.events"
# 12 s: the keeper looks at cpu.stat every 5 s, and tells throttling in half a look's periods.
galice 'timeout 12 sh -c "while :; do :; done"' >/dev/null 2>&1 || true
check "cpu.max: throttled" groot "awk '/^nr_throttled /{exit !(\$2 > 0)}' $CG/users/alice/cpu.stat"
# v2: memory.events and pids.events wake the keeper; the kernel's log names the victim.
notice() { local n=$1 want=$2 i; for ((i = 0; i < 15; i++)); do grep -q -- "$want" "$SHARE/out/alice-tty.log" && { pass "$n"; return; }; sleep 2; done; fail "$n" "$(grep -a 'hutch:' "$SHARE/out/alice-tty.log" | tr '\r\n' '  ' | head -c 400)"; }
notice "notice: the OOM kill reaches alice's terminal, naming tail" 'hutch: memory limit 96M reached; killed [0-9]* (tail), [0-9.]*M'
notice "notice: a refused fork reaches it" 'hutch: process limit 40 reached; '
notice "notice: CPU throttling reaches it" 'hutch: CPU limit 0.2 cores reached; throttled in '
check "notice: counted in hutchctl stats (NOTICES)" groot "hutchctl stats alice | awk 'NR == 1 && \$NF != \"NOTICES\" {exit 1} NR == 2 {ok = \$NF >= 3} END {exit !ok}'"
# The group carries the limits; its leaf, where the processes are, has the memory controller too (for lxcfs): neither is oom.group.
check "memory: no memory.oom.group on alice's cgroup" groot "[ \"\$(cat $CG/users/alice/memory.oom.group)\" = 0 ] && ! grep -qs '^1' $CG/users/alice/procs/memory.oom.group"
kill "$TTY_PID" 2>/dev/null || true
wait "$TTY_PID" 2>/dev/null || true
groot 'systemctl start hutch-metrics.service' >/dev/null 2>&1 || true
REPORT=$(groot 'hutchctl report alice --since 1h --csv' 2>&1 || true)
if awk -F, 'NR == 2 && $1 == "\"alice\"" && $8 > 0 && $9 > 0 && $11 > 0 {ok = 1} END {exit !ok}' <<<"$REPORT"; then pass "report: alice hit her limits (OOM kill, pids, throttling recorded)"; else fail "report: alice's limit hits" "$(tr '\n' ' ' <<<"$REPORT")"; fi
IO=$(galice 'stat -fc %T $HOME; s=$(date +%s.%N); dd if=/dev/zero of=$HOME/io.bin bs=64k count=64 oflag=direct 2>/dev/null; e=$(date +%s.%N); rm -f $HOME/io.bin; awk -v a=$e -v b=$s "BEGIN{print a-b}"' 2>&1 || true)
IO_FS=$(echo "$IO" | head -n 1) IO_SECS=$(echo "$IO" | tail -n 1)
if [[ $IO_FS == ext2/ext3 ]] && awk -v t="$IO_SECS" 'BEGIN{exit !(t >= 2.5)}'; then pass "io.max: 4 MiB at 1 MiB/s to vda took ${IO_SECS}s"; else fail "io.max" "fs $IO_FS, 4 MiB took ${IO_SECS}s"; fi

log "a second session ends (KillUserProcesses=yes); the keeper stays"
galice true || true
sleep 3
check "logind: the keeper survives a session's end" groot "kill -0 $KEEPER && test -d $CG/users/alice"
check "logind: the holding session still runs" groot 'pgrep -u alice -x sleep >/dev/null'
groot 'systemctl status hutch.service --no-pager; echo; loginctl list-sessions; echo; systemd-cgls --no-pager /system.slice/hutch.service' >"$SHARE/out/status-during.txt" 2>&1 || true

log "logout and teardown"
end_sessions
eventually "teardown: cgroup, state, processes and keeper gone" 30 \
    "! test -e $CG/users/alice && ! test -e /run/hutch/users/alice && ! pgrep -u alice >/dev/null && ! kill -0 $KEEPER 2>/dev/null"
eventually "logind: alice's sessions ended" 15 '! loginctl list-sessions --no-legend | grep -q alice'
PROBE=$(groot 'hutchctl check --probe alice' 2>&1 || true)
echo "$PROBE" >"$SHARE/out/probe-alice.txt"
LIMITS=$(grep '^PASS limits: ' <<<"$PROBE" || true)
if grep -q '^verdict: ok (5 checks passed)$' <<<"$PROBE" && [[ $LIMITS == *"memory 100663296,"* && $LIMITS == *"pids 40,"* && $LIMITS == *"cpu Some((20000, 100000))"* ]]; then
    pass "probe: alice's container built, checked (v2 limits) and torn down"
else
    fail "probe" "$(tr '\n' ' ' <<<"$PROBE")"
fi
check "probe: nothing left of alice's container" groot "! test -e $CG/users/alice && ! test -e /run/hutch/users/alice"
check "unit: hutch.service still active, nothing failed" groot '[ "$(systemctl is-active hutch.service)" = active ] && [ -z "$(systemctl list-units --failed --no-legend | grep -v "user@")" ]'

log "vlan networking (bob)"
ssh "${SSH_OPTS[@]}" -i "$WORK/alice" bob@127.0.0.1 'sleep 600' </dev/null &
BG_PIDS+=($!)
for _ in $(seq 30); do groot 'pgrep -u bob -x sleep >/dev/null' && break; sleep 2; done
VLAN=$(groot 'p=$(pgrep -u bob -x sleep | head -n 1); nsenter -t "$p" -n ip -d -o link show eth0; nsenter -t "$p" -n ip -4 -o addr show eth0' 2>&1 || true)
if [[ $VLAN == *"vlan protocol 802.1Q id 100"* && $VLAN == *"inet 10.77."* ]]; then pass "vlan: eth0 is VLAN 100 on dummy0 with a leased address"; else fail "vlan" "$(echo "$VLAN" | tr '\n' ' ')"; fi
end_sessions
eventually "vlan: teardown leaves no vlan link, cgroup or process" 30 \
    "! test -e $CG/users/bob && ! pgrep -u bob >/dev/null && ! ip -o link show | grep -q '@dummy0'"

# At each close the keeper moves sshd's session process out of the container's cgroup
# (back to its session scope, or into hutch's own group once systemd removed the scope).
check "close: every session's sshd left the container's cgroup" groot '! journalctl -b --no-pager -t hutch-keeper | grep "moving pid"'

log "cron: alice's crontab entry runs in her container"
check "package: the install itself wired cron and atd" groot '[ "$(cat /root/wired-by-deb)" = "$(printf "/etc/pam.d/cron\n/etc/pam.d/atd")" ]'
check "setup: pam_hutch is the last session line of cron and atd" groot 'for s in cron atd; do grep "^[^#]*session" /etc/pam.d/$s | tail -n 1 | grep -q pam_hutch.so || exit 1; done'
# What the job sees, written where the host can read it (the home is bound in).
groot 'rm -f /home/alice/cron.out; crontab -u alice -' >/dev/null 2>&1 <<'CRONTAB' || true
* * * * * { hostname; cat /proc/1/comm; grep ^Seccomp: /proc/self/status; } >/home/alice/cron.tmp 2>&1; mv /home/alice/cron.tmp /home/alice/cron.out
CRONTAB
eventually "cron: the entry ran (cron runs it within a minute)" 75 'test -s /home/alice/cron.out'
groot 'crontab -u alice -r' >/dev/null 2>&1 || true
expect "cron: hostname, pid 1 and filter of the job are the container's" "alice hutch-init Seccomp:2" \
    "$(groot 'cat /home/alice/cron.out' 2>&1 | tr -s '\t\n' '  ' | sed 's/ $//; s/: /:/')"
eventually "cron: the job's container torn down after it" 30 "! test -e $CG/users/alice && ! pgrep -u alice >/dev/null"

nfs_checks
user_checks

log "upgrade and purge"
check "package: reinstall (upgrade path) keeps hutch.service active" groot "cd /root && DEBIAN_FRONTEND=noninteractive apt-get install -y --reinstall ./${DEB##*/} >/dev/null 2>&1 && [ \"\$(systemctl is-active hutch.service)\" = active ]"
groot 'systemctl status hutch.service --no-pager; journalctl -b --no-pager' >"$SHARE/out/journal.txt" 2>&1 || true
check "package: purge" groot 'rm /etc/hutch/hutch.d/50-vmtest.toml /etc/hutch/hutch.d/51-vmtest-vlan.toml && DEBIAN_FRONTEND=noninteractive apt-get purge -y hutch >/dev/null 2>&1'
check "purge: /etc/shells restored" groot '! grep -q hutch-shell /etc/shells'
check "purge: no hutch state" groot '! test -e /var/lib/hutch && ! test -e /run/hutch && ! test -e /etc/hutch && ! grep -q " /run/hutch" /proc/mounts && ! test -e /var/lib/prometheus/node-exporter/hutch.prom'
check "purge: /etc/pam.d as before setup" groot '! grep -rq pam_hutch /etc/pam.d && ! ls /etc/pam.d/*.hutch-bak 2>/dev/null'

finish
