//! hutch-keeper: the per-user supervisor. Started by pam_hutch, never by hand:
//! `hutch-keeper [--config PATH] [--policy-cache DIR] [--service NAME] [--ready-fd N] [--account-fd N] USER`.

use std::path::PathBuf;

fn usage() -> ! {
    eprintln!(
        "usage: hutch-keeper [--config PATH] [--policy-cache DIR] [--service NAME] [--ready-fd N] [--account-fd N] USER"
    );
    std::process::exit(2)
}

fn main() {
    hutch_runtime::timing::mark("exec");
    let mut config = PathBuf::from(hutch_policy::DEFAULT_CONFIG);
    let mut policy_cache = None;
    let mut service = String::from("sshd");
    let mut ready = None;
    let mut account = None;
    let mut user = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => config = args.next().map(PathBuf::from).unwrap_or_else(|| usage()),
            "--policy-cache" => {
                policy_cache = Some(args.next().map(PathBuf::from).unwrap_or_else(|| usage()))
            }
            "--service" => service = args.next().unwrap_or_else(|| usage()),
            "--ready-fd" => {
                let n: i32 = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| usage());
                ready = hutch_runtime::sys::take_inherited_fd(n);
            }
            "--account-fd" => {
                let n: i32 = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| usage());
                account = hutch_runtime::sys::take_inherited_fd(n);
            }
            "-h" | "--help" => usage(),
            _ if user.is_none() && !a.starts_with('-') => user = Some(a),
            _ => usage(),
        }
    }
    let Some(user) = user else { usage() };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("hutch-keeper: must run as root");
        std::process::exit(1);
    }
    let code = hutch_runtime::keeper::main(hutch_runtime::keeper::Options {
        config,
        policy_cache,
        user,
        service,
        ready,
        account,
    });
    std::process::exit(code);
}
