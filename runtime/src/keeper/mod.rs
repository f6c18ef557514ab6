//! hutch-keeper: one per user with a live container. Started by the PAM
//! module (or anything that opens a session) when the user has none; it
//!
//! 1. places itself in hutch's own cgroup (never the user's quota, never
//!    sshd's scope), cleans what a crashed predecessor left, loads the
//!    template if it is not loaded yet;
//! 2. makes the user's cgroup with the limits, then the container
//!    ([`crate::container::spawn`]);
//! 3. listens on `keeper.sock` and reports ready;
//! 4. serves sessions: each is a live connection (see [`proto`]);
//! 5. when the last session is gone and the linger time has passed (or on
//!    `STOP`, SIGTERM, or the init dying), tears everything down: kills every
//!    process in the cgroup, waits for the init, removes the cgroup and the
//!    state, and exits.

pub mod logproxy;
pub mod proto;
pub mod state;

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hutch_policy::{Account, Decision, Policy, UserPolicy};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::sys::wait::waitpid;

use crate::cgroup::{self, Cgroup, CgroupRoot};
use crate::container::{self, Container, ContainerSpec};
use crate::error::chain;
use crate::ns::Namespace;
use crate::paths::{self, UserPaths};
use crate::rootfs::RootfsSpec;
use crate::template::TemplateStore;
use crate::{account, sys};

use proto::Request;
use state::{SessionState, State};

/// How the keeper was started.
#[derive(Debug)]
pub struct Options {
    pub config: PathBuf,
    pub user: String,
    /// The PAM service of the session that started it (for resolution).
    pub service: String,
    /// Where to report `READY` or `ERR <cause>` (the module waits on it).
    pub ready: Option<OwnedFd>,
}

/// Runs a keeper to the end; returns the exit code.
pub fn main(opts: Options) -> i32 {
    sys::reset_signals();
    sys::openlog(c"hutch-keeper");
    let mut ready = opts.ready.map(File::from);
    let started = Instant::now();
    match Keeper::start(&opts.config, &opts.user, &opts.service) {
        Ok(mut keeper) => {
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            sys::syslog(
                libc::LOG_INFO,
                &format!(
                    "{}: container up in {ms:.1} ms (init pid {}, template {} generation {})",
                    keeper.account.name,
                    keeper.container.init,
                    keeper.state.template,
                    keeper.state.generation
                ),
            );
            if let Some(mut r) = ready.take() {
                let _ = r.write_all(b"READY\n");
            }
            keeper.serve();
            0
        }
        Err(e) => {
            let msg = format!("{}: {e}", opts.user);
            sys::syslog(
                libc::LOG_ERR,
                &format!("cannot make the container of {msg}"),
            );
            match ready.take() {
                Some(mut r) => {
                    let _ = writeln!(r, "ERR {}", e.replace('\n', " "));
                }
                None => eprintln!("hutch-keeper: cannot make the container of {msg}"),
            }
            1
        }
    }
}

/// One live session.
struct Session {
    id: u64,
    conn: UnixStream,
    state: SessionState,
    /// Where the session's process (the PAM host: sshd, su, login) came
    /// from; it goes back there when it closes the session.
    origin: cgroup::Origin,
}

