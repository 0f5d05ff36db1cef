//! The worker's one timer: a timerfd on CLOCK_MONOTONIC armed at an absolute instant, the next
//! admission the limiter asked for (DESIGN "Late timers"), and the clock the limiter is fed.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Nanoseconds of CLOCK_MONOTONIC, the clock the timer runs on.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through the valid pointer; CLOCK_MONOTONIC
    // always exists on Linux, so it cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// A non-blocking timerfd; readable once the armed instant has passed.
#[derive(Debug)]
pub struct Timer {
    fd: OwnedFd,
    /// The instant armed, if any: re-arming at the same instant is skipped.
    armed: Option<u64>,
}

impl Timer {
    pub fn new() -> io::Result<Timer> {
        // SAFETY: timerfd_create takes no pointers; the result is checked before use.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Timer { fd, armed: None })
    }

    /// Fire at `at` (monotonic ns; an instant already past fires at once), or never (`None`).
    pub fn set(&mut self, at: Option<u64>) -> io::Result<()> {
        if self.armed == at {
            return Ok(());
        }
        // An it_value of zero disarms, so an instant of 0 is moved to 1 ns.
        let value = at.map_or(0, |at| at.max(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (value / 1_000_000_000) as libc::time_t,
                tv_nsec: (value % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: the fd is a timerfd we own; `spec` is valid for the call and the old value
        // pointer may be null.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed = at;
        Ok(())
    }

    /// Consumes an expiry after the fd was readable; the timer is then disarmed.
    pub fn clear(&mut self) {
        let mut expirations = 0u64;
        // SAFETY: reads at most 8 bytes into the u64; a non-blocking timerfd with nothing
        // pending fails with EAGAIN, which is fine to ignore.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut expirations as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        self.armed = None;
    }
}

impl AsFd for Timer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::wait_readable;
    use std::time::Duration;

    #[test]
    fn fires_at_the_instant_armed_and_not_before() {
        let mut timer = Timer::new().unwrap();
        let at = monotonic_ns() + 20_000_000;
        timer.set(Some(at)).unwrap();
        assert!(!wait_readable(&timer, Some(Duration::ZERO)).unwrap());
        assert!(wait_readable(&timer, Some(Duration::from_secs(5))).unwrap());
        assert!(monotonic_ns() >= at);
        timer.clear();
        assert!(!wait_readable(&timer, Some(Duration::ZERO)).unwrap());
    }

    #[test]
    fn a_past_instant_fires_at_once_and_none_disarms() {
        let mut timer = Timer::new().unwrap();
        timer.set(Some(0)).unwrap();
        assert!(wait_readable(&timer, Some(Duration::from_secs(5))).unwrap());
        timer.clear();
        timer.set(Some(monotonic_ns() + 5_000_000)).unwrap();
        timer.set(None).unwrap();
        assert!(!wait_readable(&timer, Some(Duration::from_millis(30))).unwrap());
    }
}
