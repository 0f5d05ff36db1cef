//! The control thread: its own mio loop serving the control socket. Sockets are non-blocking,
//! every buffer is bounded and every limit of the protocol is enforced here, so that no client
//! can hold memory or this thread; the workers and the xenbus thread never wait for it (they
//! are asked through their command channels, and the driver's directory lock is held only to
//! copy or update it).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slog::{debug, error, info, warn, Logger};

use super::answer::Answerer;
use super::protocol::{encode, error_reply, Framer, Request, RequestError};

/// The most connections served at once; one more is told so and closed.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a partial request line may wait for more bytes.
pub const PARTIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// The most reply bytes waiting for a client that does not read; past it, it is dropped.
pub const MAX_PENDING: usize = 1 << 20;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Connection `n` is `Token(FIRST_CONN + n)`.
const FIRST_CONN: usize = 2;

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0} exists and is not a socket")]
    NotASocket(PathBuf),
    #[error(
        "{0} is another daemon's control socket (it answers): give this one its own with \
         --control-socket"
    )]
    InUse(PathBuf),
    #[error("creating the control socket {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("setting up the control thread: {0}")]
    Io(#[from] io::Error),
}

/// The socket's path, removed when dropped.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        // Already gone is as good.
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The bound control socket, not served yet.
pub struct ControlSocket {
    listener: UnixListener,
    file: SocketFile,
}

impl ControlSocket {
    /// Creates the socket at `path`, mode 0600, replacing a stale one. The instance lock is
    /// per backend tree, so a daemon of the other tree may be serving `path`: a socket that
    /// accepts a connection is left alone.
    ///
    /// The mode comes from the umask at bind(2), so the socket is never wider, even briefly;
    /// the umask is the process's, so call this before other threads create files (one that
    /// did meanwhile would be created narrower, never wider).
    pub fn bind(path: &Path) -> Result<ControlSocket, ControlError> {
        let bind_error = |source| ControlError::Bind {
            path: path.to_owned(),
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(ControlError::InUse(path.to_owned()));
                }
                std::fs::remove_file(path).map_err(bind_error)?
            }
            Ok(_) => return Err(ControlError::NotASocket(path.to_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(bind_error(e)),
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(bind_error)?;
        }
        // SAFETY: umask(2) cannot fail and touches no memory.
        let old = unsafe { libc::umask(0o177) };
        let bound = std::os::unix::net::UnixListener::bind(path);
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        let listener = bound.map_err(bind_error)?;
        let file = SocketFile(path.to_owned());
        listener.set_nonblocking(true)?;
        Ok(ControlSocket {
            listener: UnixListener::from_std(listener),
            file,
        })
    }

    /// Serves the socket on its own thread until stopped.
    pub fn spawn(self, answerer: Answerer, log: Logger) -> Result<Control, ControlError> {
        let ControlSocket { mut listener, file } = self;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stop = Arc::new(AtomicBool::new(false));
        let server = Server {
            poll,
            listener,
            conns: HashMap::new(),
            next: 0,
            answerer,
            stop: Arc::clone(&stop),
            log,
        };
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || server.run())?;
        Ok(Control {
            stop,
            waker,
            thread,
            _file: file,
        })
    }
}

/// The running control thread.
pub struct Control {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: JoinHandle<()>,
    _file: SocketFile,
}

impl Control {
    /// Stops the thread, closing every connection, and removes the socket.
    pub fn stop(self) {
        // Release: pairs with the thread's Acquire load after its wake-up.
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        let _ = self.thread.join();
    }
}

/// One client.
struct Conn {
    stream: UnixStream,
    framer: Framer,
    out: Vec<u8>,
    /// How much of `out` was written.
    written: usize,
    /// When the latest bytes of a partial line arrived.
    partial_since: Option<Instant>,
    /// The client sent its last byte: closed once its replies are written.
    eof: bool,
    /// A line was too long: closed once its error reply is written.
    refused: bool,
}