struct Keeper {
    account: Account,
    policy: UserPolicy,
    paths: UserPaths,
    cgroup: Cgroup,
    /// hutch's own group, where the keeper runs: where a closing session's
    /// PAM host goes when its own cgroup is gone.
    keepers: Cgroup,
    container: Container,
    /// What the network set-up made (released at teardown).
    net: Option<crate::net::NetHandle>,
    /// The container's /dev/log (dropped at teardown, which removes its socket).
    log: Option<logproxy::LogProxy>,
    listener: Option<UnixListener>,
    signals: SignalFd,
    sessions: Vec<Session>,
    next_id: u64,
    /// When the last session ended, if none is open now.
    idle_since: Option<Instant>,
    state: State,
    /// Where the container's template generation is released at teardown.
    store: TemplateStore,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Converts the policy's limits into the cgroup layer's, finding each I/O
/// device's major:minor, with the container's device allow-list.
pub fn cgroup_limits(l: &hutch_policy::Limits) -> Result<cgroup::Limits, String> {
    let mut io = Vec::new();
    for d in &l.io {
        let md = fs::metadata(&d.device)
            .map_err(|e| format!("I/O limit on {}: {e}", d.device.display()))?;
        use std::os::unix::fs::MetadataExt;
        let rdev = md.rdev();
        if rdev == 0 {
            return Err(format!(
                "I/O limit on {}: not a block device",
                d.device.display()
            ));
        }
        io.push(cgroup::IoDeviceLimit {
            major: nix::sys::stat::major(rdev) as u32,
            minor: nix::sys::stat::minor(rdev) as u32,
            read_bps: d.read_bps,
            write_bps: d.write_bps,
            read_iops: d.read_iops,
            write_iops: d.write_iops,
        });
    }
    Ok(cgroup::Limits {
        memory_max: l.memory_max,
        memory_high: l.memory_high,
        swap_max: l.swap_max,
        cpu_max: l.cpu.map(|c| (c.quota_us, c.period_us)),
        cpu_weight: l.cpu_weight,
        pids_max: l.pids_max,
        io,
        io_weight: l.io_weight,
        devices: Some(container_devices()),
    })
}

/// The devices a container may use (v1 devices cgroup, a second line behind
/// the container's own /dev, nodev everywhere else and no CAP_MKNOD): the
/// nodes of its /dev (null zero full random urandom tty), ptmx and the pts.
pub fn container_devices() -> Vec<cgroup::DeviceRule> {
    let c = |major, minor| cgroup::DeviceRule::char(major, minor, "rwm");
    vec![
        c(1, Some(3)),
        c(1, Some(5)),
        c(1, Some(7)),
        c(1, Some(8)),
        c(1, Some(9)),
        c(5, Some(0)),
        c(5, Some(2)),
        c(136, None),
    ]
}

/// Makes `dir` (and parents) owned by root with mode 0700 for the last part.
pub fn make_private_dir(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let md = fs::symlink_metadata(dir)?;
            if !md.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} is not a directory", dir.display()),
                ));
            }
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        }
        Err(e) => Err(e),
    }
}

