//! The policy parser on arbitrary input: any text, as a main file or split
//! into a main file and a drop-in, must give a policy or diagnostics, never
//! a panic; a policy that loads resolves for a confined and a root account,
//! and survives the cache's encoding.
#![no_main]

use std::path::Path;

use hutch_policy::{Account, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (main, drop_in) = match text.find("\n\x00\n") {
        Some(i) => (&text[..i], Some(&text[i + 3..])),
        None => (text, None),
    };
    let mut sources = vec![(main, Path::new("hutch.toml"))];
    if let Some(d) = drop_in {
        sources.push((d, Path::new("hutch.d/10.toml")));
    }
    let report = Policy::check_sources(&sources);
    for d in &report.diagnostics {
        let _ = d.to_string();
    }
    if let Some(p) = report.policy {
        for (name, uid) in [("alice", 1000), ("root", 0)] {
            let a = Account {
                name: name.into(),
                uid,
                gid: uid,
                groups: vec![name.into(), "staff".into(), "users".into()],
                home: format!("/home/{name}").into(),
                shell: "/bin/sh".into(),
            };
            for svc in ["sshd", "cron", "systemd-user"] {
                let e = p.explain(&a, svc);
                let _ = e.entries.iter().map(|x| x.origin.to_string()).count();
            }
        }
        hutch_policy::fuzz_cache_round_trip(&p);
    }
});
