//! Event channels through /dev/xen/evtchn.

use super::abi::{
    EvtchnBindInterdomain, EvtchnPortArg, IOCTL_EVTCHN_BIND_INTERDOMAIN, IOCTL_EVTCHN_NOTIFY,
    IOCTL_EVTCHN_RESET, IOCTL_EVTCHN_UNBIND,
};
use super::{open_device, OpenError, EVTCHN_PATH};
use crate::platform::{DomId, EventChannel, EvtchnError, Port};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

/// evtchn reads and writes at most one page of ports per call.
const CHUNK_PORTS: usize = 4096 / 4;

/// An open /dev/xen/evtchn, non-blocking.
#[derive(Debug)]
pub struct Evtchn {
    fd: OwnedFd,
}

impl Evtchn {
    /// Opens /dev/xen/evtchn.
    pub fn open() -> Result<Self, OpenError> {
        Ok(Evtchn {
            fd: open_device(Path::new(EVTCHN_PATH), libc::O_NONBLOCK)?,
        })
    }

    /// Runs an ioctl whose argument is `arg`; returns its non-negative result.
    fn ioctl<T>(&self, op: &'static str, request: u32, arg: &mut T) -> Result<u32, EvtchnError> {
        // SAFETY: every caller passes the argument struct that `request` is defined with in
        // include/uapi/xen/evtchn.h (see abi.rs); it lives for the call.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), request as libc::Ioctl, arg) };
        if rc < 0 {
            return Err(errno_error(op, io::Error::last_os_error()));
        }
        Ok(rc as u32)
    }
}

/// Names evtchn's errnos (drivers/xen/evtchn.c) as typed errors.
fn errno_error(op: &'static str, err: io::Error) -> EvtchnError {
    match err.raw_os_error() {
        Some(libc::ENOSPC) => EvtchnError::NoFreePort,
        Some(libc::EFBIG) => EvtchnError::Overflow,
        _ => EvtchnError::from_io(op, &err),
    }
}

impl AsFd for Evtchn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Evtchn {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl EventChannel for Evtchn {
    fn bind_interdomain(&mut self, remote: DomId, remote_port: Port) -> Result<Port, EvtchnError> {
        let mut arg = EvtchnBindInterdomain {
            remote_domain: u32::from(remote.0),
            remote_port: remote_port.0,
        };
        self.ioctl(
            "IOCTL_EVTCHN_BIND_INTERDOMAIN",
            IOCTL_EVTCHN_BIND_INTERDOMAIN,
            &mut arg,
        )
        .map(Port)
    }

    fn unbind(&mut self, port: Port) -> Result<(), EvtchnError> {
        let mut arg = EvtchnPortArg { port: port.0 };
        self.ioctl("IOCTL_EVTCHN_UNBIND", IOCTL_EVTCHN_UNBIND, &mut arg)
            .map_err(|err| not_bound(err, port))
            .map(drop)
    }

    fn notify(&mut self, port: Port) -> Result<(), EvtchnError> {
        let mut arg = EvtchnPortArg { port: port.0 };
        self.ioctl("IOCTL_EVTCHN_NOTIFY", IOCTL_EVTCHN_NOTIFY, &mut arg)
            .map_err(|err| not_bound(err, port))
            .map(drop)
    }

    fn read_pending(&mut self, out: &mut Vec<Port>) -> Result<(), EvtchnError> {
        let mut buf = [0u32; CHUNK_PORTS];
        loop {
            // SAFETY: `buf` is writable for its whole byte length.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    std::mem::size_of_val(&buf),
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                return match err.raw_os_error() {
                    Some(libc::EAGAIN) => Ok(()),
                    Some(libc::EINTR) => continue,
                    Some(libc::EFBIG) => {
                        // Clear the overflow so the fd works again; the caller re-checks
                        // every port, since some events were lost.
                        self.ioctl("IOCTL_EVTCHN_RESET", IOCTL_EVTCHN_RESET, &mut ())?;
                        Err(EvtchnError::Overflow)
                    }
                    _ => Err(EvtchnError::from_io("read of /dev/xen/evtchn", &err)),
                };
            }
            let ports = n as usize / 4;
            out.extend(buf[..ports].iter().map(|&p| Port(p)));
            if n == 0 {
                return Ok(());
            }
        }
    }

    fn unmask(&mut self, ports: &[Port]) -> Result<(), EvtchnError> {
        let mut words = [0u32; CHUNK_PORTS];
        for chunk in ports.chunks(CHUNK_PORTS) {
            for (word, port) in words.iter_mut().zip(chunk) {
                *word = port.0;
            }
            let len = std::mem::size_of_val(&words[..chunk.len()]);
            // SAFETY: `words` is readable for `len` bytes.
            let n = unsafe { libc::write(self.fd.as_raw_fd(), words.as_ptr().cast(), len) };
            if n < 0 {
                return Err(EvtchnError::last_os("write (unmask) to /dev/xen/evtchn"));
            }
        }
        Ok(())
    }
}

/// evtchn answers ENOTCONN for a port not bound through this fd.
fn not_bound(err: EvtchnError, port: Port) -> EvtchnError {
    match err {
        EvtchnError::Os {
            errno: libc::ENOTCONN,
            ..
        } => EvtchnError::NotBound { port },
        EvtchnError::Os {
            errno: libc::EINVAL,
            ..
        } => EvtchnError::BadPort { port },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    /// An Evtchn whose "device" is one end of a socket pair: the test plays the kernel.
    fn with_fake_device() -> (Evtchn, UnixStream) {
        let (ours, kernel) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        (Evtchn { fd: ours.into() }, kernel)
    }

    #[test]
    fn pending_ports_are_read_as_u32s_until_none_is_left() {
        let (mut evtchn, mut kernel) = with_fake_device();
        let mut out = Vec::new();
        evtchn.read_pending(&mut out).unwrap();
        assert!(out.is_empty(), "EAGAIN means nothing pending");

        let bytes: Vec<u8> = [5u32, 9, 4095]
            .iter()
            .flat_map(|p| p.to_ne_bytes())
            .collect();
        kernel.write_all(&bytes).unwrap();
        evtchn.read_pending(&mut out).unwrap();
        assert_eq!(out, [Port(5), Port(9), Port(4095)]);
    }

    #[test]
    fn unmask_writes_the_ports_as_u32s() {
        let (mut evtchn, mut kernel) = with_fake_device();
        evtchn.unmask(&[Port(7), Port(8)]).unwrap();
        let mut bytes = [0u8; 8];
        kernel.read_exact(&mut bytes).unwrap();
        assert_eq!(bytes[..4], 7u32.to_ne_bytes());
        assert_eq!(bytes[4..], 8u32.to_ne_bytes());
    }

    #[test]
    fn errnos_become_typed_errors() {
        let os = |errno| EvtchnError::Os { op: "x", errno };
        assert_eq!(
            not_bound(os(libc::ENOTCONN), Port(7)),
            EvtchnError::NotBound { port: Port(7) }
        );
        assert_eq!(
            not_bound(os(libc::EINVAL), Port(7)),
            EvtchnError::BadPort { port: Port(7) }
        );
        assert_eq!(
            errno_error("x", io::Error::from_raw_os_error(libc::EFBIG)),
            EvtchnError::Overflow
        );
    }
}
