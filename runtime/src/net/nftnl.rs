//! A small nf_tables netlink client: the few objects hutch's firewall is
//! made of (tables, chains, rules of a handful of expressions), encoded by
//! hand and sent as ONE atomic batch (`NFNL_MSG_BATCH_BEGIN` … `END`) on a
//! `NETLINK_NETFILTER` socket of the caller's network namespace.
//!
//! Nothing is read back but the acknowledgements: no dump of the ruleset,
//! so a batch costs the same with one user's tables on the host as with a
//! thousand (libnftables fetched the whole ruleset into its cache before
//! each batch, ~180 MB and O(users) time per call at 1,000 users).
//!
//! The bytecode is what `nft --debug=netlink` shows nft 1.0.6 generating
//! for the same rules, dependency matches included, so `nft list` decodes
//! it back to the same high-level rules. [`Expr`]'s `Display` prints that
//! debug form, which the unit tests compare against nft's.

use std::fmt;
use std::io;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

// linux/netlink.h
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 0x2;
const NLA_F_NESTED: u16 = 0x8000;
// linux/netfilter/nfnetlink.h
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
// linux/netfilter/nf_tables.h: messages
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
// attributes
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
/// The verdict register; data goes to `NFT_REG_1`.
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
/// linux/if.h: what `meta iifname`/`oifname` load.
pub const IFNAMSIZ: usize = 16;

/// An nf_tables address family (`NFPROTO_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Inet,
    Ip,
    Bridge,
}

impl Family {
    fn proto(self) -> u8 {
        match self {
            Family::Inet => 1,
            Family::Ip => 2,
            Family::Bridge => 7,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Bridge => "bridge",
        }
    }
}

/// Where a payload load starts (`NFT_PAYLOAD_*_HEADER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Link,
    Network,
    Transport,
}

/// A `meta` key (`NFT_META_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    IifName,
    OifName,
    NfProto,
    L4Proto,
}

impl MetaKey {
    fn code(self) -> u32 {
        match self {
            MetaKey::IifName => 6,
            MetaKey::OifName => 7,
            MetaKey::NfProto => 15,
            MetaKey::L4Proto => 16,
        }
    }
    fn name(self) -> &'static str {
        match self {
            MetaKey::IifName => "iifname",
            MetaKey::OifName => "oifname",
            MetaKey::NfProto => "nfproto",
            MetaKey::L4Proto => "l4proto",
        }
    }
}

/// A comparison (`NFT_CMP_EQ`, `NFT_CMP_NEQ`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Neq,
}

/// What a rule decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Jump(String),
    Goto(String),
}

/// One expression of a rule. Loads go to register 1, which the next
/// `cmp` or `bitwise` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Payload {
        base: Base,
        offset: u32,
        len: u32,
    },
    Meta(MetaKey),
    /// `ct state` (host byte order, a bit per state).
    CtState,
    Cmp {
        op: CmpOp,
        data: Vec<u8>,
    },
    /// `reg 1 = (reg 1 & mask) ^ xor`, `mask.len()` bytes.
    Bitwise {
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// `ct count`: with `over`, matches beyond `count` connections.
    Connlimit {
        count: u32,
        over: bool,
    },
    /// `limit rate [over] RATE bytes/second burst BURST bytes`.
    LimitBytes {
        rate: u64,
        burst: u32,
        over: bool,
    },
    Masq,
    Verdict(Verdict),
}

/// A base chain's hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// `NF_INET_*` / `NF_BR_*` (input 1, forward 2, output 3, postrouting 4).
    pub num: u32,
    pub priority: i32,
    /// `filter`, `nat`.
    pub kind: &'static str,
}

pub const HOOK_INPUT: u32 = 1;
pub const HOOK_FORWARD: u32 = 2;
pub const HOOK_OUTPUT: u32 = 3;
pub const HOOK_POSTROUTING: u32 = 4;

/// One message of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `create table` with `excl`, else `add table` (no error if it exists).
    NewTable {
        family: Family,
        name: String,
        excl: bool,
    },
    DelTable {
        family: Family,
        name: String,
    },
    /// A regular chain, or with `hook` a base chain of policy accept.
    NewChain {
        family: Family,
        table: String,
        name: String,
        hook: Option<Hook>,
    },
    /// Appends a rule.
    NewRule {
        family: Family,
        table: String,
        chain: String,
        exprs: Vec<Expr>,
    },
}

