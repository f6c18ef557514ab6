//! hutch-shell run on the host (no marker): it must refuse, never fall back.

use std::process::Command;

/// No marker → exit 1 with the message naming the likely cause; nothing runs.
#[test]
fn refuses_on_host() {
    if std::path::Path::new(hutch_runtime::paths::CONTAINER_MARKER).exists() {
        eprintln!(
            "SKIP: {} exists on this host",
            hutch_runtime::paths::CONTAINER_MARKER
        );
        return;
    }
    for args in [&[][..], &["-c", "echo LEAKED"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_hutch-shell"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            out.stdout.is_empty(),
            "nothing may run: {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.trim_end(),
            "hutch-shell: this account is confined by hutch, but this session is not inside its container \
             (no marker at /run/hutch-container). Is pam_hutch the last session line of this PAM service? \
             See pam_hutch(8)."
        );
    }
}
