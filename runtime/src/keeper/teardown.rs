//! The keeper's teardown: everything in the container killed, the cgroup,
//! network, state and template generation released, the init reaped.

use std::fs::{self, File};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::waitpid;

use super::audit::Ended;
use super::{lock_user, Keeper};
use crate::error::chain;
use crate::ns::Namespace;
use crate::sys;

impl Keeper {
    /// Tears down if no session came in meanwhile. Holds the user's lock so
    /// that a login racing with the teardown waits, then starts afresh.
    pub(super) fn try_teardown(&mut self, why: &str) -> bool {
        let lock = match lock_user(&self.paths.lock(), false) {
            Ok(Some(l)) => l,
            Ok(None) => return false, // a module holds it: it is about to connect
            Err(_) => {
                self.teardown(why);
                return true;
            }
        };
        // Serve whatever is already queued on the socket.
        if let Some(l) = &self.listener {
            let _ = l.set_nonblocking(true);
        }
        loop {
            let accepted = self.listener.as_ref().and_then(|l| l.accept().ok());
            match accepted {
                Some((c, _)) => {
                    if let Some(stop) = self.handle(c) {
                        self.teardown_locked(&stop, lock);
                        return true;
                    }
                }
                None => break,
            }
        }
        if let Some(l) = &self.listener {
            let _ = l.set_nonblocking(false);
        }
        if !self.sessions.is_empty() {
            return false;
        }
        self.teardown_locked(why, lock);
        true
    }

    pub(super) fn teardown(&mut self, why: &str) {
        let lock = lock_user(&self.paths.lock(), true).ok().flatten();
        match lock {
            Some(l) => self.teardown_locked(why, l),
            None => {
                self.destroy(why);
                self.reap();
            }
        }
    }

    fn teardown_locked(&mut self, why: &str, lock: File) {
        self.destroy(why);
        let _ = fs::remove_file(self.paths.lock());
        drop(lock);
        let _ = fs::remove_dir(&self.paths.dir);
        self.reap();
    }

    /// Waits for the init, after everything else (and the user's lock) is
    /// released: the kernel's teardown of the container's namespaces can take
    /// a while, and no login waits for it.
    fn reap(&mut self) {
        let started = Instant::now();
        let _ = waitpid(self.container.init, None);
        sys::syslog(
            libc::LOG_DEBUG,
            &format!(
                "{}: init reaped after {:.1} ms",
                self.account.name,
                started.elapsed().as_secs_f64() * 1000.0
            ),
        );
    }

    /// Kills everything, removes cgroup, socket, state.
    fn destroy(&mut self, why: &str) {
        let started = Instant::now();
        let _ = fs::remove_file(self.paths.socket());
        self.listener = None;
        self.log = None;
        self.status = None;
        for s in self.sessions.iter() {
            self.audit_session_close(s, Ended::Teardown(why));
        }
        self.sessions.clear();
        if let Err(e) = self.cgroup.kill_all() {
            sys::syslog(
                libc::LOG_WARNING,
                &format!(
                    "{}: killing the container: {}",
                    self.account.name,
                    chain(&e)
                ),
            );
            let _ = nix::sys::signal::kill(self.container.init, Signal::SIGKILL);
        }
        let killed = started.elapsed();
        // The final counters, while the (now empty) group is still there.
        let last = self.cgroup.stats().ok();
        self.leaf_procs = None;
        let mut removed = self.cgroup.remove();
        for _ in 0..20 {
            if removed.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            let _ = self.cgroup.kill_all();
            removed = self.cgroup.remove();
        }
        if let Err(e) = removed {
            sys::syslog(
                libc::LOG_WARNING,
                &format!("{}: removing the cgroup: {}", self.account.name, chain(&e)),
            );
        }
        if let Some(n) = self.net.take() {
            let netns = self.container.namespaces.get(Namespace::Net);
            for e in n.release(Some(netns)) {
                sys::syslog(libc::LOG_WARNING, &format!("{}: {e}", self.account.name));
            }
        }
        let _ = fs::remove_file(self.paths.state());
        let _ = fs::remove_dir(self.paths.staging());
        // An older generation goes with the last container on it.
        match self
            .store
            .release(&self.state.template, self.state.generation)
        {
            Ok(true) => sys::syslog(
                libc::LOG_INFO,
                &format!(
                    "{}: template {} generation {} unloaded (its last container is gone)",
                    self.account.name, self.state.template, self.state.generation
                ),
            ),
            Ok(false) => {}
            Err(e) => sys::syslog(
                libc::LOG_WARNING,
                &format!(
                    "{}: releasing the template generation: {}",
                    self.account.name,
                    chain(&e)
                ),
            ),
        }
        self.audit_container_stop(why, last.as_ref());
        sys::syslog(
            libc::LOG_INFO,
            &format!(
                "{}: container torn down ({why}) in {:.1} ms (kill {:.1} ms)",
                self.account.name,
                started.elapsed().as_secs_f64() * 1000.0,
                killed.as_secs_f64() * 1000.0
            ),
        );
    }
}
