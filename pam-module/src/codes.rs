//! The Linux-PAM return codes the module uses (`<security/_pam_types.h>`).

use std::os::raw::c_int;

pub const PAM_SUCCESS: c_int = 0;
pub const PAM_SERVICE_ERR: c_int = 3;
pub const PAM_SESSION_ERR: c_int = 14;
pub const PAM_IGNORE: c_int = 25;
