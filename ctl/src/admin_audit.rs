//! The audit record of an admin's action (hutch-audit(7), event `admin`):
//! one per `enter`, `stop`, `reset`, `freeze`, `thaw`, `check --probe`,
//! `template build|load|update|unload`
//! and `setup`, after it ran, with who ran it and how it ended. Read-only
//! commands (`list`, `stats`, `metrics`, `report`, `check`, ...) send none.

use hutch_runtime::audit::Record;

use crate::template_cmd::TemplateCmd;
use crate::Command;

/// The action and its target, for a command that changes something.
pub fn action(cmd: &Command) -> Option<(&'static str, String)> {
    Some(match cmd {
        Command::Enter { user, root, .. } => {
            (if *root { "enter-root" } else { "enter" }, user.clone())
        }
        Command::Stop { user } => ("stop", user.clone()),
        Command::Reset { user } => ("reset", user.clone()),
        Command::Check {
            probe: Some(user), ..
        } => ("probe", user.clone()),
        Command::Freeze { user } => ("freeze", user.clone()),
        Command::Thaw { user } => ("thaw", user.clone()),
        Command::Template(t) => match t {
            TemplateCmd::Build { name, .. } => ("template-build", name.clone()),
            TemplateCmd::Load { name } => ("template-load", name.clone()),
            TemplateCmd::Update { name, .. } => ("template-update", name.clone()),
            TemplateCmd::Unload { name, generation } => {
                ("template-unload", format!("{name}/{generation}"))
            }
            TemplateCmd::List => return None,
        },
        Command::Setup {
            pam_service, undo, ..
        } => (
            if *undo { "setup-undo" } else { "setup" },
            pam_service.clone(),
        ),
        _ => return None,
    })
}

/// The login uid of this process (`/proc/self/loginuid`, set by
/// pam_loginuid at login and kept across su and sudo), if set.
fn loginuid() -> Option<u32> {
    let v: u32 = std::fs::read_to_string("/proc/self/loginuid")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (v != u32::MAX).then_some(v)
}

/// The record of `action` on `target` that ended with `result`.
pub fn record(action: &str, target: &str, result: &anyhow::Result<i32>) -> Record {
    let (outcome, detail) = match result {
        Ok(0) => ("ok".to_string(), None),
        Ok(code) => (format!("exit-{code}"), None),
        Err(e) => ("error".to_string(), Some(format!("{e:#}"))),
    };
    let r = Record::new("admin")
        .field("action", action)
        .field("target", target)
        .field("uid", nix::unistd::getuid().as_raw())
        .opt("loginuid", loginuid())
        .opt("sudo_user", std::env::var("SUDO_USER").ok())
        .field("result", outcome)
        .opt("error", detail);
    if result.as_ref().is_ok_and(|c| *c == 0) {
        r
    } else {
        r.notice()
    }
}

/// For `enter`, a record as it starts (`result=started`).
pub fn send_start(cmd: &Command) {
    if let Some((action, target)) = action(cmd).filter(|(a, _)| a.starts_with("enter")) {
        let mut r = record(action, &target, &Ok(0));
        if let Some(v) = r.fields.iter_mut().find(|(k, _)| *k == "result") {
            v.1 = "started".into();
        }
        r.send();
    }
}

/// Sends the record of `cmd`, if it is an admin action.
pub fn send(cmd: &Command, result: &anyhow::Result<i32>) {
    if let Some((action, target)) = action(cmd) {
        record(action, &target, result).send();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Changing commands are audited with their target; read-only ones are not.
    #[test]
    fn which_commands() {
        let stop = Command::Stop {
            user: "alice".into(),
        };
        assert_eq!(action(&stop), Some(("stop", "alice".to_string())));
        let reset = Command::Reset { user: "bob".into() };
        assert_eq!(action(&reset), Some(("reset", "bob".to_string())));
        assert_eq!(action(&Command::List { json: false }), None);
        assert_eq!(action(&Command::Template(TemplateCmd::List)), None);
        let r = record("stop", "alice", &Ok(1)).render();
        let pairs = hutch_runtime::audit::parse(&r).unwrap();
        assert_eq!(pairs[2], ("action".into(), "stop".into()));
        assert!(pairs.contains(&("result".into(), "exit-1".into())), "{r}");
    }
}
