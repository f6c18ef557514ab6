//! The module's arguments: `key=value` words from the PAM service line.
//!
//! An unknown argument is reported (the caller logs it at LOG_ERR) and
//! ignored, as pam_nologin does; a known key with a bad value is an error
//! (the caller returns `PAM_SERVICE_ERR`): a typo must not silently change
//! what the module does.

use std::path::PathBuf;
use std::time::Duration;

/// Where the keeper binary is unless `keeper=` says otherwise: set at build
/// time through `HUTCH_KEEPER`, else the `make install` default.
pub const DEFAULT_KEEPER: &str = match option_env!("HUTCH_KEEPER") {
    Some(path) => path,
    None => "/usr/local/libexec/hutch/hutch-keeper",
};

/// How long to wait for a new keeper when `timeout=` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest `timeout=` accepted: PAM callers (sshd's LoginGraceTime) give
/// up long before this.
const MAX_TIMEOUT_SECS: u64 = 3600;

/// What to do when placing a confined user's session fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Refuse the session (`PAM_SESSION_ERR`): fail closed. The default.
    Fail,
    /// Log and let the session through unconfined (`PAM_IGNORE`): the
    /// documented escape hatch for an administrator locked out by a bug.
    Ignore,
}

/// The parsed arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub config: PathBuf,
    pub keeper: PathBuf,
    pub timeout: Duration,
    pub debug: bool,
    pub on_error: OnError,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            config: PathBuf::from(hutch_policy::DEFAULT_CONFIG),
            keeper: PathBuf::from(DEFAULT_KEEPER),
            timeout: DEFAULT_TIMEOUT,
            debug: false,
            on_error: OnError::Fail,
        }
    }
}

/// A known argument with a value the module cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadArgument {
    pub arg: String,
    pub why: &'static str,
}

impl std::fmt::Display for BadArgument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad argument {:?}: {}", self.arg, self.why)
    }
}

/// Arguments that parsed, and the unknown ones that were ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub args: Args,
    pub unknown: Vec<String>,
}

/// Parses the module's arguments.
pub fn parse<S: AsRef<str>>(words: &[S]) -> Result<Parsed, BadArgument> {
    let mut args = Args::default();
    let mut unknown = Vec::new();
    for word in words {
        let word = word.as_ref();
        let bad = |why| BadArgument {
            arg: word.to_string(),
            why,
        };
        match word.split_once('=') {
            None if word == "debug" => args.debug = true,
            Some(("config", v)) => {
                args.config = absolute_path(v).ok_or_else(|| bad("needs an absolute path"))?
            }
            Some(("keeper", v)) => {
                args.keeper = absolute_path(v).ok_or_else(|| bad("needs an absolute path"))?
            }
            Some(("timeout", v)) => {
                let secs: u64 = v
                    .parse()
                    .map_err(|_| bad("needs a whole number of seconds"))?;
                if secs == 0 || secs > MAX_TIMEOUT_SECS {
                    return Err(bad("needs between 1 and 3600 seconds"));
                }
                args.timeout = Duration::from_secs(secs);
            }
            Some(("on_error", "fail")) => args.on_error = OnError::Fail,
            Some(("on_error", "ignore")) => args.on_error = OnError::Ignore,
            Some(("on_error", _)) => return Err(bad("needs fail or ignore")),
            Some(("debug", _)) => return Err(bad("takes no value")),
            _ => unknown.push(word.to_string()),
        }
    }
    Ok(Parsed { args, unknown })
}

fn absolute_path(v: &str) -> Option<PathBuf> {
    v.starts_with('/').then(|| PathBuf::from(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No arguments give the documented defaults.
    #[test]
    fn defaults() {
        let p = parse::<&str>(&[]).unwrap();
        assert_eq!(p.args.config, PathBuf::from("/etc/hutch/hutch.toml"));
        assert_eq!(p.args.keeper, PathBuf::from(DEFAULT_KEEPER));
        assert_eq!(p.args.timeout, Duration::from_secs(30));
        assert!(!p.args.debug);
        assert_eq!(p.args.on_error, OnError::Fail);
        assert!(p.unknown.is_empty());
    }

    /// Every known argument sets its field.
    #[test]
    fn all_known() {
        let p = parse(&[
            "config=/tmp/h.toml",
            "keeper=/opt/k",
            "timeout=5",
            "debug",
            "on_error=ignore",
        ])
        .unwrap();
        assert_eq!(
            p.args,
            Args {
                config: "/tmp/h.toml".into(),
                keeper: "/opt/k".into(),
                timeout: Duration::from_secs(5),
                debug: true,
                on_error: OnError::Ignore,
            }
        );
    }

    /// Unknown words are collected, not fatal.
    #[test]
    fn unknown_ignored() {
        let p = parse(&["frobnicate", "debug", "colour=blue"]).unwrap();
        assert!(p.args.debug);
        assert_eq!(
            p.unknown,
            vec!["frobnicate".to_string(), "colour=blue".to_string()]
        );
    }

    /// A known key with a bad value is an error naming the argument.
    #[test]
    fn bad_values() {
        for word in [
            "timeout=0",
            "timeout=abc",
            "timeout=-1",
            "timeout=99999",
            "config=relative.toml",
            "config=",
            "keeper=bin/k",
            "on_error=maybe",
            "debug=1",
        ] {
            let err = parse(&[word]).unwrap_err();
            assert_eq!(err.arg, word);
        }
        assert_eq!(
            parse(&["on_error=maybe"]).unwrap_err().to_string(),
            "bad argument \"on_error=maybe\": needs fail or ignore"
        );
    }
}
