//! The on-disk cache of the validated policy, so a login (a fresh sshd
//! process each time) does not parse a large policy again.
//!
//! One file per policy, `<cache_dir>/<hash of the config path>.cache`, holds
//! the key, the compiled policy (`wire.rs`) and a checksum. The key is the
//! format fingerprint plus the identity of every source file, main file then
//! drop-ins: path, dev, ino, size, mtime and ctime in nanoseconds. Any
//! difference, a damaged file, or a cache or directory that is a symlink,
//! not owned by the caller's effective uid (root at login), or open to
//! others makes the loader ignore the cache and parse the files.
//!
//! A cache is written only when every source is at least [`RACY`] old, so a
//! file rewritten in place within one timestamp tick, with the same size,
//! can never match a stale entry (git's "racy clean" problem). The write
//! goes to a private temporary file renamed into place, so a reader sees a
//! whole cache or none. Where the cache lives depends only on the caller,
//! never on the policy it caches.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::raw::{Model, Rules};
use crate::wire::{Corrupt, Reader, Wire, Writer};
use crate::{drop_ins, HostSettings, Policy, PolicyError};

/// The default cache directory of the PAM module.
pub const DEFAULT_CACHE_DIR: &str = "/run/hutch/policy-cache";

/// How old every source must be before its policy is cached.
pub(crate) const RACY: Duration = Duration::from_secs(1);

const MAGIC: &[u8; 8] = b"HUTCHPC\x01";

/// What a cached load did, for tests and the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// The cache matched and was used.
    Hit,
    /// The files were parsed and a cache written.
    Written,
    /// The files were parsed; no cache was written (too fresh, unsafe
    /// directory, invalid policy, or a write error).
    Parsed,
}

/// Distinguishes builds whose encodings differ: the crate version and the
/// schema's keys, so a build with a new key never reads an old cache.
fn fingerprint() -> u64 {
    let mut text = String::from(env!("CARGO_PKG_VERSION"));
    for k in crate::RULE_KEYS
        .iter()
        .chain(crate::TOP_KEYS)
        .chain(crate::HOST_KEYS)
    {
        text.push(',');
        text.push_str(k);
    }
    hash(text.as_bytes())
}

/// FNV-1a, for names and the fingerprint.
fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A word-at-a-time checksum over four lanes (fast enough for megabytes at
/// every login; it catches damage, not tampering: only the owner can write).
fn checksum(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut lanes = [K, K.rotate_left(17), K.rotate_left(31), K.rotate_left(47)];
    let mut blocks = bytes.chunks_exact(32);
    for b in &mut blocks {
        for (i, lane) in lanes.iter_mut().enumerate() {
            let w = u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default());
            *lane = (*lane ^ w).wrapping_mul(K).rotate_left(29);
        }
    }
    let mut h = lanes.iter().fold(bytes.len() as u64, |h, l| {
        (h ^ l).wrapping_mul(K).rotate_left(23)
    });
    for b in blocks.remainder() {
        h = (h ^ u64::from(*b)).wrapping_mul(K);
    }
    h ^ (h >> 32)
}

/// The cache file of `config` in `cache_dir`.
pub fn cache_path(config: &Path, cache_dir: &Path) -> PathBuf {
    cache_dir.join(format!(
        "{:016x}.cache",
        hash(config.as_os_str().as_bytes())
    ))
}

/// The key: every source file's path and identity, main file first, and the
/// newest of their change times (for the racy check).
fn key(config: &Path) -> Option<(Vec<u8>, SystemTime)> {
    let mut files = vec![config.to_path_buf()];
    files.extend(drop_ins(config).ok()?);
    let mut w = Writer::default();
    fingerprint().put(&mut w);
    let mut newest = UNIX_EPOCH;
    for f in &files {
        let m = fs::metadata(f).ok()?;
        f.put(&mut w);
        for n in [m.dev(), m.ino(), m.size()] {
            n.put(&mut w);
        }
        for (s, ns) in [(m.mtime(), m.mtime_nsec()), (m.ctime(), m.ctime_nsec())] {
            s.put(&mut w);
            ns.put(&mut w);
            let t = UNIX_EPOCH.checked_add(Duration::new(
                s.max(0) as u64,
                ns.clamp(0, 999_999_999) as u32,
            ));
            newest = newest.max(t.unwrap_or(UNIX_EPOCH));
        }
    }
    Some((w.buf, newest))
}

