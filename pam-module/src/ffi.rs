//! The `extern "C"` side: libpam declarations, the `pam_sm_*` entry points,
//! and [`Handle`], the real [`PamOps`] over a `pam_handle_t`. Every unsafe
//! call of the module is in this file; the decisions are in `session.rs`.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use hutch_runtime::join::Session;

use crate::codes::{PAM_IGNORE, PAM_SESSION_ERR, PAM_SUCCESS};
use crate::session::{self, PamOps, Runtime};

/// `pam_handle_t`, opaque.
#[repr(C)]
pub struct PamHandleT {
    _opaque: [u8; 0],
}

type Cleanup = unsafe extern "C" fn(pamh: *mut PamHandleT, data: *mut c_void, error_status: c_int);

const PAM_SERVICE: c_int = 1;
const PAM_TTY: c_int = 3;
const PAM_RHOST: c_int = 4;
const PAM_CONV: c_int = 5;
const PAM_ERROR_MSG: c_int = 3;

/// `struct pam_message`.
#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

/// `struct pam_response`.
#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFn = unsafe extern "C" fn(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int;

/// `struct pam_conv`.
#[repr(C)]
struct PamConv {
    conv: Option<ConvFn>,
    appdata_ptr: *mut c_void,
}

/// The module-data key under which the session (a `Box<Option<Session>>`) is kept.
const DATA_KEY: &CStr = c"pam_hutch_session";

#[link(name = "pam")]
extern "C" {
    fn pam_get_user(
        pamh: *mut PamHandleT,
        user: *mut *const c_char,
        prompt: *const c_char,
    ) -> c_int;
    fn pam_get_item(pamh: *const PamHandleT, item_type: c_int, item: *mut *const c_void) -> c_int;
    fn pam_set_data(
        pamh: *mut PamHandleT,
        module_data_name: *const c_char,
        data: *mut c_void,
        cleanup: Option<Cleanup>,
    ) -> c_int;
    fn pam_get_data(
        pamh: *const PamHandleT,
        module_data_name: *const c_char,
        data: *mut *const c_void,
    ) -> c_int;
    fn pam_strerror(pamh: *mut PamHandleT, errnum: c_int) -> *const c_char;
    fn pam_syslog(pamh: *const PamHandleT, priority: c_int, fmt: *const c_char, ...);
}

/// A `pam_handle_t` for the duration of one `pam_sm_*` call.
pub struct Handle {
    pamh: *mut PamHandleT,
}

impl Handle {
    fn strerror(&self, code: c_int) -> String {
        // SAFETY: `self.pamh` is the live handle libpam passed to this call;
        // pam_strerror returns a pointer to a static (or handle-owned)
        // NUL-terminated string, or NULL, which we check before reading it
        // and copy out at once.
        unsafe {
            let s = pam_strerror(self.pamh, code);
            if s.is_null() {
                format!("PAM error {code}")
            } else {
                CStr::from_ptr(s).to_string_lossy().into_owned()
            }
        }
    }

    fn item(&self, item_type: c_int) -> Option<String> {
        let mut value: *const c_void = ptr::null();
        // SAFETY: `self.pamh` is the live handle; `value` is a valid out
        // pointer. For the string items asked for here (SERVICE, TTY, RHOST)
        // libpam stores a NUL-terminated string owned by the handle, valid
        // until the item is set again, which cannot happen while we copy it.
        unsafe {
            if pam_get_item(self.pamh, item_type, &mut value) != PAM_SUCCESS || value.is_null() {
                return None;
            }
            Some(
                CStr::from_ptr(value.cast::<c_char>())
                    .to_string_lossy()
                    .into_owned(),
            )
        }
    }
}

impl PamOps for Handle {
    fn user(&mut self) -> Result<String, String> {
        let mut user: *const c_char = ptr::null();
        // SAFETY: `self.pamh` is the live handle; `user` is a valid out
        // pointer; a NULL prompt asks libpam for its default. On success the
        // string is owned by the handle and copied out before anything else
        // can change PAM_USER.
        unsafe {
            let code = pam_get_user(self.pamh, &mut user, ptr::null());
            if code != PAM_SUCCESS {
                return Err(self.strerror(code));
            }
            if user.is_null() {
                return Err("no user name".to_string());
            }
            CStr::from_ptr(user)
                .to_str()
                .map(str::to_owned)
                .map_err(|_| "user name is not UTF-8".to_string())
        }
    }