impl Keeper {
    fn start(config: &Path, user: &str, service: &str) -> Result<Keeper, String> {
        let policy = Policy::load(config).map_err(|e| format!("policy: {e}"))?;
        let host = policy.host().clone();
        let account = account::lookup(user).map_err(|e| format!("account: {e}"))?;
        let up = match policy.resolve(&account, service) {
            Decision::Confine(p) => *p,
            Decision::Exempt(why) => return Err(format!("policy: {user} is not confined ({why})")),
            Decision::Refuse(why) => return Err(format!("policy: {why}")),
        };
        let paths = UserPaths::new(&host, user);
        make_private_dir(&paths.dir)
            .map_err(|e| format!("creating {}: {e}", paths.dir.display()))?;

        // 1. hutch's own cgroup for the keeper (and so for the template's memory).
        let root = CgroupRoot::open(&host.cgroup_root).map_err(|e| format!("cgroup: {e}"))?;
        let keepers = root
            .create(paths::KEEPER_CGROUP, &cgroup::Limits::default())
            .map_err(|e| format!("cgroup: {e}"))?;
        keepers
            .attach(std::process::id() as i32)
            .map_err(|e| format!("cgroup: moving the keeper: {e}"))?;

        // 2. What a crashed predecessor left.
        let rel = paths::user_cgroup(user);
        if let Some(stale) = root.existing(&rel) {
            sys::syslog(
                libc::LOG_NOTICE,
                &format!("{user}: removing the cgroup a previous keeper left"),
            );
            stale
                .kill_all()
                .map_err(|e| format!("cleaning the previous container: {e}"))?;
            stale
                .remove()
                .map_err(|e| format!("cleaning the previous container: {e}"))?;
        }
        let _ = fs::remove_file(paths.socket());

        // 3. The template.
        let store = TemplateStore::new(&host.lib_dir, &host.run_dir);
        // Pinned until state.json names the generation: a teardown elsewhere
        // must not unload it meanwhile (TemplateStore::release waits on the pin).
        let (loaded, pin) = store
            .ensure_loaded_pinned(&up.template)
            .map_err(|e| format!("template: {e}"))?;

        // 3b. The container's /dev/log: the keeper's proxy to the host's syslog.
        let log = logproxy::LogProxy::bind(
            &paths.dir.join(logproxy::SOCKET_NAME),
            user,
            Path::new("/dev/log"),
        )
        .map_err(|e| {
            format!(
                "binding {}: {e}",
                paths.dir.join(logproxy::SOCKET_NAME).display()
            )
        })?;

        // 4. The user's cgroup, limits applied before anything runs in it.
        let limits = cgroup_limits(&up.limits).map_err(|e| format!("cgroup: {e}"))?;
        // A controller the host lacks: `strict` refuses the login naming it,
        // otherwise one warning and the rest applies.
        let (cg, warnings) = root
            .create_with(&rel, &limits, up.limits.strict)
            .map_err(|e| format!("cgroup: {e}"))?;
        for w in warnings {
            sys::syslog(libc::LOG_WARNING, &format!("{user}: {w}"));
        }

        // 5. The container.
        let staging = paths.staging();
        make_private_dir(&staging).map_err(|e| format!("creating {}: {e}", staging.display()))?;
        let mut spec = ContainerSpec {
            rootfs: rootfs_spec(&account, &up, &loaded.path, &staging),
        };
        spec.rootfs.syslog_socket = log.path().to_path_buf();
        spec.rootfs.resolv_conf = crate::net::resolv_conf(&host, &up.network);
        let container = match container::spawn(&spec, |pid| {
            cg.attach(pid.as_raw()).map_err(|e| e.to_string())
        }) {
            Ok(c) => c,
            Err(e) => {
                let _ = cg.kill_all();
                let _ = cg.remove();
                let _ = fs::remove_dir(&staging);
                return Err(format!("container: {}", chain(&e)));
            }
        };

        // 5b. The network (veth, lease, firewall tables), from the keeper's own netns.
        let netns = container.namespaces.get(Namespace::Net);
        let net = match crate::net::setup(&host, user, &up.network, netns) {
            Ok(n) => n,
            Err(e) => {
                let _ = cg.kill_all();
                let _ = cg.remove();
                let _ = fs::remove_dir(&staging);
                return Err(format!("network: {e}"));
            }
        };
        if let Some(n) = &net {
            let steps: Vec<String> = n
                .steps
                .iter()
                .map(|(s, d)| format!("{s} {:.1}", d.as_secs_f64() * 1000.0))
                .collect();
            sys::syslog(
                libc::LOG_INFO,
                &format!(
                    "{user}: network up in {:.1} ms (address {}, port {}; ms: {})",
                    n.took.as_secs_f64() * 1000.0,
                    n.addr,
                    n.port,
                    steps.join(", ")
                ),
            );
        }

        // 6. The socket.
        let listener = UnixListener::bind(paths.socket())
            .map_err(|e| format!("binding {}: {e}", paths.socket().display()));
        let listener = match listener {
            Ok(l) => l,
            Err(e) => {
                let _ = cg.kill_all();
                let _ = cg.remove();
                if let Some(n) = &net {
                    n.release(Some(netns));
                }
                return Err(e);
            }
        };
        let _ = fs::set_permissions(paths.socket(), fs::Permissions::from_mode(0o600));

        let mut mask = SigSet::empty();
        for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
            mask.add(s);
        }
        mask.thread_block()
            .map_err(|e| format!("blocking signals: {e}"))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(|e| format!("signalfd: {e}"))?;

