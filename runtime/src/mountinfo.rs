//! `/proc/PID/mountinfo` (proc(5)), parsed once for everyone: the cgroup
//! layer finds its hierarchies in it ([`crate::cgroup::detect`]), the
//! template store its loaded generations ([`crate::template`]), `hutchctl
//! diff` the mounts of a container.
//!
//! A line reads `id parent major:minor root mount-point options
//! [optional...] - fstype source super-options`. Paths are octal-escaped by
//! the kernel (`\040` a space, `\011` a tab, `\012` a newline, `\134` a
//! backslash, any byte the same way): they are undone into bytes, so that a
//! mount point that is not UTF-8 comes back as the path it is.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// One mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the superblock: two mounts of one filesystem share it.
    pub dev: String,
    /// The path inside the filesystem that is mounted (`/` normally).
    pub root: PathBuf,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Per-mount options (`ro`, `nosuid`, `nodev`, ...).
    pub options: Vec<String>,
    pub fstype: String,
    pub source: OsString,
    /// Per-superblock options (a v1 cgroup hierarchy's controllers, ...).
    pub super_options: Vec<String>,
}

impl Mount {
    /// Whether `option` is among the per-mount options.
    pub fn has_option(&self, option: &str) -> bool {
        self.options.iter().any(|o| o == option)
    }
}

/// The mounts of a mountinfo text, in its order; malformed lines are
/// skipped.
pub fn parse(text: &[u8]) -> Vec<Mount> {
    text.split(|&b| b == b'\n').filter_map(parse_line).collect()
}

/// The mounts of `/proc/self/mountinfo`.
pub fn read_own() -> io::Result<Vec<Mount>> {
    read(Path::new("/proc/self/mountinfo"))
}

/// The mounts of a mountinfo file (`/proc/PID/mountinfo`).
pub fn read(path: &Path) -> io::Result<Vec<Mount>> {
    Ok(parse(&std::fs::read(path)?))
}

fn parse_line(line: &[u8]) -> Option<Mount> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    // Six fixed fields, then optional ones up to the `-` separator.
    let sep = fields.iter().position(|f| *f == b"-")?;
    if sep < 6 {
        return None;
    }
    let text = |f: &[u8]| String::from_utf8_lossy(f).into_owned();
    let list = |f: &[u8]| text(f).split(',').map(str::to_string).collect();
    Some(Mount {
        dev: text(fields[2]),
        root: PathBuf::from(unescape(fields[3])),
        mount_point: PathBuf::from(unescape(fields[4])),
        options: list(fields[5]),
        fstype: text(fields.get(sep + 1)?),
        source: unescape(fields.get(sep + 2).copied().unwrap_or_default()),
        super_options: fields.get(sep + 3).map(|f| list(f)).unwrap_or_default(),
    })
}

/// Undoes the kernel's octal escapes (`\ooo`, three octal digits) into the
/// bytes they stand for; anything else is kept as it is.
pub fn unescape(field: &[u8]) -> OsString {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .map(|d| (d[0] - b'0') as u32 * 64 + (d[1] - b'0') as u32 * 8 + (d[2] - b'0') as u32)
            .and_then(|v| u8::try_from(v).ok());
        match (field[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    /// Every field is read, optional fields skipped, the separator found.
    #[test]
    fn fields() {
        let text = b"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue\n\
            25 1 0:22 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n";
        let m = parse(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].dev, "98:0");
        assert_eq!(m[0].root, Path::new("/mnt1"));
        assert_eq!(m[0].mount_point, Path::new("/mnt2"));
        assert_eq!(m[0].options, ["rw", "noatime"]);
        assert_eq!(m[0].fstype, "ext3");
        assert_eq!(m[0].source, "/dev/root");
        assert_eq!(m[0].super_options, ["rw", "errors=continue"]);
        assert!(m[1].has_option("nosuid") && !m[1].has_option("nodev"));
        assert_eq!(m[1].super_options, ["rw", "memory"]);
    }

    /// Octal escapes become the bytes they stand for, also ones that are
    /// not UTF-8 (\377) or not ASCII (\303\251 is é), and a backslash
    /// that starts no escape is kept.
    #[test]
    fn escapes_are_bytes() {
        let m = parse(b"1 0 0:1 / /a\\040b\\011c rw - tmpfs x rw\n2 0 0:2 / /x\\377 rw - tmpfs y rw\n3 0 0:3 / /caf\\303\\251\\9 rw - tmpfs z rw\n");
        assert_eq!(m[0].mount_point, Path::new("/a b\tc"));
        assert_eq!(m[1].mount_point.as_os_str().as_bytes(), b"/x\xff");
        assert_eq!(m[2].mount_point, Path::new("/café\\9"));
        assert_eq!(unescape(b"\\134"), "\\");
        assert_eq!(unescape(b"\\04"), "\\04");
    }

    /// Lines without the separator or with too few fields are skipped.
    #[test]
    fn malformed_lines_are_skipped() {
        let m = parse(b"garbage\n1 0 0:1 / /ok rw - tmpfs x rw\n1 0 0:1 / - tmpfs x\n\n");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].mount_point, Path::new("/ok"));
    }

    /// This process's own mounts include `/`.
    #[test]
    fn reads_own() {
        let m = read_own().unwrap();
        assert!(m.iter().any(|m| m.mount_point == Path::new("/")));
    }
}
