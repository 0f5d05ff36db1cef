//! SIGTERM and SIGINT for the daemons: blocked in `main` before any thread starts (so no
//! thread takes them with the default action and kills the process mid-shutdown), then taken
//! with `sigwait` by the thread that stops everything.

use std::io;

/// SIGTERM and SIGINT, blocked in the calling thread and every thread it starts from now on.
pub struct StopSignals(libc::sigset_t);

impl StopSignals {
    /// Blocks them; call before any thread starts.
    pub fn block() -> io::Result<StopSignals> {
        // SAFETY: sigset_t is plain data, fully initialised by sigemptyset below.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t owned by this frame; the calls only write to it.
        let r = unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
        };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        Ok(StopSignals(set))
    }

    /// Waits for one of them; returns its number.
    pub fn wait(&self) -> i32 {
        let mut sig = 0;
        // SAFETY: the set and `sig` are valid for the duration of the call.
        unsafe { libc::sigwait(&self.0, &mut sig) };
        sig
    }

    /// Sends SIGTERM to this process, so that [`StopSignals::wait`] returns: how a thread that
    /// failed for good ends the daemon through its usual shutdown.
    pub fn raise() {
        // SAFETY: kill(2) on our own pid with a signal the process blocks and waits for.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    }
}
