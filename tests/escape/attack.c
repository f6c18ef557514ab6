/* hutch escape suite: attempts made from inside a confined session.
 *
 * Built statically on the host by tests/tests/escape.rs and copied into the
 * attacker's home. `attack all ARGS...` runs every attempt, each in a forked
 * child (a seccomp kill or a crash then counts as blocked and the run goes
 * on), and prints one line per attempt:
 *     HUTCH-ATTEMPT <name>\t<blocked|ESCAPE>\t<detail>
 * then `HUTCH-END <n>`. Every attempt targets only this test's own users,
 * containers and namespaces (pids and ports are passed by the test).
 * `attack serve NAME PORT` is the victim side: it makes the things the
 * attacker then tries to reach, prints SERVING and waits.
 * `attack euid` prints the effective uid (run from a setuid copy). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/ioctl.h>
#include <sys/ipc.h>
#include <grp.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <linux/capability.h>

#ifndef AF_ALG
#define AF_ALG 38
#endif
#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

static char detail[512];
static int resfd = -1;

/* The child's verdict: 0 blocked, 1 ESCAPE. */
#define BLOCKED(...) do { snprintf(detail, sizeof detail, __VA_ARGS__); return 0; } while (0)
#define ESCAPED(...) do { snprintf(detail, sizeof detail, __VA_ARGS__); return 1; } while (0)

/* An operation that returned r (<0 and errno set on failure). */
static int expect_fail(long r, const char *what) {
    if (r < 0) BLOCKED("%s: %s", what, strerror(errno));
    ESCAPED("%s succeeded (%ld)", what, r);
}

static const char *victim_name, *victim_home, *host_secret;
static int victim_port, sshd_port;
static pid_t host_sshd_pid, victim_pid;
static uid_t victim_uid;

/* ---- files the user must not read or write ---- */
static int a_shadow(void) { return expect_fail(open("/etc/shadow", O_RDONLY), "open /etc/shadow"); }
static int a_host_secret(void) { return expect_fail(open(host_secret, O_RDONLY), "open a host-only file"); }
static int a_victim_home(void) {
    char p[512]; snprintf(p, sizeof p, "%s/secret", victim_home);
    return expect_fail(open(p, O_RDONLY), "open the other user's ~/secret");
}
static int a_victim_home_dir(void) { return expect_fail(open(victim_home, O_RDONLY | O_DIRECTORY), "open the other user's home"); }
static int a_write_template_bin(void) { return expect_fail(open("/usr/bin/bash", O_WRONLY), "open /usr/bin/bash for writing"); }
static int a_create_in_usr_bin(void) { return expect_fail(open("/usr/bin/hutch-evil", O_WRONLY | O_CREAT, 0755), "create /usr/bin/hutch-evil"); }
static int a_write_passwd(void) { return expect_fail(open("/etc/passwd", O_WRONLY | O_APPEND), "open /etc/passwd for writing"); }
static int a_write_nsswitch(void) { return expect_fail(open("/etc/nsswitch.conf", O_WRONLY | O_TRUNC), "truncate /etc/nsswitch.conf"); }
static int a_write_lib(void) { return expect_fail(open("/lib/x86_64-linux-gnu/libnss_hutchevil.so.2", O_WRONLY | O_CREAT, 0644), "plant an NSS module in /lib"); }
static int a_chmod_passwd(void) { return expect_fail(chmod("/etc/passwd", 0666), "chmod /etc/passwd"); }
static int a_unlink_passwd(void) { return expect_fail(unlink("/etc/group"), "unlink /etc/group"); }
static int a_write_marker(void) { return expect_fail(open("/run/hutch-container", O_WRONLY), "open the container marker for writing"); }
static int a_replace_marker(void) { return expect_fail(rename("/tmp", "/run/hutch-container"), "replace the container marker"); }
static int a_write_utmp(void) { return expect_fail(open("/run/utmp", O_WRONLY), "open /run/utmp (written by root sshd) for writing"); }
static int a_write_hutch_shell(void) {
    char *s = getenv("HUTCH_SHELL");
    if (!s) s = "/usr/sbin/hutch-shell";
    return expect_fail(open(s, O_WRONLY), "open hutch-shell (bound from the host) for writing");
}
static int a_chown_root(void) {
    int fd = open("/tmp/hutch-chown", O_WRONLY | O_CREAT, 0644); close(fd);
    return expect_fail(chown("/tmp/hutch-chown", 0, 0), "chown a file to root");
}

/* ---- /proc and /sys ---- */
static int a_sysrq(void) {
    int fd = open("/proc/sysrq-trigger", O_WRONLY);
    if (fd < 0) BLOCKED("open /proc/sysrq-trigger: %s", strerror(errno));
    /* 'h' only prints help to the kernel log: harmless if it gets through. */
    if (write(fd, "h", 1) == 1) ESCAPED("wrote to /proc/sysrq-trigger");
    BLOCKED("write /proc/sysrq-trigger: %s", strerror(errno));
}
static int read_some(const char *path, const char *what) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) BLOCKED("open %s: %s", path, strerror(errno));
    char b[64]; ssize_t n = read(fd, b, sizeof b);
    if (n > 0) ESCAPED("read %zd bytes of %s (%s)", n, path, what);
    BLOCKED("%s reads empty (masked)", path);
}
static int a_kcore(void) { return read_some("/proc/kcore", "kernel memory"); }
static int a_keys(void) { return read_some("/proc/keys", "keyrings"); }
static int a_timer_list(void) { return read_some("/proc/timer_list", "host timers"); }
static int a_sched_debug(void) { return read_some("/proc/sched_debug", "host tasks"); }
static int a_kallsyms(void) { return read_some("/proc/kallsyms", "kernel symbols"); }
static int a_proc_sys(void) { return expect_fail(open("/proc/sys/kernel/core_pattern", O_WRONLY), "open /proc/sys/kernel/core_pattern for writing"); }
static int a_proc_sys_hostname(void) { return expect_fail(open("/proc/sys/kernel/hostname", O_WRONLY), "open /proc/sys/kernel/hostname for writing"); }
static int a_sys_write(void) { return expect_fail(open("/sys/kernel/uevent_helper", O_WRONLY), "open /sys/kernel/uevent_helper for writing"); }
static int a_sys_firmware(void) {
    DIR *d = opendir("/sys/firmware");
    if (!d) BLOCKED("/sys/firmware: %s", strerror(errno));
    struct dirent *e; int n = 0;
    while ((e = readdir(d))) if (e->d_name[0] != '.') n++;
    closedir(d);
    if (n) ESCAPED("/sys/firmware lists %d entries", n);
    BLOCKED("/sys/firmware is empty (masked)");
}
static int a_release_agent(void) {
    const char *c[] = { "/sys/fs/cgroup/release_agent", "/sys/fs/cgroup/memory/release_agent", "/sys/fs/cgroup/cpu/release_agent",
                        "/sys/fs/cgroup/pids/release_agent", "/sys/fs/cgroup/freezer/release_agent", NULL };
    for (int i = 0; c[i]; i++) {
        int fd = open(c[i], O_WRONLY);
        if (fd >= 0) ESCAPED("opened %s for writing", c[i]);
    }
    /* And a fresh v1 hierarchy with release_agent (CVE-2022-0492). */
    mkdir("/tmp/hutch-cg", 0755);
    return expect_fail(mount("cgroup", "/tmp/hutch-cg", "cgroup", 0, "rdma"), "mount cgroup v1 (release_agent)");
}
static int a_raise_limits(void) {
    const char *c[] = { "/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/memory.max",
                        "/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us", NULL };
    for (int i = 0; c[i]; i++) {
        int fd = open(c[i], O_WRONLY);
        if (fd >= 0) ESCAPED("opened %s for writing", c[i]);
    }
    BLOCKED("no cgroup limit file is writable");
}
static int a_cgroup_procs(void) {
    /* Move ourselves to the root cgroup of any hierarchy we can see. */
    const char *c[] = { "/sys/fs/cgroup/cgroup.procs", "/sys/fs/cgroup/memory/cgroup.procs", "/sys/fs/cgroup/pids/cgroup.procs", NULL };
    for (int i = 0; c[i]; i++) {
        int fd = open(c[i], O_WRONLY);
        if (fd >= 0 && write(fd, "0", 1) == 1) ESCAPED("moved into %s", c[i]);
    }
    BLOCKED("no cgroup.procs is writable");
}
static int a_rlimit_hard(void) {
    struct rlimit r; getrlimit(RLIMIT_NPROC, &r);
    if (r.rlim_max == RLIM_INFINITY) BLOCKED("RLIMIT_NPROC hard limit already unlimited (nothing to raise)");
    r.rlim_max = RLIM_INFINITY; r.rlim_cur = RLIM_INFINITY;
    return expect_fail(setrlimit(RLIMIT_NPROC, &r), "raise the RLIMIT_NPROC hard limit");
}
static int a_nice(void) { return expect_fail(setpriority(PRIO_PROCESS, 0, -20), "setpriority(-20)"); }

