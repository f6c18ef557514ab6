//! The v2 device filter (an eBPF cgroup-device program on the user's group
//! in the unified hierarchy) is a second line of its own: host root, entered
//! into a container's namespaces with CAP_MKNOD intact and placed in the
//! user's *unified* leaf only (its v1 devices cgroup, if any, left at the
//! root), cannot make or open a device outside the allow-list, while the
//! same steps outside that cgroup succeed. The program goes with the group.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use hutch_runtime::cgroup::bpfdev;
use hutch_tests::*;

const POLICY: &str = "[defaults]\nhostname = \"box-{user}\"\n";

#[test]
fn v2_device_program_is_a_second_line() {
    if !require_root("v2_device_program_is_a_second_line") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let user = hutch.user();
    let name = user.name.clone();
    let ids;
    {
        let env = hutch.sshd(Sftp::Internal);
        let mut s = env.shell_pty(&user);
        let init = hutch.state(&name).expect("state.json")["init_pid"]
            .as_i64()
            .expect("init_pid");
        let Some(group): Option<PathBuf> = hutch
            .user_cgroups(&name)
            .into_iter()
            .find(|d| d.join("cgroup.controllers").exists())
        else {
            hutch_tests::skip(
                "v2_device_program_is_a_second_line",
                "no unified (v2) hierarchy",
            );
            s.send("exit 0\n");
            let _ = s.wait(Duration::from_secs(30));
            return;
        };
        ids = bpfdev::attached(&group).expect("BPF_PROG_QUERY on the user's v2 group");
        assert_eq!(
            ids.len(),
            1,
            "one device program on {}: {ids:?}",
            group.display()
        );
        let leaf = group.join("procs");

        // Outside the group: the attack works (the program is what stops it below).
        let enter = format!("nsenter --target {init} --mount --pid");
        let free = output(Command::new("sh").arg("-c").arg(format!(
            "{enter} sh -c 'mknod /dev/hutch-bpf-blk b 7 0 && exec 3</dev/hutch-bpf-blk && echo OPENED'"
        )));
        assert_eq!(free.stdout_str().trim(), "OPENED", "{}", free.describe());

        // In the user's unified leaf only: refused by the kernel.
        let confined = |script: &str| {
            output(Command::new("sh").arg("-c").arg(format!(
                "echo $$ > {}/cgroup.procs && exec {enter} sh -c {}",
                leaf.display(),
                shell_quote(script)
            )))
        };
        let out = confined(
            "grep devices /proc/self/cgroup; mknod /dev/hutch-bpf-blk2 b 7 0 && echo MADE",
        );
        assert!(
            !out.stdout_str().contains("MADE"),
            "mknod inside the v2 group: {}",
            out.describe()
        );
        assert!(
            out.stderr_str().contains("Operation not permitted"),
            "{}",
            out.describe()
        );
        let v1 = out
            .stdout_str()
            .lines()
            .find(|l| l.contains(":devices:"))
            .map(str::to_string);
        assert!(
            v1.as_deref().is_none_or(|l| l.ends_with(":devices:/")),
            "left in the v1 devices root: {}",
            out.describe()
        );
        let out = confined("exec 3</dev/hutch-bpf-blk && echo OPENED");
        assert!(
            !out.stdout_str().contains("OPENED"),
            "open inside the v2 group: {}",
            out.describe()
        );
        assert!(
            out.stderr_str().contains("Operation not permitted"),
            "{}",
            out.describe()
        );
        let out = confined("exec 3</dev/null && echo NULL-OK");
        assert_eq!(out.stdout_str().trim(), "NULL-OK", "{}", out.describe());
        let clean = output(Command::new("sh").arg("-c").arg(format!(
            "{enter} rm -f /dev/hutch-bpf-blk /dev/hutch-bpf-blk2"
        )));
        assert!(clean.status.success(), "{}", clean.describe());

        s.send("exit 0\n");
        let (code, text) = s.wait(Duration::from_secs(30));
        assert_eq!(code, Some(0), "{text}");
        let left = hutch.wait_gone(&name, Duration::from_secs(15));
        assert!(left.is_empty(), "after the last logout: {left:?}");
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
    // The kernel releases the program with the removed cgroup (asynchronously).
    let live = wait_until(Duration::from_secs(10), || {
        ids.iter()
            .all(|&id| !bpfdev::prog_exists(id).expect("BPF_PROG_GET_FD_BY_ID"))
            .then_some(())
    });
    assert!(
        live.is_some(),
        "device programs {ids:?} still loaded after the group was removed"
    );
}
