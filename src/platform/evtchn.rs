//! Event channels: a back end's interdomain ports and the fd that reports them.

use super::{DomId, Port};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

/// Why an event-channel operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EvtchnError {
    /// The port is not bound through this handle (Linux: `ENOTCONN`).
    #[error("{port} is not bound through this handle")]
    NotBound { port: Port },
    /// The port number is out of range (Linux: `EINVAL`).
    #[error("{port} is out of range")]
    BadPort { port: Port },
    /// The remote domain does not exist (Xen: `ESRCH`).
    #[error("{domid} does not exist")]
    BadDomain { domid: DomId },
    /// The remote port is not an unbound port offered to us.
    #[error("{port} of {domid} is not an unbound port for us")]
    NotOffered { domid: DomId, port: Port },
    /// No free port left (Xen: `ENOSPC`).
    #[error("no free event-channel port")]
    NoFreePort,
    /// More events arrived than the handle could queue (Linux: `EFBIG`); the handle must be
    /// reset and every port re-checked.
    #[error("event queue overflowed")]
    Overflow,
    /// The operating system refused the operation.
    #[error("{op} failed: {}", io::Error::from_raw_os_error(*errno))]
    Os { op: &'static str, errno: i32 },
}

impl EvtchnError {
    /// The error for the last OS call, captured at once.
    pub(crate) fn last_os(op: &'static str) -> Self {
        Self::from_io(op, &io::Error::last_os_error())
    }

    pub(crate) fn from_io(op: &'static str, err: &io::Error) -> Self {
        EvtchnError::Os {
            op,
            errno: err.raw_os_error().unwrap_or(0),
        }
    }
}

/// A handle on event channels, as a back end has it through `/dev/xen/evtchn`.
///
/// Its fd (from [`AsFd`]) becomes readable when events are pending; register it with mio
/// and drain it with [`EventChannel::read_pending`] on every readiness event. A port that fired
/// is disabled until [`EventChannel::unmask`]: events arriving meanwhile coalesce into one, and
/// unmasking a port that became pending delivers it again.
pub trait EventChannel: AsFd + AsRawFd {
    /// Binds a new local port to `remote_port` of `remote`, which that domain offered to us
    /// as an unbound port. The new port starts enabled (and may report one event at once).
    fn bind_interdomain(&mut self, remote: DomId, remote_port: Port) -> Result<Port, EvtchnError>;

    /// Closes a port bound through this handle; the remote end sees its port unbound.
    fn unbind(&mut self, port: Port) -> Result<(), EvtchnError>;

    /// Sends an event to the remote end of a port bound through this handle.
    fn notify(&mut self, port: Port) -> Result<(), EvtchnError>;

    /// Appends to `out` every port that fired, until none is left (so that edge-triggered
    /// polling re-arms). Each port appended stays disabled until unmasked.
    fn read_pending(&mut self, out: &mut Vec<Port>) -> Result<(), EvtchnError>;

    /// Re-enables ports after their events were handled. Ports not bound through this handle
    /// (closed meanwhile, or never ours) are skipped, as Linux evtchn skips them; the others are
    /// still re-enabled.
    fn unmask(&mut self, ports: &[Port]) -> Result<(), EvtchnError>;

    /// Blocks until an event is pending or `timeout` passes (`None`: no limit), then appends
    /// the ports that fired as [`EventChannel::read_pending`] does (none on a timeout). For
    /// callers that block, such as simulated guests; an event loop polls the fd instead.
    fn wait_pending(
        &mut self,
        timeout: Option<Duration>,
        out: &mut Vec<Port>,
    ) -> Result<(), EvtchnError> {
        wait_readable(self.as_fd(), timeout).map_err(|e| EvtchnError::from_io("poll", &e))?;
        self.read_pending(out)
    }
}

/// Waits until `fd` is readable or `timeout` passes (`None`: no limit); whether it is. A
/// signal interrupting the wait counts as not readable yet: callers look again.
pub fn wait_readable(fd: impl AsFd, timeout: Option<Duration>) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // Rounded up, so that a wait of a few microseconds does not become a busy poll.
    let ms = timeout.map_or(-1, |t| {
        i32::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX)
    });
    // SAFETY: `pfd` is one valid pollfd that outlives the call, and nfds is 1.
    match unsafe { libc::poll(&mut pfd, 1, ms) } {
        -1 => {
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => Ok(false),
                _ => Err(err),
            }
        }
        _ => Ok(pfd.revents & libc::POLLIN != 0),
    }
}
