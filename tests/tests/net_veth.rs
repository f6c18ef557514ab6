//! Per-user networking, end to end (`network = "veth"`): confined SSH
//! sessions through the real sshd/PAM/keeper, with the bridge, NAT and an
//! "uplink" namespace all inside network namespaces this test made (the
//! sshd's private one is the keeper's "host"). No packet leaves them.
//!
//! Services: a tiny Python TCP server that answers each connection with the
//! peer's address and closes, so a reply also says which source address
//! the packet arrived with (the container's, or the NAT's).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hutch_tests::hutch::trimmed;
use hutch_tests::*;

/// Answers every connection on each ADDR:PORT argument with "<peer ip>\n".
const SERVER: &str = r#"
import socket, sys, threading
def serve(a, p):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a, int(p))); s.listen(64)
    while True:
        c, peer = s.accept()
        try: c.sendall((peer[0] + "\n").encode())
        except OSError: pass
        c.close()
for arg in sys.argv[1:]:
    a, p = arg.rsplit(":", 1)
    threading.Thread(target=serve, args=(a, p), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// Connects (optionally from SRC) and prints the first line, or ERR:<reason>.
const CLIENT: &str = r#"
import socket, sys
ip, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(); s.settimeout(3)
try:
    if len(sys.argv) > 3:
        s.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND
        s.bind((sys.argv[3], 0))
    s.connect((ip, port))
    print(s.makefile().readline().strip() or "ERR:closed")
except Exception as e:
    print("ERR:" + type(e).__name__ + ":" + str(e))
"#;

/// Reads everything from IP:8092 and prints the byte count and the rate
/// (bytes per second) over what arrived after the first SKIP bytes: the
/// steady state behind a policer's bucket.
const STEADY_CLIENT: &str = r#"
import socket, sys, time
ip, skip = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((ip, 8092), timeout=30)
n = 0; t_skip = None; n_skip = 0
while True:
    b = s.recv(65536)
    if not b: break
    n += len(b)
    if t_skip is None and n >= skip: t_skip = time.monotonic(); n_skip = n
print(n, (n - n_skip) / (time.monotonic() - t_skip))
"#;

/// A process this test started, killed (by pid) and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nsenter(pid: i32) -> Command {
    let mut c = Command::new("timeout");
    c.args([
        "-k",
        "2",
        "20",
        "nsenter",
        &format!("--net=/proc/{pid}/ns/net"),
        "--",
    ]);
    c
}

/// `nsenter` into `pid`'s netns without a time bound (servers; killed on drop).
fn nsenter_long(pid: i32) -> Command {
    let mut c = Command::new("nsenter");
    c.args([&format!("--net=/proc/{pid}/ns/net"), "--"]);
    c
}

fn sh_in(pid: i32, script: &str) -> std::process::Output {
    output(nsenter(pid).args(["sh", "-ec", script]))
}

/// The Python server in `pid`'s netns on each of `addrs`, once it listens.
fn server_in(pid: i32, addrs: &[&str]) -> Proc {
    use std::io::BufRead;
    let mut c = nsenter_long(pid)
        .args(["python3", "-c", SERVER])
        .args(addrs)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python server");
    let mut line = String::new();
    let mut r = std::io::BufReader::new(c.stdout.take().unwrap());
    r.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "server on {addrs:?} did not start");
    Proc(c)
}

/// A connection from `pid`'s netns (as root: may bind any source).
fn connect_from(pid: i32, ip: &str, port: u16, src: Option<&str>) -> String {
    let mut c = nsenter(pid);
    c.args(["python3", "-c", CLIENT, ip, &port.to_string()]);
    if let Some(s) = src {
        c.arg(s);
    }
    trimmed(&output(&mut c))
}

/// A connection from inside the user's session (bash's /dev/tcp).
fn connect_as(env: &SshdEnv, user: &TestUser, ip: &str, port: u16) -> String {
    let out = env.ssh(
        user,
        &[&format!(
            "timeout 4 bash -c 'exec 3<>/dev/tcp/{ip}/{port} && head -n1 <&3' 2>&1 || echo ERR:$?"
        )],
    );
    trimmed(&out)
}

fn leases(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn lease_of(path: &Path, user: &str) -> Option<(String, i32)> {
    leases(path).lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        (w.first() == Some(&user)).then(|| (w[1].to_string(), w[2].parse().unwrap()))
    })
}

