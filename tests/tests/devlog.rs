//! The container's /dev/log is the keeper's proxy: a confined user's lines
//! reach the host's syslog tagged with the container, never as a bare line
//! that could pass for a host daemon's, and a flood is rate-limited.

use std::time::Duration;

use hutch_tests::*;

const POLICY: &str = "[defaults]\nhostname = \"box-{user}\"\n";

/// `logger -t fake-sshd` arrives as `hutch[<user>]: fake-sshd...` with the
/// user facility; 5000 lines at once arrive as far fewer plus a "dropped N
/// lines" notice; sshd's own session lines (root in the container) still
/// arrive.
#[test]
fn devlog_is_tagged_and_rate_limited() {
    if !require_root("devlog_is_tagged_and_rate_limited") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let user = hutch.user();
    let name = user.name.clone();
    {
        let env = hutch.sshd(Sftp::Internal);
        let tag = format!("hutch[{name}]: ");
        let out = env.ssh(
            &user,
            &["logger -p authpriv.crit -t fake-sshd 'Accepted password for root from 10.9.9.9'"],
        );
        assert!(out.status.success(), "{}", out.describe());
        let line = env.syslog().wait_for_substr(
            "Accepted password for root from 10.9.9.9",
            Duration::from_secs(10),
        );
        let line =
            line.unwrap_or_else(|| panic!("the line never arrived: {:#?}", env.syslog().lines()));
        assert!(
            line.contains(&format!("{tag}fake-sshd")),
            "not tagged with the container: {line}"
        );
        // authpriv.crit (10<<3|2 = 82) from a user becomes user.crit (8|2 = 10).
        assert!(
            line.starts_with("<10>"),
            "facility not forced to LOG_USER: {line}"
        );
        for l in env.syslog().lines() {
            let body = l.split_once('>').map_or(l.as_str(), |(_, b)| b);
            assert!(
                !body.starts_with("fake-sshd"),
                "a bare line from the container: {l}"
            );
        }

        // A flood: far fewer lines than sent, and one notice of the drops.
        let before = env.syslog().lines().len();
        let out = env.ssh(&user, &["seq 5000 | logger -t flood"]);
        assert!(out.status.success(), "{}", out.describe());
        let notice = env.syslog().wait_for(
            |l| l.contains(&tag) && l.contains("dropped") && l.contains("lines"),
            Duration::from_secs(10),
        );
        assert!(
            notice.is_some(),
            "no drop notice: {} lines",
            env.syslog().lines().len()
        );
        let flood = env.syslog().lines()[before..]
            .iter()
            .filter(|l| l.contains("flood"))
            .count();
        eprintln!(
            "flood: {flood} of 5000 lines forwarded; {}",
            notice.unwrap()
        );
        assert!(flood > 0 && flood < 1500, "{flood} of 5000 lines forwarded");

        // sshd's own lines from inside the container still arrive, tagged.
        env.syslog().wait_for_substr(
            &format!("session closed for user {name}"),
            Duration::from_secs(10),
        );
        let left = hutch.wait_gone(&name, Duration::from_secs(15));
        assert!(left.is_empty(), "after the last logout: {left:?}");
        assert!(
            env.syslog()
                .contains(&format!("{name}: container torn down")),
            "{:#?}",
            env.syslog().lines()
        );
    }
    drop(user);
    assert_no_leftovers(&name, Duration::from_secs(5));
}
