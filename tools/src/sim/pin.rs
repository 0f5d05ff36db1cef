//! CPU placement of a run: the guests' threads on one CPU and tokenbackd on another, so that
//! figures are taken with the guest and the daemon on different cores (DESIGN "Figures on 2
//! cores") and do not depend on where the scheduler happens to put them.

use std::io;

/// The CPUs of a pinned run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Every guest's workload thread runs here.
    pub guests: usize,
    /// tokenbackd and every thread it starts run here.
    pub daemon: usize,
}

/// Pins the calling thread (and the threads and processes it starts afterwards) to `cpu`.
pub fn pin_current(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t and `cpu` is below CPU_SETSIZE (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
