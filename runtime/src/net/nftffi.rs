//! The libnftables FFI: the library, a context, one command buffer, the
//! error text. Fenced like `crate::sys`: the only unsafe code of `net`.
//!
//! The library is loaded with `dlopen` for each batch and unloaded after
//! it, not linked: a keeper runs for as long as its user is logged in, and
//! only the network set-up and release need nftables. Linked, every
//! keeper (and the container's init, cloned from it) paid for loading
//! libnftables and its five libraries at exec (libmnl, libnftnl,
//! libxtables, libjansson, libgmp) and kept their relocated data and page
//! tables for its whole life; a `network = "none"` keeper never loads it
//! now. The library is found by its soname through the host's loader
//! cache, as a `DT_NEEDED` entry would be: the keeper runs in the host's
//! mount namespace (never the container's) with the environment its
//! starter gave it, so nothing of the user's is on the search path.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};

/// The library's soname (Debian's package: libnftables1).
pub const LIBRARY: &str = "libnftables.so.1";

type CtxNew = unsafe extern "C" fn(c_uint) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type CtxSet = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxGetError = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

/// The loaded library and the functions hutch calls; unloaded on drop.
pub struct Nft {
    handle: *mut c_void,
    ctx_new: CtxNew,
    ctx_free: CtxFree,
    buffer_output: CtxSet,
    buffer_error: CtxSet,
    get_error_buffer: CtxGetError,
    run_cmd: RunCmd,
}

/// The last `dlerror` text of this thread.
fn dl_error() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string valid until
    // the next dl call of this thread; it is copied at once.
    unsafe {
        let p = libc::dlerror();
        if p.is_null() {
            "unknown error".into()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

impl Nft {
    /// Loads libnftables. The error names the library and the package.
    pub fn load() -> Result<Nft, String> {
        Nft::load_named(LIBRARY)
    }

    fn load_named(soname: &str) -> Result<Nft, String> {
        let name = CString::new(soname).map_err(|_| format!("bad library name {soname:?}"))?;
        // SAFETY: `name` is a NUL-terminated string; a null result is checked.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            return Err(format!(
                "cannot load {soname} (nftables' library, Debian package libnftables1; \
                 the per-user firewall needs it): {}",
                dl_error()
            ));
        }
        /// Resolves one symbol or gives the library back.
        fn sym(handle: *mut c_void, soname: &str, name: &CStr) -> Result<*mut c_void, String> {
            // SAFETY: handle is a live dlopen handle; name is NUL-terminated.
            let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
            if p.is_null() {
                return Err(format!(
                    "{soname} has no {}: {}",
                    name.to_string_lossy(),
                    dl_error()
                ));
            }
            Ok(p)
        }
        let syms = (|| {
            Ok::<_, String>([
                sym(handle, soname, c"nft_ctx_new")?,
                sym(handle, soname, c"nft_ctx_free")?,
                sym(handle, soname, c"nft_ctx_buffer_output")?,
                sym(handle, soname, c"nft_ctx_buffer_error")?,
                sym(handle, soname, c"nft_ctx_get_error_buffer")?,
                sym(handle, soname, c"nft_run_cmd_from_buffer")?,
            ])
        })();
        let syms = match syms {
            Ok(s) => s,
            Err(e) => {
                // SAFETY: handle is live and nothing of it is in use.
                unsafe { libc::dlclose(handle) };
                return Err(e);
            }
        };
        // SAFETY: each pointer is the library's function of that name, whose
        // C prototype (libnftables.h, stable since 0.9) the type spells out.
        unsafe {
            Ok(Nft {
                handle,
                ctx_new: std::mem::transmute::<*mut c_void, CtxNew>(syms[0]),
                ctx_free: std::mem::transmute::<*mut c_void, CtxFree>(syms[1]),
                buffer_output: std::mem::transmute::<*mut c_void, CtxSet>(syms[2]),
                buffer_error: std::mem::transmute::<*mut c_void, CtxSet>(syms[3]),
                get_error_buffer: std::mem::transmute::<*mut c_void, CtxGetError>(syms[4]),
                run_cmd: std::mem::transmute::<*mut c_void, RunCmd>(syms[5]),
            })
        }
    }

    /// Runs `script` (nft syntax) as one batch in the calling thread's
    /// network namespace. The error is libnftables' own text.
    pub fn run(&self, script: &str) -> Result<(), String> {
        let buf = CString::new(script).map_err(|_| "nft script holds a NUL byte".to_string())?;
        // SAFETY: NFT_CTX_DEFAULT (0) takes no pointers; a null result is checked.
        let raw = unsafe { (self.ctx_new)(0) };
        if raw.is_null() {
            return Err("nft_ctx_new failed".into());
        }
        let ctx = Ctx { nft: self, raw };
        // SAFETY: ctx.raw is a live context; buffering only changes where output goes.
        unsafe {
            (self.buffer_output)(ctx.raw);
            (self.buffer_error)(ctx.raw);
        }
        // SAFETY: ctx.raw is live and `buf` is a NUL-terminated string that outlives the call.
        let rc = unsafe { (self.run_cmd)(ctx.raw, buf.as_ptr()) };
        if rc == 0 {
            return Ok(());
        }
        // SAFETY: with error buffering on, the context returns a NUL-terminated
        // string it owns until the next call or free; it is copied before `ctx` drops.
        let err = unsafe {
            let p = (self.get_error_buffer)(ctx.raw);
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        Err(format!("nft: {}", err.trim()))
    }
}

impl Drop for Nft {
    fn drop(&mut self) {
        // SAFETY: the handle came from dlopen and is closed once; every
        // context made through it was freed (`Ctx` borrows `self`), and no
        // pointer into the library outlives this value.
        unsafe { libc::dlclose(self.handle) };
    }
}

/// A libnftables context, freed on drop (before its library is unloaded:
/// it borrows it).
struct Ctx<'a> {
    nft: &'a Nft,
    raw: *mut c_void,
}

impl Drop for Ctx<'_> {
    fn drop(&mut self) {
        // SAFETY: self.raw came from nft_ctx_new, is non-null, and is freed once here.
        unsafe { (self.nft.ctx_free)(self.raw) }
    }
}

/// Loads the library, runs `script` as one batch, unloads it.
pub fn run(script: &str) -> Result<(), String> {
    Nft::load()?.run(script)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A missing library is an error naming it and its package (fail closed:
    /// a veth user's network set-up stops there).
    #[test]
    fn missing_library_is_named() {
        let err = match Nft::load_named("libnftables-hutch-missing.so.1") {
            Ok(_) => panic!("a missing library loaded"),
            Err(e) => e,
        };
        assert!(err.contains("libnftables-hutch-missing.so.1"), "{err}");
        assert!(err.contains("libnftables1"), "{err}");
    }

    /// The library loads and resolves every function hutch calls (the
    /// build machine has it: scripts/deps.sh), and unloading it leaves
    /// nothing mapped.
    #[test]
    fn loads_and_unloads() {
        let maps = || std::fs::read_to_string("/proc/self/maps").unwrap();
        drop(Nft::load().unwrap());
        assert!(!maps().contains("libnftables"), "{}", maps());
    }
}
