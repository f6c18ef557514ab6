//! The device allow-list as an eBPF program (BPF_PROG_TYPE_CGROUP_DEVICE),
//! for cgroup v2, which has no devices controller: the kernel runs every
//! program attached to a task's v2 cgroup (and its ancestors) on each device
//! mknod/open, on a pure v2 host and on a hybrid host's unified mount alike
//! (there the v1 devices controller applies as well).
//!
//! The program is assembled by hand, as runc's libcontainer does it. Its
//! context is `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32
//! minor; }` with `access_type = (access << 16) | type`; it returns 1 (allow)
//! when some rule matches the type, the major and minor (unless wildcards)
//! and covers every requested access bit, and 0 (deny, EPERM) otherwise.
//!
//! It is attached with BPF_F_ALLOW_MULTI to the group's directory, so it
//! binds the leaf and anything below (all programs on the path must allow),
//! and is released by the kernel with the cgroup when the group is removed.

use std::os::fd::AsFd;
use std::path::Path;

use super::{CgroupError, Controller, DeviceKind, DeviceRule};

const BPF_DEVCG_DEV_BLOCK: i32 = 1;
const BPF_DEVCG_DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

// Opcodes used (class | op | source).
const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const RSH_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const MOV_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

/// One `struct bpf_insn` in memory order.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    let regs = if cfg!(target_endian = "little") {
        (src << 4) | dst
    } else {
        (dst << 4) | src
    };
    let o = off.to_ne_bytes();
    let i = imm.to_ne_bytes();
    u64::from_ne_bytes([code, regs, o[0], o[1], i[0], i[1], i[2], i[3]])
}

fn access_bits(access: &str) -> i32 {
    access.chars().fold(0, |a, c| {
        a | match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => 0,
        }
    })
}