impl fmt::Display for Op {
    /// The nft command the message stands for (for errors).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::NewTable { family, name, excl } => {
                let verb = if *excl { "create" } else { "add" };
                write!(f, "{verb} table {} {name}", family.name())
            }
            Op::DelTable { family, name } => write!(f, "delete table {} {name}", family.name()),
            Op::NewChain {
                family,
                table,
                name,
                ..
            } => write!(f, "add chain {} {table} {name}", family.name()),
            Op::NewRule {
                family,
                table,
                chain,
                exprs,
            } => {
                write!(f, "add rule {} {table} {chain}", family.name())?;
                for e in exprs {
                    write!(f, " {e}")?;
                }
                Ok(())
            }
        }
    }
}

/// Bytes as nft's debug output shows them: 32-bit words in host order.
fn words(data: &[u8]) -> String {
    data.chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            format!("0x{:08x}", u32::from_ne_bytes(w))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl fmt::Display for Expr {
    /// nft's `--debug=netlink` form of the expression.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Payload { base, offset, len } => {
                let b = match base {
                    Base::Link => "link",
                    Base::Network => "network",
                    Base::Transport => "transport",
                };
                write!(
                    f,
                    "[ payload load {len}b @ {b} header + {offset} => reg 1 ]"
                )
            }
            Expr::Meta(k) => write!(f, "[ meta load {} => reg 1 ]", k.name()),
            Expr::CtState => write!(f, "[ ct load state => reg 1 ]"),
            Expr::Cmp { op, data } => {
                let o = match op {
                    CmpOp::Eq => "eq",
                    CmpOp::Neq => "neq",
                };
                write!(f, "[ cmp {o} reg 1 {} ]", words(data))
            }
            Expr::Bitwise { mask, xor } => write!(
                f,
                "[ bitwise reg 1 = ( reg 1 & {} ) ^ {} ]",
                words(mask),
                words(xor)
            ),
            Expr::Connlimit { count, over } => {
                write!(f, "[ connlimit count {count} flags {} ]", u32::from(*over))
            }
            Expr::LimitBytes { rate, burst, over } => write!(
                f,
                "[ limit rate {rate}/second burst {burst} type bytes flags 0x{} ]",
                u32::from(*over)
            ),
            Expr::Masq => write!(f, "[ masq ]"),
            Expr::Verdict(v) => match v {
                Verdict::Accept => write!(f, "[ immediate reg 0 accept ]"),
                Verdict::Drop => write!(f, "[ immediate reg 0 drop ]"),
                Verdict::Jump(c) => write!(f, "[ immediate reg 0 jump -> {c} ]"),
                Verdict::Goto(c) => write!(f, "[ immediate reg 0 goto -> {c} ]"),
            },
        }
    }
}

/// A netlink message or attribute buffer.
#[derive(Default)]
struct Buf(Vec<u8>);

impl Buf {
    fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.pad();
    }
    fn str(&mut self, ty: u16, s: &str) {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(ty, &v);
    }
    fn u32be(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }
    fn u64be(&mut self, ty: u16, v: u64) {
        self.attr(ty, &v.to_be_bytes());
    }
    fn pad(&mut self) {
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
    }
    /// Starts a nested attribute; `end` fills in its length.
    fn begin(&mut self, ty: u16) -> usize {
        let at = self.0.len();
        self.0.extend_from_slice(&[0, 0]);
        self.0.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        at
    }
    fn end(&mut self, at: usize) {
        let len = (self.0.len() - at) as u16;
        self.0[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }
    /// `NFTA_DATA_VALUE` inside the nest `ty`.
    fn value(&mut self, ty: u16, data: &[u8]) {
        let n = self.begin(ty);
        self.attr(NFTA_DATA_VALUE, data);
        self.end(n);
    }
    /// A netlink header + nfgenmsg; `finish` fills in the length.
    fn header(&mut self, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
        let at = self.0.len();
        self.0.extend_from_slice(&[0; 4]);
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(&flags.to_ne_bytes());
        self.0.extend_from_slice(&seq.to_ne_bytes());
        self.0.extend_from_slice(&0u32.to_ne_bytes());
        self.0.extend_from_slice(&[family, 0]);
        self.0.extend_from_slice(&res_id.to_be_bytes());
        at
    }
    fn finish(&mut self, at: usize) {
        let len = (self.0.len() - at) as u32;
        self.0[at..at + 4].copy_from_slice(&len.to_ne_bytes());
    }
}