/// The whole of issue 7's veth proof in one sshd "host": gateway, NAT to an
/// uplink namespace, no path to another user's container, egress denies
/// (CIDR and port 25), spoofed source address and MAC dropped, `ssh -L`
/// confined to the container's view, distinct addresses for concurrent
/// users, the same address at the next login, and nothing left at teardown.
#[test]
fn veth_isolation_nat_leases() {
    if !require_root("veth_isolation_nat_leases") {
        return;
    }
    let hutch = HutchEnv::new("");
    let lease_file = hutch.dir.join("leases");
    hutch.write_policy(&format!(
        "[host.net]\nleases = \"{}\"\nnat_uplink = \"up0\"\ndns = [\"10.77.0.1\"]\n\n[defaults]\nnetwork = \"veth\"\npids = 512\negress_deny = [\"169.254.169.254/32\", \"tcp/25\", \"198.51.100.0/24\"]\n",
        lease_file.display()
    ));
    let a = hutch.user();
    let b = hutch.user();
    let env = hutch.sshd(Sftp::Internal);
    env.authorize(&a);
    env.authorize(&b);
    let host = env.pid();

    // The "uplink": a namespace of its own, reached from the sshd's through up0.
    let uplink = Proc(
        Command::new("unshare")
            .args(["--net", "sleep", "infinity"])
            .spawn()
            .expect("uplink ns"),
    );
    let upid = uplink.0.id() as i32;
    wait_until(Duration::from_secs(5), || {
        (proc::ns_id(upid, "net") != proc::ns_id(host, "net")).then_some(())
    });
    let out = sh_in(
        host,
        &format!(
            "ip link add up0 type veth peer name up0p netns {upid}\nip addr add 192.0.2.1/24 dev up0\nip link set up0 up\n\
             ip addr add 198.51.100.1/32 dev lo\nip addr add 169.254.169.254/32 dev lo"
        ),
    );
    assert!(out.status.success(), "{}", out.describe());
    let out = sh_in(
        upid,
        "ip link set lo up\nip addr add 192.0.2.2/24 dev up0p\nip link set up0p up",
    );
    assert!(out.status.success(), "{}", out.describe());
    let _host_srv = server_in(host, &["0.0.0.0:8081", "0.0.0.0:25", "127.0.0.1:8082"]);
    let _up_srv = server_in(upid, &["192.0.2.2:8080"]);

    // B holds a session open while A works.
    let mut b_session = env.shell_pty(&b);

    // B's keeper made the network while the init built its root: every
    // network step is marked before the keeper read the init's report.
    let st = wait_until(Duration::from_secs(10), || hutch.state(&b.name)).expect("state.json of b");
    let marks: Vec<(String, u64)> =
        serde_json::from_value(st["start_marks"].clone()).expect("start marks");
    let at = |n: &str| {
        marks
            .iter()
            .position(|(m, _)| m == n)
            .unwrap_or_else(|| panic!("no mark {n} in {marks:?}"))
    };
    for step in ["net_lease", "net_veth", "net_eth0"] {
        assert!(
            at("attach") < at(step) && at(step) < at("report"),
            "{step}: {marks:?}"
        );
    }

    // The gateway sees A with A's leased address.
    let t = std::time::Instant::now();
    let seen = connect_as(&env, &a, "10.77.0.1", 8081);
    eprintln!("first login of a with veth: {:?}", t.elapsed());
    let (a_addr, a_pid) = lease_of(&lease_file, &a.name)
        .unwrap_or_else(|| panic!("no lease for a: {}", leases(&lease_file)));
    let (b_addr, _) = lease_of(&lease_file, &b.name).expect("lease for b");
    assert_eq!(
        seen,
        a_addr,
        "gateway reply; syslog {:#?}",
        env.syslog().lines()
    );
    assert_ne!(a_addr, b_addr, "concurrent users share an address");
    assert!(a_pid > 0);

    // resolv.conf from the policy, eth0's MAC from the address.
    let out = env.ssh(
        &a,
        &["cat /etc/resolv.conf; cat /sys/class/net/eth0/address"],
    );
    assert!(
        out.stdout_str().contains("nameserver 10.77.0.1"),
        "{}",
        out.describe()
    );

    // NAT: the uplink sees the sshd namespace's uplink address, not A's.
    assert_eq!(connect_as(&env, &a, "192.0.2.2", 8080), "192.0.2.1");
    // Denied: port 25 anywhere, the denied CIDR, the metadata address.
    for (ip, port) in [
        ("10.77.0.1", 25),
        ("198.51.100.1", 8081),
        ("169.254.169.254", 8081),
    ] {
        let r = connect_as(&env, &a, ip, port);
        assert!(
            r.contains("ERR") && !r.contains("refused"),
            "{ip}:{port} reachable: {r}"
        );
    }
    // Not B: a closed port of a reachable host would be refused at once;
    // isolation leaves B unreachable (no ARP answer).
    let r = connect_as(&env, &a, &b_addr, 22);
    assert!(
        r.contains("ERR") && !r.contains("refused"),
        "b reachable from a: {r}"
    );
    let r = connect_as(&env, &a, "10.77.0.1", 9);
    assert!(
        r.contains("refused"),
        "control: a closed port of the gateway is refused: {r}"
    );

    // ssh -L: 127.0.0.1 is the container's own lo, so the host-only service
    // is out of reach; the gateway is reached from the container (its reply
    // names A's address).
    // (nsenter execs ssh itself, so the pid killed on drop is the ssh's.)
    let argv = env.ssh_argv(
        &a,
        &[
            "-N",
            "-L",
            "9001:127.0.0.1:8082",
            "-L",
            "9002:10.77.0.1:8081",
        ],
        &[],
    );
    let fwd = Proc(
        Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh -L"),
    );
    let via = wait_until(Duration::from_secs(15), || {
        let r = connect_from(host, "127.0.0.1", 9002, None);
        (!r.starts_with("ERR")).then_some(r)
    });
    assert_eq!(
        via.as_deref(),
        Some(a_addr.as_str()),
        "forward to the gateway"
    );
    let r = connect_from(host, "127.0.0.1", 9001, None);
    assert!(
        r.starts_with("ERR"),
        "ssh -L reached a host-only service: {r}"
    );

    // Spoofing, tested with root in A's container netns (the user has no
    // CAP_NET_RAW/ADMIN), while the forwarding session keeps it alive: the real source passes, another is dropped, and
    // with a foreign MAC even the real source is dropped.
    let st = hutch.state(&a.name).expect("state of a");
    let init = st["init_pid"].as_i64().unwrap() as i32;
    let real = connect_from(init, "10.77.0.1", 8081, Some(&a_addr));
    assert_eq!(
        real,
        a_addr,
        "init {init} ({:?}): {}",
        proc::cmdline(init),
        sh_in(init, "ip addr; ip route").describe()
    );
    let out = sh_in(init, "ip addr add 10.77.250.250/32 dev eth0");
    assert!(out.status.success(), "{}", out.describe());
    let r = connect_from(init, "10.77.0.1", 8081, Some("10.77.250.250"));
    assert!(r.starts_with("ERR"), "spoofed source passed: {r}");
    let out = sh_in(
        init,
        "ip link set eth0 address 02:00:00:00:00:99; ip neigh flush all",
    );
    assert!(out.status.success(), "{}", out.describe());
    let r = connect_from(init, "10.77.0.1", 8081, Some(&a_addr));
    assert!(r.starts_with("ERR"), "spoofed MAC passed: {r}");

    drop(fwd); // A's last session

    // Teardown: A's container goes, its lease is freed, its table and port too.
    let port = format!(
        "hv{:08x}",
        u32::from(a_addr.parse::<std::net::Ipv4Addr>().unwrap())
    );
    let left = hutch.wait_gone(&a.name, Duration::from_secs(15));
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(lease_of(&lease_file, &a.name), Some((a_addr.clone(), 0)));
    let tables = trimmed(&sh_in(host, "nft list tables"));
    assert!(!tables.contains(&format!("hutch-{}", a.name)), "{tables}");
    assert!(tables.contains(&format!("hutch-{}", b.name)), "{tables}");
    let links = wait_until(Duration::from_secs(5), || {
        let l = trimmed(&sh_in(host, "ip -o link show"));
        (!l.contains(&port)).then_some(l)
    });
    assert!(links.is_some(), "{port} left after teardown");

    // The same address at the next login.
    assert_eq!(connect_as(&env, &a, "10.77.0.1", 8081), a_addr);
    assert!(hutch.wait_gone(&a.name, Duration::from_secs(15)).is_empty());

    // B logs out: nothing of either is left but the free, sticky leases.
    b_session.send("exit\n");
    let _ = b_session.wait(Duration::from_secs(30));
    assert!(hutch.wait_gone(&b.name, Duration::from_secs(15)).is_empty());
    let tables = trimmed(&sh_in(host, "nft list tables"));
    assert!(!tables.contains("hutch-"), "{tables}");
    let links = trimmed(&sh_in(host, "ip -o link show"));
    assert!(!links.contains(": hv"), "{links}");
    assert!(!trimmed(&sh_in(host, "tc qdisc show")).contains("hv"));
    for l in leases(&lease_file).lines() {
        assert!(l.ends_with(" 0"), "lease still held: {l}");
    }

    // What the networking costs a cold login: the keeper's own figures.
    let ms = |line: &str, key: &str| -> Option<f64> {
        line.split(key)
            .nth(1)?
            .split(" ms")
            .next()?
            .trim()
            .parse()
            .ok()
    };
    let mut shares: Vec<f64> = Vec::new();
    let lines = env.syslog().lines();
    for (i, l) in lines.iter().enumerate() {
        if l.contains("network up in ") || l.contains("container up in ") {
            eprintln!("{l}");
        }
        if let Some(net) = ms(l, "network up in ") {
            if let Some(total) = lines[i..].iter().find_map(|m| ms(m, "container up in ")) {
                shares.push(net / total);
            }
        }
    }
    shares.sort_by(|x, y| x.partial_cmp(y).unwrap());
    assert!(!shares.is_empty(), "no network timing logged");
    eprintln!(
        "networking share of container start-up: median {:.0}% over {} starts",
        shares[shares.len() / 2] * 100.0,
        shares.len()
    );
    drop(uplink);
}

