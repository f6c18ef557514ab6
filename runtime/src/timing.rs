//! Start marks: when each phase of a container's start ended, on
//! `CLOCK_MONOTONIC` (nanoseconds since boot, the same clock in every
//! process), so that a bench can put the keeper's, the init's and its own
//! marks on one line and give every millisecond of a cold start a name
//! (`bench --bin sidebyside`). The keeper records them as it goes (a clock
//! read and a push: well under a microsecond a mark), the init sends its
//! own with its `OK` report, and the list goes into state.json
//! (`start_marks`) once the container is up.
//!
//! pam_hutch's own steps (`pam_*`) are marked in the PAM host's list, at
//! most `MAX_MARKS` of them, which nothing but a bench reads.
//!
//! The list is the process's own: the keeper is single-threaded while it
//! starts (the network's short-lived netns threads only read), and the init,
//! a clone of it, starts from a copy that it empties first ([`take`]).

use std::sync::Mutex;

static MARKS: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());

/// Now, on `CLOCK_MONOTONIC`, in nanoseconds.
pub fn now_ns() -> u64 {
    crate::sys::monotonic_ns()
}

/// At most this many marks are kept: pam_hutch records its own in the PAM
/// host (the bench reads them from there), which may open many sessions.
const MAX_MARKS: usize = 128;

/// Records that `phase` ended now.
pub fn mark(phase: &str) {
    let t = now_ns();
    if let Ok(mut m) = MARKS.lock() {
        if m.len() < MAX_MARKS {
            m.push((phase.to_string(), t));
        }
    }
}

/// Adds marks recorded elsewhere (the init's), in their order.
pub fn extend(marks: impl IntoIterator<Item = (String, u64)>) {
    if let Ok(mut m) = MARKS.lock() {
        m.extend(marks);
    }
}

/// The marks so far, emptying the list.
pub fn take() -> Vec<(String, u64)> {
    MARKS
        .lock()
        .map(|mut m| std::mem::take(&mut *m))
        .unwrap_or_default()
}

/// The marks as one word (`phase=ns,phase=ns`), for the init's report line.
pub fn encode(marks: &[(String, u64)]) -> String {
    marks
        .iter()
        .map(|(p, t)| format!("{p}={t}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// [`encode`]'s inverse; what does not parse is left out.
pub fn decode(word: &str) -> Vec<(String, u64)> {
    word.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The init's marks survive the report line's encoding, in order.
    #[test]
    fn encode_decode_round_trip() {
        let m = vec![("overlay".to_string(), 5u64), ("pivot".to_string(), 7)];
        assert_eq!(decode(&encode(&m)), m);
        assert!(decode("").is_empty());
        assert_eq!(decode("a=1,bad,b=x,c=3").len(), 2);
    }

    /// Marks are monotonic and kept in the order they were made.
    #[test]
    fn marks_in_order() {
        take();
        mark("a");
        mark("b");
        let m = take();
        assert_eq!(m.len(), 2);
        assert!(m[0].1 <= m[1].1);
        assert!(take().is_empty());
    }
}