fn expr(b: &mut Buf, e: &Expr) {
    let elem = b.begin(NFTA_LIST_ELEM);
    let name = match e {
        Expr::Payload { .. } => "payload",
        Expr::Meta(_) => "meta",
        Expr::CtState => "ct",
        Expr::Cmp { .. } => "cmp",
        Expr::Bitwise { .. } => "bitwise",
        Expr::Connlimit { .. } => "connlimit",
        Expr::LimitBytes { .. } => "limit",
        Expr::Masq => "masq",
        Expr::Verdict(_) => "immediate",
    };
    b.str(NFTA_EXPR_NAME, name);
    let data = b.begin(NFTA_EXPR_DATA);
    match e {
        Expr::Payload { base, offset, len } => {
            b.u32be(1, NFT_REG_1); // NFTA_PAYLOAD_DREG
            b.u32be(2, *base as u32); // BASE: link 0, network 1, transport 2
            b.u32be(3, *offset); // OFFSET
            b.u32be(4, *len); // LEN
        }
        Expr::Meta(k) => {
            b.u32be(1, NFT_REG_1); // NFTA_META_DREG
            b.u32be(2, k.code()); // KEY
        }
        Expr::CtState => {
            b.u32be(1, NFT_REG_1); // NFTA_CT_DREG
            b.u32be(2, 0); // KEY: NFT_CT_STATE
        }
        Expr::Cmp { op, data } => {
            b.u32be(1, NFT_REG_1); // NFTA_CMP_SREG
            b.u32be(2, *op as u32); // OP: eq 0, neq 1
            b.value(3, data); // DATA
        }
        Expr::Bitwise { mask, xor } => {
            b.u32be(1, NFT_REG_1); // NFTA_BITWISE_SREG
            b.u32be(2, NFT_REG_1); // DREG
            b.u32be(3, mask.len() as u32); // LEN
            b.value(4, mask); // MASK
            b.value(5, xor); // XOR
        }
        Expr::Connlimit { count, over } => {
            b.u32be(1, *count); // NFTA_CONNLIMIT_COUNT
            b.u32be(2, u32::from(*over)); // FLAGS: NFT_CONNLIMIT_F_INV
        }
        Expr::LimitBytes { rate, burst, over } => {
            b.u64be(1, *rate); // NFTA_LIMIT_RATE
            b.u64be(2, 1); // UNIT: seconds
            b.u32be(3, *burst); // BURST
            b.u32be(4, 1); // TYPE: NFT_LIMIT_PKT_BYTES
            b.u32be(5, u32::from(*over)); // FLAGS: NFT_LIMIT_F_INV
        }
        Expr::Masq => {}
        Expr::Verdict(v) => {
            b.u32be(1, NFT_REG_VERDICT); // NFTA_IMMEDIATE_DREG
            let d = b.begin(2); // NFTA_IMMEDIATE_DATA
            let vn = b.begin(NFTA_DATA_VERDICT);
            let (code, chain) = match v {
                Verdict::Accept => (NF_ACCEPT, None),
                Verdict::Drop => (NF_DROP, None),
                Verdict::Jump(c) => (NFT_JUMP, Some(c)),
                Verdict::Goto(c) => (NFT_GOTO, Some(c)),
            };
            b.attr(NFTA_VERDICT_CODE, &code.to_be_bytes());
            if let Some(c) = chain {
                b.str(NFTA_VERDICT_CHAIN, c);
            }
            b.end(vn);
            b.end(d);
        }
    }
    b.end(data);
    b.end(elem);
}