/// Whether `m` (from lstat or fstat) is ours alone: owned by the effective
/// uid, not a symlink, and neither group nor others may write (`dir`) or
/// read or write (file: exactly 0600).
fn private(m: &fs::Metadata, dir: bool) -> bool {
    let uid = nix::unistd::geteuid().as_raw();
    let ft = m.file_type();
    if m.uid() != uid || ft.is_symlink() {
        return false;
    }
    if dir {
        ft.is_dir() && m.mode() & 0o022 == 0
    } else {
        ft.is_file() && m.mode() & 0o777 == 0o600
    }
}

/// Makes `cache_dir` (0700) if it is missing, and says whether it is safe to use.
fn ready_dir(cache_dir: &Path) -> bool {
    if let Some(parent) = cache_dir.parent() {
        if !parent.as_os_str().is_empty() && fs::symlink_metadata(parent).is_err() {
            let _ = DirBuilder::new().recursive(true).mode(0o755).create(parent);
        }
    }
    let _ = DirBuilder::new().mode(0o700).create(cache_dir);
    fs::symlink_metadata(cache_dir).is_ok_and(|m| private(&m, true))
}

/// Splits a cache file into (key, payload) after checking magic and checksum.
fn unpack(bytes: &[u8]) -> Result<(&[u8], &[u8]), Corrupt> {
    let body = bytes.strip_prefix(MAGIC).ok_or(Corrupt)?;
    let (body, sum) = body
        .split_at_checked(body.len().checked_sub(8).ok_or(Corrupt)?)
        .ok_or(Corrupt)?;
    if checksum(body).to_le_bytes() != sum {
        return Err(Corrupt);
    }
    let klen = u32::from_le_bytes(
        body.get(..4)
            .ok_or(Corrupt)?
            .try_into()
            .map_err(|_| Corrupt)?,
    ) as usize;
    let key = body.get(4..4 + klen).ok_or(Corrupt)?;
    Ok((key, &body[4 + klen..]))
}