/* ---- processes outside ---- */
static int status_uid(pid_t pid) {
    char p[64], line[256]; snprintf(p, sizeof p, "/proc/%d/status", pid);
    FILE *f = fopen(p, "r"); if (!f) return -1;
    int uid = -1;
    while (fgets(line, sizeof line, f)) if (sscanf(line, "Uid:\t%d", &uid) == 1) break;
    fclose(f); return uid;
}
static int a_foreign_procs(void) {
    DIR *d = opendir("/proc"); struct dirent *e; uid_t me = getuid();
    int n = 0;
    while ((e = readdir(d))) {
        pid_t p = atoi(e->d_name); if (p <= 0) continue;
        int u = status_uid(p);
        if (u >= 0 && (uid_t)u != me) ESCAPED("/proc/%d belongs to uid %d", p, u);
        n++;
    }
    BLOCKED("all %d processes in /proc are ours", n);
}
static int a_signal_sshd(void) {
    /* The test's sshd listener, by its host pid: it must not exist here, or be ours. */
    if (kill(host_sshd_pid, 0) < 0) BLOCKED("kill(host sshd %d, 0): %s", host_sshd_pid, strerror(errno));
    int u = status_uid(host_sshd_pid);
    if (u == (int)getuid()) BLOCKED("pid %d here is one of ours, not the host sshd", host_sshd_pid);
    ESCAPED("kill(host sshd pid %d) allowed", host_sshd_pid);
}
static int a_signal_victim(void) {
    if (kill(victim_pid, 0) < 0) BLOCKED("kill(other user's process %d, 0): %s", victim_pid, strerror(errno));
    int u = status_uid(victim_pid);
    if (u == (int)getuid()) BLOCKED("pid %d here is one of ours", victim_pid);
    ESCAPED("kill(other user's pid %d) allowed", victim_pid);
}
static int a_signal_all(void) {
    /* kill(-1) reaches every process we may signal: afterwards, nothing foreign may have got it.
       Use signal 0 so nothing is disturbed; count what answers. */
    if (kill(-1, 0) < 0) BLOCKED("kill(-1, 0): %s", strerror(errno));
    return a_foreign_procs();
}
static pid_t ancestor_sshd(void) {
    /* Walk parents to the first process named sshd* (the post-auth sshd child). */
    pid_t p = getppid();
    for (int i = 0; i < 10 && p > 1; i++) {
        char path[64], comm[64] = ""; snprintf(path, sizeof path, "/proc/%d/comm", p);
        FILE *f = fopen(path, "r"); if (f) { if (!fgets(comm, sizeof comm, f)) comm[0] = 0; fclose(f); }
        if (!strncmp(comm, "sshd", 4)) return p;
        snprintf(path, sizeof path, "/proc/%d/stat", p);
        f = fopen(path, "r"); if (!f) return 0;
        int pp = 0; char c; if (fscanf(f, "%*d (%*[^)]) %c %d", &c, &pp) != 2) pp = 0; fclose(f);
        p = pp;
    }
    return 0;
}
static int a_ptrace_init(void) {
    long r = ptrace(PTRACE_ATTACH, 1, 0, 0);
    if (r == 0) { waitpid(1, NULL, __WALL); ptrace(PTRACE_DETACH, 1, 0, 0); ESCAPED("PTRACE_ATTACH to the container's init (a fork of the root keeper)"); }
    BLOCKED("PTRACE_ATTACH pid 1: %s", strerror(errno));
}
static int a_ptrace_sshd(void) {
    pid_t p = ancestor_sshd();
    if (!p) BLOCKED("no sshd process visible among our ancestors");
    long r = ptrace(PTRACE_ATTACH, p, 0, 0);
    if (r == 0) { ptrace(PTRACE_DETACH, p, 0, 0); ESCAPED("PTRACE_ATTACH to sshd session process %d", p); }
    BLOCKED("PTRACE_ATTACH sshd %d: %s", p, strerror(errno));
}
static int a_vm_read_sshd(void) {
    pid_t p = ancestor_sshd();
    if (!p) BLOCKED("no sshd process visible");
    char buf[16]; struct iovec l = { buf, sizeof buf }, r = { (void *)0x400000, sizeof buf };
    return expect_fail(process_vm_readv(p, &l, 1, &r, 1, 0), "process_vm_readv of the sshd session process");
}
static int a_sshd_fds(void) {
    pid_t p = ancestor_sshd();
    if (!p) BLOCKED("no sshd process visible");
    char path[64]; snprintf(path, sizeof path, "/proc/%d/fd", p);
    DIR *d = opendir(path);
    if (!d) BLOCKED("open %s: %s", path, strerror(errno));
    ESCAPED("listed the sshd session process's fds");
}
static int a_init_exe(void) { return expect_fail(open("/proc/1/exe", O_RDONLY), "open /proc/1/exe (the host's keeper binary)"); }
static int a_init_environ(void) { return expect_fail(open("/proc/1/environ", O_RDONLY), "open /proc/1/environ"); }
static int a_init_mem(void) { return expect_fail(open("/proc/1/mem", O_RDWR), "open /proc/1/mem"); }