        let state = State {
            user: account.name.clone(),
            uid: account.uid,
            keeper_pid: std::process::id() as i32,
            init_pid: container.init.as_raw(),
            started: now_unix(),
            template: loaded.name.clone(),
            generation: loaded.generation,
            hostname: up.hostname.clone(),
            cgroups: cg.dirs(),
            sessions: Vec::new(),
        };
        let keeper = Keeper {
            account,
            policy: up,
            paths,
            cgroup: cg,
            keepers,
            container,
            net,
            log: Some(log),
            listener: Some(listener),
            signals,
            sessions: Vec::new(),
            next_id: 1,
            idle_since: Some(Instant::now()),
            state,
            store,
        };
        keeper.write_state();
        drop(pin);
        Ok(keeper)
    }

    fn write_state(&self) {
        let mut st = self.state.clone();
        st.sessions = self.sessions.iter().map(|s| s.state.clone()).collect();
        if let Err(e) = st.write(&self.paths.state()) {
            sys::syslog(
                libc::LOG_WARNING,
                &format!(
                    "{}: writing {}: {e}",
                    self.account.name,
                    self.paths.state().display()
                ),
            );
        }
    }

    /// The event loop, until the container is torn down.
    fn serve(&mut self) {
        // The first session is on its way (the module that started us), so
        // give it a grace period before an idle keeper goes away.
        let grace = Duration::from_secs(30);
        loop {
            let timeout = match self.idle_since {
                Some(since) if self.sessions.is_empty() => {
                    let wait = if self.next_id == 1 {
                        grace
                    } else {
                        self.policy.linger
                    };
                    let left = wait.saturating_sub(since.elapsed());
                    if left.is_zero() {
                        if self.next_id > 1 && self.keeps_running() {
                            // keep-while-running: a job outlives its session; look again soon.
                            Duration::from_secs(1)
                        } else if self.try_teardown("last session closed") {
                            return;
                        } else {
                            Duration::from_millis(50)
                        }
                    } else {
                        left
                    }
                }
                _ => Duration::from_secs(3600),
            };
            let timeout = match self.log.as_ref().and_then(|l| l.next_tick()) {
                Some(t) => timeout.min(t),
                None => timeout,
            };
            let ptimeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
            let listener_fd = self.listener.as_ref().map(|l| l.as_fd());
            let mut fds = Vec::with_capacity(self.sessions.len() + 3);
            fds.push(PollFd::new(self.signals.as_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(self.container.pidfd.as_fd(), PollFlags::POLLIN));
            if let Some(l) = listener_fd {
                fds.push(PollFd::new(l, PollFlags::POLLIN));
            }
            for s in &self.sessions {
                fds.push(PollFd::new(s.conn.as_fd(), PollFlags::POLLIN));
            }
            // Last, so that the indices above stay as they are.
            if let Some(l) = &self.log {
                fds.push(PollFd::new(l.fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, ptimeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    sys::syslog(libc::LOG_ERR, &format!("{}: poll: {e}", self.account.name));
                    self.teardown("internal error");
                    return;
                }
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().map(|r| !r.is_empty()).unwrap_or(false))
                .collect();
            drop(fds);
            if ready[0] {
                if let Ok(Some(sig)) = self.signals.read_signal() {
                    let name = Signal::try_from(sig.ssi_signo as i32)
                        .map(|s| s.as_str())
                        .unwrap_or("signal");
                    self.teardown(&format!("{name} received"));
                    return;
                }
            }
            if ready[1] {
                self.teardown("the container's init exited");
                return;
            }
            let base = if self.listener.is_some() { 3 } else { 2 };
            if let Some(l) = &mut self.log {
                if ready
                    .get(base + self.sessions.len())
                    .copied()
                    .unwrap_or(false)
                {
                    l.readable();
                } else {
                    l.tick();
                }
            }
            // Sessions first (indices stay valid as long as we go backwards).
            for i in (0..self.sessions.len()).rev() {
                if ready[base + i] {
                    self.session_readable(i);
                }
            }
            if self.listener.is_some() && ready[2] {
                if let Some(stop) = self.accept_one() {
                    self.teardown(&stop);
                    return;
                }
            }
        }
    }

    /// With `on_logout = "keep-while-running"`: whether anything but the
    /// init still runs in the container.
    fn keeps_running(&self) -> bool {
        if self.policy.on_logout != hutch_policy::OnLogout::KeepWhileRunning {
            return false;
        }
        let init = self.container.init.as_raw();
        self.cgroup
            .pids()
            .map(|p| p.iter().any(|&pid| pid != init))
            .unwrap_or(false)
    }

    /// Handles a readable session connection: `CLOSE`, or end of stream.
    fn session_readable(&mut self, i: usize) {
        // A session says nothing but CLOSE; that, end of stream or an
        // error all end it.
        let said = proto::recv(&self.sessions[i].conn);
        {
            let s = self.sessions.remove(i);
            if matches!(&said, Ok(Some((line, _))) if Request::parse(line) == Some(Request::Close))
            {
                // The PAM host closing the session waits for this answer,
                // so its pid is still its own: move it back out of the
                // container's cgroup, or a teardown that follows would kill
                // it before it exits (su would lose the shell's exit status).
                let answer = match self
                    .cgroup
                    .detach(s.state.pid, &s.origin, Some(&self.keepers))
                {
                    Ok(_) => "OK\n".to_string(),
                    Err(e) => {
                        sys::syslog(
                            libc::LOG_WARNING,
                            &format!(
                                "{}: moving pid {} out of the container's cgroup: {e}",
                                self.account.name, s.state.pid
                            ),
                        );
                        format!("ERR\t{e}\n")
                    }
                };
                let _ = proto::send(&s.conn, &answer, &[]);
            }
            sys::syslog(
                libc::LOG_INFO,
                &format!(
                    "{}: session {} ({}) closed, {} left",
                    self.account.name,
                    s.id,
                    s.state.service,
                    self.sessions.len()
                ),
            );
            if self.sessions.is_empty() {
                self.idle_since = Some(Instant::now());
            }
            self.write_state();
        }
    }

    /// Accepts one connection and serves its request. Returns `Some(reason)`
    /// when the request asks the container to stop.
    fn accept_one(&mut self) -> Option<String> {
        let listener = self.listener.as_ref()?;
        let conn = match listener.accept() {
            Ok((c, _)) => c,
            Err(_) => return None,
        };
        self.handle(conn)
    }

    fn handle(&mut self, conn: UnixStream) -> Option<String> {
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let cred = match getsockopt(&conn, PeerCredentials) {
            Ok(c) => c,
            Err(_) => return None,
        };
        if cred.uid() != 0 {
            let _ = proto::send(&conn, "ERR only root may talk to the keeper\n", &[]);
            return None;
        }
        let line = match proto::recv(&conn) {
            Ok(Some((line, _))) => line,
            _ => return None,
        };
        match Request::parse(&line) {
            Some(Request::Open {
                service,
                tty,
                rhost,
            }) => {
                self.open(conn, cred.pid(), service, tty, rhost);
                None
            }
            Some(Request::Status) => {
                let mut st = self.state.clone();
                st.sessions = self.sessions.iter().map(|s| s.state.clone()).collect();
                let json = serde_json::to_string(&st).unwrap_or_default();
                let _ = proto::send(&conn, &format!("OK\t{json}\n"), &[]);
                None
            }
            Some(Request::Stop) => {
                let _ = proto::send(&conn, "OK\n", &[]);
                Some("stopped by hutchctl".into())
            }
            Some(Request::Close) | None => {
                let _ = proto::send(&conn, "ERR unknown request\n", &[]);
                None
            }
        }
    }

    fn open(&mut self, conn: UnixStream, pid: i32, service: String, tty: String, rhost: String) {
        let user = self.account.name.clone();
        if let Some(max) = self.policy.limits.max_sessions {
            if self.sessions.len() >= max as usize {
                let _ = proto::send(
                    &conn,
                    // Tab-separated like OK: the module passes the text on to the user.
                    &format!(
                        "ERR\t{user} already has {} sessions, the most the policy allows ({max})\n",
                        self.sessions.len()
                    ),
                    &[],
                );
                sys::syslog(
                    libc::LOG_NOTICE,
                    &format!("{user}: session refused: limit of {max} sessions reached"),
                );
                return;
            }
        }
        let origin = match self.cgroup.attach_from(pid) {
            Ok(o) => o,
            Err(e) => {
                let _ = proto::send(
                    &conn,
                    &format!("ERR moving pid {pid} into the container's cgroup: {e}\n"),
                    &[],
                );
                return;
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        let fds = self.container.namespaces.as_fds();
        if let Err(e) = proto::send(
            &conn,
            &format!("OK\t{}\t{id}\n", self.container.init.as_raw()),
            &fds,
        ) {
            sys::syslog(
                libc::LOG_WARNING,
                &format!("{user}: answering session {id}: {e}"),
            );
            return;
        }
        let _ = conn.set_read_timeout(None);
        sys::syslog(
            libc::LOG_INFO,
            &format!("{user}: session {id} opened (service {service}, tty {tty}, rhost {rhost}, pid {pid})"),
        );
        self.sessions.push(Session {
            id,
            conn,
            state: SessionState {
                id,
                service,
                tty,
                rhost,
                pid,
                since: now_unix(),
            },
            origin,
        });
        self.idle_since = None;
        self.write_state();
    }

    /// Tears down if no session came in meanwhile. Holds the user's lock so
    /// that a login racing with the teardown waits, then starts afresh.
    fn try_teardown(&mut self, why: &str) -> bool {
        let lock = match lock_user(&self.paths.lock(), false) {
            Ok(Some(l)) => l,
            Ok(None) => return false, // a module holds it: it is about to connect
            Err(_) => {
                self.teardown(why);
                return true;
            }
        };
        // Serve whatever is already queued on the socket.
        if let Some(l) = &self.listener {
            let _ = l.set_nonblocking(true);
        }
        loop {
            let accepted = self.listener.as_ref().and_then(|l| l.accept().ok());
            match accepted {
                Some((c, _)) => {
                    if let Some(stop) = self.handle(c) {
                        self.teardown_locked(&stop, lock);
                        return true;
                    }
                }
                None => break,
            }
        }
        if let Some(l) = &self.listener {
            let _ = l.set_nonblocking(false);
        }
        if !self.sessions.is_empty() {
            return false;
        }
        self.teardown_locked(why, lock);
        true
    }

    fn teardown(&mut self, why: &str) {
        let lock = lock_user(&self.paths.lock(), true).ok().flatten();
        match lock {
            Some(l) => self.teardown_locked(why, l),
            None => {
                self.destroy(why);
                self.reap();
            }
        }
    }

    fn teardown_locked(&mut self, why: &str, lock: File) {
        self.destroy(why);
        let _ = fs::remove_file(self.paths.lock());
        drop(lock);
        let _ = fs::remove_dir(&self.paths.dir);
        self.reap();
    }

    /// Waits for the init, after everything else (and the user's lock) is
    /// released: the kernel's teardown of the container's namespaces can take
    /// a while, and no login waits for it.
    fn reap(&mut self) {
        let started = Instant::now();
        let _ = waitpid(self.container.init, None);
        sys::syslog(
            libc::LOG_DEBUG,
            &format!(
                "{}: init reaped after {:.1} ms",
                self.account.name,
                started.elapsed().as_secs_f64() * 1000.0
            ),
        );
    }

    /// Kills everything, removes cgroup, socket, state.
    fn destroy(&mut self, why: &str) {
        let started = Instant::now();
        let _ = fs::remove_file(self.paths.socket());
        self.listener = None;
        self.log = None;
        self.sessions.clear();
        if let Err(e) = self.cgroup.kill_all() {
            sys::syslog(
                libc::LOG_WARNING,
                &format!("{}: killing the container: {e}", self.account.name),
            );
            let _ = nix::sys::signal::kill(self.container.init, Signal::SIGKILL);
        }
        let killed = started.elapsed();
        let mut removed = self.cgroup.remove();
        for _ in 0..20 {
            if removed.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            let _ = self.cgroup.kill_all();
            removed = self.cgroup.remove();
        }
        if let Err(e) = removed {
            sys::syslog(
                libc::LOG_WARNING,
                &format!("{}: removing the cgroup: {e}", self.account.name),
            );
        }
        if let Some(n) = self.net.take() {
            let netns = self.container.namespaces.get(Namespace::Net);
            for e in n.release(Some(netns)) {
                sys::syslog(libc::LOG_WARNING, &format!("{}: {e}", self.account.name));
            }
        }
        let _ = fs::remove_file(self.paths.state());
        let _ = fs::remove_dir(self.paths.staging());
        // An older generation goes with the last container on it.
        match self
            .store
            .release(&self.state.template, self.state.generation)
        {
            Ok(true) => sys::syslog(
                libc::LOG_INFO,
                &format!(
                    "{}: template {} generation {} unloaded (its last container is gone)",
                    self.account.name, self.state.template, self.state.generation
                ),
            ),
            Ok(false) => {}
            Err(e) => sys::syslog(
                libc::LOG_WARNING,
                &format!(
                    "{}: releasing the template generation: {e}",
                    self.account.name
                ),
            ),
        }
        sys::syslog(
            libc::LOG_INFO,
            &format!(
                "{}: container torn down ({why}) in {:.1} ms (kill {:.1} ms)",
                self.account.name,
                started.elapsed().as_secs_f64() * 1000.0,
                killed.as_secs_f64() * 1000.0
            ),
        );
    }
}

/// Takes the user's lock file (created if missing), checking that the file
/// locked is still the one at `path` (the keeper removes it at teardown).
/// `Ok(None)` when `block` is false and someone else holds it.
pub fn lock_user(path: &Path, block: bool) -> io::Result<Option<File>> {
    use std::os::unix::fs::MetadataExt;
    for _ in 0..50 {
        if let Some(parent) = path.parent() {
            make_private_dir(parent)?;
        }
        let f = match fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if block {
            f.lock()?;
        } else {
            match f.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => return Ok(None),
                Err(fs::TryLockError::Error(e)) => return Err(e),
            }
        }
        let same = match (f.metadata(), fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if same {
            return Ok(Some(f));
        }
    }
    Err(io::Error::other(format!(
        "{} keeps changing under us",
        path.display()
    )))
}

/// The root filesystem of `account`'s container.
fn rootfs_spec(account: &Account, up: &UserPolicy, lower: &Path, staging: &Path) -> RootfsSpec {
    let groups = account::group_ids(account);
    // The login shell (hutch-shell) is bound at its host path, unless the
    // template has a file there already (a plain /bin/bash login shell).
    let mut host_files = Vec::new();
    if account.shell.is_absolute()
        && fs::symlink_metadata(
            lower.join(account.shell.strip_prefix("/").unwrap_or(&account.shell)),
        )
        .is_err()
    {
        host_files.push(account.shell.clone());
    }
    RootfsSpec {
        lower: lower.to_path_buf(),
        staging: staging.to_path_buf(),
        writable_size: up.limits.writable_size,
        user: account.name.clone(),
        uid: account.uid,
        gid: account.gid,
        groups,
        home: account.home.clone(),
        inner_shell: up.shell.clone(),
        host_files,
        mounts: up.mounts.clone(),
        hostname: up.hostname.clone(),
        syslog_socket: PathBuf::from("/dev/log"),
        marker: String::new(),
        seccomp: up.seccomp.clone(),
        resolv_conf: None,
    }
}