fn pack(key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + key.len() + payload.len() + 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(payload);
    let sum = checksum(&out[MAGIC.len()..]);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// A policy's model, whole or still partly encoded. A policy read from the
/// cache keeps its users and groups (nearly all of a large file) encoded,
/// each table a sorted array of entries found by binary search, so a login
/// decodes only its own user's and groups' tables; anything that needs the
/// whole model ([`ModelCell::get`]) decodes the rest once.
#[derive(Debug, Clone)]
pub(crate) struct ModelCell {
    full: OnceLock<Model>,
    lazy: Option<Arc<Lazy>>,
}

/// The encoded users and groups of a cached policy, over the rest of its model.
#[derive(Debug)]
struct Lazy {
    /// The model without users and groups.
    base: Model,
    bytes: Vec<u8>,
    files: Vec<Arc<PathBuf>>,
    groups: Range<usize>,
    users: Range<usize>,
}

impl ModelCell {
    pub(crate) fn new(model: Model) -> ModelCell {
        ModelCell {
            full: OnceLock::from(model),
            lazy: None,
        }
    }

    /// The whole model (decoding the rest of a cached one, once).
    pub(crate) fn get(&self) -> &Model {
        self.full.get_or_init(|| {
            let lazy = self.lazy.as_ref().expect("a ModelCell is whole or lazy");
            let mut m = lazy.base.clone();
            // The tables were checked when the cache was read; a failure here is a bug.
            m.groups = lazy
                .table_all(lazy.groups.clone())
                .expect("checked cache tables decode");
            m.users = lazy
                .table_all(lazy.users.clone())
                .expect("checked cache tables decode");
            m
        })
    }

    /// Whether the model has any `[groups.NAME]` table (a cached one
    /// answers from its encoded table's count, decoding nothing; a table it
    /// cannot read counts as one).
    pub(crate) fn has_groups(&self) -> bool {
        match (&self.lazy, self.full.get()) {
            (_, Some(m)) => !m.groups.is_empty(),
            (Some(lazy), None) => lazy.count(&lazy.groups).map_or(true, |n| n > 0),
            (None, None) => true,
        }
    }

    /// A model that resolves `account` as the whole one would: the whole
    /// model, or the base with only the account's user and group tables.
    pub(crate) fn view(&self, account: &crate::Account) -> std::borrow::Cow<'_, Model> {
        let (Some(lazy), None) = (&self.lazy, self.full.get()) else {
            return std::borrow::Cow::Borrowed(self.get());
        };
        let mut m = lazy.base.clone();
        let found = (|| -> Result<(), Corrupt> {
            if let Some(r) = lazy.find(lazy.users.clone(), &account.name)? {
                m.users.insert(account.name.clone(), r);
            }
            for g in &account.groups {
                if let Some(r) = lazy.find(lazy.groups.clone(), g)? {
                    m.groups.insert(g.clone(), r);
                }
            }
            Ok(())
        })();
        match found {
            Ok(()) => std::borrow::Cow::Owned(m),
            Err(Corrupt) => std::borrow::Cow::Borrowed(self.get()),
        }
    }
}

impl Lazy {
    fn reader(&self, at: usize, end: usize) -> Result<Reader<'_>, Corrupt> {
        Ok(Reader::with_files(
            self.bytes.get(at..end).ok_or(Corrupt)?,
            self.files.clone(),
        ))
    }

    /// Entry `i` of the table at `t`: its start and end in `bytes`.
    fn entry(&self, t: &Range<usize>, i: usize) -> Result<Range<usize>, Corrupt> {
        let word = |j: usize| -> Result<usize, Corrupt> {
            let at = t.start + 4 + 4 * j;
            let b = self.bytes.get(at..at + 4).ok_or(Corrupt)?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        let (a, b) = (word(i)?, word(i + 1)?);
        if a > b || t.start + b > t.end {
            return Err(Corrupt);
        }
        Ok(t.start + a..t.start + b)
    }

    fn count(&self, t: &Range<usize>) -> Result<usize, Corrupt> {
        let b = self.bytes.get(t.start..t.start + 4).ok_or(Corrupt)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    /// The rules named `name` in the table at `t`, by binary search.
    fn find(&self, t: Range<usize>, name: &str) -> Result<Option<Rules>, Corrupt> {
        let (mut lo, mut hi) = (0, self.count(&t)?);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let e = self.entry(&t, mid)?;
            let mut r = self.reader(e.start, e.end)?;
            let key = r.str()?;
            match key.cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    let rules = Rules::get(&mut r)?;
                    return if r.at_end() {
                        Ok(Some(rules))
                    } else {
                        Err(Corrupt)
                    };
                }
            }
        }
        Ok(None)
    }

    /// Every entry of the table at `t`.
    fn table_all(&self, t: Range<usize>) -> Result<BTreeMap<String, Rules>, Corrupt> {
        let mut v: Vec<(String, Rules)> = Vec::new();
        for i in 0..self.count(&t)? {
            let e = self.entry(&t, i)?;
            let mut r = self.reader(e.start, e.end)?;
            let k = String::get(&mut r)?;
            if v.last().is_some_and(|(last, _)| *last >= k) {
                return Err(Corrupt);
            }
            let rules = Rules::get(&mut r)?;
            if !r.at_end() {
                return Err(Corrupt);
            }
            v.push((k, rules));
        }
        Ok(v.into_iter().collect())
    }
}

