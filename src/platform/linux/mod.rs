//! The platform on a real dom0: `/dev/xen/gntdev` for grants, `/dev/xen/evtchn` for event
//! channels, through libc ioctls and mmap with the ABI of Linux's uapi headers ([`abi`]).

mod abi;
mod evtchn;
mod gntdev;

pub use evtchn::Evtchn;
pub use gntdev::{Gntdev, GntdevMapping};

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A real dom0: every handle is a new open of the Xen devices.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinuxPlatform;

impl crate::platform::Platform for LinuxPlatform {
    type Grants = Gntdev;
    type Events = Evtchn;
    type Error = OpenError;

    fn grants(&self) -> Result<Gntdev, OpenError> {
        Gntdev::open()
    }

    fn event_channel(&self) -> Result<Evtchn, OpenError> {
        Evtchn::open()
    }
}

/// Path of the grant device.
pub const GNTDEV_PATH: &str = "/dev/xen/gntdev";
/// Path of the event-channel device.
pub const EVTCHN_PATH: &str = "/dev/xen/evtchn";

/// A Xen device could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open {}: {source}{}", path.display(), hint(source))]
pub struct OpenError {
    /// The device that failed to open.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

fn hint(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::NotFound => {
            " (not running on a Xen dom0, or the xen-gntdev/xen-evtchn modules are not loaded)"
        }
        _ => "",
    }
}

/// Opens a device read-write, close-on-exec, with extra `flags`.
fn open_device(path: &Path, flags: libc::c_int) -> Result<OwnedFd, OpenError> {
    let fail = |source| OpenError {
        path: path.to_path_buf(),
        source,
    };
    let c_path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| fail(io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: `c_path` is a valid nul-terminated string that outlives the call.
    let fd = unsafe { libc::open(c_path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC | flags) };
    if fd < 0 {
        return Err(fail(io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by open(2) and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_device_is_a_typed_error_naming_it() {
        let err = open_device(Path::new("/dev/xen/no-such-device"), 0).unwrap_err();
        assert_eq!(err.path, Path::new("/dev/xen/no-such-device"));
        assert_eq!(err.source.kind(), io::ErrorKind::NotFound);
        let text = err.to_string();
        assert!(text.contains("/dev/xen/no-such-device"), "{text}");
        assert!(text.contains("dom0"), "{text}");
    }
}
