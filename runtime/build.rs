//! Builds the container's tiny init (`init/hutch-init.rs`) into
//! `$OUT_DIR/hutch-init`, which the keeper embeds (`src/tiny_init.rs`): a
//! static executable without libc or start files, so that an idle
//! container's PID 1 costs a few pages. On an architecture it has no system
//! calls for, nothing is built and the keeper's clone stays PID 1.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=init/hutch-init.rs");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-check-cfg=cfg(hutch_tiny_init)");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" || !matches!(arch.as_str(), "x86_64" | "aarch64") {
        return;
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("hutch-init");
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut cmd = Command::new(rustc);
    cmd.args([
        "--edition",
        "2021",
        "--crate-type",
        "bin",
        "--crate-name",
        "hutch_init",
    ])
    .args([
        "-C",
        "panic=abort",
        "-C",
        "opt-level=s",
        "-C",
        "debuginfo=0",
    ])
    .args(["-C", "strip=symbols", "-C", "relocation-model=static"])
    .args(["-C", "link-arg=-nostartfiles", "-C", "link-arg=-nostdlib"])
    .args([
        "-C",
        "link-arg=-static",
        "-C",
        "link-arg=-Wl,--build-id=none",
    ]);
    if let Ok(target) = env::var("TARGET") {
        cmd.args(["--target", &target]);
    }
    if let Some(linker) = env::var_os("RUSTC_LINKER") {
        cmd.arg("-C").arg({
            let mut a = std::ffi::OsString::from("linker=");
            a.push(linker);
            a
        });
    }
    cmd.arg("-o").arg(&out).arg("init/hutch-init.rs");
    let result = cmd
        .output()
        .unwrap_or_else(|e| panic!("running rustc for init/hutch-init.rs: {e}"));
    if !result.status.success() {
        panic!(
            "building the container's init (init/hutch-init.rs) failed: {}\n{}",
            result.status,
            String::from_utf8_lossy(&result.stderr)
        );
    }
    println!("cargo:rustc-cfg=hutch_tiny_init");
}
