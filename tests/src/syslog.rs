//! `Syslog`: a datagram socket that collects what is sent to it, to be bound
//! at `/dev/log` inside a private mount namespace.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Shared {
    lines: Mutex<Vec<String>>,
    cv: Condvar,
    stop: AtomicBool,
}

/// A syslog catcher: every datagram received at `path` becomes one line
/// (trailing NUL/newline stripped, the `<PRI>` prefix kept). The socket is
/// mode 0666 so confined users' processes can log too. Removed on Drop.
pub struct Syslog {
    path: PathBuf,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Syslog {
    /// Binds a datagram socket at `path` and starts collecting.
    pub fn bind(path: impl AsRef<Path>) -> Syslog {
        let path = path.as_ref().to_path_buf();
        let sock = UnixDatagram::bind(&path)
            .unwrap_or_else(|e| panic!("binding syslog socket {}: {e}", path.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set_read_timeout");
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !sh.stop.load(Ordering::Relaxed) {
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        let line = String::from_utf8_lossy(&buf[..n])
                            .trim_end_matches(['\0', '\n'])
                            .to_string();
                        sh.lines.lock().unwrap().push(line);
                        sh.cv.notify_all();
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => {
                        eprintln!("syslog catcher: {e}");
                        return;
                    }
                }
            }
        });
        Syslog {
            path,
            shared,
            thread: Some(thread),
        }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every line received so far.
    pub fn lines(&self) -> Vec<String> {
        self.shared.lines.lock().unwrap().clone()
    }

    /// True when a line received so far contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.shared
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }

    /// The first line (received so far or within `timeout`) for which `pred`
    /// holds.
    pub fn wait_for(
        &self,
        mut pred: impl FnMut(&str) -> bool,
        timeout: Duration,
    ) -> Option<String> {
        let end = Instant::now() + timeout;
        let mut lines = self.shared.lines.lock().unwrap();
        loop {
            if let Some(l) = lines.iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if now >= end {
                return None;
            }
            lines = self.shared.cv.wait_timeout(lines, end - now).unwrap().0;
        }
    }

    /// `wait_for` a line containing `needle`.
    pub fn wait_for_substr(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_for(|l| l.contains(needle), timeout)
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