/* ---- namespaces, mounts ---- */
static int a_unshare_user(void) { return expect_fail(unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)"); }
static int a_unshare_userns_mnt(void) { return expect_fail(unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare(CLONE_NEWUSER|CLONE_NEWNS)"); }
static int a_unshare_mnt(void) { return expect_fail(unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)"); }
static int a_unshare_net(void) { return expect_fail(unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)"); }
static int a_clone_newuser(void) {
    long r = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (r == 0) _exit(0);
    if (r > 0) { waitpid(r, NULL, 0); ESCAPED("clone(CLONE_NEWUSER) made a child"); }
    BLOCKED("clone(CLONE_NEWUSER): %s", strerror(errno));
}
static int a_clone3_newuser(void) {
    struct { uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls; } args = { 0 };
    args.flags = CLONE_NEWUSER; args.exit_signal = SIGCHLD;
    long r = syscall(435 /* clone3 */, &args, sizeof args);
    if (r == 0) _exit(0);
    if (r > 0) { waitpid(r, NULL, 0); ESCAPED("clone3(CLONE_NEWUSER) made a child"); }
    BLOCKED("clone3(CLONE_NEWUSER): %s", strerror(errno));
}
static int a_setns(void) {
    int fd = open("/proc/self/ns/mnt", O_RDONLY);
    if (fd < 0) BLOCKED("open /proc/self/ns/mnt: %s", strerror(errno));
    return expect_fail(setns(fd, 0), "setns(mnt)");
}
static int a_setns_init(void) {
    int fd = open("/proc/1/ns/user", O_RDONLY);
    if (fd < 0) BLOCKED("open /proc/1/ns/user: %s", strerror(errno));
    return expect_fail(setns(fd, CLONE_NEWUSER), "setns(user ns of pid 1)");
}
static int a_mount_tmpfs(void) { mkdir("/tmp/hutch-m", 0755); return expect_fail(mount("x", "/tmp/hutch-m", "tmpfs", 0, NULL), "mount tmpfs"); }
static int a_mount_bind_etc(void) { mkdir("/tmp/hutch-b", 0755); return expect_fail(mount("/tmp/hutch-b", "/etc", NULL, MS_BIND, NULL), "bind over /etc"); }
static int a_remount_rw(void) { return expect_fail(mount(NULL, "/sys", NULL, MS_REMOUNT, NULL), "remount /sys read-write"); }
static int a_umount_proc(void) { return expect_fail(umount2("/proc/kcore", MNT_DETACH), "unmount the /proc/kcore mask"); }
static int a_chroot(void) { return expect_fail(chroot("/tmp"), "chroot(/tmp)"); }
static int a_pivot_root(void) { return expect_fail(syscall(SYS_pivot_root, "/tmp", "/tmp"), "pivot_root"); }
static int a_fsopen(void) { return expect_fail(syscall(430 /* fsopen */, "tmpfs", 0), "fsopen(tmpfs)"); }
static int a_open_tree(void) { return expect_fail(syscall(428 /* open_tree */, AT_FDCWD, "/", 1 /* OPEN_TREE_CLONE */), "open_tree(/, CLONE)"); }
static int a_x32_unshare(void) {
    /* The x32 ABI number of unshare: 0x40000000 | 272. */
    return expect_fail(syscall(0x40000000L | 272, CLONE_NEWUSER), "unshare through the x32 ABI");
}
static int a_i386_unshare(void) {
    /* int 0x80: the i386 ABI, where unshare is 310. */
    long r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(310L), "b"((long)CLONE_NEWUSER) : "memory");
    if (r == 0) ESCAPED("unshare through int 0x80 succeeded");
    errno = (int)-r;
    BLOCKED("unshare through int 0x80: %s", strerror(errno));
}

/* ---- devices ---- */
static int a_mknod_block(void) { return expect_fail(mknod("/tmp/hutch-sda", S_IFBLK | 0600, makedev(8, 0)), "mknod block 8:0"); }
static int a_mknod_mem(void) { return expect_fail(mknod("/tmp/hutch-mem", S_IFCHR | 0600, makedev(1, 1)), "mknod /dev/mem 1:1"); }
static int a_open_block_dev(void) {
    /* Any block device node anywhere in /dev. */
    DIR *d = opendir("/dev"); struct dirent *e; char p[300];
    while ((e = readdir(d))) {
        struct stat st; snprintf(p, sizeof p, "/dev/%s", e->d_name);
        if (lstat(p, &st) == 0 && S_ISBLK(st.st_mode)) {
            int fd = open(p, O_RDONLY);
            if (fd >= 0) ESCAPED("opened block device %s", p);
        }
    }
    return expect_fail(open("/dev/sda", O_RDONLY), "open /dev/sda");
}
static int a_dev_in_home(void) {
    /* A device node in the home (bound nodev) must not open. Only root could
       make one; the test does (HUTCH_DEV_NODE) when it ran as root. */
    char *p = getenv("HUTCH_DEV_NODE");
    if (!p) BLOCKED("no device node planted");
    return expect_fail(open(p, O_RDONLY), "open a character device node in the home");
}

/* ---- privileges ---- */
static int a_setuid0(void) { return expect_fail(setuid(0), "setuid(0)"); }
static int a_setgroups(void) { gid_t g = 0; return expect_fail(setgroups(1, &g), "setgroups([0])"); }
static int a_capset(void) {
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct d[2] = { { ~0u, ~0u, ~0u }, { ~0u, ~0u, ~0u } };
    return expect_fail(syscall(SYS_capset, &h, d), "capset(all)");
}
static int a_caps_empty(void) {
    FILE *f = fopen("/proc/self/status", "r"); char line[256];
    int nnp = -1, sec = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long long v;
        if ((sscanf(line, "CapEff:\t%llx", &v) == 1 || sscanf(line, "CapPrm:\t%llx", &v) == 1 ||
             sscanf(line, "CapBnd:\t%llx", &v) == 1 || sscanf(line, "CapAmb:\t%llx", &v) == 1 ||
             sscanf(line, "CapInh:\t%llx", &v) == 1) && v)
            ESCAPED("capability set not empty: %s", line);
        sscanf(line, "NoNewPrivs:\t%d", &nnp);
        sscanf(line, "Seccomp:\t%d", &sec);
    }
    if (nnp != 1) ESCAPED("NoNewPrivs is %d", nnp);
    if (sec != 2) ESCAPED("Seccomp is %d (no filter)", sec);
    BLOCKED("all capability sets empty, NoNewPrivs 1, Seccomp 2");
}
static int a_keyctl(void) { return expect_fail(syscall(SYS_add_key, "user", "hutch", "x", 1, -3 /* KEY_SPEC_SESSION_KEYRING */), "add_key"); }
static int a_keyctl_join(void) { return expect_fail(syscall(SYS_keyctl, 1 /* KEYCTL_JOIN_SESSION_KEYRING */, "hutch"), "keyctl(JOIN_SESSION_KEYRING)"); }
static int a_bpf(void) {
    union { struct { uint32_t map_type, key_size, value_size, max_entries; } m; char pad[128]; } attr;
    memset(&attr, 0, sizeof attr);
    attr.m.map_type = 2; attr.m.key_size = 4; attr.m.value_size = 4; attr.m.max_entries = 1;
    return expect_fail(syscall(SYS_bpf, 0 /* BPF_MAP_CREATE */, &attr, sizeof attr), "bpf(MAP_CREATE)");
}
static int a_perf(void) {
    char attr[128]; memset(attr, 0, sizeof attr);
    ((uint32_t *)attr)[0] = 1; /* PERF_TYPE_SOFTWARE */
    ((uint32_t *)attr)[1] = 112; /* size */
    return expect_fail(syscall(SYS_perf_event_open, attr, 0, -1, -1, 0), "perf_event_open");
}
static int a_userfaultfd(void) { return expect_fail(syscall(SYS_userfaultfd, 0), "userfaultfd"); }
static int a_io_uring(void) { char p[120]; memset(p, 0, sizeof p); return expect_fail(syscall(425 /* io_uring_setup */, 4, p), "io_uring_setup"); }
static int a_af_alg(void) { return expect_fail(socket(AF_ALG, SOCK_SEQPACKET, 0), "socket(AF_ALG)"); }
static int a_af_vsock(void) { return expect_fail(socket(AF_VSOCK, SOCK_STREAM, 0), "socket(AF_VSOCK)"); }
static int a_raw_socket(void) { return expect_fail(socket(AF_INET, SOCK_RAW, IPPROTO_ICMP), "socket(AF_INET, SOCK_RAW)"); }
static int a_packet_socket(void) { return expect_fail(socket(AF_PACKET, SOCK_RAW, 0), "socket(AF_PACKET)"); }
static int a_kexec(void) { return expect_fail(syscall(SYS_kexec_load, 0, 0, 0, 0), "kexec_load"); }
static int a_init_module(void) { return expect_fail(syscall(SYS_finit_module, 0, "", 0), "finit_module"); }
static int a_reboot(void) { return expect_fail(syscall(SYS_reboot, 0xfee1dead, 672274793, 0x4321fedc /* RB_POWER_OFF */, 0), "reboot(POWER_OFF)"); }
static int a_dmesg(void) { char b[64]; return expect_fail(syscall(SYS_syslog, 3 /* READ_ALL */, b, sizeof b), "syslog(READ_ALL)"); }
static int a_open_by_handle(void) {
    char h[64]; memset(h, 0, sizeof h);
    ((unsigned *)h)[0] = 8; ((int *)h)[1] = 1; /* ext4 style: ino 2 (the root) */
    ((unsigned *)h)[2] = 2;
    return expect_fail(syscall(SYS_open_by_handle_at, AT_FDCWD, h, O_RDONLY), "open_by_handle_at (shocker)");
}
static int a_sethostname(void) { return expect_fail(sethostname("evil", 4), "sethostname"); }
static int a_settime(void) { struct timeval tv; gettimeofday(&tv, NULL); return expect_fail(settimeofday(&tv, NULL), "settimeofday"); }
static int a_iopl(void) { return expect_fail(syscall(SYS_iopl, 3), "iopl(3)"); }
static int a_swapon(void) { return expect_fail(syscall(SYS_swapon, "/tmp/hutch-chown", 0), "swapon"); }
static int a_tiocsti(void) {
    int fd = open("/dev/tty", O_RDWR);
    if (fd < 0) fd = 0;
    if (!isatty(fd)) BLOCKED("no terminal to inject into (not a tty)");
    char c = '\n';
    return expect_fail(ioctl(fd, TIOCSTI, &c), "ioctl(TIOCSTI) on the session's terminal");
}
static int a_tiocstl_high_bits(void) {
    /* The request with junk in the high 32 bits: the kernel ignores them, the filter must too. */
    int fd = open("/dev/tty", O_RDWR);
    if (fd < 0) fd = 0;
    if (!isatty(fd)) BLOCKED("no terminal (not a tty)");
    char c = '\n';
    return expect_fail(syscall(SYS_ioctl, fd, 0x100000000UL | TIOCSTI, &c), "ioctl(TIOCSTI | 1<<32)");
}
/* A pty of our own made our controlling terminal (setsid in this forked
   child, then the slave's first open): the kernel itself would allow
   TIOCSTI on it, so only the filter can refuse. Works with or without a
   session terminal (cron, su with no tty). Returns the slave, or -1. */
static int own_ctty(void) {
    if (setsid() < 0) return -1;
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0) return -1;
    char *n = ptsname(m);
    if (!n) return -1;
    return open(n, O_RDWR);
}
/* A call the filter denies must fail with the filter's EPERM: another
   errno means the kernel saw it, so no filter stood in the way. */
static int expect_filtered(long r, const char *what) {
    if (r >= 0) ESCAPED("%s succeeded (%ld)", what, r);
    if (errno == EPERM) BLOCKED("%s: EPERM (the filter)", what);
    ESCAPED("%s reached the kernel (%s): no filter", what, strerror(errno));
}
static int a_tiocsti_own(void) {
    int fd = own_ctty();
    if (fd < 0) ESCAPED("could not make a pty of our own to test on: %s", strerror(errno));
    char c = '\n';
    return expect_filtered(ioctl(fd, TIOCSTI, &c), "ioctl(TIOCSTI) on our own controlling pty");
}
static int a_tiocsti_own_high(void) {
    int fd = own_ctty();
    if (fd < 0) ESCAPED("could not make a pty of our own to test on: %s", strerror(errno));
    char c = '\n';
    return expect_filtered(syscall(SYS_ioctl, fd, 0x100000000UL | TIOCSTI, &c), "ioctl(TIOCSTI | 1<<32) on our own pty");
}
static int a_tioclinux(void) {
    /* On a pty the kernel answers ENOTTY (not a virtual console): only the
       filter's EPERM shows the filter is there. */
    int fd = own_ctty();
    if (fd < 0) fd = 0;
    char sub = 6; /* TIOCL_GETSHIFTSTATE: harmless */
    return expect_filtered(ioctl(fd, TIOCLINUX, &sub), "ioctl(TIOCLINUX)");
}

/* ---- fds and cwd ---- */
static int a_leaked_fds(void) {
    DIR *d = opendir("/proc/self/fd"); struct dirent *e; char p[64], t[512];
    int self = dirfd(d), n = 0;
    while ((e = readdir(d))) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] == '.' || fd == self || fd < 3) continue;
        snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
        ssize_t l = readlink(p, t, sizeof t - 1); t[l > 0 ? l : 0] = 0;
        if (fd != resfd) { n++; ESCAPED("fd %d is open: %s", fd, t); }
    }
    BLOCKED("only fds 0-2 are open");
}
static int a_cwd(void) {
    char c[4096];
    if (!getcwd(c, sizeof c)) ESCAPED("getcwd failed: %s", strerror(errno));
    if (c[0] != '/') ESCAPED("cwd is %s (outside the root)", c);
    char r[256]; ssize_t l = readlink("/proc/self/root", r, sizeof r - 1); r[l > 0 ? l : 0] = 0;
    if (strcmp(r, "/")) ESCAPED("root is %s", r);
    BLOCKED("cwd %s, root /", c);
}
static int a_dotdot(void) {
    /* Walk .. far past the root: must stay at the container's root. */
    struct stat root, up;
    stat("/", &root);
    if (chdir("../../../../../../../../../..") < 0) BLOCKED("chdir ..: %s", strerror(errno));
    stat(".", &up);
    if (root.st_ino != up.st_ino || root.st_dev != up.st_dev) ESCAPED(".. from the cwd leads outside the root");
    if (access(host_secret, F_OK) == 0) ESCAPED("host file visible after walking ..");
    BLOCKED(".. ends at the container's root");
}
static int a_proc_root_escape(void) {
    /* Through /proc/<pid>/root of every visible process. */
    DIR *d = opendir("/proc"); struct dirent *e; char p[600];
    while ((e = readdir(d))) {
        if (atoi(e->d_name) <= 0) continue;
        snprintf(p, sizeof p, "/proc/%s/root%s", e->d_name, host_secret);
        if (access(p, F_OK) == 0) ESCAPED("host file reachable through %s", p);
        snprintf(p, sizeof p, "/proc/%s/cwd", e->d_name);
        char t[512]; ssize_t l = readlink(p, t, sizeof t - 1);
        if (l > 0) { t[l] = 0; if (strstr(t, "(unreachable)")) ESCAPED("%s is %s", p, t); }
    }
    BLOCKED("no process's root or cwd leads outside");
}