    fn service(&self) -> Option<String> {
        self.item(PAM_SERVICE)
    }

    fn tty(&self) -> Option<String> {
        self.item(PAM_TTY)
    }

    fn rhost(&self) -> Option<String> {
        self.item(PAM_RHOST)
    }

    fn log(&self, priority: c_int, msg: &str) {
        let msg = CString::new(msg.replace('\0', "\\x00")).unwrap_or_default();
        // SAFETY: `self.pamh` is the live handle; the format is the literal
        // "%s" with exactly one matching argument, a NUL-terminated string
        // that outlives the call.
        unsafe {
            pam_syslog(
                self.pamh,
                libc::LOG_AUTHPRIV | priority,
                c"%s".as_ptr(),
                msg.as_ptr(),
            )
        }
    }

    fn tell_user(&self, msg: &str) {
        let text = CString::new(msg.replace('\0', " ")).unwrap_or_default();
        let mut conv: *const c_void = ptr::null();
        // SAFETY: `self.pamh` is the live handle; `conv` is a valid out
        // pointer. PAM_CONV is a `struct pam_conv` owned by the handle and
        // valid for this call; we check it and its function for NULL.
        let item = unsafe { pam_get_item(self.pamh, PAM_CONV, &mut conv) };
        if item != PAM_SUCCESS || conv.is_null() {
            return;
        }
        // SAFETY: non-NULL PAM_CONV points to a `struct pam_conv` (above).
        let conv = unsafe { &*conv.cast::<PamConv>() };
        let Some(f) = conv.conv else { return };
        let message = PamMessage {
            msg_style: PAM_ERROR_MSG,
            msg: text.as_ptr(),
        };
        let mut one: *const PamMessage = &message;
        let mut resp: *mut PamResponse = ptr::null_mut();
        // SAFETY: the conversation function gets one message that outlives
        // the call, and a valid out pointer for the responses, which it
        // allocates with malloc (or leaves NULL).
        let _ = unsafe { f(1, &mut one, &mut resp, conv.appdata_ptr) };
        if !resp.is_null() {
            // SAFETY: per the PAM conversation contract, `resp` is a malloc'd
            // array of one response whose `resp` string is malloc'd or NULL;
            // the module owns and frees both, once.
            unsafe {
                if !(*resp).resp.is_null() {
                    libc::free((*resp).resp.cast());
                }
                libc::free(resp.cast());
            }
        }
    }

    fn set_session(&mut self, session: Session) -> Result<(), String> {
        let slot: *mut Option<Session> = Box::into_raw(Box::new(Some(session)));
        // SAFETY: `slot` comes from Box::into_raw and is handed to libpam,
        // which gives it back only to `cleanup_session` (once, at pam_end or
        // when replaced) and to `take_session` (through pam_get_data). The
        // key is a static NUL-terminated string.
        let code = unsafe {
            pam_set_data(
                self.pamh,
                DATA_KEY.as_ptr(),
                slot.cast(),
                Some(cleanup_session),
            )
        };
        if code != PAM_SUCCESS {
            // SAFETY: libpam refused the pointer, so we still own it, once.
            drop(unsafe { Box::from_raw(slot) });
            return Err(self.strerror(code));
        }
        Ok(())
    }

    fn take_session(&mut self) -> Option<Session> {
        let mut data: *const c_void = ptr::null();
        // SAFETY: `self.pamh` is the live handle; `data` is a valid out
        // pointer; the key is a static NUL-terminated string.
        let code = unsafe { pam_get_data(self.pamh, DATA_KEY.as_ptr(), &mut data) };
        // PAM_NO_MODULE_DATA: open_session kept nothing (an exempt user).
        if code != PAM_SUCCESS || data.is_null() {
            return None;
        }
        // SAFETY: data under DATA_KEY is only ever set by `set_session`, as a
        // `Box<Option<Session>>` that libpam keeps alive until it calls
        // `cleanup_session`. libpam runs a handle's modules on one thread, one
        // at a time, so nothing else touches the slot while we take its
        // contents; the empty slot is freed later by the cleanup.
        unsafe { (*(data as *mut Option<Session>)).take() }
    }
}

