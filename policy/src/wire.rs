//! The binary form of a validated policy, for the on-disk cache
//! (`cache.rs`): a small hand-written codec, because most value types have
//! hand-written serde `Deserialize` impls that parse the admin's text
//! (`"2G"`, `"150%"`), which a derived binary format could not reuse.
//!
//! Integers are LEB128 varints, strings and lists are length-prefixed, and
//! every [`Loc`] names its file by an index into a table written ahead of the
//! body. Decoding checks every length and tag and never panics: a damaged
//! cache is an `Err`, and the caller parses the files instead.
//!
//! Encoders destructure their struct exhaustively, so a field added to the
//! model is a compile error here until it is encoded.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Diagnostic, Loc, Located, Severity};
use crate::net::{EgressList, EgressRule, IfName, Ipv4Net, NetHost, Proto, Rate, VlanId};
use crate::raw::{Model, Rules};
use crate::units::{CountLimit, CpuLimit, Limit, OnLogout, Seconds, Size, SizeLimit, Weight};
use crate::values::{
    AbsPath, CgroupRoot, CpusMode, HostnamePattern, IoList, MountList, MountSpec, Name,
    NetworkMode, PathOrNone, SeccompProfile, ServiceMode, WritableMode,
};
use crate::{CpuQuota, HostSettings, IoLimit};

/// The cache bytes are not a policy this build wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Corrupt;

/// Encoding state: the output and the table of files [`Loc`]s point into.
#[derive(Default)]
pub(crate) struct Writer {
    pub buf: Vec<u8>,
    files: Vec<Arc<PathBuf>>,
}

impl Writer {
    fn varint(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.buf.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.buf.push(n as u8);
    }

    fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    fn file_index(&mut self, f: &Arc<PathBuf>) -> u64 {
        if let Some(i) = self.files.iter().position(|g| Arc::ptr_eq(g, f) || g == f) {
            return i as u64;
        }
        self.files.push(f.clone());
        (self.files.len() - 1) as u64
    }

    /// The file table followed by the body: what [`Reader::new`] takes.
    pub(crate) fn finish(self) -> Vec<u8> {
        let mut head = Writer::default();
        head.varint(self.files.len() as u64);
        for f in &self.files {
            head.bytes(f.as_os_str().as_bytes());
        }
        head.buf.extend_from_slice(&self.buf);
        head.buf
    }
}

/// Decoding state over a byte slice.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    files: Vec<Arc<PathBuf>>,
}

impl<'a> Reader<'a> {
    /// Reads the file table; the body follows.
    pub(crate) fn new(buf: &'a [u8]) -> Result<Reader<'a>, Corrupt> {
        let mut r = Reader {
            buf,
            pos: 0,
            files: Vec::new(),
        };
        let n = r.len()?;
        for _ in 0..n {
            let b = r.bytes()?;
            r.files
                .push(Arc::new(PathBuf::from(OsString::from_vec(b.to_vec()))));
        }
        Ok(r)
    }

    /// A reader of `buf` whose [`Loc`]s point into `files` (no table ahead).
    pub(crate) fn with_files(buf: &'a [u8], files: Vec<Arc<PathBuf>>) -> Reader<'a> {
        Reader { buf, pos: 0, files }
    }

    /// The file table.
    pub(crate) fn files(&self) -> &[Arc<PathBuf>] {
        &self.files
    }

    /// A string, borrowed.
    pub(crate) fn str(&mut self) -> Result<&'a str, Corrupt> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Corrupt)
    }

    /// A section written as a little-endian u32 length and its bytes: their
    /// place in the buffer, skipped.
    pub(crate) fn section(&mut self) -> Result<std::ops::Range<usize>, Corrupt> {
        let b = self.buf.get(self.pos..self.pos + 4).ok_or(Corrupt)?;
        let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let start = self.pos + 4;
        if n > self.buf.len() - start {
            return Err(Corrupt);
        }
        self.pos = start + n;
        Ok(start..start + n)
    }

    /// Whether every byte was used.
    pub(crate) fn at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    fn byte(&mut self) -> Result<u8, Corrupt> {
        let b = *self.buf.get(self.pos).ok_or(Corrupt)?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, Corrupt> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f).checked_shl(shift).ok_or(Corrupt)?;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(Corrupt)
    }