/// The program for `rules` (allow what any rule allows, deny the rest).
pub fn program(rules: &[DeviceRule]) -> Vec<u64> {
    // r2 = type, r3 = access, r4 = major, r5 = minor.
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, 0, 0),
        insn(RSH_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    for rule in rules {
        let acc = access_bits(&rule.access);
        if acc == 0 {
            continue;
        }
        // (code, dst, src, imm) with the jump, if any, to the block's end.
        let mut block: Vec<(u8, u8, u8, i32)> = Vec::new();
        let kind = match rule.kind {
            DeviceKind::Char => BPF_DEVCG_DEV_CHAR,
            DeviceKind::Block => BPF_DEVCG_DEV_BLOCK,
        };
        block.push((JNE_K, 2, 0, kind));
        if acc != ACC_MKNOD | ACC_READ | ACC_WRITE {
            // Every requested bit must be in `acc`: (access & acc) == access.
            block.push((MOV_X, 1, 3, 0));
            block.push((AND_K, 1, 0, acc));
            block.push((JNE_X, 1, 3, 0));
        }
        if let Some(major) = rule.major {
            block.push((JNE_K, 4, 0, major as i32));
        }
        if let Some(minor) = rule.minor {
            block.push((JNE_K, 5, 0, minor as i32));
        }
        block.push((MOV_K, 0, 0, 1));
        block.push((EXIT, 0, 0, 0));
        let n = block.len();
        for (i, (code, dst, src, imm)) in block.into_iter().enumerate() {
            let off = if code == JNE_K || code == JNE_X {
                (n - 1 - i) as i16
            } else {
                0
            };
            p.push(insn(code, dst, src, off, imm));
        }
    }
    p.push(insn(MOV_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

/// Loads the program for `rules` and attaches it to the cgroup v2 directory
/// `dir`. `Ok(false)`: `dir` is not in a cgroup2 filesystem (a fake tree in
/// tests), nothing done. A load or attach failure is a
/// [`CgroupError::MissingController`] naming [`Controller::DeviceFilter`].
pub fn attach(dir: &Path, rules: &[DeviceRule]) -> Result<bool, CgroupError> {
    let fd = std::fs::File::open(dir).map_err(|source| CgroupError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let fs = nix::sys::statfs::fstatfs(fd.as_fd()).map_err(|e| CgroupError::Read {
        path: dir.to_path_buf(),
        source: e.into(),
    })?;
    if fs.filesystem_type().0 as i64 != CGROUP2_SUPER_MAGIC {
        return Ok(false);
    }
    let missing = |what: &str, e: std::io::Error| CgroupError::MissingController {
        controller: Controller::DeviceFilter,
        detail: format!("{what} for {}: {e}", dir.display()),
    };
    let prog = crate::sys::bpf_load_cgroup_device(&program(rules), c"Apache", b"hutch_devices")
        .map_err(|e| missing("loading the device program", e))?;
    crate::sys::bpf_prog_attach(
        fd.as_fd(),
        prog.as_fd(),
        BPF_CGROUP_DEVICE,
        BPF_F_ALLOW_MULTI,
    )
    .map_err(|e| missing("attaching the device program", e))?;
    // The attachment holds the program; our descriptor (dropped here) may go.
    Ok(true)
}

/// The ids of the device programs attached directly to the cgroup `dir`.
pub fn attached(dir: &Path) -> std::io::Result<Vec<u32>> {
    let fd = std::fs::File::open(dir)?;
    crate::sys::bpf_prog_query(fd.as_fd(), BPF_CGROUP_DEVICE)
}

/// Whether the BPF program `id` still exists.
pub fn prog_exists(id: u32) -> std::io::Result<bool> {
    crate::sys::bpf_prog_exists(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The container's device program loads at the first try without the
    /// verifier's log (a log buffer at log level 0 is refused with EINVAL,
    /// and the retry with the log took ~1 ms of every cold start).
    #[test]
    fn device_program_loads_without_a_log() {
        if !hutch_tests::require_root("device_program_loads_without_a_log") {
            return;
        }
        let rules = crate::keeper::container_devices();
        let prog =
            crate::sys::bpf_prog_load_device(&program(&rules), c"Apache", b"hutch_test", &mut []);
        assert!(prog.is_ok(), "{prog:?}");
    }

    /// A tiny interpreter for the instructions `program` emits.
    fn run(p: &[u64], kind: i32, access: i32, major: u32, minor: u32) -> u64 {
        let ctx = [((access as u32) << 16) | kind as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let b = p[pc].to_ne_bytes();
            let (code, dst, src) = (b[0], (b[1] & 0xf) as usize, (b[1] >> 4) as usize);
            let off = i16::from_ne_bytes([b[2], b[3]]);
            let imm = i32::from_ne_bytes([b[4], b[5], b[6], b[7]]) as i64 as u64;
            pc += 1;
            match code {
                LDX_W => r[dst] = u64::from(ctx[off as usize / 4]),
                AND_K => r[dst] &= imm,
                RSH_K => r[dst] >>= imm,
                MOV_K => r[dst] = imm,
                MOV_X => r[dst] = r[src],
                JNE_K if r[dst] != imm => pc += off as usize,
                JNE_X if r[dst] != r[src] => pc += off as usize,
                JNE_K | JNE_X => {}
                EXIT => return r[0],
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn allow_list_semantics() {
        let rules = vec![
            DeviceRule::char(1, Some(3), "rwm"),
            DeviceRule::char(136, None, "rwm"),
            DeviceRule::char(5, Some(0), "rw"),
            DeviceRule {
                kind: DeviceKind::Block,
                major: Some(8),
                minor: None,
                access: "r".into(),
            },
        ];
        let p = program(&rules);
        let rw = ACC_READ | ACC_WRITE;
        assert_eq!(run(&p, BPF_DEVCG_DEV_CHAR, rw, 1, 3), 1, "/dev/null");
        assert_eq!(run(&p, BPF_DEVCG_DEV_CHAR, ACC_MKNOD, 1, 3), 1);
        assert_eq!(run(&p, BPF_DEVCG_DEV_CHAR, rw, 1, 4), 0, "other minor");
        assert_eq!(run(&p, BPF_DEVCG_DEV_CHAR, rw, 136, 42), 1, "pty wildcard");
        assert_eq!(run(&p, BPF_DEVCG_DEV_BLOCK, rw, 136, 42), 0, "wrong type");
        assert_eq!(run(&p, BPF_DEVCG_DEV_CHAR, rw, 5, 0), 1);
        assert_eq!(
            run(&p, BPF_DEVCG_DEV_CHAR, ACC_MKNOD, 5, 0),
            0,
            "no m for 5:0"
        );
        assert_eq!(run(&p, BPF_DEVCG_DEV_BLOCK, ACC_READ, 8, 1), 1);
        assert_eq!(
            run(&p, BPF_DEVCG_DEV_BLOCK, rw, 8, 1),
            0,
            "write not allowed"
        );
        assert_eq!(
            run(&p, BPF_DEVCG_DEV_BLOCK, ACC_READ, 7, 0),
            0,
            "loop device"
        );
        assert_eq!(
            run(&program(&[]), BPF_DEVCG_DEV_CHAR, ACC_READ, 1, 3),
            0,
            "empty list denies all"
        );
    }

    #[test]
    fn fake_tree_is_skipped() {
        let t = tempfile::tempdir().unwrap();
        assert!(!attach(t.path(), &[DeviceRule::char(1, Some(3), "rwm")]).unwrap());
    }
}