/// Called by libpam at `pam_end` (also in forked children of login and su,
/// with PAM_DATA_SILENT) or when the data is replaced. It only drops the
/// session: that closes this process's copy of the keeper connection and
/// sends nothing, so a child's pam_end cannot end the parent's session.
unsafe extern "C" fn cleanup_session(
    _pamh: *mut PamHandleT,
    data: *mut c_void,
    _error_status: c_int,
) {
    if data.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `data` is the pointer `set_session` made with
        // Box::into_raw; libpam calls this cleanup exactly once per pointer.
        drop(unsafe { Box::from_raw(data.cast::<Option<Session>>()) });
    }));
}

/// The module's arguments as strings (lossy for non-UTF-8 bytes).
///
/// # Safety
/// `argv` must point to `argc` valid NUL-terminated strings (as libpam passes).
unsafe fn arguments(argc: c_int, argv: *const *const c_char) -> Vec<String> {
    if argv.is_null() || argc <= 0 {
        return Vec::new();
    }
    (0..argc as usize)
        .filter_map(|i| {
            // SAFETY: i < argc, and the caller guarantees argv has argc
            // entries, each NULL or a NUL-terminated string.
            let p = unsafe { *argv.add(i) };
            // SAFETY: non-NULL entries are NUL-terminated strings (above).
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        })
        .collect()
}

/// Runs `body` with the handle and arguments; any panic (even one while
/// setting up) becomes PAM_SESSION_ERR.
///
/// # Safety
/// `pamh`, `argc` and `argv` must be what libpam passed to a `pam_sm_*` call.
unsafe fn entry(
    pamh: *mut PamHandleT,
    argc: c_int,
    argv: *const *const c_char,
    name: &str,
    body: fn(&mut Handle, &[String]) -> c_int,
) -> c_int {
    if pamh.is_null() {
        return PAM_SESSION_ERR;
    }
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: forwarded from this function's own contract.
        let words = unsafe { arguments(argc, argv) };
        let mut handle = Handle { pamh };
        session::guarded(&mut handle, name, |h| body(h, &words))
    }))
    .unwrap_or(PAM_SESSION_ERR)
}

/// # Safety
/// Called by libpam with its handle and the service line's arguments.
#[no_mangle]
pub unsafe extern "C" fn pam_sm_open_session(
    pamh: *mut PamHandleT,
    _flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: libpam passes its live handle and the line's arguments.
    unsafe {
        entry(pamh, argc, argv, "open_session", |h, w| {
            session::open_session(h, w, &Runtime)
        })
    }
}

/// # Safety
/// Called by libpam with its handle and the service line's arguments.
#[no_mangle]
pub unsafe extern "C" fn pam_sm_close_session(
    pamh: *mut PamHandleT,
    _flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: libpam passes its live handle and the line's arguments.
    unsafe {
        entry(pamh, argc, argv, "close_session", |h, w| {
            session::close_session(h, w, &Runtime)
        })
    }
}

/// Not an auth module: PAM_IGNORE.
#[no_mangle]
pub extern "C" fn pam_sm_authenticate(
    _: *mut PamHandleT,
    _: c_int,
    _: c_int,
    _: *const *const c_char,
) -> c_int {
    PAM_IGNORE
}

/// Not an auth module: PAM_IGNORE.
#[no_mangle]
pub extern "C" fn pam_sm_setcred(
    _: *mut PamHandleT,
    _: c_int,
    _: c_int,
    _: *const *const c_char,
) -> c_int {
    PAM_IGNORE
}

/// Not an account module: PAM_IGNORE.
#[no_mangle]
pub extern "C" fn pam_sm_acct_mgmt(
    _: *mut PamHandleT,
    _: c_int,
    _: c_int,
    _: *const *const c_char,
) -> c_int {
    PAM_IGNORE
}

/// Not a password module: PAM_IGNORE.
#[no_mangle]
pub extern "C" fn pam_sm_chauthtok(
    _: *mut PamHandleT,
    _: c_int,
    _: c_int,
    _: *const *const c_char,
) -> c_int {
    PAM_IGNORE
}
