//! pam_hutch