    /// A length, bounded by the bytes left (every element takes at least one).
    fn len(&mut self) -> Result<usize, Corrupt> {
        let n = usize::try_from(self.varint()?).map_err(|_| Corrupt)?;
        if n > self.buf.len() - self.pos {
            return Err(Corrupt);
        }
        Ok(n)
    }

    fn bytes(&mut self) -> Result<&'a [u8], Corrupt> {
        let n = self.len()?;
        let b = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }
}

/// A type the cache can hold.
pub(crate) trait Wire: Sized {
    fn put(&self, w: &mut Writer);
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt>;
}

impl Wire for u64 {
    fn put(&self, w: &mut Writer) {
        w.varint(*self);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        r.varint()
    }
}

impl Wire for u32 {
    fn put(&self, w: &mut Writer) {
        w.varint(u64::from(*self));
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        u32::try_from(r.varint()?).map_err(|_| Corrupt)
    }
}

impl Wire for i64 {
    fn put(&self, w: &mut Writer) {
        w.varint(((*self << 1) ^ (*self >> 63)) as u64);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        let n = r.varint()?;
        Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
    }
}

impl Wire for bool {
    fn put(&self, w: &mut Writer) {
        w.buf.push(u8::from(*self));
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        match r.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Corrupt),
        }
    }
}

impl Wire for String {
    fn put(&self, w: &mut Writer) {
        w.bytes(self.as_bytes());
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        r.str().map(str::to_owned)
    }
}

impl Wire for PathBuf {
    fn put(&self, w: &mut Writer) {
        w.bytes(self.as_os_str().as_bytes());
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        Ok(PathBuf::from(OsString::from_vec(r.bytes()?.to_vec())))
    }
}

impl Wire for Duration {
    fn put(&self, w: &mut Writer) {
        self.as_secs().put(w);
        self.subsec_nanos().put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        let secs = u64::get(r)?;
        let nanos = u32::get(r)?;
        if nanos >= 1_000_000_000 {
            return Err(Corrupt);
        }
        Ok(Duration::new(secs, nanos))
    }
}

