//! The libnftables FFI: a context, one command buffer, the error text.
//! Fenced like `crate::sys`: the only unsafe code of `net`.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};

#[link(name = "nftables")]
extern "C" {
    fn nft_ctx_new(flags: c_uint) -> *mut c_void;
    fn nft_ctx_free(ctx: *mut c_void);
    fn nft_ctx_buffer_output(ctx: *mut c_void) -> c_int;
    fn nft_ctx_buffer_error(ctx: *mut c_void) -> c_int;
    fn nft_ctx_get_error_buffer(ctx: *mut c_void) -> *const c_char;
    fn nft_run_cmd_from_buffer(ctx: *mut c_void, buf: *const c_char) -> c_int;
}

/// A libnftables context, freed on drop.
struct Ctx(*mut c_void);

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: self.0 came from nft_ctx_new, is non-null, and is freed once here.
        unsafe { nft_ctx_free(self.0) }
    }
}

/// Runs `script` (nft syntax) as one batch in the caller's network
/// namespace. The error is libnftables' own text.
pub fn run(script: &str) -> Result<(), String> {
    let buf = CString::new(script).map_err(|_| "nft script holds a NUL byte".to_string())?;
    // SAFETY: NFT_CTX_DEFAULT (0) takes no pointers; a null result is checked.
    let raw = unsafe { nft_ctx_new(0) };
    if raw.is_null() {
        return Err("nft_ctx_new failed".into());
    }
    let ctx = Ctx(raw);
    // SAFETY: ctx.0 is a live context; buffering only changes where output goes.
    unsafe {
        nft_ctx_buffer_output(ctx.0);
        nft_ctx_buffer_error(ctx.0);
    }
    // SAFETY: ctx.0 is live and `buf` is a NUL-terminated string that outlives the call.
    let rc = unsafe { nft_run_cmd_from_buffer(ctx.0, buf.as_ptr()) };
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: with error buffering on, the context returns a NUL-terminated
    // string it owns until the next call or free; it is copied before `ctx` drops.
    let err = unsafe {
        let p = nft_ctx_get_error_buffer(ctx.0);
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    Err(format!("nft: {}", err.trim()))
}