/// What becomes of a connection after an event.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    Keep,
    /// The client closed and has every reply.
    Done,
    /// Dropped, for this reason.
    Drop(&'static str),
}

impl Conn {
    fn new(stream: UnixStream) -> Conn {
        Conn {
            stream,
            framer: Framer::default(),
            out: Vec::new(),
            written: 0,
            partial_since: None,
            eof: false,
            refused: false,
        }
    }

    fn pending(&self) -> usize {
        self.out.len() - self.written
    }

    /// Reads what the client sent and answers every complete line.
    fn read(&mut self, answerer: &Answerer, now: Instant) -> io::Result<()> {
        // Lines left when replies piled up: the client has read some since.
        self.answer_lines(answerer);
        let mut buf = [0u8; 16 * 1024];
        while !self.eof && !self.refused && self.pending() <= MAX_PENDING {
            match self.stream.read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.framer.feed(&buf[..n]);
                    self.partial_since = Some(now);
                    self.answer_lines(answerer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if !self.framer.has_partial() {
            self.partial_since = None;
        }
        Ok(())
    }

    fn answer_lines(&mut self, answerer: &Answerer) {
        while !self.refused && self.pending() <= MAX_PENDING {
            let reply = match self.framer.next_line() {
                Ok(None) => return,
                Ok(Some(line)) => match Request::parse(&line) {
                    Ok(request) => answerer.answer(&request),
                    Err(e) => error_reply(&e.to_string()),
                },
                Err(e @ RequestError::TooLong) => {
                    self.refused = true;
                    error_reply(&e.to_string())
                }
                Err(e) => error_reply(&e.to_string()),
            };
            // Past the bound the rest waits: the client is dropped unless it reads meanwhile.
            self.out.extend_from_slice(&encode(&reply));
        }
    }

    /// Writes what the client will take.
    fn flush(&mut self) -> io::Result<()> {
        while self.pending() > 0 {
            match self.stream.write(&self.out[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.pending() == 0 {
            self.out.clear();
            self.written = 0;
        }
        Ok(())
    }

    /// Serves one event: reads and answers, writes, and says whether to keep it.
    fn serve(&mut self, answerer: &Answerer, now: Instant) -> Fate {
        if self.read(answerer, now).is_err() {
            return Fate::Drop("reading failed");
        }
        if self.flush().is_err() {
            return Fate::Drop("writing failed");
        }
        if self.pending() > MAX_PENDING {
            return Fate::Drop("more than 1 MiB of replies unread");
        }
        match (self.pending(), self.refused, self.eof) {
            (0, true, _) => Fate::Drop("request line too long"),
            (0, _, true) => Fate::Done,
            _ => Fate::Keep,
        }
    }

    fn expires(&self) -> Option<Instant> {
        self.partial_since.map(|t| t + PARTIAL_TIMEOUT)
    }
}

struct Server {
    poll: Poll,
    listener: UnixListener,
    conns: HashMap<usize, Conn>,
    next: usize,
    answerer: Answerer,
    stop: Arc<AtomicBool>,
    log: Logger,
}

impl Server {
    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        loop {
            // No tick: the loop wakes for a timeout only while a partial line waits.
            let timeout = (self.conns.values().filter_map(Conn::expires).min())
                .map(|at| at.saturating_duration_since(Instant::now()));
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    error!(self.log, "control socket poll failed; no longer served"; "error" => %e);
                    return;
                }
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {
                        // Acquire: pairs with Control::stop's Release.
                        if self.stop.load(Ordering::Acquire) {
                            return;
                        }
                    }
                    Token(n) => self.serve(n - FIRST_CONN),
                }
            }
            self.expire(Instant::now());
        }
    }

    fn accept(&mut self) {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of fds, say: the connection waits in the backlog for a later try.
                    warn!(self.log, "accepting a control connection"; "error" => %e);
                    return;
                }
            };
            if self.conns.len() >= MAX_CONNECTIONS {
                info!(self.log, "control connection refused: too many";
                    "max" => MAX_CONNECTIONS);
                let refusal =
                    error_reply(&format!("too many connections (at most {MAX_CONNECTIONS})"));
                // A fresh socket's buffer takes one short line; a client that is gone is
                // not told.
                let _ = stream.write_all(&encode(&refusal));
                continue;
            }
            let n = self.next;
            self.next += 1;
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) =
                (self.poll.registry()).register(&mut stream, Token(FIRST_CONN + n), interest)
            {
                warn!(self.log, "registering a control connection"; "error" => %e);
                continue;
            }
            self.conns.insert(n, Conn::new(stream));
        }
    }

    fn serve(&mut self, n: usize) {
        let Some(conn) = self.conns.get_mut(&n) else {
            return;
        };
        match conn.serve(&self.answerer, Instant::now()) {
            Fate::Keep => {}
            Fate::Done => self.close(n, None),
            Fate::Drop(why) => self.close(n, Some(why)),
        }
    }

    /// Closes connections whose partial line waited too long.
    fn expire(&mut self, now: Instant) {
        let expired: Vec<usize> = (self.conns.iter())
            .filter(|(_, c)| c.expires().is_some_and(|at| at <= now))
            .map(|(&n, _)| n)
            .collect();
        for n in expired {
            self.close(n, Some("partial request line timed out"));
        }
    }

    /// Closes connection `n`, dropped for `why` or done.
    fn close(&mut self, n: usize, why: Option<&'static str>) {
        if let Some(mut conn) = self.conns.remove(&n) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            match why {
                None => debug!(self.log, "control connection closed"),
                Some(why) => info!(self.log, "control connection dropped"; "reason" => why),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufRead;

    use serde_json::Value;

    use super::*;
    use crate::stats::Directory;

    /// A connection's server end and its client end (blocking, with a timeout).
    fn pair() -> (Conn, std::os::unix::net::UnixStream) {
        let (server, client) = std::os::unix::net::UnixStream::pair().unwrap();
        server.set_nonblocking(true).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (Conn::new(UnixStream::from_std(server)), client)
    }

    /// Answers from no workers: version and empty lists.
    fn answerer() -> Answerer {
        Answerer::new(Vec::new(), Arc::new(Directory::default()))
    }

    fn replies(client: &std::os::unix::net::UnixStream, n: usize) -> Vec<Value> {
        let mut reader = std::io::BufReader::new(client);
        (0..n)
            .map(|_| {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                serde_json::from_str(&line).unwrap()
            })
            .collect()
    }

    #[test]
    fn pipelined_requests_are_answered_in_order_and_a_partial_line_waits_or_times_out() {
        let (mut conn, mut client) = pair();
        let answerer = answerer();
        let t0 = Instant::now();
        client
            .write_all(b"{\"op\":\"version\"}\n{\"op\":\"x\"}\n{\"op\":\"li")
            .unwrap();
        assert_eq!(conn.serve(&answerer, t0), Fate::Keep);
        let got = replies(&client, 2);
        assert_eq!(got[0]["protocol"], 1);
        assert_eq!(got[1]["ok"], false);
        // The partial line's clock runs from its latest bytes.
        assert_eq!(conn.expires(), Some(t0 + PARTIAL_TIMEOUT));
        let t1 = t0 + Duration::from_secs(4);
        client.write_all(b"s").unwrap();
        assert_eq!(conn.serve(&answerer, t1), Fate::Keep);
        assert_eq!(conn.expires(), Some(t1 + PARTIAL_TIMEOUT));
        client.write_all(b"t\"}\n").unwrap();
        assert_eq!(conn.serve(&answerer, t1), Fate::Keep);
        assert_eq!(conn.expires(), None);
        assert_eq!(replies(&client, 1)[0]["vbds"], serde_json::json!([]));
    }

    #[test]
    fn a_client_that_closes_gets_its_replies_first() {
        let (mut conn, client) = pair();
        (&client)
            .write_all(b"{\"op\":\"version\"}\n{\"op\":\"list\"}\n{\"op\"")
            .unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(conn.serve(&answerer(), Instant::now()), Fate::Done);
        // As the server closes it.
        drop(conn);
        let mut all = String::new();
        (&client).read_to_string(&mut all).unwrap();
        assert_eq!(all.lines().count(), 2, "{all}");
    }

    #[test]
    fn a_line_past_64_kib_gets_its_error_then_the_connection_ends() {
        let (mut conn, client) = pair();
        let answerer = answerer();
        let long = vec![b'x'; 64 * 1024 + 1];
        let writer = std::thread::spawn(move || {
            // The server stops reading once the line is too long: this may not all go.
            let _ = (&client).write_all(&long);
            client
        });
        let mut fate = Fate::Keep;
        let deadline = Instant::now() + Duration::from_secs(5);
        while fate == Fate::Keep && Instant::now() < deadline {
            fate = conn.serve(&answerer, Instant::now());
        }
        assert_eq!(fate, Fate::Drop("request line too long"));
        drop(conn);
        let client = writer.join().unwrap();
        let mut all = String::new();
        (&client).read_to_string(&mut all).unwrap();
        assert_eq!(
            all,
            "{\"error\":\"request line longer than 65536 bytes\",\"ok\":false}\n"
        );
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_or_another_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let first = ControlSocket::bind(&path).expect("a stale socket is replaced");
        // Bound and listening, though not served yet: a second daemon must not take it.
        match ControlSocket::bind(&path) {
            Err(ControlError::InUse(p)) => assert_eq!(p, path),
            other => panic!("a live socket was replaced: {:?}", other.err()),
        }
        drop(first);
        assert!(!path.exists(), "dropped unserved: the file goes");
        std::fs::write(&path, "not a socket").unwrap();
        assert!(matches!(
            ControlSocket::bind(&path),
            Err(ControlError::NotASocket(_))
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
    }

    #[test]
    fn lines_left_at_the_bound_are_answered_once_the_client_reads() {
        let (mut conn, client) = pair();
        client.set_nonblocking(true).unwrap();
        let answerer = answerer();
        let reply_len = encode(&answerer.answer(&Request::Version)).len();
        // Twice the bound's worth of replies, their requests read from the socket already.
        let n = 2 * MAX_PENDING / reply_len;
        conn.framer.feed(&b"{\"op\":\"version\"}\n".repeat(n));
        let mut got = 0;
        let mut buf = vec![0; 1 << 20];
        for _ in 0..1000 {
            // No new bytes from the client: only what it read lets more replies go.
            assert_eq!(conn.serve(&answerer, Instant::now()), Fate::Keep);
            loop {
                match (&client).read(&mut buf) {
                    Ok(k) => got += buf[..k].iter().filter(|&&b| b == b'\n').count(),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("reading replies: {e}"),
                }
            }
            if got == n {
                return;
            }
        }
        panic!("{got} of {n} replies");
    }

    #[test]
    fn a_client_that_does_not_read_is_dropped_past_1_mib_of_replies() {
        let (mut conn, client) = pair();
        client.set_nonblocking(true).unwrap();
        let answerer = answerer();
        let requests = b"{\"op\":\"version\"}\n".repeat(1000);
        let reply_len = encode(&answerer.answer(&Request::Version)).len();
        for _ in 0..10_000 {
            match (&client).write(&requests) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("writing requests: {e}"),
            }
            match conn.serve(&answerer, Instant::now()) {
                Fate::Keep => assert!(conn.pending() <= MAX_PENDING),
                fate => {
                    assert_eq!(fate, Fate::Drop("more than 1 MiB of replies unread"));
                    // Answering stopped with the first reply past the bound.
                    assert!(conn.pending() <= MAX_PENDING + reply_len);
                    return;
                }
            }
        }
        panic!("never dropped; {} bytes pending", conn.pending());
    }
}