/// `egress_allow`: with only the uplink's 192.0.2.2 tcp/8080 (and tcp/8083,
/// which `egress_deny` also names) allowed, the container reaches that port
/// and the gateway; another port of the same uplink host, the denied port,
/// and the host's own uplink address are dropped (not refused); the
/// user's ip table goes at teardown.
#[test]
fn veth_egress_allow() {
    if !require_root("veth_egress_allow") {
        return;
    }
    let hutch = HutchEnv::new("");
    let lease_file = hutch.dir.join("leases");
    hutch.write_policy(&format!(
        "[host.net]\nleases = \"{}\"\nnat_uplink = \"up0\"\n\n[defaults]\nnetwork = \"veth\"\npids = 512\n\
         egress_deny = [\"192.0.2.2/32 tcp/8083\"]\negress_allow = [\"192.0.2.2/32 tcp/8080\", \"192.0.2.2/32 tcp/8083\"]\n",
        lease_file.display()
    ));
    let a = hutch.user();
    let env = hutch.sshd(Sftp::Internal);
    env.authorize(&a);
    let host = env.pid();

    let uplink = Proc(
        Command::new("unshare")
            .args(["--net", "sleep", "infinity"])
            .spawn()
            .expect("uplink ns"),
    );
    let upid = uplink.0.id() as i32;
    wait_until(Duration::from_secs(5), || {
        (proc::ns_id(upid, "net") != proc::ns_id(host, "net")).then_some(())
    });
    let out = sh_in(host, &format!("ip link add up0 type veth peer name up0p netns {upid}\nip addr add 192.0.2.1/24 dev up0\nip link set up0 up"));
    assert!(out.status.success(), "{}", out.describe());
    let out = sh_in(
        upid,
        "ip link set lo up\nip addr add 192.0.2.2/24 dev up0p\nip link set up0p up",
    );
    assert!(out.status.success(), "{}", out.describe());
    let _host_srv = server_in(host, &["0.0.0.0:8081"]);
    let _up_srv = server_in(
        upid,
        &["192.0.2.2:8080", "192.0.2.2:8081", "192.0.2.2:8083"],
    );

    // Controls from the sshd's namespace: every service answers.
    for port in [8080, 8081, 8083] {
        assert_eq!(
            connect_from(host, "192.0.2.2", port, None),
            "192.0.2.1",
            "control {port}"
        );
    }

    // The gateway, and the allowed port (through the NAT).
    let seen = connect_as(&env, &a, "10.77.0.1", 8081);
    let (a_addr, _) = lease_of(&lease_file, &a.name)
        .unwrap_or_else(|| panic!("no lease for a: {}", leases(&lease_file)));
    assert_eq!(
        seen,
        a_addr,
        "gateway reply; syslog {:#?}",
        env.syslog().lines()
    );
    assert_eq!(connect_as(&env, &a, "192.0.2.2", 8080), "192.0.2.1");
    // Dropped: another port of the allowed host, an allowed port that is
    // also denied, and the host's uplink address (not the gateway).
    for (ip, port) in [
        ("192.0.2.2", 8081),
        ("192.0.2.2", 8083),
        ("192.0.2.1", 8081),
    ] {
        let r = connect_as(&env, &a, ip, port);
        assert!(
            r.contains("ERR") && !r.contains("refused"),
            "{ip}:{port} reachable: {r}"
        );
    }
    let r = connect_as(&env, &a, "10.77.0.1", 9);
    assert!(
        r.contains("refused"),
        "control: a closed port of the gateway is refused: {r}"
    );

    assert!(hutch.wait_gone(&a.name, Duration::from_secs(15)).is_empty());
    let tables = trimmed(&sh_in(host, "nft list tables"));
    assert!(!tables.contains("hutch-"), "{tables}");
    drop(uplink);
}