/// A table for binary search: count, count + 1 offsets (u32, from the
/// table's start), then each entry (name, rules), names ascending.
fn put_table(w: &mut Writer, table: &BTreeMap<String, Rules>) {
    let start = w.buf.len();
    w.buf.extend_from_slice(&(table.len() as u32).to_le_bytes());
    let offsets = w.buf.len();
    w.buf.resize(offsets + 4 * (table.len() + 1), 0);
    let set = |w: &mut Writer, i: usize| {
        let rel = (w.buf.len() - start) as u32;
        w.buf[offsets + 4 * i..offsets + 4 * i + 4].copy_from_slice(&rel.to_le_bytes());
    };
    for (i, (name, rules)) in table.iter().enumerate() {
        set(w, i);
        name.put(w);
        rules.put(w);
    }
    set(w, table.len());
}

/// The compiled form of a policy: host, warnings, files, the model without
/// users and groups, then the groups and users tables, each prefixed by its length.
pub(crate) fn encode(p: &Policy) -> Vec<u8> {
    let Policy {
        host,
        model,
        warnings,
        files,
    } = p;
    let model = model.get();
    let mut w = Writer::default();
    host.put(&mut w);
    warnings.put(&mut w);
    files.put(&mut w);
    let base = Model {
        groups: BTreeMap::new(),
        users: BTreeMap::new(),
        ..model.clone()
    };
    base.put(&mut w);
    for t in [&model.groups, &model.users] {
        let at = w.buf.len();
        w.buf.extend_from_slice(&[0; 4]);
        put_table(&mut w, t);
        let len = (w.buf.len() - at - 4) as u32;
        w.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
    w.finish()
}

/// Decodes a cache payload. The tables stay encoded; their offsets and every
/// entry's name order are checked here, so decoding one later cannot fail
/// on the table structure.
pub(crate) fn decode(bytes: &[u8]) -> Result<Policy, Corrupt> {
    let mut r = Reader::new(bytes)?;
    let host = HostSettings::get(&mut r)?;
    let warnings = Wire::get(&mut r)?;
    let files = Wire::get(&mut r)?;
    let base: Model = Wire::get(&mut r)?;
    let groups = r.section()?;
    let users = r.section()?;
    if !r.at_end() || !base.groups.is_empty() || !base.users.is_empty() {
        return Err(Corrupt);
    }
    let lazy = Lazy {
        base,
        files: r.files().to_vec(),
        bytes: bytes.to_vec(),
        groups,
        users,
    };
    for t in [&lazy.groups, &lazy.users] {
        let n = lazy.count(t)?;
        if t.len() < 4 * (n + 2) {
            return Err(Corrupt);
        }
        let mut last: Option<&str> = None;
        for i in 0..n {
            let e = lazy.entry(t, i)?;
            let name = Reader::with_files(&lazy.bytes[e], Vec::new()).str()?;
            if last.is_some_and(|l| l >= name) {
                return Err(Corrupt);
            }
            last = Some(name);
        }
        if (n == 0 && t.len() != 8) || (n > 0 && lazy.entry(t, n - 1)?.end != t.end) {
            return Err(Corrupt);
        }
    }
    let model = ModelCell {
        full: OnceLock::new(),
        lazy: Some(Arc::new(lazy)),
    };
    Ok(Policy {
        host,
        model,
        warnings,
        files,
    })
}

/// For the fuzz target: `p` encoded, packed, unpacked and decoded reads back
/// the same model and the same decisions. Panics otherwise.
#[doc(hidden)]
pub fn fuzz_cache_round_trip(p: &Policy) {
    let packed = pack(b"key", &encode(p));
    let (key, payload) = unpack(&packed).expect("a packed cache unpacks");
    assert_eq!(key, b"key");
    let q = decode(payload).expect("an encoded policy decodes");
    let alice = crate::Account {
        name: "alice".into(),
        uid: 1000,
        gid: 1000,
        groups: vec!["alice".into(), "staff".into()],
        home: "/home/alice".into(),
        shell: "/bin/sh".into(),
    };
    assert_eq!(p.explain(&alice, "sshd"), q.explain(&alice, "sshd"));
    assert_eq!(
        format!("{:?}", p.model.get()),
        format!("{:?}", q.model.get())
    );
}

/// Reads the cache if it is ours and its key is `key`.
fn read(path: &Path, key: &[u8]) -> Option<Policy> {
    read_if(path, |k| k == key)
}

/// The policy last cached for `config`, whatever its sources say now (a
/// cache of this build's format, private, undamaged). What a login falls
/// back on, while the policy cannot be read, to let in an account the last
/// policy that loaded exempted: a broken edit never locks the admins out.
pub(crate) fn last_good(config: &Path, cache_dir: &Path) -> Option<Policy> {
    if !fs::symlink_metadata(cache_dir).is_ok_and(|m| private(&m, true)) {
        return None;
    }
    let mut w = Writer::default();
    fingerprint().put(&mut w);
    read_if(&cache_path(config, cache_dir), |k| k.starts_with(&w.buf))
}

/// Reads the cache at `path` if it is ours and `key_ok` accepts its key.
fn read_if(path: &Path, key_ok: impl Fn(&[u8]) -> bool) -> Option<Policy> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_nofollow())
        .open(path)
        .ok()?;
    let m = f.metadata().ok()?;
    if !private(&m, false) {
        return None;
    }
    let mut bytes = Vec::with_capacity(m.size() as usize);
    f.read_to_end(&mut bytes).ok()?;
    let (k, payload) = unpack(&bytes).ok()?;
    if !key_ok(k) {
        return None;
    }
    decode(payload).ok()
}

