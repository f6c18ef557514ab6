//! hutchctl, run by root on the host, meets what a confined user left in
//! their container: names that are not UTF-8, a symlink named like another
//! entry's lossy twin, newlines in names, a tree deeper than PATH_MAX, and
//! a `state.json` whose init pid names another user's container. Root must
//! never follow the user's names, never print them raw, and never act on a
//! process that is no longer the container's.

use std::time::Duration;

use hutch_tests::*;

const POLICY: &str = "[defaults]\nhostname = \"box-{user}\"\nmemory = \"1G\"\npids = 512\n";

/// Holds a session open until dropped; returns it with the init pid.
fn hold(env: &SshdEnv, hutch: &HutchEnv, user: &TestUser) -> (PtySession, i64) {
    let s = env.hold_pty(user);
    let init = wait_until(Duration::from_secs(10), || {
        hutch.state(&user.name).and_then(|s| s["init_pid"].as_i64())
    })
    .expect("init_pid in state.json");
    (s, init)
}

#[test]
fn diff_never_follows_the_users_names() {
    if !require_root("diff_never_follows_the_users_names") {
        return;
    }
    let hutch = HutchEnv::new(POLICY);
    let user = hutch.user();
    let other = hutch.user();
    let (name, oname) = (user.name.clone(), other.name.clone());
    {
        let env = hutch.sshd(Sftp::Internal);
        let (s, _init) = hold(&env, &hutch, &user);
        let (o, other_init) = hold(&env, &hutch, &other);

        // A directory `\xff`, a symlink named U+FFFD (what a lossy decoding
        // makes of `\xff`) to /etc, a name with a newline that looks like a
        // second line of output, and a tree deeper than PATH_MAX.
        let plant = r#"cd /var/tmp && mkdir "$(printf '\377')" && touch "$(printf '\377')/inside" \
            && ln -s /etc "$(printf '\357\277\275')" \
            && touch "$(printf 'evil\nD shadow')" \
            && mkdir deep && cd deep && for i in $(seq 25); do n=$(printf '%0200d' $i); mkdir $n && cd $n || exit 1; done && touch leaf \
            && echo PLANTED"#;
        let out = env.ssh(&user, &[plant]);
        assert!(
            out.stdout_str().contains("PLANTED"),
            "planting: {}",
            out.describe()
        );
        let out = hutch.ctl(&["diff", &name]);
        let diff = out.stdout_str();
        assert_eq!(out.code(), Some(0), "{}", out.describe());
        for want in [
            "A /var/tmp/\\377",
            "A /var/tmp/\\377/inside",
            "A /var/tmp/\\357\\277\\275",
            "A /var/tmp/evil\\nD\\ shadow",
        ] {
            assert!(diff.lines().any(|l| l == want), "no {want:?} in:\n{diff}");
        }
        assert!(
            !diff
                .lines()
                .any(|l| l.starts_with("A /var/tmp/\\357\\277\\275/")),
            "the symlink to /etc was followed:\n{diff}"
        );
        assert!(
            !diff.lines().any(|l| l == "D shadow"),
            "a name printed raw made a line of its own:\n{diff}"
        );
        let leaf = diff
            .lines()
            .find(|l| l.ends_with("/leaf"))
            .unwrap_or_else(|| panic!("the deep tree's leaf is not listed:\n{diff}"));
        assert!(leaf.len() > 5000, "{}", leaf.len());
        assert!(
            diff.lines().count() < 200,
            "more lines than the user made (the host's /etc?):\n{diff}"
        );

        // The recorded init is re-checked: a state.json whose init pid is now
        // another user's init (a reused pid) is refused, not diffed.
        // (Once the planting session's close is recorded: the keeper rewrites
        // state.json at every session's end.)
        wait_until(Duration::from_secs(10), || {
            hutch
                .state(&name)
                .filter(|st| st["sessions"].as_array().map(|a| a.len()) == Some(1))
        })
        .expect("state.json with only the holding session");
        let state_path = hutch.user_dir(&name).join("state.json");
        let text = std::fs::read_to_string(&state_path).unwrap();
        let mut st: serde_json::Value = serde_json::from_str(&text).unwrap();
        st["init_pid"] = serde_json::json!(other_init);
        std::fs::write(&state_path, serde_json::to_string(&st).unwrap()).unwrap();
        let out = hutch.ctl(&["diff", &name]);
        assert_ne!(out.code(), Some(0), "{}", out.describe());
        assert!(
            out.stderr_str().contains(&format!(
                "pid {other_init} is not in the container's cgroup"
            )),
            "{}",
            out.describe()
        );
        assert!(out.stdout_str().is_empty(), "{}", out.describe());
        std::fs::write(&state_path, text).unwrap();

        drop(s);
        drop(o);
        for n in [&name, &oname] {
            let left = hutch.wait_gone(n, Duration::from_secs(30));
            assert!(left.is_empty(), "after the last logout of {n}: {left:?}");
        }
    }
    drop(user);
    drop(other);
    assert_no_leftovers(&name, Duration::from_secs(5));
    assert_no_leftovers(&oname, Duration::from_secs(5));
    let tag = hutch.cgroup_root.clone();
    drop(hutch);
    assert_no_leftovers(&tag, Duration::from_secs(5));
}
