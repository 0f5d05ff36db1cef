//! The unix-socket transport: one thread, one mio loop, every connection non-blocking.
//!
//! The main socket serves dom0 (privileged). With a domain directory configured, introducing
//! domain N binds `<dir>/N/socket`, whose connections act as unprivileged domain N, and
//! releasing it removes that socket and drops those connections. Any change in the domain
//! directory or an introduced domain's directory makes the server check which domains still
//! exist ([`Server::check_domains`]), as C xenstored does on VIRQ_DOM_EXC: a domain the host
//! destroyed is released without an XS_RELEASE. A connection that breaks
//! the framing (a length over the limit) is dropped alone; an unknown type gets ENOSYS. A
//! connection with too many unread replies is not read from until it catches up, and each
//! connection handles a bounded number of requests per turn, so none can starve the others.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::os::fd::AsRawFd;

use mio::net::{UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

mod domain_watch;
mod report;

use domain_watch::DomainWatch;
pub use report::{DropReason, Report, Severity};

use super::{ConnId, DomainExists, Effect, Quotas, Server};
use crate::perms::DomId;
use crate::wire::FRAME_MAX;

const WAKER: Token = Token(0);
const DOMAINS: Token = Token(1);
/// Requests handled per connection per turn before the others get theirs.
const FRAMES_PER_TURN: usize = 64;
/// Output encoded ahead per connection.
const WRITE_AHEAD: usize = 64 * 1024;

/// Where and how to serve.
pub struct Config {
    /// The dom0 socket.
    pub socket: PathBuf,
    /// Where per-domain sockets go (`<dir>/<domid>/socket`), if anywhere.
    pub domain_dir: Option<PathBuf>,
    /// Limits for unprivileged connections.
    pub quotas: Quotas,
    /// Which domains exist (see [`Server::new`]); asked again whenever the domain directory
    /// changes.
    pub domain_exists: DomainExists,
}

/// Stops a running [`SocketServer`] from another thread.
#[derive(Clone)]
pub struct StopHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl StopHandle {
    /// Asks the loop to return.
    pub fn stop(&self) -> io::Result<()> {
        self.flag.store(true, Ordering::Release);
        self.waker.wake()
    }
}

struct Listener {
    socket: UnixListener,
    path: PathBuf,
    domid: DomId,
    privileged: bool,
}

struct Connection {
    stream: UnixStream,
    id: ConnId,
    domid: DomId,
    privileged: bool,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    /// Not read while it has too many unread replies.
    paused: bool,
}

/// The xenstored socket server.
pub struct SocketServer {
    poll: Poll,
    server: Server,
    listeners: HashMap<Token, Listener>,
    conns: HashMap<Token, Connection>,
    tokens: HashMap<ConnId, Token>,
    /// Connections that may have buffered requests left to handle.
    ready: VecDeque<Token>,
    next_token: usize,
    domain_dir: Option<PathBuf>,
    /// Changes of domains, when there is a domain directory.
    domain_watch: Option<DomainWatch>,
    stop: StopHandle,
    report: Box<dyn FnMut(Report) + Send>,
}

/// Binds a unix socket at `path`, replacing a stale socket file left by an earlier run.
///
/// The socket is bound and listening under a temporary name first and then renamed into
/// place, so that whoever sees `path` appear can connect at once (bind and listen are two
/// system calls; a client connecting between them would be refused).
fn bind(path: &Path) -> io::Result<UnixListener> {
    let mut staging = path.as_os_str().to_owned();
    staging.push(".new");
    let staging = PathBuf::from(staging);
    match std::fs::remove_file(&staging) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(&staging)?;
    std::fs::rename(&staging, path)?;
    Ok(listener)
}

impl SocketServer {
    /// Binds the dom0 socket.
    pub fn bind(config: Config) -> io::Result<SocketServer> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let domain_watch = match &config.domain_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let watch = DomainWatch::new(dir)?;
                poll.registry().register(
                    &mut SourceFd(&watch.as_raw_fd()),
                    DOMAINS,
                    Interest::READABLE,
                )?;
                Some(watch)
            }
            None => None,
        };
        let mut s = SocketServer {
            poll,
            server: Server::new(config.quotas, config.domain_exists),
            listeners: HashMap::new(),
            conns: HashMap::new(),
            tokens: HashMap::new(),
            ready: VecDeque::new(),
            next_token: 1,
            domain_dir: config.domain_dir,
            domain_watch,
            stop: StopHandle {
                flag: Arc::new(AtomicBool::new(false)),
                waker,
            },
            report: Box::new(|_| {}),
        };
        s.listen(&config.socket, 0, true)?;
        Ok(s)
    }

    /// Sends reports (refusals, dropped connections) to `report` instead of discarding them.
    pub fn on_report(&mut self, report: impl FnMut(Report) + Send + 'static) {
        self.report = Box::new(report);
    }

    /// A handle that stops [`SocketServer::run`].
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    fn listen(&mut self, path: &Path, domid: DomId, privileged: bool) -> io::Result<()> {
        let mut socket = bind(path)?;
        let token = self.token();
        self.poll
            .registry()
            .register(&mut socket, token, Interest::READABLE)?;
        self.listeners.insert(
            token,
            Listener {
                socket,
                path: path.to_owned(),
                domid,
                privileged,
            },
        );
        Ok(())
    }

    /// Serves until stopped; returns the error if polling itself fails.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        while !self.stop.flag.load(Ordering::Acquire) {
            let timeout = (!self.ready.is_empty()).then_some(std::time::Duration::ZERO);
            match self.poll.poll(&mut events, timeout) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => r?,
            }
            for event in events.iter() {
                let token = event.token();
                if token == DOMAINS {
                    self.domains_changed();
                } else if self.listeners.contains_key(&token) {
                    self.accept(token);
                } else if self.conns.contains_key(&token) {
                    if event.is_writable() {
                        self.flush(token);
                    }
                    if event.is_readable() || event.is_read_closed() {
                        self.ready.push_back(token);
                    }
                }
            }
            for _ in 0..self.ready.len() {
                if let Some(token) = self.ready.pop_front() {
                    self.serve(token);
                }
            }
            self.after_turn();
        }
        Ok(())
    }

    fn accept(&mut self, token: Token) {
        loop {
            let Some(l) = self.listeners.get(&token) else {
                return;
            };
            let (domid, privileged) = (l.domid, l.privileged);
            let mut stream = match l.socket.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    let path = l.path.clone();
                    (self.report)(Report::SocketFailed {
                        domid,
                        path,
                        error: e,
                    });
                    return;
                }
            };
            let t = self.token();
            let interest = Interest::READABLE | Interest::WRITABLE;
            if self
                .poll
                .registry()
                .register(&mut stream, t, interest)
                .is_err()
            {
                continue;
            }
            let id = self.server.connect(domid, privileged);
            self.tokens.insert(id, t);
            self.conns.insert(
                t,
                Connection {
                    stream,
                    id,
                    domid,
                    privileged,
                    rbuf: Vec::new(),
                    wbuf: Vec::new(),
                    wpos: 0,
                    paused: false,
                },
            );
        }
    }

    /// Handles a turn's worth of requests from one connection.
    fn serve(&mut self, token: Token) {
        if let Err(reason) = self.serve_frames(token) {
            self.drop_conn(token, reason);
        }
    }

    fn serve_frames(&mut self, token: Token) -> Result<(), DropReason> {
        let Some(c) = self.conns.get_mut(&token) else {
            return Ok(());
        };
        let mut handled = 0;
        loop {
            if self.server.is_backlogged(c.id) {
                c.paused = true;
                return Ok(());
            }
            if handled == FRAMES_PER_TURN {
                self.ready.push_back(token);
                return Ok(());
            }
            if let Some(used) = self.server.handle_frame(c.id, &c.rbuf)? {
                c.rbuf.drain(..used);
                handled += 1;
                continue;
            }
            // Never buffer more than one frame: decode refuses a bad length from the header.
            let start = c.rbuf.len();
            c.rbuf.resize(FRAME_MAX, 0);
            let r = c.stream.read(&mut c.rbuf[start..]);
            c.rbuf.truncate(start + *r.as_ref().unwrap_or(&0));
            match r {
                Ok(0) => return Err(DropReason::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Writes what the server queued for a connection, as far as the socket takes it.
    fn flush(&mut self, token: Token) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        loop {
            if c.wpos == c.wbuf.len() {
                c.wbuf.clear();
                c.wpos = 0;
                while c.wbuf.len() < WRITE_AHEAD {
                    match self.server.pop_output(c.id) {
                        Some(m) => m.encode_into(&mut c.wbuf),
                        None => break,
                    }
                }
                if c.wbuf.is_empty() {
                    break;
                }
            }
            match c.stream.write(&c.wbuf[c.wpos..]) {
                Ok(n) => c.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.drop_conn(token, e.into());
                    return;
                }
            }
        }
        if c.paused && !self.server.is_backlogged(c.id) {
            c.paused = false;
            self.ready.push_back(token);
        }
    }

    /// Sends output, applies effects and passes on notices after a turn.
    fn after_turn(&mut self) {
        // Effects first: whoever gets the OK of an XS_INTRODUCE finds the domain's socket.
        for effect in self.server.take_effects() {
            match effect {
                Effect::Introduced(domid) => self.open_domain(domid),
                Effect::Released(domid) => self.close_domain(domid),
            }
        }
        for id in self.server.take_dirty() {
            if let Some(&token) = self.tokens.get(&id) {
                self.flush(token);
            }
        }
        for notice in self.server.take_notices() {
            (self.report)(Report::Notice(notice));
        }
    }

    /// Checks which domains still exist after the host changed the domain directory.
    fn domains_changed(&mut self) {
        let Some(watch) = &self.domain_watch else {
            return;
        };
        match watch.drain() {
            Ok(true) => self.server.check_domains(),
            Ok(false) => {}
            Err(error) => (self.report)(Report::DomainWatchFailed(error)),
        }
    }

    fn open_domain(&mut self, domid: DomId) {
        let Some(dir) = &self.domain_dir else {
            return;
        };
        let dir = dir.join(domid.to_string());
        let path = dir.join("socket");
        let watch = &self.domain_watch;
        let made = std::fs::create_dir_all(&dir)
            .and_then(|()| watch.as_ref().map_or(Ok(()), |w| w.add(&dir)))
            .and_then(|()| self.listen(&path, domid, false));
        match made {
            Ok(()) => (self.report)(Report::DomainSocket {
                domid,
                path,
                created: true,
            }),
            Err(error) => (self.report)(Report::SocketFailed { domid, path, error }),
        }
    }

    fn close_domain(&mut self, domid: DomId) {
        let listeners: Vec<Token> = self
            .listeners
            .iter()
            .filter(|(_, l)| l.domid == domid && !l.privileged)
            .map(|(t, _)| *t)
            .collect();
        for token in listeners {
            if let Some(mut l) = self.listeners.remove(&token) {
                let _ = self.poll.registry().deregister(&mut l.socket);
                let _ = std::fs::remove_file(&l.path);
                (self.report)(Report::DomainSocket {
                    domid,
                    path: l.path,
                    created: false,
                });
            }
        }
        let conns: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| c.domid == domid && !c.privileged)
            .map(|(t, _)| *t)
            .collect();
        for token in conns {
            self.drop_conn(token, DropReason::Released);
        }
    }

    fn drop_conn(&mut self, token: Token, reason: DropReason) {
        if let Some(mut c) = self.conns.remove(&token) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.server.disconnect(c.id);
            self.tokens.remove(&c.id);
            // A peer hanging up is routine; anything else is worth a line.
            if !matches!(reason, DropReason::Closed) {
                (self.report)(Report::Dropped {
                    domid: c.domid,
                    reason,
                });
            }
        }
    }
}

impl Drop for SocketServer {
    fn drop(&mut self) {
        for l in self.listeners.values() {
            let _ = std::fs::remove_file(&l.path);
        }
    }
}
