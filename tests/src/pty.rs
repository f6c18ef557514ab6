//! `PtySession`: a program driven through a pseudo-terminal that is its
//! controlling tty (via `setsid --ctty`), like a person at a terminal.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Buf {
    data: Mutex<(Vec<u8>, bool)>, // output so far, reader finished
    cv: Condvar,
}

/// A child running on a fresh pty. Everything it writes is collected;
/// `send` types into it. Killed (by pid) on Drop if still running.
pub struct PtySession {
    master: File,
    /// The slave's path (`/dev/pts/N`), to read its modes.
    slave_path: std::path::PathBuf,
    child: Child,
    buf: Arc<Buf>,
    reader: Option<JoinHandle<()>>,
}

impl PtySession {
    /// Starts `cmd` (program and arguments) as `setsid --ctty cmd...` with
    /// stdin, stdout and stderr on a new pty's slave side.
    pub fn spawn(cmd: &[String]) -> PtySession {
        let ws = nix::pty::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(&ws, None).expect("openpty");
        let slave = File::from(pty.slave);
        let slave_path = std::fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd()))
            .expect("the pty slave's path");
        let child = Command::new("setsid")
            .args(["-w", "--ctty"])
            .args(cmd)
            .stdin(Stdio::from(slave.try_clone().expect("dup")))
            .stdout(Stdio::from(slave.try_clone().expect("dup")))
            .stderr(Stdio::from(slave))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let master = File::from(pty.master);
        let mut rd = master.try_clone().expect("dup master");
        let buf = Arc::new(Buf::default());
        let b = buf.clone();
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            loop {
                match rd.read(&mut chunk) {
                    Ok(0) | Err(_) => break, // EIO once every slave fd is closed
                    Ok(n) => {
                        b.data.lock().unwrap().0.extend_from_slice(&chunk[..n]);
                        b.cv.notify_all();
                    }
                }
            }
            b.data.lock().unwrap().1 = true;
            b.cv.notify_all();
        });
        PtySession {
            master,
            slave_path,
            child,
            buf,
            reader: Some(reader),
        }
    }

    /// Types `s` into the terminal.
    pub fn send(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).expect("write to pty");
    }

    /// Everything the program wrote so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.buf.data.lock().unwrap().0).into_owned()
    }

    /// Waits until the output contains `needle`; returns the output so far,
    /// or None on timeout or when the program closed the terminal first.
    pub fn expect(&self, needle: &str, timeout: Duration) -> Option<String> {
        let end = Instant::now() + timeout;
        let mut g = self.buf.data.lock().unwrap();
        loop {
            let s = String::from_utf8_lossy(&g.0);
            if s.contains(needle) {
                return Some(s.into_owned());
            }
            let now = Instant::now();
            if g.1 || now >= end {
                return None;
            }
            g = self.buf.cv.wait_timeout(g, end - now).unwrap().0;
        }
    }

    /// Waits (bounded) for the program to exit; returns its exit code (None
    /// if killed by a signal or still running at the timeout, then killed)
    /// and all of its output.
    pub fn wait(mut self, timeout: Duration) -> (Option<i32>, String) {
        let end = Instant::now() + timeout;
        let code = loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                break st.code();
            }
            if Instant::now() >= end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader ends at EIO once the last slave fd is closed; give
        // stragglers (the pty's grandchildren) a moment, then stop waiting.
        let g = self.buf.data.lock().unwrap();
        let _ = self
            .buf
            .cv
            .wait_timeout_while(g, Duration::from_secs(2), |d| !d.1);
        (code, self.output())
    }

    /// Waits (bounded) for the program to exit, keeping the terminal: what
    /// is written to it afterwards is still collected. Returns the exit
    /// code (None: killed by a signal, or still running at the timeout).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st.code();
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Changes the terminal's window size (the kernel signals SIGWINCH to
    /// its foreground process group).
    pub fn resize(&self, rows: u16, cols: u16) {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        hutch_runtime::sys::set_winsize(self.master.as_fd(), &ws).expect("TIOCSWINSZ");
    }

    /// The terminal's current modes (read through the slave's path).
    pub fn modes(&self) -> nix::sys::termios::Termios {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&self.slave_path)
            .expect("open the pty slave");
        nix::sys::termios::tcgetattr(&f).expect("tcgetattr")
    }

    /// The child's pid (that of `setsid`, which execs the program).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for PtySession {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // The reader thread is detached: it ends when the master sees EIO.
        drop(self.reader.take());
    }
}