fn message(b: &mut Buf, op: &Op, seq: u32) {
    let ty = |m: u16| (NFNL_SUBSYS_NFTABLES << 8) | m;
    let base = NLM_F_REQUEST | NLM_F_ACK;
    match op {
        Op::NewTable { family, name, excl } => {
            let flags = base | NLM_F_CREATE | if *excl { NLM_F_EXCL } else { 0 };
            let h = b.header(ty(NFT_MSG_NEWTABLE), flags, seq, family.proto(), 0);
            b.str(NFTA_TABLE_NAME, name);
            b.finish(h);
        }
        Op::DelTable { family, name } => {
            let h = b.header(ty(NFT_MSG_DELTABLE), base, seq, family.proto(), 0);
            b.str(NFTA_TABLE_NAME, name);
            b.finish(h);
        }
        Op::NewChain {
            family,
            table,
            name,
            hook,
        } => {
            let h = b.header(
                ty(NFT_MSG_NEWCHAIN),
                base | NLM_F_CREATE,
                seq,
                family.proto(),
                0,
            );
            b.str(NFTA_CHAIN_TABLE, table);
            b.str(NFTA_CHAIN_NAME, name);
            if let Some(hook) = hook {
                let n = b.begin(NFTA_CHAIN_HOOK);
                b.u32be(NFTA_HOOK_HOOKNUM, hook.num);
                b.attr(NFTA_HOOK_PRIORITY, &hook.priority.to_be_bytes());
                b.end(n);
                b.u32be(NFTA_CHAIN_POLICY, NF_ACCEPT as u32);
                b.str(NFTA_CHAIN_TYPE, hook.kind);
            }
            b.finish(h);
        }
        Op::NewRule {
            family,
            table,
            chain,
            exprs,
        } => {
            let h = b.header(
                ty(NFT_MSG_NEWRULE),
                base | NLM_F_CREATE | NLM_F_APPEND,
                seq,
                family.proto(),
                0,
            );
            b.str(NFTA_RULE_TABLE, table);
            b.str(NFTA_RULE_CHAIN, chain);
            let list = b.begin(NFTA_RULE_EXPRESSIONS);
            for e in exprs {
                expr(b, e);
            }
            b.end(list);
            b.finish(h);
        }
    }
}

