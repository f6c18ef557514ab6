//! `hutch`: what a confined user can ask about their own container, from
//! inside it. `hutch status [--json]` prints the container's limits, what
//! it uses, how often a limit acted, the sessions, what persists and when
//! the container goes: the keeper's answer on
//! [`hutch_runtime::paths::STATUS_SOCKET`] (see
//! `hutch_runtime::keeper::status`). Needs no privilege; the keeper answers
//! only the container's user.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use hutch_runtime::keeper::status::{render, Status};
use hutch_runtime::paths::STATUS_SOCKET;

const USAGE: &str = "usage: hutch status [--json]

  status   your container's limits, usage, limit hits since it started and
           since your login, sessions, what persists and when it goes
  --json   the same as one JSON object
";

fn fetch() -> Result<Status, String> {
    let mut conn = UnixStream::connect(STATUS_SOCKET).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("not inside a hutch container ({STATUS_SOCKET} is not there)")
        } else {
            format!("connecting to {STATUS_SOCKET}: {e}")
        }
    })?;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut text = String::new();
    conn.read_to_string(&mut text)
        .map_err(|e| format!("reading {STATUS_SOCKET}: {e}"))?;
    if text.trim().is_empty() {
        return Err("the container's keeper did not answer (asked too often? try again)".into());
    }
    serde_json::from_str(&text).map_err(|e| format!("the keeper's answer: {e}"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let json = match words.as_slice() {
        ["status"] => false,
        ["status", "--json"] | ["--json", "status"] => true,
        ["-h" | "--help" | "help"] | [] => {
            print!("{USAGE}");
            std::process::exit(if words.is_empty() { 2 } else { 0 });
        }
        _ => {
            eprint!("hutch: unknown arguments {words:?}\n{USAGE}");
            std::process::exit(2);
        }
    };
    match fetch() {
        Ok(s) if json => println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default()),
        Ok(s) => print!("{}", render(&s)),
        Err(e) => {
            eprintln!("hutch: {e}");
            std::process::exit(1);
        }
    }
}
