//! The container's own CPU figures: which host CPUs it runs on (`cpus =
//! "auto"`: as many as its `cpu` quota allows, rounded up, picked where the
//! fewest other containers run) and, where lxcfs is not there to answer,
//! the small files that tell programs how many CPUs they have:
//! `/proc/cpuinfo` with only its CPUs and `/sys/devices/system/cpu/online`.
//!
//! `nproc`, `make -j$(nproc)`, Go, the JVM, Node and Rust's
//! `available_parallelism` ask `sched_getaffinity(2)`, which the cpuset
//! answers; glibc's `get_nprocs` (`sysconf(_SC_NPROCESSORS_ONLN)`, Python's
//! `os.cpu_count`) reads `/sys/devices/system/cpu/online`; `top`, `lscpu`
//! and libuv's `uv_cpu_info` read `/proc/cpuinfo`.

use std::collections::BTreeSet;

/// Parses a kernel CPU list (`0-3,8,10-11`); `None` when malformed.
pub fn parse_list(text: &str) -> Option<BTreeSet<u32>> {
    let mut out = BTreeSet::new();
    let text = text.trim();
    if text.is_empty() {
        return Some(out);
    }
    for part in text.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if a > b || b - a > 65_536 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => {
                out.insert(part.trim().parse().ok()?);
            }
        }
    }
    Some(out)
}

/// Writes CPUs as a kernel CPU list (ranges where they run on).
pub fn format_list(cpus: &BTreeSet<u32>) -> String {
    let mut out = Vec::new();
    let mut it = cpus.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end = it.next().unwrap_or(end);
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

/// How many CPUs a quota of `quota_us` per `period_us` needs: rounded up,
/// at least one.
pub fn count_for_quota(quota_us: u64, period_us: u64) -> usize {
    if period_us == 0 {
        return 1;
    }
    (quota_us.div_ceil(period_us) as usize).max(1)
}

/// Picks `n` of `available` for a new container: those the fewest of the
/// other containers' cpusets (`taken`) hold, the lower number first on a
/// tie. `None` when `n` covers every available CPU (no cpuset is needed).
pub fn pick(available: &BTreeSet<u32>, taken: &[BTreeSet<u32>], n: usize) -> Option<BTreeSet<u32>> {
    if n == 0 || n >= available.len() {
        return None;
    }
    let mut load: Vec<(usize, u32)> = available
        .iter()
        .map(|&c| (taken.iter().filter(|t| t.contains(&c)).count(), c))
        .collect();
    load.sort_unstable();
    Some(load.into_iter().take(n).map(|(_, c)| c).collect())
}

/// The host's `/proc/cpuinfo` cut to the processors in `cpus`, renumbered
/// from 0 as the container sees them (lxcfs does the same).
pub fn cpuinfo_for(host: &str, cpus: &BTreeSet<u32>) -> String {
    let mut out = String::new();
    let mut next = 0u32;
    for block in host.split("\n\n") {
        let block = block.trim_matches('\n');
        if block.is_empty() {
            continue;
        }
        let number = block.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "processor").then(|| v.trim().parse::<u32>().ok())?
        });
        match number {
            Some(n) if cpus.contains(&n) => {
                for line in block.lines() {
                    match line.split_once(':') {
                        Some((k, _)) if k.trim() == "processor" => {
                            out.push_str(&format!("{k}: {next}\n"))
                        }
                        _ => {
                            out.push_str(line);
                            out.push('\n');
                        }
                    }
                }
                out.push('\n');
                next += 1;
            }
            // An architecture whose cpuinfo is not one block per processor:
            // keep what is not a processor's own block.
            None => {
                out.push_str(block);
                out.push_str("\n\n");
            }
            Some(_) => {}
        }
    }
    out
}

/// `/sys/devices/system/cpu/online` for a container of `count` CPUs,
/// numbered as its `/proc/cpuinfo` numbers them.
pub fn online_for(count: usize) -> String {
    match count {
        0 | 1 => "0\n".to_string(),
        n => format!("0-{}\n", n - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[u32]) -> BTreeSet<u32> {
        v.iter().copied().collect()
    }

    /// CPU lists parse and print as the kernel writes them.
    #[test]
    fn lists_round_trip() {
        assert_eq!(
            parse_list("0-3,8,10-11\n"),
            Some(set(&[0, 1, 2, 3, 8, 10, 11]))
        );
        assert_eq!(format_list(&set(&[0, 1, 2, 3, 8, 10, 11])), "0-3,8,10-11");
        assert_eq!(parse_list(""), Some(set(&[])));
        assert_eq!(parse_list("3-1"), None);
        assert_eq!(parse_list("x"), None);
        assert_eq!(format_list(&set(&[5])), "5");
    }

    /// A quota needs its cores rounded up, at least one.
    #[test]
    fn count_rounds_up() {
        assert_eq!(count_for_quota(100_000, 100_000), 1);
        assert_eq!(count_for_quota(150_000, 100_000), 2);
        assert_eq!(count_for_quota(1_000, 100_000), 1);
    }

    /// The least-used CPUs are picked, lowest first on a tie; a count that
    /// covers the host needs no cpuset.
    #[test]
    fn picks_the_least_used() {
        let all = set(&[0, 1, 2, 3]);
        assert_eq!(pick(&all, &[], 1), Some(set(&[0])));
        assert_eq!(
            pick(&all, &[set(&[0]), set(&[0, 1])], 2),
            Some(set(&[2, 3]))
        );
        assert_eq!(pick(&all, &[set(&[0, 1, 2, 3])], 1), Some(set(&[0])));
        assert_eq!(pick(&all, &[set(&[0])], 1), Some(set(&[1])));
        assert_eq!(pick(&all, &[], 4), None);
        assert_eq!(pick(&all, &[], 9), None);
    }

    /// cpuinfo keeps the container's processors, renumbered from 0.
    #[test]
    fn cpuinfo_is_cut_and_renumbered() {
        let host = "processor\t: 0\nmodel name\t: A\n\nprocessor\t: 1\nmodel name\t: B\n\nprocessor\t: 2\nmodel name\t: C\n\n";
        let got = cpuinfo_for(host, &set(&[1, 2]));
        assert_eq!(
            got,
            "processor\t: 0\nmodel name\t: B\n\nprocessor\t: 1\nmodel name\t: C\n\n"
        );
        assert_eq!(got.matches("processor").count(), 2);
        assert_eq!(online_for(1), "0\n");
        assert_eq!(online_for(3), "0-2\n");
    }
}
