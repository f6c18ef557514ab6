//! The devices cgroup (v1) is a real second line: even host root, entered
//! into a container's namespaces with CAP_MKNOD intact, cannot make or open
//! a device outside the container's allow-list once it sits in the user's
//! devices cgroup, while the same steps outside that cgroup succeed.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use hutch_tests::*;

const POLICY: &str = "[defaults]\nhostname = \"box-{user}\"\n";

/// Root in the container's mount and pid namespaces: `mknod b 7:0` and its
/// open work outside the user's devices cgroup, fail with EPERM inside it;
/// /dev/null (allowed) still opens inside it.
#[test]
fn devices_cgroup_is_a_second_line() {
    if !require_root("devices_cgroup_is_a_second_line") {
        return;
    }
    if !std::path::Path::new("/sys/fs/cgroup/devices/devices.allow").exists() {
        hutch_tests::skip(
            "devices_cgroup_is_a_second_line",
            "no v1 devices hierarchy (v2 host: only the container's /dev applies)",
        );
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let user = hutch.user();
    let name = user.name.clone();
    {
        let env = hutch.sshd(Sftp::Internal);
        let mut s = env.shell_pty(&user);
        let init = hutch.state(&name).expect("state.json")["init_pid"]
            .as_i64()
            .expect("init_pid");
        let leaf: PathBuf = hutch
            .user_cgroups(&name)
            .into_iter()
            .find(|d| d.starts_with("/sys/fs/cgroup/devices"))
            .expect("the user's group in the devices hierarchy")
            .join("procs");
        let list = std::fs::read_to_string(leaf.join("devices.list")).unwrap();
        assert!(
            !list.contains("a *:* rwm")
                && list.contains("c 136:* rwm")
                && list.contains("c 1:3 rwm"),
            "leaf rules: {list}"
        );

        // Outside the cgroup: the attack works (the cgroup is what stops it below).
        let enter = format!("nsenter --target {init} --mount --pid");
        let free = output(Command::new("sh").arg("-c").arg(format!(
            "{enter} sh -c 'mknod /dev/hutch-blk b 7 0 && exec 3</dev/hutch-blk && echo OPENED'"
        )));
        assert_eq!(free.stdout_str().trim(), "OPENED", "{}", free.describe());

        // In the user's devices cgroup: the same is refused by the kernel.
        let confined = |script: &str| {
            output(Command::new("sh").arg("-c").arg(format!(
                "echo $$ > {}/cgroup.procs && exec {enter} sh -c {}",
                leaf.display(),
                shell_quote(script)
            )))
        };
        let out = confined("mknod /dev/hutch-blk2 b 7 0 && echo MADE");
        assert!(
            !out.stdout_str().contains("MADE"),
            "mknod inside the devices cgroup: {}",
            out.describe()
        );
        assert!(
            out.stderr_str().contains("Operation not permitted"),
            "{}",
            out.describe()
        );
        let out = confined("exec 3</dev/hutch-blk && echo OPENED");
        assert!(
            !out.stdout_str().contains("OPENED"),
            "open inside the devices cgroup: {}",
            out.describe()
        );
        assert!(
            out.stderr_str().contains("Operation not permitted"),
            "{}",
            out.describe()
        );
        let out = confined("exec 3</dev/null && echo NULL-OK");
        assert_eq!(out.stdout_str().trim(), "NULL-OK", "{}", out.describe());
        let clean = output(
            Command::new("sh")
                .arg("-c")
                .arg(format!("{enter} rm -f /dev/hutch-blk /dev/hutch-blk2")),
        );
        assert!(clean.status.success(), "{}", clean.describe());

        s.send("exit 0\n");
        let (code, text) = s.wait(Duration::from_secs(30));
        assert_eq!(code, Some(0), "{text}");
        let left = hutch.wait_gone(&name, Duration::from_secs(15));
        assert!(left.is_empty(), "after the last logout: {left:?}");
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}