impl<T: Wire> Wire for Option<T> {
    fn put(&self, w: &mut Writer) {
        match self {
            None => w.buf.push(0),
            Some(v) => {
                w.buf.push(1);
                v.put(w);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        match r.byte()? {
            0 => Ok(None),
            1 => Ok(Some(T::get(r)?)),
            _ => Err(Corrupt),
        }
    }
}

impl<T: Wire> Wire for Vec<T> {
    fn put(&self, w: &mut Writer) {
        w.varint(self.len() as u64);
        for v in self {
            v.put(w);
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        let n = r.len()?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(T::get(r)?);
        }
        Ok(v)
    }
}

/// Maps are written in key order and must read back strictly ascending, so
/// the tree is built in bulk and a duplicate or shuffled key is corruption.
impl<V: Wire> Wire for BTreeMap<String, V> {
    fn put(&self, w: &mut Writer) {
        w.varint(self.len() as u64);
        for (k, v) in self {
            k.put(w);
            v.put(w);
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        let n = r.len()?;
        let mut v: Vec<(String, V)> = Vec::with_capacity(n);
        for _ in 0..n {
            let k = String::get(r)?;
            if v.last().is_some_and(|(last, _)| *last >= k) {
                return Err(Corrupt);
            }
            let val = V::get(r)?;
            v.push((k, val));
        }
        Ok(v.into_iter().collect())
    }
}

impl Wire for Loc {
    fn put(&self, w: &mut Writer) {
        let Loc { file, line, column } = self;
        let i = w.file_index(file);
        w.varint(i);
        line.put(w);
        column.put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        let i = usize::try_from(r.varint()?).map_err(|_| Corrupt)?;
        let file = r.files.get(i).ok_or(Corrupt)?.clone();
        Ok(Loc {
            file,
            line: u32::get(r)?,
            column: u32::get(r)?,
        })
    }
}

impl<T: Wire> Wire for Located<T> {
    fn put(&self, w: &mut Writer) {
        let Located { value, loc } = self;
        value.put(w);
        loc.put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        Ok(Located {
            value: T::get(r)?,
            loc: Loc::get(r)?,
        })
    }
}

impl Wire for Diagnostic {
    fn put(&self, w: &mut Writer) {
        let Diagnostic {
            severity,
            loc,
            key,
            message,
        } = self;
        (*severity == Severity::Error).put(w);
        loc.put(w);
        key.put(w);
        message.put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        let severity = if bool::get(r)? {
            Severity::Error
        } else {
            Severity::Warning
        };
        Ok(Diagnostic {
            severity,
            loc: Option::get(r)?,
            key: String::get(r)?,
            message: String::get(r)?,
        })
    }
}

/// Newtypes over a type that is already [`Wire`].
macro_rules! newtype_wire {
    ($($name:ident($inner:ty)),* $(,)?) => {$(
        impl Wire for $name {
            fn put(&self, w: &mut Writer) {
                self.0.put(w);
            }
            fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
                Ok($name(<$inner as Wire>::get(r)?))
            }
        }
    )*};
}

newtype_wire! {
    Name(String), AbsPath(String), CgroupRoot(String), HostnamePattern(String), SeccompProfile(String),
    SizeLimit(Limit), CountLimit(Limit), Size(u64), Weight(u64), Seconds(Duration),
    CpuLimit(Option<CpuQuota>), IoList(Vec<IoLimit>), MountList(Vec<MountSpec>),
    EgressList(Vec<EgressRule>), Rate(Option<u64>), IfName(String), PathOrNone(Option<String>),
}

impl Wire for VlanId {
    fn put(&self, w: &mut Writer) {
        u64::from(self.0).put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        u16::try_from(u64::get(r)?).map(VlanId).map_err(|_| Corrupt)
    }
}

/// [`Rules`]: scope, header, then every rule key in the order of
/// [`crate::raw::with_rule_keys`] (the one list of keys).
macro_rules! rules_wire {
    ($($field:ident),*) => {
        impl Wire for Rules {
            fn put(&self, w: &mut Writer) {
                self.scope.put(w);
                self.header.put(w);
                $( self.$field.put(w); )*
            }
            fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
                Ok(Rules {
                    scope: Wire::get(r)?,
                    header: Wire::get(r)?,
                    $( $field: Wire::get(r)?, )*
                })
            }
        }
    };
}

crate::raw::with_rule_keys!(rules_wire);

/// The small enumerations, by their index in `ALL`.
macro_rules! word_wire {
    ($($name:ident),* $(,)?) => {$(
        impl Wire for $name {
            fn put(&self, w: &mut Writer) {
                let i = $name::ALL.iter().position(|v| v == self).unwrap_or(0);
                w.varint(i as u64);
            }
            fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
                let i = usize::try_from(r.varint()?).map_err(|_| Corrupt)?;
                $name::ALL.get(i).copied().ok_or(Corrupt)
            }
        }
    )*};
}

word_wire!(WritableMode, NetworkMode, ServiceMode, CpusMode);

