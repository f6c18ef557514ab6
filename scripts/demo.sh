#!/usr/bin/env bash
# hutch demo: on a fresh Debian machine, as root,
#   1. builds hutch (debug) — `make demo` does that before calling this;
#   2. builds a Debian bookworm template with mmdebstrap (cached in
#      /var/lib/hutch-demo) and a demo policy in /tmp/hutch-demo;
#   3. creates the demo user `hutchdemo` whose login shell is hutch-shell;
#   4. starts a private sshd on 127.0.0.1:${HUTCH_DEMO_PORT:-2299} in a
#      private mount namespace whose PAM service puts pam_hutch last
#      (the host's /etc/pam.d and its own sshd are never touched);
#   5. logs in as the demo user with the real ssh client: an interactive
#      shell when run from a terminal, a short tour otherwise;
#   6. removes the user, the sshd and everything else when you log out
#      (the template stays cached).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

[ "$(id -u)" = 0 ] || { echo "demo: run as root (sudo make demo)" >&2; exit 1; }
PORT=${HUTCH_DEMO_PORT:-2299}
USER_NAME=hutchdemo
LIB=/var/lib/hutch-demo
D=$(mktemp -d /tmp/hutch-demo.XXXXXX)
chmod 755 "$D"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
for b in hutchctl hutch-keeper hutch-shell libpam_hutch.so; do
    [ -e "$BIN/$b" ] || { echo "demo: $BIN/$b missing; run 'make build' first" >&2; exit 1; }
done

