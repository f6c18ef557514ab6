//! The cgroup layer against the real kernel (root only).
//!
//! Every test works below the test runner's own cgroup, in a group named
//! `hutch-cgtest-<pid>-<n>` that it makes and removes (also on failure,
//! through [`TestGroup`]'s `Drop`). Only forked children are attached; the
//! runner itself never moves. Without root the tests skip with a reason,
//! unless `HUTCH_REQUIRE_ROOT=1`, where that is a failure.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hutch_runtime::cgroup::{Cgroup, CgroupRoot, IoDeviceLimit, Limits, Mode, LEAF};

/// A unique root spec, relative to the runner's own cgroup.
fn unique_spec() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "hutch-cgtest-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A root and one group in it, with the children the test started; `Drop`
/// kills them, removes the group and the root directories it made.
struct TestGroup {
    root: CgroupRoot,
    cg: Option<Cgroup>,
    children: Vec<Child>,
}

impl TestGroup {
    fn new(root: CgroupRoot) -> TestGroup {
        TestGroup {
            root,
            cg: None,
            children: Vec::new(),
        }
    }

    fn create(&mut self, limits: &Limits) -> Cgroup {
        let cg = self.root.create("g", limits).expect("create");
        self.cg = Some(cg.clone());
        cg
    }

    /// Starts `sh -c script` held at a `read` until [`TestGroup::go`], attaches it.
    fn start_attached(&mut self, script: &str) -> usize {
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("read go; {script}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sh");
        self.cg
            .as_ref()
            .unwrap()
            .attach(child.id() as i32)
            .expect("attach");
        self.children.push(child);
        self.children.len() - 1
    }