impl Wire for Limit {
    fn put(&self, w: &mut Writer) {
        match self {
            Limit::Unlimited => w.buf.push(0),
            Limit::Max(n) => {
                w.buf.push(1);
                n.put(w);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        match r.byte()? {
            0 => Ok(Limit::Unlimited),
            1 => Ok(Limit::Max(<u64 as Wire>::get(r)?)),
            _ => Err(Corrupt),
        }
    }
}

impl Wire for OnLogout {
    fn put(&self, w: &mut Writer) {
        match self {
            OnLogout::Kill => w.buf.push(0),
            OnLogout::Linger(d) => {
                w.buf.push(1);
                d.put(w);
            }
            OnLogout::KeepWhileRunning => w.buf.push(2),
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        match r.byte()? {
            0 => Ok(OnLogout::Kill),
            1 => Ok(OnLogout::Linger(Duration::get(r)?)),
            2 => Ok(OnLogout::KeepWhileRunning),
            _ => Err(Corrupt),
        }
    }
}

impl Wire for CpuQuota {
    fn put(&self, w: &mut Writer) {
        let CpuQuota {
            quota_us,
            period_us,
        } = self;
        quota_us.put(w);
        period_us.put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        Ok(CpuQuota {
            quota_us: u64::get(r)?,
            period_us: u64::get(r)?,
        })
    }
}

impl Wire for IoLimit {
    fn put(&self, w: &mut Writer) {
        let IoLimit {
            device,
            read_bps,
            write_bps,
            read_iops,
            write_iops,
        } = self;
        device.put(w);
        read_bps.put(w);
        write_bps.put(w);
        read_iops.put(w);
        write_iops.put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        Ok(IoLimit {
            device: PathBuf::get(r)?,
            read_bps: Option::get(r)?,
            write_bps: Option::get(r)?,
            read_iops: Option::get(r)?,
            write_iops: Option::get(r)?,
        })
    }
}

impl Wire for MountSpec {
    fn put(&self, w: &mut Writer) {
        let MountSpec {
            source,
            target,
            read_only,
        } = self;
        source.put(w);
        target.put(w);
        read_only.put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        Ok(MountSpec {
            source: String::get(r)?,
            target: String::get(r)?,
            read_only: bool::get(r)?,
        })
    }
}

impl Wire for u16 {
    fn put(&self, w: &mut Writer) {
        w.varint(u64::from(*self));
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        u16::try_from(r.varint()?).map_err(|_| Corrupt)
    }
}

impl Wire for Ipv4Addr {
    fn put(&self, w: &mut Writer) {
        w.buf.extend_from_slice(&self.octets());
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        Ok(Ipv4Addr::new(r.byte()?, r.byte()?, r.byte()?, r.byte()?))
    }
}

impl Wire for IpAddr {
    fn put(&self, w: &mut Writer) {
        match self {
            IpAddr::V4(a) => {
                w.buf.push(4);
                a.put(w);
            }
            IpAddr::V6(a) => {
                w.buf.push(6);
                w.buf.extend_from_slice(&a.octets());
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        match r.byte()? {
            4 => Ok(IpAddr::V4(Ipv4Addr::get(r)?)),
            6 => {
                let mut o = [0u8; 16];
                for b in &mut o {
                    *b = r.byte()?;
                }
                Ok(IpAddr::V6(Ipv6Addr::from(o)))
            }
            _ => Err(Corrupt),
        }
    }
}

impl Wire for Ipv4Net {
    fn put(&self, w: &mut Writer) {
        let Ipv4Net { addr, prefix } = self;
        addr.put(w);
        w.buf.push(*prefix);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        let addr = Ipv4Addr::get(r)?;
        let prefix = r.byte()?;
        if prefix > 32 {
            return Err(Corrupt);
        }
        Ok(Ipv4Net { addr, prefix })
    }
}

impl Wire for EgressRule {
    fn put(&self, w: &mut Writer) {
        let EgressRule { net, port } = self;
        net.put(w);
        match port {
            None => w.buf.push(0),
            Some((Proto::Tcp, p)) => {
                w.buf.push(1);
                p.put(w);
            }
            Some((Proto::Udp, p)) => {
                w.buf.push(2);
                p.put(w);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        let net = Option::get(r)?;
        let port = match r.byte()? {
            0 => None,
            1 => Some((Proto::Tcp, u16::get(r)?)),
            2 => Some((Proto::Udp, u16::get(r)?)),
            _ => return Err(Corrupt),
        };
        Ok(EgressRule { net, port })
    }
}

impl Wire for NetHost {
    fn put(&self, w: &mut Writer) {
        let NetHost {
            bridge,
            pool,
            gateway,
            dns,
            nat_uplink,
            leases,
        } = self;
        bridge.put(w);
        pool.put(w);
        gateway.put(w);
        dns.put(w);
        nat_uplink.put(w);
        leases.put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        Ok(NetHost {
            bridge: String::get(r)?,
            pool: Ipv4Net::get(r)?,
            gateway: Ipv4Addr::get(r)?,
            dns: Vec::get(r)?,
            nat_uplink: Option::get(r)?,
            leases: Option::get(r)?,
        })
    }
}

impl Wire for HostSettings {
    fn put(&self, w: &mut Writer) {
        let HostSettings {
            run_dir,
            lib_dir,
            cgroup_root,
            net,
            usage_retention,
            usage_db,
            usage_interval,
            lxcfs,
        } = self;
        run_dir.put(w);
        lib_dir.put(w);
        cgroup_root.put(w);
        net.put(w);
        usage_retention.put(w);
        usage_db.put(w);
        usage_interval.put(w);
        lxcfs.put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        Ok(HostSettings {
            run_dir: PathBuf::get(r)?,
            lib_dir: PathBuf::get(r)?,
            cgroup_root: String::get(r)?,
            net: NetHost::get(r)?,
            usage_retention: Duration::get(r)?,
            usage_db: PathBuf::get(r)?,
            usage_interval: Duration::get(r)?,
            lxcfs: Option::get(r)?,
        })
    }
}

impl Wire for Model {
    fn put(&self, w: &mut Writer) {
        let Model {
            run_dir,
            lib_dir,
            cgroup_root,
            net,
            usage_retention,
            usage_db,
            usage_interval,
            lxcfs,
            template,
            defaults,
            plans,
            groups,
            users,
            services,
        } = self;
        run_dir.put(w);
        lib_dir.put(w);
        cgroup_root.put(w);
        net.put(w);
        usage_retention.put(w);
        usage_db.put(w);
        usage_interval.put(w);
        lxcfs.put(w);
        template.put(w);
        defaults.put(w);
        plans.put(w);
        groups.put(w);
        users.put(w);
        services.put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, Corrupt> {
        Ok(Model {
            run_dir: Option::get(r)?,
            lib_dir: Option::get(r)?,
            cgroup_root: Option::get(r)?,
            net: Option::get(r)?,
            usage_retention: Option::get(r)?,
            usage_db: Option::get(r)?,
            usage_interval: Option::get(r)?,
            lxcfs: Option::get(r)?,
            template: Option::get(r)?,
            defaults: Wire::get(r)?,
            plans: Wire::get(r)?,
            groups: Wire::get(r)?,
            users: Wire::get(r)?,
            services: Wire::get(r)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round<T: Wire + PartialEq + std::fmt::Debug>(v: T) {
        let mut w = Writer::default();
        v.put(&mut w);
        let bytes = w.finish();
        let mut r = Reader::new(&bytes).unwrap();
        assert_eq!(T::get(&mut r).unwrap(), v);
        assert!(r.at_end());
    }

    /// Integers at their edges, strings, options, lists and enums read back as written.
    #[test]
    fn values_round_trip() {
        for n in [0u64, 1, 127, 128, 300, u64::MAX] {
            round(n);
        }
        for n in [0i64, -1, 1, i64::MIN, i64::MAX] {
            round(n);
        }
        round(String::from("users.\"j.doe\""));
        round(Some(Limit::Max(5)));
        round(vec![
            OnLogout::Kill,
            OnLogout::Linger(Duration::from_millis(1500)),
            OnLogout::KeepWhileRunning,
        ]);
        round(vec![
            ServiceMode::Refuse,
            ServiceMode::Ignore,
            ServiceMode::Confine,
        ]);
    }

    /// Every truncation of a valid encoding is an error, never a panic or a wrong value.
    #[test]
    fn truncation_is_corrupt() {
        let mut w = Writer::default();
        let v = vec![(
            String::from("a"),
            Some(CpuQuota {
                quota_us: 150_000,
                period_us: 100_000,
            }),
        )];
        for (k, q) in &v {
            k.put(&mut w);
            q.put(&mut w);
        }
        let bytes = w.finish();
        for cut in 0..bytes.len() {
            let r = Reader::new(&bytes[..cut]).and_then(|mut r| {
                let _ = String::get(&mut r)?;
                Option::<CpuQuota>::get(&mut r)
            });
            assert_eq!(r, Err(Corrupt), "cut at {cut}");
        }
    }
}