SSHD_PID=
# The PAM module caches the compiled policy in /run/hutch/policy-cache.
RUN_HUTCH_WAS_THERE=0
[ -e /run/hutch ] && RUN_HUTCH_WAS_THERE=1
# The demo's cgroup directories, deepest first (cgroup_root "hutch-demo" is
# made below this shell's own cgroup in every hierarchy).
demo_cgroups() {
    find /sys/fs/cgroup -mindepth 1 -maxdepth 8 -type d -path '*/hutch-demo*' 2>/dev/null | sort -r
}
# Pids still in the demo's cgroups (its keeper, the container).
demo_pids() {
    demo_cgroups | while read -r d; do cat "$d/cgroup.procs" 2>/dev/null; done | sort -u
}
cleanup() {
    set +e
    [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2>/dev/null && wait "$SSHD_PID" 2>/dev/null
    # The container goes with the last session: the keeper kills it, removes
    # the user's cgroups and its state, reaps the init and exits. Wait for
    # all of that (bounded), not only for the state directory: the keeper
    # itself sits in hutch-demo/keepers until it has exited.
    for _ in $(seq 150); do
        [ -z "$(demo_pids)" ] && [ ! -e "$D/run/users/$USER_NAME" ] && break
        sleep 0.2
    done
    # Whatever is still there after 30 s is the demo's own: end it by pid.
    for p in $(demo_pids) $(pgrep -u "$USER_NAME" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    id "$USER_NAME" >/dev/null 2>&1 && userdel -r "$USER_NAME" 2>/dev/null
    for m in $(awk -v d="$D" '$5 ~ "^"d {print $5}' /proc/self/mountinfo | sort -r); do umount -l "$m"; done
    # rmdir refuses a group a dying process still holds: retry (bounded).
    for _ in $(seq 50); do
        left=$(demo_cgroups)
        [ -z "$left" ] && break
        for g in $left; do rmdir "$g" 2>/dev/null; done
        [ -z "$(demo_cgroups)" ] && break
        sleep 0.2
    done
    [ -z "$(demo_cgroups)" ] || echo "demo: could not remove cgroups: $(demo_cgroups | tr '\n' ' ')" >&2
    # The PAM module's cache of the demo's policy (its key holds the path);
    # /run/hutch itself only if the demo made it and nothing else is in it.
    for f in /run/hutch/policy-cache/*.cache; do
        [ -e "$f" ] && grep -qaF "$D/hutch.toml" "$f" && rm -f "$f"
    done
    # pam_hutch's login counters for the demo's PAM service.
    for f in /run/hutch/counters/*.counters; do
        [ -e "$f" ] && grep -qF 'service="hutch-demo-sshd"' "$f" && rm -f "$f"
    done
    if [ "$RUN_HUTCH_WAS_THERE" = 0 ]; then
        rmdir /run/hutch/policy-cache /run/hutch/counters /run/hutch 2>/dev/null
    fi
    rm -rf "$D"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. Install hutch-shell and the module where the demo user and PAM find them.
install -m 0755 "$BIN/hutch-shell" "$D/hutch-shell"
install -m 0644 "$BIN/libpam_hutch.so" "$D/pam_hutch.so"
install -m 0755 "$BIN/hutch-keeper" "$D/hutch-keeper"

# 2. The policy and the template.
cat > "$D/hutch.toml" <<EOF
[host]
run_dir = "$D/run"
lib_dir = "$LIB"
cgroup_root = "hutch-demo"   # below this shell's own cgroups

[template]
name = "bookworm"

[defaults]
hostname = "{user}-box"
memory = "512M"
pids = 256
EOF
"$BIN/hutchctl" --config "$D/hutch.toml" check
if [ ! -e "$LIB/templates/bookworm/bin/bash" ]; then
    echo "demo: building the template (mmdebstrap bookworm, about a minute)…"
    "$BIN/hutchctl" --config "$D/hutch.toml" template build bookworm \
        --debootstrap bookworm --include procps,openssh-sftp-server,openssh-client,rsync,iproute2,less
fi

# 3. The demo user.
id "$USER_NAME" >/dev/null 2>&1 && userdel -r "$USER_NAME" 2>/dev/null || true
useradd -m -s "$D/hutch-shell" "$USER_NAME"
usermod -p '*' "$USER_NAME"
ssh-keygen -q -t ed25519 -N '' -f "$D/id_demo"
install -d -m 700 -o "$USER_NAME" -g "$USER_NAME" "/home/$USER_NAME/.ssh"
install -m 600 -o "$USER_NAME" -g "$USER_NAME" "$D/id_demo.pub" "/home/$USER_NAME/.ssh/authorized_keys"

# 4. A private sshd on loopback; its PAM service is the demo's own file.
ssh-keygen -q -t ed25519 -N '' -f "$D/host_key"
mkdir -p "$D/pam.d" /run/sshd
cat > "$D/pam.d/hutch-demo-sshd" <<EOF
auth     required pam_permit.so
account  required pam_unix.so
session  required pam_unix.so
session  required $D/pam_hutch.so config=$D/hutch.toml keeper=$D/hutch-keeper
EOF
cat > "$D/sshd_config" <<EOF
ListenAddress 127.0.0.1:$PORT
HostKey $D/host_key
PidFile $D/sshd.pid
UsePAM yes
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile .ssh/authorized_keys
Subsystem sftp internal-sftp
EOF
ln -s /usr/sbin/sshd "$D/hutch-demo-sshd"
unshare --mount --propagation private -- sh -c \
    "mount --bind '$D/pam.d' /etc/pam.d && exec '$D/hutch-demo-sshd' -D -e -f '$D/sshd_config'" \
    2>"$D/sshd.log" &
SSHD_PID=$!
for _ in $(seq 50); do grep -q "Server listening" "$D/sshd.log" 2>/dev/null && break; sleep 0.1; done

# 5. The confined login.
SSH=(ssh -i "$D/id_demo" -p "$PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
     -o LogLevel=ERROR "$USER_NAME@127.0.0.1")
echo
echo "demo: logging in as $USER_NAME over ssh to 127.0.0.1:$PORT — you are in the user's container."
if [ -t 0 ] && [ -t 1 ]; then
    echo "demo: try hostname, ps -ef, cat /etc/passwd, ls /home; 'exit' ends the demo."
    "${SSH[@]}" -t || true
else
    "${SSH[@]}" 'echo "hostname: $(hostname)"; echo "whoami: $(id)"; echo "tty-less session, processes:"; ps -ef;
                 echo "/etc/passwd:"; cat /etc/passwd; echo "mounts:"; cat /proc/mounts | cut -d" " -f1-3'
    echo
    echo "demo: on the host meanwhile:"
    "${SSH[@]}" 'sleep 3' &
    SLEEPER=$!
    sleep 1.5
    "$BIN/hutchctl" --config "$D/hutch.toml" list
    wait "$SLEEPER"   # not a bare wait: the sshd is a background job too
fi
echo "demo: logged out; cleaning up."