/// The batch: BEGIN (sequence `seq`), the messages (`seq + 1` …), END.
pub fn encode(ops: &[Op], seq: u32) -> Vec<u8> {
    let mut b = Buf::default();
    let h = b.header(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    b.finish(h);
    for (i, op) in ops.iter().enumerate() {
        message(&mut b, op, seq.wrapping_add(1 + i as u32));
    }
    let end = seq.wrapping_add(1 + ops.len() as u32);
    let h = b.header(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        end,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    b.finish(h);
    b.0
}

/// A batch the kernel refused (and so applied nothing of), or could not
/// be sent.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("opening a netfilter netlink socket")]
    Socket(#[source] io::Error),
    #[error("sending the nf_tables batch ({messages} messages)")]
    Send {
        messages: usize,
        #[source]
        source: io::Error,
    },
    #[error("reading the nf_tables acknowledgements")]
    Recv(#[source] io::Error),
    /// The first message the kernel refused (the batch was rolled back).
    #[error("`{op}` (message {index} of the batch)")]
    Refused {
        op: String,
        index: usize,
        #[source]
        source: io::Error,
    },
    #[error("the kernel acknowledged {acked} of {messages} nf_tables messages")]
    Unacknowledged { acked: usize, messages: usize },
}

/// Parses the answers in `buf`: per message index (from `first`), its
/// errno (0 for an ack).
fn answers(buf: &[u8], first: u32, count: usize, out: &mut Vec<(usize, i32)>) {
    let mut off = 0;
    while off + 16 <= buf.len() {
        let word = |at: usize| u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap_or([0; 4]));
        let len = word(off) as usize;
        if len < 16 || off + len > buf.len() {
            break;
        }
        let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        let seq = word(off + 8);
        let index = seq.wrapping_sub(first) as usize;
        if ty == NLMSG_ERROR && len >= 20 && index < count {
            out.push((index, -(word(off + 16) as i32)));
        }
        off += len.next_multiple_of(4);
    }
}

/// Sends `ops` as one atomic batch in the caller's (thread's) network
/// namespace and reads every acknowledgement. The kernel applies all of
/// it or nothing; the error names the first message it refused.
pub fn apply(ops: &[Op]) -> Result<(), BatchError> {
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(BatchError::Socket)?;
    sock.bind_auto().map_err(BatchError::Socket)?;
    sock.connect(&SocketAddr::new(0, 0))
        .map_err(BatchError::Socket)?;
    // Any start will do: the socket is this batch's alone.
    let seq = 1;
    let batch = encode(ops, seq);
    sock.send(&batch, 0).map_err(|source| BatchError::Send {
        messages: ops.len(),
        source,
    })?;
    // The kernel processes the batch inside sendmsg (nfnetlink_rcv runs
    // in the sender's context): every answer is queued once it returns,
    // so read without waiting until none is left.
    let mut got: Vec<(usize, i32)> = Vec::new();
    let mut rbuf: Vec<u8> = Vec::with_capacity(1 << 17);
    loop {
        rbuf.clear();
        match sock.recv(&mut rbuf, libc::MSG_DONTWAIT) {
            Ok(_) => answers(&rbuf, seq, ops.len() + 2, &mut got),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(BatchError::Recv(e)),
        }
    }
    // Index 0 is BEGIN, 1..=n the messages, n + 1 END.
    if let Some(&(index, errno)) = got.iter().filter(|&&(_, e)| e != 0).min() {
        let op = match index {
            0 => "batch begin".to_string(),
            i if i > ops.len() => "batch end".to_string(),
            i => ops[i - 1].to_string(),
        };
        return Err(BatchError::Refused {
            op,
            index,
            source: io::Error::from_raw_os_error(errno),
        });
    }
    let acked = got
        .iter()
        .filter(|&&(i, _)| (1..=ops.len()).contains(&i))
        .count();
    if acked < ops.len() {
        return Err(BatchError::Unacknowledged {
            acked,
            messages: ops.len(),
        });
    }
    Ok(())
}

/// Helpers for the matches nft generates (its dependency matches
/// included), shared by the host tables and the container's table.
pub mod matches {
    use super::*;
    use std::net::Ipv4Addr;

    pub fn load(base: Base, offset: u32, len: u32) -> Expr {
        Expr::Payload { base, offset, len }
    }
    pub fn cmp(op: CmpOp, data: &[u8]) -> Expr {
        Expr::Cmp {
            op,
            data: data.to_vec(),
        }
    }
    /// `meta iifname`/`oifname OP "name"` (NUL-padded to IFNAMSIZ, an exact match).
    pub fn ifname(key: MetaKey, op: CmpOp, name: &str) -> Vec<Expr> {
        let mut d = name.as_bytes().to_vec();
        d.resize(IFNAMSIZ, 0);
        vec![Expr::Meta(key), Expr::Cmp { op, data: d }]
    }
    /// An IPv4 address field (network header + `offset`) against a
    /// network: byte-aligned prefixes load only their bytes, others
    /// (and /0) are masked, as nft does.
    pub fn ipv4_net(offset: u32, addr: Ipv4Addr, prefix: u8, op: CmpOp) -> Vec<Expr> {
        let prefix = prefix.min(32);
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        };
        let net = (u32::from(addr) & mask).to_be_bytes();
        if prefix > 0 && prefix.is_multiple_of(8) {
            let n = u32::from(prefix / 8);
            vec![load(Base::Network, offset, n), cmp(op, &net[..n as usize])]
        } else {
            vec![
                load(Base::Network, offset, 4),
                Expr::Bitwise {
                    mask: mask.to_be_bytes().to_vec(),
                    xor: vec![0; 4],
                },
                cmp(op, &net),
            ]
        }
    }
    /// `ip saddr` (offset 12) / `ip daddr` (16) `OP addr`.
    pub fn ipv4_addr(offset: u32, addr: Ipv4Addr, op: CmpOp) -> Vec<Expr> {
        ipv4_net(offset, addr, 32, op)
    }
    /// `ct state & bits != 0` (`ct state new`, `established,related`).
    pub fn ct_state(bits: u32) -> Vec<Expr> {
        vec![
            Expr::CtState,
            Expr::Bitwise {
                mask: bits.to_ne_bytes().to_vec(),
                xor: vec![0; 4],
            },
            cmp(CmpOp::Neq, &[0; 4]),
        ]
    }
    pub const CT_ESTABLISHED: u32 = 2;
    pub const CT_RELATED: u32 = 4;
    pub const CT_NEW: u32 = 8;
    /// `tcp dport N` / `udp dport N`: `meta l4proto` first.
    pub fn dport(l4proto: u8, port: u16) -> Vec<Expr> {
        vec![
            Expr::Meta(MetaKey::L4Proto),
            cmp(CmpOp::Eq, &[l4proto]),
            load(Base::Transport, 2, 2),
            cmp(CmpOp::Eq, &port.to_be_bytes()),
        ]
    }
    pub fn verdict(v: Verdict) -> Expr {
        Expr::Verdict(v)
    }
}

#[cfg(test)]
mod tests {
    use super::matches::*;
    use super::*;
    use std::net::Ipv4Addr;

    /// A NEWTABLE with EXCL inside a batch: the exact bytes (headers,
    /// nfgenmsg with the subsystem in BEGIN/END, NUL-terminated name).
    #[test]
    fn table_batch_bytes() {
        let b = encode(
            &[Op::NewTable {
                family: Family::Bridge,
                name: "hutch-a".into(),
                excl: true,
            }],
            7,
        );
        let mut want: Vec<u8> = Vec::new();
        let hdr = |w: &mut Vec<u8>, len: u32, ty: u16, flags: u16, seq: u32| {
            w.extend_from_slice(&len.to_ne_bytes());
            w.extend_from_slice(&ty.to_ne_bytes());
            w.extend_from_slice(&flags.to_ne_bytes());
            w.extend_from_slice(&seq.to_ne_bytes());
            w.extend_from_slice(&0u32.to_ne_bytes());
        };
        hdr(&mut want, 20, 0x10, 1, 7);
        want.extend_from_slice(&[0, 0, 0, 10]);
        hdr(&mut want, 32, 0x0a00, 0x1 | 0x4 | 0x200 | 0x400, 8);
        want.extend_from_slice(&[7, 0, 0, 0]);
        want.extend_from_slice(&[12, 0, 1, 0]);
        want.extend_from_slice(b"hutch-a\0");
        hdr(&mut want, 20, 0x11, 1, 9);
        want.extend_from_slice(&[0, 0, 0, 10]);
        assert_eq!(b, want);
    }

    /// A rule's expressions nest as list elements of name + data, the
    /// verdict with its chain; lengths add up.
    #[test]
    fn rule_nesting() {
        let mut exprs = ifname(MetaKey::IifName, CmpOp::Eq, "hv0");
        exprs.push(verdict(Verdict::Jump("guard".into())));
        let b = encode(
            &[Op::NewRule {
                family: Family::Bridge,
                table: "t".into(),
                chain: "input".into(),
                exprs,
            }],
            0,
        );
        let len = u32::from_ne_bytes(b[20..24].try_into().unwrap()) as usize;
        assert_eq!(&b[24..26], &0x0a06u16.to_ne_bytes());
        let msg = &b[20..20 + len];
        assert_eq!(20 + len + 20, b.len());
        let find = |needle: &[u8]| msg.windows(needle.len()).any(|w| w == needle);
        assert!(find(b"meta\0"));
        assert!(find(b"cmp\0"));
        assert!(find(b"immediate\0"));
        assert!(find(b"guard\0"));
        assert!(find(&(-3i32).to_be_bytes()));
        let mut padded = b"hv0".to_vec();
        padded.resize(16, 0);
        assert!(find(&padded));
    }

    /// Networks are matched as nft does: whole bytes for /8, /16, /24,
    /// /32; a mask otherwise (and for /0); host bits cleared.
    #[test]
    fn networks() {
        let show = |e: Vec<Expr>| e.iter().map(|e| e.to_string()).collect::<Vec<_>>();
        let a = Ipv4Addr::new(10, 1, 2, 3);
        assert_eq!(
            show(ipv4_net(16, a, 8, CmpOp::Eq)),
            [
                "[ payload load 1b @ network header + 16 => reg 1 ]",
                "[ cmp eq reg 1 0x0000000a ]"
            ]
        );
        assert_eq!(
            show(ipv4_net(16, a, 31, CmpOp::Eq)),
            [
                "[ payload load 4b @ network header + 16 => reg 1 ]",
                "[ bitwise reg 1 = ( reg 1 & 0xfeffffff ) ^ 0x00000000 ]",
                "[ cmp eq reg 1 0x0202010a ]"
            ]
        );
        assert_eq!(
            show(ipv4_net(16, a, 0, CmpOp::Eq))[1],
            "[ bitwise reg 1 = ( reg 1 & 0x00000000 ) ^ 0x00000000 ]"
        );
        assert_eq!(
            show(ipv4_addr(12, a, CmpOp::Neq))[1],
            "[ cmp neq reg 1 0x0302010a ]"
        );
    }

    /// Answers are attributed to messages by sequence number; foreign
    /// sequence numbers and non-error messages are ignored.
    #[test]
    fn answer_parsing() {
        let mut buf = Vec::new();
        for (seq, err) in [(5u32, 0i32), (6, -17), (99, -1)] {
            buf.extend_from_slice(&36u32.to_ne_bytes());
            buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            buf.extend_from_slice(&0u16.to_ne_bytes());
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&err.to_ne_bytes());
            buf.extend_from_slice(&[0; 16]);
        }
        let mut got = Vec::new();
        answers(&buf, 5, 3, &mut got);
        assert_eq!(got, [(0, 0), (1, 17)]);
    }
}