/// Sends N bytes to each connection on ADDR:PORT (source), or reads a
/// connection to its end and answers nothing (sink), printing
/// "<bytes> <seconds>" from first to last byte on stdout for the sink.
const SHAPER: &str = r#"
import socket, sys, threading, time
def source(a, p, n):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a, p)); s.listen(4)
    while True:
        c, _ = s.accept(); c.sendall(b"x" * n); c.close()
def sink(a, p, n):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a, p)); s.listen(4)
    while True:
        c, _ = s.accept(); c.settimeout(60); total = 0; t0 = None
        try:
            while total < n:
                b = c.recv(65536)
                if not b: break
                if t0 is None: t0 = time.monotonic()
                total += len(b)
            c.sendall(("%d %f\n" % (total, time.monotonic() - t0)).encode())
        except OSError: pass
        c.close()
threading.Thread(target=source, args=(sys.argv[1], 8092, int(sys.argv[2])), daemon=True).start()
threading.Thread(target=sink, args=(sys.argv[1], 8091, int(sys.argv[3])), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// Bytes per second of `n` bytes read in the session from the SHAPER's
/// source at 10.77.0.1:8092.
fn download(env: &SshdEnv, user: &TestUser, n: u64) -> f64 {
    let out = env.ssh(
        user,
        &["s=$(date +%s%N); n=$(timeout 30 cat </dev/tcp/10.77.0.1/8092 | wc -c); e=$(date +%s%N); echo $n $(( (e - s) / 1000000 ))"],
    );
    let f: Vec<u64> = out
        .stdout_str()
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(f.len(), 2, "{}", out.describe());
    assert_eq!(f[0], n, "{}", out.describe());
    f[0] as f64 / (f[1] as f64 / 1000.0)
}

/// Bytes per second of `n` bytes sent from the session to the SHAPER's sink
/// at 10.77.0.1:8091, as the sink timed them. The session waits for the
/// sink's answer: data still queued when the session (and the container)
/// ends would be lost with the container's eth0.
fn upload(env: &SshdEnv, user: &TestUser, n: u64) -> f64 {
    let out = env.ssh(
        user,
        &[&format!("exec 3<>/dev/tcp/10.77.0.1/8091 && head -c {n} /dev/zero >&3 && timeout 60 head -n 1 <&3")],
    );
    let f: Vec<f64> = out
        .stdout_str()
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(f.len(), 2, "{}", out.describe());
    assert_eq!(f[0] as u64, n, "{}", out.describe());
    f[0] / f[1]
}

/// The SHAPER in `pid`'s netns, once ready: its source sends `down`
/// bytes a connection, its sink takes `up`.
fn shaper_in(pid: i32, down: u64, up: u64) -> Proc {
    use std::io::BufRead;
    let mut c = nsenter_long(pid)
        .args([
            "python3",
            "-c",
            SHAPER,
            "0.0.0.0",
            &down.to_string(),
            &up.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("shaper server");
    let mut line = String::new();
    std::io::BufReader::new(c.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let p = Proc(c);
    assert_eq!(line.trim(), "ready");
    p
}

/// rate_in and rate_out hold within ±20%, measured with TCP transfers
/// between the container and the sshd's ("host") namespace; the qdiscs go
/// with the container.
#[test]
fn veth_bandwidth() {
    if !require_root("veth_bandwidth") {
        return;
    }
    let hutch = HutchEnv::new("");
    let lease_file = hutch.dir.join("leases");
    hutch.write_policy(&format!(
        "[host.net]\nleases = \"{}\"\n\n[defaults]\nnetwork = \"veth\"\npids = 512\nrate_in = \"16mbit\"\nrate_out = \"8mbit\"\n",
        lease_file.display()
    ));
    let a = hutch.user();
    let env = hutch.sshd(Sftp::Internal);
    env.authorize(&a);
    let host = env.pid();
    let n: u64 = 4_000_000;
    let _srv = shaper_in(host, n, n);

    // Download: 4 MB at 16 mbit/s = 2 MB/s, about 2 s.
    let down = download(&env, &a, n);
    eprintln!("download: {:.0} B/s (limit 2000000)", down);
    assert!(
        (down - 2_000_000.0).abs() <= 0.2 * 2_000_000.0,
        "download {down:.0} B/s vs 2000000"
    );
    // Upload: 4 MB at 8 mbit/s = 1 MB/s, about 4 s, timed by the receiver.
    let up = upload(&env, &a, n);
    eprintln!("upload: {:.0} B/s (limit 1000000)", up);
    assert!(
        (up - 1_000_000.0).abs() <= 0.2 * 1_000_000.0,
        "upload {up:.0} B/s vs 1000000"
    );

    assert!(hutch.wait_gone(&a.name, Duration::from_secs(15)).is_empty());
    // The host end of the veth (and its tbf) goes when the kernel's
    // asynchronous teardown of the container's namespace gets to it.
    let gone = wait_until(Duration::from_secs(15), || {
        (!trimmed(&sh_in(host, "tc qdisc show")).contains("tbf")).then_some(())
    });
    assert!(gone.is_some(), "{}", trimmed(&sh_in(host, "tc qdisc show")));
}

/// A keeper killed with SIGKILL leaves its table and a held lease behind
/// (its container and veth die with it); the user's next login recovers
/// both: the same address, the table replaced, the network working, and
/// nothing left after that logout.
#[test]
fn veth_crash_recovery() {
    if !require_root("veth_crash_recovery") {
        return;
    }
    let hutch = HutchEnv::new("");
    let lease_file = hutch.dir.join("leases");
    hutch.write_policy(&format!(
        "[host.net]\nleases = \"{}\"\n\n[defaults]\nnetwork = \"veth\"\npids = 512\n",
        lease_file.display()
    ));
    let a = hutch.user();
    let env = hutch.sshd(Sftp::Internal);
    env.authorize(&a);
    let host = env.pid();
    let _srv = server_in(host, &["0.0.0.0:8081"]);

    let s = env.shell_pty(&a);
    let keeper = hutch.state(&a.name).expect("state")["keeper_pid"]
        .as_i64()
        .unwrap() as i32;
    let (addr, held) = lease_of(&lease_file, &a.name).expect("lease");
    assert_eq!(held, keeper);
    // The tables are raw nf_tables netlink (runtime/src/net/nftnl.rs): a
    // keeper whose tables are up, and the init cloned from it, have no
    // libnftables mapped.
    let init = hutch.state(&a.name).expect("state")["init_pid"]
        .as_i64()
        .unwrap();
    for pid in [keeper as i64, init] {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
        assert!(
            !maps.contains("libnftables"),
            "pid {pid} (keeper {keeper}) maps libnftables:\n{maps}"
        );
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(keeper),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = s.wait(Duration::from_secs(30));
    let table = format!("hutch-{}", a.name);
    assert!(
        trimmed(&sh_in(host, "nft list tables")).contains(&table),
        "the killed keeper's table should still be there"
    );

    assert_eq!(
        connect_as(&env, &a, "10.77.0.1", 8081),
        addr,
        "syslog {:#?}",
        env.syslog().lines()
    );
    assert!(hutch.wait_gone(&a.name, Duration::from_secs(15)).is_empty());
    assert!(!trimmed(&sh_in(host, "nft list tables")).contains(&table));
    assert_eq!(lease_of(&lease_file, &a.name), Some((addr, 0)));
    for l in env
        .syslog()
        .lines()
        .iter()
        .filter(|l| l.contains("network up"))
    {
        eprintln!("{l}");
    }
}

/// The keeper makes a veth user's network while the init builds its root:
/// an init whose set-up then fails (a policy mount without its source)
/// refuses the login with the network undone: the lease taken meanwhile
/// given back, no veth, no table, nothing of the container left.
#[test]
fn veth_undone_when_the_init_fails() {
    if !require_root("veth_undone_when_the_init_fails") {
        return;
    }
    let hutch = HutchEnv::new("");
    let lease_file = hutch.dir.join("leases");
    let a = hutch.user();
    hutch.write_policy(&format!(
        "[host.net]\nleases = \"{}\"\n\n[defaults]\nnetwork = \"veth\"\npids = 512\n\n[users.{}]\n\
         mounts = [ {{ source = \"{{home}}/.no-such-source\", target = \"{{home}}/pm\", mode = \"ro\" }} ]\n",
        lease_file.display(),
        a.name
    ));
    let env = hutch.sshd(Sftp::Internal);
    env.authorize(&a);
    let host = env.pid();
    let out = env.ssh(&a, &["true"]);
    assert!(!out.status.success(), "{}", out.describe());
    let log = env.syslog().lines().join("\n");
    assert!(log.contains("does not exist"), "{log}");
    assert!(hutch.wait_gone(&a.name, Duration::from_secs(15)).is_empty());
    assert!(
        matches!(lease_of(&lease_file, &a.name), Some((_, 0))),
        "{}",
        leases(&lease_file)
    );
    assert_eq!(trimmed(&sh_in(host, "ip -o link show type veth")), "");
    let table = format!("hutch-{}", a.name);
    assert!(!trimmed(&sh_in(host, "nft list tables")).contains(&table));
}

/// macvlan and vlan on a parent, and phys (an interface moved in), all made
/// in the sshd's namespace: each container gets eth0 of that kind with its
/// leased address; after logout the phys interface is back under its own
/// name, and no eth0 is left anywhere.
#[test]
fn macvlan_vlan_phys() {
    if !require_root("macvlan_vlan_phys") {
        return;
    }
    let hutch = HutchEnv::new("");
    let lease_file = hutch.dir.join("leases");
    let (m, v, p, bad) = (hutch.user(), hutch.user(), hutch.user(), hutch.user());
    hutch.write_policy(&format!(
        "[host.net]\nleases = \"{}\"\n\n[defaults]\npids = 512\n\n\
         [users.{}]\nnetwork = \"macvlan\"\nnet_device = \"par0\"\n\n\
         [users.{}]\nnetwork = \"vlan\"\nnet_device = \"par0\"\nvlan_id = 100\n\n\
         [users.{}]\nnetwork = \"phys\"\nnet_device = \"ph0\"\n\n\
         [users.{}]\nnetwork = \"phys\"\nnet_device = \"nope0\"\n",
        lease_file.display(),
        m.name,
        v.name,
        p.name,
        bad.name
    ));
    let env = hutch.sshd(Sftp::Internal);
    let host = env.pid();
    // Parents: veth pairs (this kernel may lack the dummy driver); a veth
    // end would be destroyed with the container's namespace, so seeing ph0
    // again proves the explicit give-back.
    let out = sh_in(host, "ip link add par0 type veth peer name par0p\nip link set par0 up\nip link add ph0 type veth peer name ph0p");
    assert!(out.status.success(), "{}", out.describe());
    let vlan_ok = sh_in(
        host,
        "ip link add link par0 name vprobe type vlan id 2 && ip link del vprobe",
    )
    .status
    .success();
    let mut cases = vec![(&m, "macvlan"), (&p, "veth")];
    if vlan_ok {
        cases.push((&v, "vlan"));
    } else {
        eprintln!("macvlan_vlan_phys: this kernel has no 802.1Q support: the vlan case is not run");
    }
    for (u, kind) in cases {
        env.authorize(u);
        let out = env.ssh(
            u,
            &["ip -d -o link show eth0; ip -4 -o addr show eth0; ip route show default"],
        );
        let text = out.stdout_str();
        let (addr, _) = lease_of(&lease_file, &u.name)
            .unwrap_or_else(|| panic!("no lease: {}\n{:#?}", out.describe(), env.syslog().lines()));
        assert!(
            text.contains(&format!(" {kind} "))
                || text.contains(&format!("\n    {kind} "))
                || text.contains(kind),
            "{kind}: {}",
            out.describe()
        );
        assert!(
            text.contains(&format!("inet {addr}/16")),
            "{}",
            out.describe()
        );
        assert!(text.contains("default via 10.77.0.1"), "{}", out.describe());
        assert!(hutch.wait_gone(&u.name, Duration::from_secs(15)).is_empty());
    }
    // A network that cannot be made refuses the login and undoes itself.
    env.authorize(&bad);
    let out = env.ssh(&bad, &["echo inside"]);
    assert!(!out.stdout_str().contains("inside"), "{}", out.describe());
    assert!(
        env.syslog().contains("nope0"),
        "{:#?}",
        env.syslog().lines()
    );
    assert!(hutch
        .wait_gone(&bad.name, Duration::from_secs(15))
        .is_empty());

    let links = trimmed(&sh_in(host, "ip -o link show"));
    assert!(
        links.contains(": ph0@ph0p:"),
        "phys not given back: {links}"
    );
    assert!(!links.contains("eth0"), "{links}");
    for l in leases(&lease_file).lines() {
        assert!(l.ends_with(" 0"), "lease still held: {l}");
    }
}

/// macvlan (no host port): the egress deny list, the upload limit (tbf on
/// eth0) and the download policer hold inside the container's namespace,
/// where the user cannot change them; a packet from another source
/// address is dropped; the table goes with the container.
#[test]
fn device_mode_egress_and_bandwidth() {
    if !require_root("device_mode_egress_and_bandwidth") {
        return;
    }
    let hutch = HutchEnv::new("");
    let lease_file = hutch.dir.join("leases");
    hutch.write_policy(&format!(
        "[host.net]\nleases = \"{}\"\n\n[defaults]\nnetwork = \"macvlan\"\nnet_device = \"par0\"\npids = 512\n\
         egress_deny = [\"tcp/2525\"]\nrate_in = \"16mbit\"\nrate_out = \"8mbit\"\n",
        lease_file.display()
    ));
    let a = hutch.user();
    let env = hutch.sshd(Sftp::Internal);
    env.authorize(&a);
    let host = env.pid();
    // The parent's peer holds the gateway address: the container's traffic
    // leaves through the macvlan and arrives there, in the sshd's namespace.
    let out = sh_in(host, "ip link add par0 type veth peer name par0p\nip link set par0 up\nip addr add 10.77.0.1/16 dev par0p\nip link set par0p up");
    assert!(out.status.success(), "{}", out.describe());
    let _srv = server_in(host, &["10.77.0.1:8080", "10.77.0.1:2525"]);
    let got = connect_as(&env, &a, "10.77.0.1", 8080);
    let (addr, _) = lease_of(&lease_file, &a.name).expect("a lease");
    assert_eq!(got, addr, "the gateway answers the container's own address");
    assert!(
        connect_as(&env, &a, "10.77.0.1", 2525).starts_with("ERR"),
        "tcp/2525 is denied"
    );
    // A source address other than the lease goes nowhere, even from root in
    // the container's namespace (the user holds no capability to try).
    let holder = env.shell_pty(&a);
    let state = wait_until(Duration::from_secs(10), || {
        hutch
            .state(&a.name)
            .filter(|st| st["sessions"].as_array().map(|s| s.len()) == Some(1))
    })
    .expect("state.json with the session");
    let init = state["init_pid"].as_i64().unwrap() as i32;
    assert_eq!(connect_from(init, "10.77.0.1", 8080, None), addr);
    let spoofed = connect_from(init, "10.77.0.1", 8080, Some("10.77.9.9"));
    assert!(
        spoofed.starts_with("ERR"),
        "a spoofed source got through: {spoofed}"
    );

    let (down_n, up_n): (u64, u64) = (9_000_000, 4_000_000);
    let _shaper = shaper_in(host, down_n, up_n);
    // Download, policed: a bucket of one second at the rate (nft's limit)
    // plus the burst passes at line speed, so the rate is measured after the
    // first 3 MB (over the next 6 MB, ~3 s), from root in the container's
    // namespace (the host's python).
    let out = output(nsenter(init).args(["python3", "-c", STEADY_CLIENT, "10.77.0.1", "3000000"]));
    let f: Vec<f64> = trimmed(&out)
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(
        f.first().map(|b| *b as u64),
        Some(down_n),
        "{}",
        out.describe()
    );
    let down = f[1];
    eprintln!("macvlan download after the bucket: {down:.0} B/s (limit 2000000, policer)");
    assert!(
        (down - 2_000_000.0).abs() <= 0.2 * 2_000_000.0,
        "download {down:.0} B/s vs 2000000"
    );
    drop(holder);
    // Upload, shaped by the tbf on eth0, from the user's own session.
    let up = upload(&env, &a, up_n);
    eprintln!("macvlan upload: {up:.0} B/s (limit 1000000, tbf)");
    assert!(
        (up - 1_000_000.0).abs() <= 0.2 * 1_000_000.0,
        "upload {up:.0} B/s vs 1000000"
    );

    assert!(hutch.wait_gone(&a.name, Duration::from_secs(15)).is_empty());
    let links = trimmed(&sh_in(host, "ip -o link show"));
    assert!(!links.contains("eth0"), "{links}");
}

/// Accepts on 0.0.0.0:8090 and holds each connection until its peer
/// closes it (then closes too).
const HOLDER: &str = r#"
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8090)); s.listen(64)
def hold(c):
    while c.recv(4096): pass
    c.close()
print("ready", flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=hold, args=(c,), daemon=True).start()
"#;

/// `conntrack = 3`: the host's conntrack table holds three live
/// connections of the container (to the gateway); a fourth new one is
/// dropped (its SYN: a timeout, not a refusal), and once the three close,
/// new ones pass again. The bound is the user's `ct count` rule.
#[test]
fn veth_conntrack_bound() {
    if !require_root("veth_conntrack_bound") {
        return;
    }
    let hutch = HutchEnv::new("");
    let lease_file = hutch.dir.join("leases");
    hutch.write_policy(&format!(
        "[host.net]\nleases = \"{}\"\n\n[defaults]\nnetwork = \"veth\"\npids = 512\nconntrack = 3\n",
        lease_file.display()
    ));
    let a = hutch.user();
    let name = a.name.clone();
    {
        let env = hutch.sshd(Sftp::Internal);
        env.authorize(&a);
        let host = env.pid();
        let holder = {
            use std::io::BufRead;
            let mut c = nsenter_long(host)
                .args(["python3", "-c", HOLDER])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("python holder");
            let mut line = String::new();
            std::io::BufReader::new(c.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert_eq!(line.trim(), "ready", "the holder did not start");
            Proc(c)
        };
        let script = "c() { timeout 4 bash -c \"exec $1<>/dev/tcp/10.77.0.1/8090; sleep ${2:-0}\" 2>/dev/null; }\n\
            exec 3<>/dev/tcp/10.77.0.1/8090 && exec 4<>/dev/tcp/10.77.0.1/8090 && exec 5<>/dev/tcp/10.77.0.1/8090 && echo THREE=ok\n\
            if c 6; then echo FOURTH=ok; else echo FOURTH=dropped; fi\n\
            exec 3<&- 4<&- 5<&-\n\
            for i in $(seq 30); do if c 6; then echo AFTER=ok; break; fi; done\n";
        let out = env.ssh(&a, &[script]);
        assert_eq!(
            out.stdout_str(),
            "THREE=ok\nFOURTH=dropped\nAFTER=ok\n",
            "{}\n{}",
            out.describe(),
            sh_in(host, "nft list ruleset").describe()
        );
        drop(holder);
        let left = hutch.wait_gone(&name, Duration::from_secs(30));
        assert!(left.is_empty(), "{left:?}");
    }
    drop(a);
    assert_no_leftovers(&name, Duration::from_secs(5));
}

/// `[host.net]` bridge, pool and gateway other than the defaults: the
/// container's eth0 gets an address from the pool and its default route
/// through the gateway, which the keeper puts on the bridge it names (made
/// in the sshd's namespace); nothing of 10.77.0.0/16 or hutch0 is used.
#[test]
fn veth_bridge_pool_gateway() {
    if !require_root("veth_bridge_pool_gateway") {
        return;
    }
    let hutch = HutchEnv::new("");
    let lease_file = hutch.dir.join("leases");
    hutch.write_policy(&format!(
        "[host.net]\nleases = \"{}\"\nbridge = \"hbtest0\"\npool = \"10.91.4.0/24\"\ngateway = \"10.91.4.254\"\n\n[defaults]\nnetwork = \"veth\"\npids = 512\n",
        lease_file.display()
    ));
    let a = hutch.user();
    let env = hutch.sshd(Sftp::Internal);
    env.authorize(&a);
    let host = env.pid();
    let out = env.ssh(
        &a,
        &["ip -4 -o addr show eth0; ip route show default; echo done"],
    );
    let text = out.stdout_str();
    assert!(
        text.contains("done"),
        "{}\n{:#?}",
        out.describe(),
        env.syslog().lines()
    );
    let (addr, _) = lease_of(&lease_file, &a.name)
        .unwrap_or_else(|| panic!("no lease: {}", leases(&lease_file)));
    assert!(
        addr.starts_with("10.91.4.") && addr != "10.91.4.254",
        "{addr} from the pool, not the gateway"
    );
    assert!(
        text.contains(&format!("inet {addr}/24")),
        "{}",
        out.describe()
    );
    assert!(
        text.contains("default via 10.91.4.254"),
        "{}",
        out.describe()
    );
    let out = sh_in(
        host,
        "ip -4 -o addr show hbtest0; ip -o link show hutch0 || echo no-hutch0",
    );
    let text = out.stdout_str();
    assert!(text.contains("inet 10.91.4.254/24"), "{}", out.describe());
    assert!(text.contains("no-hutch0"), "{}", out.describe());
    assert!(hutch.wait_gone(&a.name, Duration::from_secs(15)).is_empty());
}