/* ---- other containers, the host's network, the keeper ---- */
static int connect_abstract(const char *name) {
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    size_t n = strlen(name); memcpy(a.sun_path + 1, name, n);
    return connect(s, (struct sockaddr *)&a, offsetof(struct sockaddr_un, sun_path) + 1 + n);
}
static int a_abstract(void) {
    char n[128]; snprintf(n, sizeof n, "hutch-escape-%s", victim_name);
    return expect_fail(connect_abstract(n), "connect to the other user's abstract socket");
}
static int a_abstract_any(void) {
    /* Abstract sockets of the host's netns (e.g. systemd, X11, dbus) are listed in /proc/net/unix. */
    FILE *f = fopen("/proc/net/unix", "r"); char line[512]; int n = 0;
    if (!f) BLOCKED("/proc/net/unix: %s", strerror(errno));
    while (fgets(line, sizeof line, f)) if (strstr(line, " @")) {
        char *name = strstr(line, " @") + 2; name[strcspn(name, "\n")] = 0;
        if (strstr(name, "hutch-escape")) ESCAPED("the other user's abstract socket is listed: %s", name);
        n++;
    }
    BLOCKED("%d abstract sockets listed, none foreign to this container", n);
}
static int connect_tcp(const char *ip, int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    inet_pton(AF_INET, ip, &a.sin_addr);
    struct timeval tv = { 2, 0 }; setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return connect(s, (struct sockaddr *)&a, sizeof a);
}
static int a_tcp_victim(void) { return expect_fail(connect_tcp("127.0.0.1", victim_port), "connect to the other user's 127.0.0.1 listener"); }
static int a_tcp_sshd(void) { return expect_fail(connect_tcp("127.0.0.1", sshd_port), "connect to the host side's sshd on 127.0.0.1"); }
static int a_shm(void) {
    char p[256]; snprintf(p, sizeof p, "/dev/shm/hutch-escape-%s", victim_name);
    return expect_fail(open(p, O_RDONLY), "open the other user's /dev/shm file");
}
static int a_tmp(void) {
    char p[256]; snprintf(p, sizeof p, "/tmp/hutch-escape-%s", victim_name);
    return expect_fail(open(p, O_RDONLY), "open the other user's /tmp file");
}
static int a_sysv_ipc(void) {
    /* The victim made a SysV message queue with key 0x48757463; it lives in its ipc namespace. */
    long r = syscall(SYS_msgget, 0x48757463, 0);
    return expect_fail(r, "msgget of the other user's SysV queue");
}
static int a_keeper_socket(void) {
    char *p = getenv("HUTCH_KEEPER_SOCK");
    if (!p) BLOCKED("no keeper socket path given");
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    strncpy(a.sun_path, p, sizeof a.sun_path - 1);
    return expect_fail(connect(s, (struct sockaddr *)&a, sizeof a), "connect to the keeper's socket by path");
}
static int a_keeper_dir(void) {
    char *p = getenv("HUTCH_RUN_DIR");
    if (!p) BLOCKED("no run dir given");
    return expect_fail(open(p, O_RDONLY | O_DIRECTORY), "open hutch's run dir");
}