/// `O_NOFOLLOW`, without a libc dependency in this crate.
fn libc_o_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

/// Writes the cache: a fresh 0600 file beside it, renamed over it.
fn write(path: &Path, key: &[u8], p: &Policy) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc_o_nofollow())
            .open(&tmp)?;
        f.write_all(&pack(key, &encode(p)))?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// [`Policy::load_cached`], with the racy window given (tests use zero).
pub(crate) fn load_cached(
    config: &Path,
    cache_dir: &Path,
    racy: Duration,
) -> (Result<Policy, PolicyError>, CacheUse) {
    let Some((key, newest)) = key(config) else {
        return (Policy::load(config), CacheUse::Parsed);
    };
    let path = cache_path(config, cache_dir);
    // Read only from a private directory; make it only to write a policy
    // that loaded (a broken one leaves nothing behind).
    if fs::symlink_metadata(cache_dir).is_ok_and(|m| private(&m, true)) {
        if let Some(p) = read(&path, &key) {
            return (Ok(p), CacheUse::Hit);
        }
    }
    let loaded = Policy::load(config);
    let old_enough = SystemTime::now()
        .duration_since(newest)
        .is_ok_and(|age| age >= racy);
    let unchanged = || key_of(config).as_deref() == Some(&key[..]);
    let used = match &loaded {
        Ok(p)
            if old_enough
                && unchanged()
                && ready_dir(cache_dir)
                && write(&path, &key, p).is_ok() =>
        {
            CacheUse::Written
        }
        _ => CacheUse::Parsed,
    };
    (loaded, used)
}

