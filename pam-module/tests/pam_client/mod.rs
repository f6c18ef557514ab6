//! A minimal PAM application over `pam_start_confdir` (Linux-PAM >= 1.4):
//! runs a service file from a test directory, so tests never touch
//! /etc/pam.d and need neither pamtester nor bwrap.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CString};
use std::path::{Path, PathBuf};
use std::ptr;

pub const PAM_SUCCESS: c_int = 0;
pub const PAM_SERVICE_ERR: c_int = 3;
const PAM_CONV_ERR: c_int = 19;

#[repr(C)]
struct PamConv {
    conv: extern "C" fn(c_int, *const *const c_void, *mut *mut c_void, *mut c_void) -> c_int,
    appdata_ptr: *mut c_void,
}

#[link(name = "pam")]
extern "C" {
    fn pam_start_confdir(
        service: *const c_char,
        user: *const c_char,
        conv: *const PamConv,
        confdir: *const c_char,
        pamh: *mut *mut c_void,
    ) -> c_int;
    fn pam_open_session(pamh: *mut c_void, flags: c_int) -> c_int;
    fn pam_close_session(pamh: *mut c_void, flags: c_int) -> c_int;
    fn pam_end(pamh: *mut c_void, status: c_int) -> c_int;
}

/// No conversation: a session module must never prompt.
extern "C" fn no_conv(
    _: c_int,
    _: *const *const c_void,
    _: *mut *mut c_void,
    _: *mut c_void,
) -> c_int {
    PAM_CONV_ERR
}

/// The built `libpam_hutch.so`, next to the test binary's `deps/` directory.
pub fn module_path() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("deps dir");
    for dir in [deps.parent().expect("target dir"), deps] {
        let so = dir.join("libpam_hutch.so");
        if so.exists() {
            return so;
        }
    }
    panic!("libpam_hutch.so not found next to {}", exe.display());
}

/// A PAM transaction for `user` through service `service` in `confdir`.
pub struct Transaction {
    pamh: *mut c_void,
    last: c_int,
    _conv: Box<PamConv>,
}

impl Transaction {
    pub fn start(confdir: &Path, service: &str, user: &str) -> Transaction {
        let conv = Box::new(PamConv {
            conv: no_conv,
            appdata_ptr: ptr::null_mut(),
        });
        let (service, user) = (CString::new(service).unwrap(), CString::new(user).unwrap());
        let confdir = CString::new(confdir.as_os_str().as_encoded_bytes()).unwrap();
        let mut pamh = ptr::null_mut();
        // SAFETY: all strings are NUL-terminated and outlive the call; `conv`
        // is boxed and kept in the Transaction, which outlives the handle
        // (pam_end in Drop); `pamh` is a valid out pointer.
        let code = unsafe {
            pam_start_confdir(
                service.as_ptr(),
                user.as_ptr(),
                &*conv,
                confdir.as_ptr(),
                &mut pamh,
            )
        };
        assert_eq!(code, PAM_SUCCESS, "pam_start_confdir");
        Transaction {
            pamh,
            last: PAM_SUCCESS,
            _conv: conv,
        }
    }

    pub fn open_session(&mut self) -> c_int {
        // SAFETY: `pamh` is the live handle from pam_start_confdir.
        self.last = unsafe { pam_open_session(self.pamh, 0) };
        self.last
    }

    pub fn close_session(&mut self) -> c_int {
        // SAFETY: `pamh` is the live handle from pam_start_confdir.
        self.last = unsafe { pam_close_session(self.pamh, 0) };
        self.last
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        // SAFETY: `pamh` is live and ended exactly once, here.
        unsafe { pam_end(self.pamh, self.last) };
    }
}