/* ---- one confinement for every way in (issue 13): whichever PAM
   service and program made this session ---- */
static int a_in_container(void) {
    /* Not on the host: the container's hostname and its init as pid 1. */
    char h[256] = "", comm[64] = "";
    gethostname(h, sizeof h);
    FILE *f = fopen("/proc/1/comm", "r");
    if (f) { if (!fgets(comm, sizeof comm, f)) comm[0] = 0; fclose(f); }
    comm[strcspn(comm, "\n")] = 0;
    const char *want = getenv("HUTCH_HOSTNAME");
    if (!want) ESCAPED("no expected hostname given");
    if (strcmp(h, want)) ESCAPED("hostname is %s, not %s: not in the container", h, want);
    if (strcmp(comm, "hutch-init")) ESCAPED("pid 1 is %s, not hutch-init", comm[0] ? comm : "(unreadable)");
    BLOCKED("hostname %s, pid 1 hutch-init", h);
}
static int a_all_filtered(void) {
    /* Every process of ours in the container (the session's shell, what it
       started, the PAM host's side if it shows) has no_new_privs and the filter. */
    DIR *d = opendir("/proc"); struct dirent *e; int n = 0; uid_t me = getuid();
    if (!d) ESCAPED("/proc: %s", strerror(errno));
    while ((e = readdir(d))) {
        pid_t p = atoi(e->d_name); if (p <= 0) continue;
        char path[64], line[256]; snprintf(path, sizeof path, "/proc/%d/status", p);
        FILE *f = fopen(path, "r"); if (!f) continue;
        int uid = -1, nnp = -1, sec = -1;
        while (fgets(line, sizeof line, f)) {
            sscanf(line, "Uid:\t%d", &uid); sscanf(line, "NoNewPrivs:\t%d", &nnp); sscanf(line, "Seccomp:\t%d", &sec);
        }
        fclose(f);
        if (uid != (int)me) continue;
        if (nnp != 1 || sec != 2) ESCAPED("pid %d of ours: NoNewPrivs %d, Seccomp %d", p, nnp, sec);
        n++;
    }
    closedir(d);
    if (!n) ESCAPED("no process of ours found in /proc");
    BLOCKED("all %d processes of ours: NoNewPrivs 1, Seccomp 2", n);
}
static int a_nnp_clear(void) {
    long r = prctl(PR_SET_NO_NEW_PRIVS, 0, 0, 0, 0);
    if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) ESCAPED("no_new_privs cleared");
    return expect_fail(r, "prctl(PR_SET_NO_NEW_PRIVS, 0)");
}
static int a_io_setup(void) {
    /* Kernel AIO contexts: a host-wide pool (fs.aio-max-nr). Unprivileged
       io_setup succeeds without the filter. */
    unsigned long ctx = 0;
    return expect_filtered(syscall(SYS_io_setup, 1, &ctx), "io_setup");
}
static int a_io_uring_filtered(void) {
    char p[120]; memset(p, 0, sizeof p);
    return expect_filtered(syscall(425, 4, p), "io_uring_setup (filter's errno)");
}
static int a_name_to_handle(void) {
    struct { unsigned bytes; int type; unsigned char h[128]; } fh = { 128, 0, { 0 } };
    int mnt;
    return expect_filtered(syscall(SYS_name_to_handle_at, AT_FDCWD, "/", &fh, &mnt, 0), "name_to_handle_at");
}
static int a_fanotify(void) {
    /* FAN_CLASS_NOTIF | FAN_REPORT_FID: allowed unprivileged since 5.13. */
    return expect_filtered(syscall(SYS_fanotify_init, 0x200, O_RDONLY), "fanotify_init");
}
static int a_request_key(void) {
    return expect_filtered(syscall(SYS_request_key, "user", "hutch-none", NULL, 0), "request_key");
}
static int a_add_key_filtered(void) {
    return expect_filtered(syscall(SYS_add_key, "user", "hutch2", "x", 1, -3), "add_key (filter's errno)");
}
static int a_unshare_user_filtered(void) { return expect_filtered(unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER) (filter's errno)"); }
static int a_open_tree_plain(void) {
    /* open_tree without CLONE needs no privilege: only the filter refuses it. */
    return expect_filtered(syscall(428, AT_FDCWD, "/", 0), "open_tree(/)");
}
static int a_af_alg_filtered(void) { return expect_filtered(socket(AF_ALG, SOCK_SEQPACKET, 0), "socket(AF_ALG) (filter's errno)"); }
static int a_unshare_pid(void) { return expect_fail(unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)"); }
static int a_unshare_ipc(void) { return expect_fail(unshare(CLONE_NEWIPC), "unshare(CLONE_NEWIPC)"); }
static int a_unshare_uts(void) { return expect_fail(unshare(CLONE_NEWUTS), "unshare(CLONE_NEWUTS)"); }
static int a_unshare_cgroup(void) { return expect_fail(unshare(CLONE_NEWCGROUP), "unshare(CLONE_NEWCGROUP)"); }
static int a_unshare_time(void) { return expect_fail(unshare(0x80 /* CLONE_NEWTIME */), "unshare(CLONE_NEWTIME)"); }
static int a_fspick(void) { return expect_fail(syscall(433 /* fspick */, AT_FDCWD, "/", 0), "fspick(/)"); }
static int a_mount_setattr(void) {
    uint64_t attr[4] = { 0, 0x2 /* MOUNT_ATTR_NOSUID clear */, 0, 0 };
    return expect_fail(syscall(442 /* mount_setattr */, AT_FDCWD, "/home", 0, attr, 32), "mount_setattr(/home)");
}
static int a_mount_proc(void) { mkdir("/tmp/hutch-p", 0755); return expect_fail(mount("proc", "/tmp/hutch-p", "proc", 0, NULL), "mount a fresh proc"); }
static int a_remount_home_suid(void) {
    const char *h = getenv("HOME");
    if (!h) BLOCKED("no HOME");
    return expect_fail(mount(NULL, h, NULL, MS_REMOUNT | MS_BIND, NULL), "remount the home without nosuid,nodev");
}
static int a_acct(void) { return expect_fail(syscall(SYS_acct, "/tmp/hutch-acct"), "acct"); }
static int a_quotactl(void) { return expect_fail(syscall(SYS_quotactl, 0x800002 /* Q_GETQUOTA */, "/dev/sda", 0, NULL), "quotactl"); }
static int a_swapoff(void) { return expect_fail(syscall(SYS_swapoff, "/tmp/hutch-chown"), "swapoff"); }
static int a_delete_module(void) { return expect_fail(syscall(SYS_delete_module, "loop", 0), "delete_module(loop)"); }
static int a_kexec_file(void) { return expect_fail(syscall(SYS_kexec_file_load, -1, -1, 0, "", 0), "kexec_file_load"); }
static int a_vhangup(void) { return expect_fail(syscall(SYS_vhangup), "vhangup"); }
static int a_ioperm(void) { return expect_fail(syscall(SYS_ioperm, 0, 1024, 1), "ioperm"); }
static int a_setdomainname(void) { return expect_fail(setdomainname("evil", 4), "setdomainname"); }
static int a_clock_settime(void) {
    struct timespec ts; clock_gettime(CLOCK_REALTIME, &ts);
    return expect_fail(clock_settime(CLOCK_REALTIME, &ts), "clock_settime");
}
static int a_root_mode(void) {
    /* The container's / is 0755 root's whatever umask the keeper's starter had. */
    struct stat st;
    if (stat("/", &st) < 0) ESCAPED("stat /: %s", strerror(errno));
    if ((st.st_mode & 07777) != 0755 || st.st_uid != 0) ESCAPED("/ is %o owned by %d", st.st_mode & 07777, st.st_uid);
    if (access("/", W_OK) == 0) ESCAPED("/ is writable by us");
    BLOCKED("/ is 0755 root's, not writable");
}
/* A host pid that names one of ours here (pid numbers of the container's
   namespace are small) is not the process meant. */
static int ours(pid_t p) { return status_uid(p) == (int)getuid(); }
static int a_ptrace_victim(void) {
    if (ours(victim_pid)) BLOCKED("pid %d here is one of ours", victim_pid);
    long r = ptrace(PTRACE_ATTACH, victim_pid, 0, 0);
    if (r == 0) { ptrace(PTRACE_DETACH, victim_pid, 0, 0); ESCAPED("PTRACE_ATTACH to the other user's process"); }
    BLOCKED("PTRACE_ATTACH other user's pid %d: %s", victim_pid, strerror(errno));
}
static int a_pidfd_victim(void) { if (ours(victim_pid)) BLOCKED("pid %d here is one of ours", victim_pid); return expect_fail(syscall(434 /* pidfd_open */, victim_pid, 0), "pidfd_open of the other user's process"); }
static int a_pidfd_sshd(void) { if (ours(host_sshd_pid)) BLOCKED("pid %d here is one of ours", host_sshd_pid); return expect_fail(syscall(434, host_sshd_pid, 0), "pidfd_open of the host sshd"); }
static int a_listener_listed(void) {
    /* The other user's 127.0.0.1 listener must not be in our /proc/net/tcp. */
    FILE *f = fopen("/proc/net/tcp", "r"); char line[512];
    if (!f) BLOCKED("/proc/net/tcp: %s", strerror(errno));
    char want[16]; snprintf(want, sizeof want, ":%04X ", victim_port);
    while (fgets(line, sizeof line, f)) {
        char *local = strchr(line, ':'); if (!local) continue;
        local = strchr(local + 1, ':'); /* the local address's port */
        if (local && !strncmp(local, want, strlen(want))) ESCAPED("the other user's listener is listed: %s", line);
    }
    fclose(f);
    BLOCKED("the other user's listener is not in this netns");
}
static int a_tcp_victim_addr(void) {
    /* veth: the other container's own address (from the host's leases). */
    char *ip = getenv("HUTCH_VICTIM_IP");
    if (!ip || !*ip) BLOCKED("no other container address (network none)");
    return expect_fail(connect_tcp(ip, victim_port), "connect to the other container's address");
}
static int a_pty_exhaust(void) {
    /* The container's devpts holds at most the policy's ptys (the host's
       pool, kernel.pty.max, is shared by every container). */
    char *m = getenv("HUTCH_PTY_MAX");
    if (!m) ESCAPED("no pty limit given");
    int max = atoi(m), n = 0, err = 0;
    while (n <= max + 16) {
        int fd = open("/dev/ptmx", O_RDWR | O_NOCTTY);
        if (fd < 0) { err = errno; break; }
        n++;
    }
    if (n > max) ESCAPED("opened %d ptys (the policy says %d)", n, max);
    BLOCKED("%d ptys, then %s (limit %d)", n, strerror(err), max);
}
static int a_fork_bomb(void) {
    /* Processes stop at the policy's pids (the host's pid space is shared). */
    char *m = getenv("HUTCH_PIDS");
    if (!m) ESCAPED("no pids limit given");
    int max = atoi(m), n = 0, err = 0;
    static pid_t kids[4096];
    while (n < max + 64 && n < 4096) {
        pid_t c = fork();
        if (c == 0) { pause(); _exit(0); }
        if (c < 0) { err = errno; break; }
        kids[n++] = c;
    }
    for (int i = 0; i < n; i++) kill(kids[i], SIGKILL);
    for (int i = 0; i < n; i++) waitpid(kids[i], NULL, 0);
    if (n >= max) ESCAPED("forked %d processes (the policy says %d)", n, max);
    BLOCKED("%d processes, then %s (limit %d)", n, strerror(err), max);
}

struct attempt { const char *name; int (*fn)(void); };
static const struct attempt attempts[] = {
    { "read-etc-shadow", a_shadow }, { "read-host-file", a_host_secret }, { "read-other-home-file", a_victim_home },
    { "open-other-home", a_victim_home_dir }, { "write-template-binary", a_write_template_bin },
    { "create-in-usr-bin", a_create_in_usr_bin }, { "write-etc-passwd", a_write_passwd }, { "write-nsswitch", a_write_nsswitch },
    { "plant-nss-module", a_write_lib }, { "chmod-etc-passwd", a_chmod_passwd }, { "unlink-etc-group", a_unlink_passwd },
    { "write-marker", a_write_marker }, { "replace-marker", a_replace_marker }, { "write-utmp", a_write_utmp },
    { "write-hutch-shell", a_write_hutch_shell }, { "chown-to-root", a_chown_root },
    { "proc-sysrq-trigger", a_sysrq }, { "proc-kcore", a_kcore }, { "proc-keys", a_keys }, { "proc-timer-list", a_timer_list },
    { "proc-sched-debug", a_sched_debug }, { "proc-kallsyms", a_kallsyms }, { "proc-sys-core-pattern", a_proc_sys },
    { "proc-sys-hostname", a_proc_sys_hostname }, { "sys-uevent-helper", a_sys_write }, { "sys-firmware", a_sys_firmware },
    { "cgroup-release-agent", a_release_agent }, { "cgroup-raise-limits", a_raise_limits }, { "cgroup-move-to-root", a_cgroup_procs },
    { "rlimit-raise-hard", a_rlimit_hard }, { "nice-minus-20", a_nice },
    { "see-foreign-processes", a_foreign_procs }, { "signal-host-sshd", a_signal_sshd }, { "signal-other-user", a_signal_victim },
    { "signal-everyone", a_signal_all }, { "ptrace-init", a_ptrace_init }, { "ptrace-sshd-session", a_ptrace_sshd },
    { "vm-read-sshd-session", a_vm_read_sshd }, { "list-sshd-fds", a_sshd_fds }, { "open-init-exe", a_init_exe },
    { "read-init-environ", a_init_environ }, { "open-init-mem", a_init_mem },
    { "unshare-user", a_unshare_user }, { "unshare-user-mnt", a_unshare_userns_mnt }, { "unshare-mnt", a_unshare_mnt },
    { "unshare-net", a_unshare_net }, { "clone-newuser", a_clone_newuser }, { "clone3-newuser", a_clone3_newuser },
    { "setns-mnt", a_setns }, { "setns-user", a_setns_init }, { "mount-tmpfs", a_mount_tmpfs }, { "bind-over-etc", a_mount_bind_etc },
    { "remount-sys-rw", a_remount_rw }, { "unmount-mask", a_umount_proc }, { "chroot", a_chroot }, { "pivot-root", a_pivot_root },
    { "fsopen", a_fsopen }, { "open-tree", a_open_tree }, { "x32-unshare", a_x32_unshare }, { "i386-unshare", a_i386_unshare },
    { "mknod-block", a_mknod_block }, { "mknod-dev-mem", a_mknod_mem }, { "open-block-device", a_open_block_dev },
    { "device-node-in-home", a_dev_in_home },
    { "setuid-0", a_setuid0 }, { "setgroups-0", a_setgroups }, { "capset-all", a_capset }, { "caps-and-nnp", a_caps_empty },
    { "add-key", a_keyctl }, { "keyctl-join", a_keyctl_join }, { "bpf-map", a_bpf }, { "perf-event-open", a_perf },
    { "userfaultfd", a_userfaultfd }, { "io-uring", a_io_uring }, { "af-alg", a_af_alg }, { "af-vsock", a_af_vsock },
    { "raw-socket", a_raw_socket }, { "packet-socket", a_packet_socket }, { "kexec-load", a_kexec },
    { "finit-module", a_init_module }, { "reboot", a_reboot }, { "dmesg", a_dmesg }, { "open-by-handle", a_open_by_handle },
    { "sethostname", a_sethostname }, { "settimeofday", a_settime }, { "iopl", a_iopl }, { "swapon", a_swapon },
    { "tiocsti", a_tiocsti }, { "tiocsti-high-bits", a_tiocstl_high_bits }, { "tioclinux", a_tioclinux },
    { "tiocsti-own-pty", a_tiocsti_own }, { "tiocsti-own-pty-high-bits", a_tiocsti_own_high },
    { "leaked-fds", a_leaked_fds }, { "cwd-outside-root", a_cwd }, { "dotdot-past-root", a_dotdot },
    { "proc-pid-root-cwd", a_proc_root_escape },
    { "abstract-socket-other-user", a_abstract }, { "abstract-sockets-listed", a_abstract_any },
    { "tcp-other-user", a_tcp_victim }, { "tcp-host-sshd", a_tcp_sshd }, { "dev-shm-other-user", a_shm },
    { "tmp-other-user", a_tmp }, { "sysv-ipc-other-user", a_sysv_ipc }, { "keeper-socket", a_keeper_socket },
    { "keeper-run-dir", a_keeper_dir },
    { "in-the-container", a_in_container }, { "all-own-processes-filtered", a_all_filtered }, { "clear-no-new-privs", a_nnp_clear },
    { "io-setup", a_io_setup }, { "io-uring-filtered", a_io_uring_filtered }, { "name-to-handle-at", a_name_to_handle },
    { "fanotify-init", a_fanotify }, { "request-key", a_request_key }, { "add-key-filtered", a_add_key_filtered },
    { "unshare-user-filtered", a_unshare_user_filtered }, { "open-tree-plain", a_open_tree_plain }, { "af-alg-filtered", a_af_alg_filtered },
    { "unshare-pid", a_unshare_pid }, { "unshare-ipc", a_unshare_ipc }, { "unshare-uts", a_unshare_uts },
    { "unshare-cgroup", a_unshare_cgroup }, { "unshare-time", a_unshare_time }, { "fspick", a_fspick },
    { "mount-setattr", a_mount_setattr }, { "mount-proc", a_mount_proc }, { "remount-home-suid", a_remount_home_suid },
    { "acct", a_acct }, { "quotactl", a_quotactl }, { "swapoff", a_swapoff }, { "delete-module", a_delete_module },
    { "kexec-file-load", a_kexec_file }, { "vhangup", a_vhangup }, { "ioperm", a_ioperm }, { "setdomainname", a_setdomainname },
    { "clock-settime", a_clock_settime }, { "root-dir-mode", a_root_mode }, { "ptrace-other-user", a_ptrace_victim },
    { "pidfd-other-user", a_pidfd_victim }, { "pidfd-host-sshd", a_pidfd_sshd }, { "other-listener-listed", a_listener_listed },
    { "tcp-other-container-addr", a_tcp_victim_addr }, { "pty-exhaust", a_pty_exhaust }, { "fork-bomb", a_fork_bomb },
};

static int run_all(void) {
    int n = 0;
    for (size_t i = 0; i < sizeof attempts / sizeof attempts[0]; i++) {
        int p[2]; if (pipe(p) < 0) return 2;
        fflush(stdout);
        pid_t c = fork();
        if (c == 0) {
            close(p[0]); resfd = p[1];
            detail[0] = 0;
            int r = attempts[i].fn();
            if (write(p[1], detail, strlen(detail)) < 0) {}
            _exit(r);
        }
        close(p[1]);
        char d[512]; ssize_t l, got = 0;
        while ((l = read(p[0], d + got, sizeof d - 1 - got)) > 0) got += l;
        d[got] = 0; close(p[0]);
        int st; waitpid(c, &st, 0);
        const char *verdict;
        if (WIFEXITED(st)) verdict = WEXITSTATUS(st) == 0 ? "blocked" : "ESCAPE";
        else { verdict = "blocked"; snprintf(d, sizeof d, "killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st))); }
        for (char *q = d; *q; q++) if (*q == '\n' || *q == '\t') *q = ' ';
        printf("HUTCH-ATTEMPT %s\t%s\t%s\n", attempts[i].name, verdict, d);
        n++;
    }
    printf("HUTCH-END %d\n", n);
    fflush(stdout);
    return 0;
}

static int serve(const char *name, int port) {
    char p[256];
    snprintf(p, sizeof p, "/tmp/hutch-escape-%s", name); close(open(p, O_WRONLY | O_CREAT, 0644));
    snprintf(p, sizeof p, "/dev/shm/hutch-escape-%s", name); close(open(p, O_WRONLY | O_CREAT, 0644));
    syscall(SYS_msgget, 0x48757463, IPC_CREAT | 0666);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    char n[128]; snprintf(n, sizeof n, "hutch-escape-%s", name); size_t len = strlen(n);
    memcpy(a.sun_path + 1, n, len);
    if (bind(s, (struct sockaddr *)&a, offsetof(struct sockaddr_un, sun_path) + 1 + len) < 0 || listen(s, 8) < 0) { perror("abstract"); return 1; }
    int t = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(t, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY) };
    if (bind(t, (struct sockaddr *)&in, sizeof in) < 0 || listen(t, 8) < 0) { perror("tcp"); return 1; }
    printf("SERVING %d\n", getpid()); fflush(stdout);
    for (;;) pause();
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "euid")) {
        char line[256], cap[64] = "?"; FILE *f = fopen("/proc/self/status", "r");
        while (f && fgets(line, sizeof line, f)) sscanf(line, "CapEff:\t%63s", cap);
        printf("EUID %d %s\n", geteuid(), cap); return 0;
    }
    if (argc >= 4 && !strcmp(argv[1], "serve")) return serve(argv[2], atoi(argv[3]));
    if (argc >= 10 && !strcmp(argv[1], "all")) {
        victim_name = argv[2]; victim_home = argv[3]; victim_uid = atoi(argv[4]); victim_pid = atoi(argv[5]);
        victim_port = atoi(argv[6]); host_sshd_pid = atoi(argv[7]); sshd_port = atoi(argv[8]); host_secret = argv[9];
        return run_all();
    }
    fprintf(stderr, "usage: attack all VICTIM VICTIM_HOME VICTIM_UID VICTIM_PID VICTIM_PORT SSHD_PID SSHD_PORT HOST_FILE | serve NAME PORT | euid\n");
    return 2;
}