fn key_of(config: &Path) -> Option<Vec<u8>> {
    key(config).map(|(k, _)| k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn setup(text: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let config = d.path().join("hutch.toml");
        fs::write(&config, text).unwrap();
        let cache = d.path().join("cache");
        (d, config, cache)
    }

    fn load(config: &Path, cache: &Path) -> (Result<Policy, PolicyError>, CacheUse) {
        load_cached(config, cache, Duration::ZERO)
    }

    const TEXT: &str = "[defaults]\nmemory = \"1G\"\n[plans.pro]\ncpu = \"150%\"\nio = [{ device = \"/dev/vda\", read_bps = \"10M\" }]\n[users.alice]\nplan = \"pro\"\non_logout = \"linger:5m\"\nmounts = [{ source = \"/srv/{user}\", target = \"/srv/{user}\", mode = \"ro\" }]\n[host.net]\ndns = [\"10.0.0.1\", \"::1\"]\n[services]\ncron = \"ignore\"\n";

    /// A cached policy decides exactly as the parsed one, for every key.
    #[test]
    fn hit_equals_parse() {
        let (_d, config, cache) = setup(TEXT);
        let (first, used) = load(&config, &cache);
        assert_eq!(used, CacheUse::Written);
        let (second, used) = load(&config, &cache);
        assert_eq!(used, CacheUse::Hit);
        let (a, b) = (first.unwrap(), second.unwrap());
        for who in [
            crate::tests::alice(),
            crate::tests::account("bob", 1002, &["staff"]),
        ] {
            for svc in ["sshd", "cron", "systemd-user"] {
                assert_eq!(a.explain(&who, svc), b.explain(&who, svc));
            }
        }
        assert_eq!(
            format!("{:?}", a.model.get()),
            format!("{:?}", b.model.get()),
            "the whole model reads back"
        );
        assert_eq!(a.files(), b.files());
        assert_eq!(a.host(), b.host());
        let m = fs::symlink_metadata(cache_path(&config, &cache)).unwrap();
        assert_eq!(m.mode() & 0o777, 0o600);
        assert_eq!(fs::symlink_metadata(&cache).unwrap().mode() & 0o777, 0o700);
    }

    /// A policy without `[groups.*]` tables says so, parsed and cached, and
    /// then resolves an account without its groups as one with them; one
    /// with a group table says it needs them, also read from the cache
    /// before anything was decoded.
    #[test]
    fn uses_groups_parsed_and_cached() {
        let (_d, config, cache) = setup(TEXT);
        let (parsed, _) = load(&config, &cache);
        let (cached, used) = load(&config, &cache);
        assert_eq!(used, CacheUse::Hit);
        let (parsed, cached) = (parsed.unwrap(), cached.unwrap());
        assert!(!parsed.uses_groups() && !cached.uses_groups());
        let with = crate::tests::account("bob", 1002, &["staff", "wheel"]);
        let without = crate::tests::account("bob", 1002, &[]);
        for p in [&parsed, &cached] {
            for svc in ["sshd", "cron"] {
                assert_eq!(p.explain(&with, svc), p.explain(&without, svc));
            }
        }

        let text = format!("{TEXT}[groups.staff]\nmemory = \"2G\"\n");
        let (_d, config, cache) = setup(&text);
        let (parsed, _) = load(&config, &cache);
        let (cached, used) = load(&config, &cache);
        assert_eq!(used, CacheUse::Hit);
        let (parsed, cached) = (parsed.unwrap(), cached.unwrap());
        assert!(cached.uses_groups(), "answered from the encoded table");
        assert!(parsed.uses_groups());
        assert_ne!(
            cached.explain(&with, "sshd").get("memory"),
            cached.explain(&without, "sshd").get("memory")
        );
    }

    /// Editing the main file or adding a drop-in misses the cache.
    #[test]
    fn changes_miss() {
        let (d, config, cache) = setup(TEXT);
        load(&config, &cache).0.unwrap();
        fs::write(&config, TEXT.replace("1G", "1536M")).unwrap();
        let (p, used) = load(&config, &cache);
        assert_eq!(used, CacheUse::Written);
        assert_eq!(
            p.unwrap()
                .explain(&crate::tests::alice(), "sshd")
                .get("memory")
                .unwrap()
                .value,
            "\"1536M\""
        );
        fs::create_dir(d.path().join("hutch.d")).unwrap();
        fs::write(d.path().join("hutch.d/10-x.toml"), "[defaults]\npids = 7\n").unwrap();
        let (p, used) = load(&config, &cache);
        assert_eq!(used, CacheUse::Written);
        assert_eq!(
            p.unwrap()
                .explain(&crate::tests::alice(), "sshd")
                .get("pids")
                .unwrap()
                .value,
            "7"
        );
        assert_eq!(load(&config, &cache).1, CacheUse::Hit);
    }

    /// A damaged, foreign-mode or symlinked cache is never used; the files are parsed.
    #[test]
    fn untrusted_or_damaged_is_ignored() {
        let (d, config, cache) = setup(TEXT);
        load(&config, &cache).0.unwrap();
        let path = cache_path(&config, &cache);
        let good = fs::read(&path).unwrap();
        for cut in [0, 8, good.len() / 2, good.len() - 1] {
            fs::write(&path, &good[..cut]).unwrap();
            assert_eq!(load(&config, &cache).1, CacheUse::Written, "cut at {cut}");
        }
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 0x40;
        fs::write(&path, &flipped).unwrap();
        assert_eq!(load(&config, &cache).1, CacheUse::Written);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            load(&config, &cache).1,
            CacheUse::Written,
            "0644 is rewritten as 0600"
        );
        assert_eq!(load(&config, &cache).1, CacheUse::Hit);
        let elsewhere = d.path().join("elsewhere");
        fs::rename(&path, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        let (p, used) = load(&config, &cache);
        assert!(p.is_ok());
        assert_eq!(
            used,
            CacheUse::Written,
            "the symlink is replaced, not followed"
        );
        assert!(!fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        fs::set_permissions(&cache, fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(
            load(&config, &cache).1,
            CacheUse::Parsed,
            "a directory others can write is not used"
        );
    }

    /// Sources changed within the racy window are parsed, not cached; broken policies are never cached.
    #[test]
    fn fresh_or_broken_not_cached() {
        let (_d, config, cache) = setup(TEXT);
        assert_eq!(
            load_cached(&config, &cache, Duration::from_secs(3600)).1,
            CacheUse::Parsed
        );
        fs::write(&config, "[defaults]\nmemroy = 1\n").unwrap();
        let (p, used) = load(&config, &cache);
        assert_eq!(used, CacheUse::Parsed);
        assert!(p.unwrap_err().message.contains("did you mean \"memory\""));
        assert!(!cache.exists(), "nothing cached, no cache directory made");
    }

    /// A broken edit: `last_good` still gives the policy that loaded last
    /// (exemptions included); with no cache, or a foreign one, nothing.
    #[test]
    fn last_good_survives_a_broken_edit() {
        let (_d, config, cache) = setup("[groups.admins]\nconfine = false\n");
        assert!(Policy::last_good(&config, &cache).is_none(), "no cache yet");
        assert_eq!(load(&config, &cache).1, CacheUse::Written);
        fs::write(&config, "[defaults]\nmemroy = 1\n").unwrap();
        assert!(load(&config, &cache).0.is_err());
        let p = Policy::last_good(&config, &cache).expect("the last policy that loaded");
        let admin = crate::Account {
            name: "carol".into(),
            uid: 1002,
            gid: 1002,
            groups: vec!["carol".into(), "admins".into()],
            home: "/home/carol".into(),
            shell: "/bin/sh".into(),
        };
        assert!(matches!(
            p.resolve(&admin, "sshd"),
            crate::Decision::Exempt(_)
        ));
        // Damaged: nothing.
        let path = cache_path(&config, &cache);
        let mut bytes = fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        assert!(Policy::last_good(&config, &cache).is_none());
    }

    /// Two config paths never share a cache file.
    #[test]
    fn per_config_path() {
        assert_ne!(
            cache_path(Path::new("/a/hutch.toml"), Path::new("/c")),
            cache_path(Path::new("/b/hutch.toml"), Path::new("/c"))
        );
    }
}