    /// Releases child `i` from its `read`.
    fn go(&mut self, i: usize) {
        let stdin = self.children[i].stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        if let Some(cg) = &self.cg {
            let _ = cg.kill_all();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(cg) = &self.cg {
            let _ = cg.remove();
        }
        for d in self.root.dirs() {
            let _ = std::fs::remove_dir(&d);
        }
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// The group's directory in the hierarchy mounted at `mount`.
fn dir_under(cg: &Cgroup, mount: &str) -> PathBuf {
    cg.dirs()
        .into_iter()
        .find(|d| d.starts_with(mount))
        .unwrap_or_else(|| panic!("no dir under {mount} in {:?}", cg.dirs()))
}

/// Polls `f` until true or `timeout`.
fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Limits land in the real v1 files, a child is attached in every hierarchy, kill_all empties the group and remove leaves nothing.
#[test]
fn create_attach_kill_remove() {
    if !hutch_tests::require_root("create_attach_kill_remove") {
        return;
    }
    let mut t = TestGroup::new(CgroupRoot::open(&unique_spec()).expect("open"));
    let limits = Limits {
        memory_max: Some(256 << 20),
        memory_high: Some(192 << 20),
        swap_max: Some(0),
        cpu_max: Some((50_000, 100_000)),
        cpu_weight: Some(100),
        pids_max: Some(50),
        ..Limits::default()
    };
    let cg = t.create(&limits);
    assert_eq!(cg.mode(), Mode::V1, "this host is hybrid");
    let mem = dir_under(&cg, "/sys/fs/cgroup/memory/");
    assert_eq!(
        read(&mem.join("memory.limit_in_bytes")).trim(),
        (256u64 << 20).to_string()
    );
    assert_eq!(
        read(&mem.join("memory.memsw.limit_in_bytes")).trim(),
        (256u64 << 20).to_string()
    );
    assert_eq!(
        read(&mem.join("memory.soft_limit_in_bytes")).trim(),
        (192u64 << 20).to_string()
    );
    let pids = dir_under(&cg, "/sys/fs/cgroup/pids/");
    assert_eq!(read(&pids.join("pids.max")).trim(), "50");
    let cpu = dir_under(&cg, "/sys/fs/cgroup/cpu/");
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")).trim(), "50000");
    assert_eq!(read(&cpu.join("cpu.shares")).trim(), "1024");
    let cpuset = dir_under(&cg, "/sys/fs/cgroup/cpuset/");
    assert!(
        !read(&cpuset.join(LEAF).join("cpuset.cpus"))
            .trim()
            .is_empty(),
        "cpuset copied into the leaf"
    );
    assert!(t.root.existing("g").is_some());

    let i = t.start_attached("sleep 100");
    let pid = t.children[i].id() as i32;
    assert_eq!(cg.pids().unwrap(), vec![pid]);
    let own = read(Path::new(&format!("/proc/{pid}/cgroup")));
    let rel = format!(
        "/{}/g/{LEAF}",
        t.root.dirs()[0].file_name().unwrap().to_str().unwrap()
    );
    for key in ["memory:", "pids:", "cpu:", "freezer:", "0::"] {
        let line = own
            .lines()
            .find(|l| l.contains(key))
            .unwrap_or_else(|| panic!("{key} in {own}"));
        assert!(line.ends_with(&rel), "{line} should end with {rel}");
    }
    assert!(cg.is_populated().unwrap());
    let s = cg.stats().unwrap();
    eprintln!("stats with one sleep: {s:?}");
    assert_eq!(s.pids_current, Some(1));
    assert!(
        s.memory_current.is_some() && s.cpu_usage_us.is_some() && s.oom_kills == Some(0),
        "{s:?}"
    );

    let start = Instant::now();
    cg.kill_all().expect("kill_all");
    eprintln!("kill_all (cgroup.kill) took {:?}", start.elapsed());
    let st = t.children[i].wait().unwrap();
    assert_eq!(st.signal(), Some(9), "{st:?}");
    assert!(cg.pids().unwrap().is_empty());

    cg.remove().expect("remove");
    for d in cg.dirs() {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    cg.remove().expect("remove is idempotent");
    assert!(t.root.existing("g").is_none());
}

/// Without a cgroup2 mount, kill_all takes the v1 way (freeze, SIGKILL, thaw) and kills children that forked.
#[test]
fn kill_all_with_v1_freezer() {
    if !hutch_tests::require_root("kill_all_with_v1_freezer") {
        return;
    }
    let mountinfo: String = read(Path::new("/proc/self/mountinfo"))
        .lines()
        .filter(|l| !l.contains(" - cgroup2 "))
        .map(|l| format!("{l}\n"))
        .collect();
    let root = CgroupRoot::open_at(
        &unique_spec(),
        &read(Path::new("/proc/self/cgroup")),
        &mountinfo,
    )
    .expect("open_at");
    let mut t = TestGroup::new(root);
    let cg = t.create(&Limits::default());
    assert!(cg.unified_dir().is_none());
    let i = t.start_attached("sleep 100 & sleep 100 & sleep 100 & wait");
    t.go(i);
    assert!(
        wait_for(Duration::from_secs(5), || cg.pids().unwrap().len() == 4),
        "{:?}",
        cg.pids()
    );
    cg.freeze().unwrap();
    let fz = dir_under(&cg, "/sys/fs/cgroup/freezer/");
    assert_eq!(read(&fz.join("freezer.state")).trim(), "FROZEN");
    cg.thaw().unwrap();
    let start = Instant::now();
    cg.kill_all().expect("kill_all");
    eprintln!("kill_all (freezer) took {:?}", start.elapsed());
    assert_eq!(
        read(&fz.join("freezer.state")).trim(),
        "THAWED",
        "always thawed"
    );
    assert!(cg.pids().unwrap().is_empty());
    assert_eq!(t.children[i].wait().unwrap().signal(), Some(9));
}

/// pids.max stops a shell that forks many children, and stats() counts the refusals.
#[test]
fn pids_max_stops_forks() {
    if !hutch_tests::require_root("pids_max_stops_forks") {
        return;
    }
    let mut t = TestGroup::new(CgroupRoot::open(&unique_spec()).expect("open"));
    let cg = t.create(&Limits {
        pids_max: Some(5),
        ..Limits::default()
    });
    let i = t.start_attached(
        "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do sleep 100 & done; wait",
    );
    t.go(i);
    assert!(
        wait_for(Duration::from_secs(5), || cg
            .stats()
            .unwrap()
            .pids_limit_hits
            .unwrap_or(0)
            > 0),
        "no pids.events max: {:?}",
        cg.stats()
    );
    std::thread::sleep(Duration::from_millis(200));
    let s = cg.stats().unwrap();
    let n = cg.pids().unwrap().len();
    eprintln!("pids in group: {n}, stats: {s:?}");
    assert!(n <= 5, "{n} processes under pids.max 5");
    // pids.current counts tasks (a fork in flight too), cgroup.procs processes.
    assert!(
        s.pids_current.unwrap() <= 5 && s.pids_current.unwrap() >= n as u64,
        "{s:?}"
    );
    assert!(s.pids_limit_hits.unwrap() >= 1);
    cg.kill_all().expect("kill_all");
}

/// A memory hog over memory.max (no swap) is OOM-killed and stats().oom_kills goes up.
#[test]
fn memory_max_oom_kills_hog() {
    if !hutch_tests::require_root("memory_max_oom_kills_hog") {
        return;
    }
    if Command::new("python3")
        .arg("-c")
        .arg("")
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        panic!("python3 is needed for the memory hog");
    }
    let mut t = TestGroup::new(CgroupRoot::open(&unique_spec()).expect("open"));
    let limit: u64 = 64 << 20;
    let cg = t.create(&Limits {
        memory_max: Some(limit),
        swap_max: Some(0),
        ..Limits::default()
    });
    let before = cg.stats().unwrap().oom_kills;
    assert_eq!(before, Some(0));
    let i = t.start_attached(
        "exec python3 -c 'a = []\nwhile True: a.append(bytearray(b\"x\" * (1 << 20)))'",
    );
    t.go(i);
    let st = t.children[i].wait().unwrap();
    let s = cg.stats().unwrap();
    eprintln!("hog exit: {st:?}, stats: {s:?}");
    assert_eq!(st.signal(), Some(9), "the hog was killed: {st:?}");
    assert!(s.oom_kills.unwrap() >= 1, "{s:?}");
    assert!(s.memory_peak.unwrap() <= limit, "{s:?}");
    assert!(s.memory_peak.unwrap() >= limit / 2, "{s:?}");
}

/// A limit the kernel refuses fails create with the file and value named, and a new group is not left behind.
#[test]
fn failed_create_cleans_up() {
    if !hutch_tests::require_root("failed_create_cleans_up") {
        return;
    }
    let t = TestGroup::new(CgroupRoot::open(&unique_spec()).expect("open"));
    // No block device has minor 65000 under major 7 (loop) here.
    let limits = Limits {
        io: vec![IoDeviceLimit {
            major: 7,
            minor: 65000,
            read_bps: Some(1 << 20),
            write_bps: None,
            read_iops: None,
            write_iops: None,
        }],
        ..Limits::default()
    };
    let e = t.root.create("g", &limits).unwrap_err();
    let msg = e.to_string();
    eprintln!("error: {msg}");
    assert!(
        msg.contains("blkio.throttle.read_bps_device") && msg.contains("7:65000"),
        "{msg}"
    );
    assert!(t.root.existing("g").is_none(), "left behind after failure");
}

/// On this host's controller-less cgroup2 mount the v2 code still works where it can: making a group enables nothing, and cgroup.freeze freezes and thaws a real process.
#[test]
fn unified_without_controllers() {
    if !hutch_tests::require_root("unified_without_controllers") {
        return;
    }
    let mut t = TestGroup::new(CgroupRoot::open(&unique_spec()).expect("open"));
    let cg = t.create(&Limits::default());
    let u = cg.unified_dir().expect("a cgroup2 mount on this host");
    assert!(u.join("cgroup.kill").exists() && u.join("cgroup.freeze").exists());
    let mount = Path::new("/sys/fs/cgroup/unified");
    let extra = u.join("v2-only");
    let made = hutch_runtime::cgroup::v2::make_group(mount, &extra, &Default::default())
        .expect("make_group");
    assert_eq!(made, std::slice::from_ref(&extra));
    assert_eq!(
        read(&u.join("cgroup.subtree_control")).trim(),
        "",
        "nothing to enable"
    );
    let i = t.start_attached("sleep 100");
    let pid = t.children[i].id();
    hutch_runtime::cgroup::v2::set_frozen(&u, true, Duration::from_secs(2)).expect("freeze");
    assert!(read(&u.join("cgroup.events")).contains("frozen 1"));
    hutch_runtime::cgroup::v2::set_frozen(&u, false, Duration::from_secs(2)).expect("thaw");
    assert!(read(&u.join("cgroup.events")).contains("frozen 0"));
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    cg.kill_all().expect("kill_all");
    // remove() takes the extra cgroup below the group too.
    cg.remove().expect("remove");
    assert!(!extra.exists() && !u.exists());
}

/// `attach_from` remembers where a process was in every hierarchy and
/// `detach` puts it back there (what the keeper does for the PAM host that
/// closes a session), so a `kill_all` after it spares the process; a pid no
/// longer in the group is left alone.
#[test]
fn detach_returns_a_process_to_its_origin() {
    if !hutch_tests::require_root("detach_returns_a_process_to_its_origin") {
        return;
    }
    let mut t = TestGroup::new(CgroupRoot::open(&unique_spec()).expect("open"));
    let cg = t.create(&Limits {
        pids_max: Some(50),
        ..Limits::default()
    });
    let child = Command::new("sleep")
        .arg("100")
        .spawn()
        .expect("spawn sleep");
    let pid = child.id() as i32;
    t.children.push(child);
    let before = read(Path::new(&format!("/proc/{pid}/cgroup")));
    let origin = cg.attach_from(pid).expect("attach_from");
    assert_eq!(cg.pids().unwrap(), vec![pid]);
    assert_ne!(read(Path::new(&format!("/proc/{pid}/cgroup"))), before);

    let moved = cg.detach(pid, &origin, None).expect("detach");
    assert_eq!(moved, cg.leaf_dirs().len(), "moved back in every hierarchy");
    assert_eq!(read(Path::new(&format!("/proc/{pid}/cgroup"))), before);
    assert!(cg.pids().unwrap().is_empty());
    assert_eq!(
        cg.detach(pid, &origin, None).expect("detach again"),
        0,
        "not in the group: untouched"
    );

    cg.kill_all().expect("kill_all");
    assert!(
        t.children[0].try_wait().unwrap().is_none(),
        "a detached process survives the group's kill"
    );

    // Its origin gone (as systemd removes an empty session scope): the
    // fallback group takes it.
    let fb = t
        .root
        .create("fallback", &Limits::default())
        .expect("fallback group");
    let gone = t
        .root
        .create("origin", &Limits::default())
        .expect("origin group");
    gone.attach(pid).expect("into origin");
    let origin = cg.attach_from(pid).expect("attach_from origin");
    gone.remove().expect("remove the origin");
    assert!(
        cg.detach(pid, &origin, None).is_err(),
        "no origin and no fallback is an error"
    );
    assert_eq!(
        cg.detach(pid, &origin, Some(&fb))
            .expect("detach to fallback"),
        cg.leaf_dirs().len()
    );
    assert_eq!(fb.pids().unwrap(), vec![pid]);
    cg.attach(pid).expect("back into the group for the cleanup");
    fb.remove().expect("remove the fallback");
    let mut child = t.children.pop().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The leaf's `cgroup.procs` held open (what the keeper keeps from the
/// first session on): `attach_from_held` moves a process in every
/// hierarchy as `attach_from` does, with the same origin, also for a
/// second process through the same files; a pid that is gone fails naming
/// the file; and the group is removed while the files are still open.
#[test]
fn held_leaf_procs_attach_as_the_paths_do() {
    if !hutch_tests::require_root("held_leaf_procs_attach_as_the_paths_do") {
        return;
    }
    let mut t = TestGroup::new(CgroupRoot::open(&unique_spec()).expect("open"));
    let cg = t.create(&Limits {
        pids_max: Some(50),
        ..Limits::default()
    });
    let held = cg.open_leaf_procs().expect("open the leaf's cgroup.procs");
    let mut pids = Vec::new();
    for _ in 0..2 {
        let child = Command::new("sleep")
            .arg("100")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        t.children.push(child);
        let before = read(Path::new(&format!("/proc/{pid}/cgroup")));
        let origin = cg.attach_from_held(pid, &held).expect("attach_from_held");
        pids.push(pid);
        assert_eq!(cg.pids().unwrap(), pids);
        for leaf in cg.leaf_dirs() {
            assert!(
                read(&leaf.join("cgroup.procs"))
                    .lines()
                    .any(|l| l == pid.to_string()),
                "{pid} not in {}",
                leaf.display()
            );
        }
        // The origin it noted puts it back exactly where it was.
        assert_eq!(
            cg.detach(pid, &origin, None).expect("detach"),
            cg.leaf_dirs().len()
        );
        assert_eq!(read(Path::new(&format!("/proc/{pid}/cgroup"))), before);
        cg.attach_from_held(pid, &held).expect("attach again");
    }
    let mut gone = Command::new("true").spawn().expect("spawn true");
    let gone_pid = gone.id() as i32;
    gone.wait().unwrap();
    assert!(cg.attach_from_held(gone_pid, &held).is_err());
    for mut child in t.children.drain(..) {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    cg.kill_all().expect("kill_all");
    cg.remove().expect("remove with the files still open");
    drop(held);
}

/// A group below a cpuset directory that another keeper has just made and
/// not yet filled (empty `cpuset.cpus`/`mems`, as mkdir leaves them) still
/// takes a process: every level is filled top down, not only the ones this
/// call made. Without it the attach fails with ENOSPC (seen with fifty
/// keepers starting at once).
#[test]
fn cpuset_parent_made_by_another_keeper() {
    if !hutch_tests::require_root("cpuset_parent_made_by_another_keeper") {
        return;
    }
    let root = CgroupRoot::open(&unique_spec()).expect("open");
    let Some(cpuset_root) = root
        .dirs()
        .into_iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/cpuset/"))
    else {
        eprintln!("no v1 cpuset hierarchy here; nothing to prove");
        return;
    };
    // Removes `users` and the root in every hierarchy, also on failure
    // (declared before `t`, so dropped after it).
    struct Rm(Vec<PathBuf>);
    impl Drop for Rm {
        fn drop(&mut self) {
            for r in &self.0 {
                let _ = std::fs::remove_dir(r.join("users"));
                let _ = std::fs::remove_dir(r);
            }
        }
    }
    let roots = Rm(root.dirs());
    let mut t = TestGroup::new(root);
    let users = cpuset_root.join("users");
    std::fs::create_dir_all(&users).expect("mkdir users");
    assert!(read(&users.join("cpuset.cpus")).trim().is_empty());
    let cg = t
        .root
        .create("users/g", &Limits::default())
        .expect("create");
    t.cg = Some(cg.clone());
    assert!(!read(&users.join("cpuset.cpus")).trim().is_empty());
    let i = t.start_attached("sleep 100");
    assert_eq!(cg.pids().unwrap(), vec![t.children[i].id() as i32]);
    drop(t);
    let dirs = roots.0.clone();
    drop(roots);
    for d in dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}
