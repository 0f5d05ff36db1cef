//! The blocking client: one request at a time, for tools, scripts and tests.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use super::endpoint::{Endpoint, Stream};
use super::{reply, ClientError, Result, TxId, WatchEvent};
use crate::perms::{DomId, Perms};
use crate::wire::{self, Message, MsgType, Request, XsErrno, FRAME_MAX};

/// How long to keep trying to reach a restarted xenstored, by default.
const RECONNECT_WINDOW: Duration = Duration::from_secs(5);
/// Pause between reconnection attempts.
const RECONNECT_STEP: Duration = Duration::from_millis(10);
/// Attempts of a transaction before its last EAGAIN is returned.
const TRANSACTION_ATTEMPTS: usize = 1000;

/// A blocking connection to xenstored.
pub struct Client {
    endpoint: Endpoint,
    stream: Stream,
    rbuf: Vec<u8>,
    next_req: u32,
    events: VecDeque<WatchEvent>,
    /// Registered watches, re-registered after a reconnect.
    watches: Vec<(String, String)>,
    reconnect_window: Duration,
}

impl Client {
    /// Connects where libxenstore would ([`Endpoint::discover`]).
    pub fn open() -> Result<Client> {
        Client::connect(Endpoint::discover()?)
    }

    /// Connects to `endpoint`.
    pub fn connect(endpoint: Endpoint) -> Result<Client> {
        let stream = endpoint.open()?;
        Ok(Client {
            endpoint,
            stream,
            rbuf: Vec::new(),
            next_req: 0,
            events: VecDeque::new(),
            watches: Vec::new(),
            reconnect_window: RECONNECT_WINDOW,
        })
    }

    /// The connection's descriptor, for an owner that sleeps in its own poll: register it
    /// for reading, and when it fires take events with `next_event(Some(Duration::ZERO))`
    /// until there are none (requests may have queued some meanwhile). A reconnect replaces
    /// it, so such an owner sets a reconnect window of 0.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    /// How long to wait for xenstored to come back when the connection breaks (0: don't).
    pub fn set_reconnect_window(&mut self, window: Duration) {
        self.reconnect_window = window;
    }

    /// Sends a request and waits for its reply. If the connection breaks, reconnects and
    /// re-registers the watches; the request is then sent again unless it belonged to a
    /// transaction, which is lost ([`ClientError::TransactionLost`]).
    pub fn request(&mut self, tx: TxId, request: &Request) -> Result<Vec<u8>> {
        match self.round_trip(tx, request) {
            Err(ClientError::Io(_)) if !self.reconnect_window.is_zero() => {
                self.reconnect()?;
                if tx != TxId::NONE {
                    return Err(ClientError::TransactionLost(tx.0));
                }
                self.round_trip(tx, request)
            }
            other => other,
        }
    }

    fn round_trip(&mut self, tx: TxId, request: &Request) -> Result<Vec<u8>> {
        self.next_req = self.next_req.wrapping_add(1);
        let req_id = self.next_req;
        let msg = super::encode_request(&self.endpoint, req_id, tx, request)?;
        let msg_type = msg.msg_type;
        self.stream.write_all(&msg.to_bytes())?;
        loop {
            let m = self.next_message(None)?.ok_or(ClientError::Disconnected)?;
            match m.msg_type {
                MsgType::WatchEvent => self.events.push_back(WatchEvent::parse(m.payload())?),
                _ if m.req_id != req_id => {}
                MsgType::Error => return Err(ClientError::Xs(XsErrno::from_payload(m.payload()))),
                t if t == msg_type => return Ok(m.into_payload()),
                got => {
                    return Err(ClientError::UnexpectedReply {
                        got,
                        sent: msg_type,
                    })
                }
            }
        }
    }

    /// The next message, waiting at most `timeout` (forever if `None`); `Ok(None)` on timeout.
    fn next_message(&mut self, timeout: Option<Duration>) -> Result<Option<Message>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some((m, used)) = wire::decode(&self.rbuf)? {
                self.rbuf.drain(..used);
                return Ok(Some(m));
            }
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if !wait_readable(self.stream.as_fd(), left)? {
                    return Ok(None);
                }
            }
            let start = self.rbuf.len();
            self.rbuf.resize(start + FRAME_MAX, 0);
            let n = self.stream.read(&mut self.rbuf[start..]);
            self.rbuf.truncate(start + *n.as_ref().unwrap_or(&0));
            match n {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Re-establishes the connection and re-registers every watch (each fires once, so the
    /// caller re-reads what it watches).
    pub fn reconnect(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.reconnect_window;
        let stream = loop {
            match self.endpoint.open() {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => std::thread::sleep(RECONNECT_STEP),
                Err(_) => return Err(ClientError::Disconnected),
            }
        };
        self.stream = stream;
        self.rbuf.clear();
        for (path, token) in self.watches.clone() {
            let request = Request::Watch { path, token };
            self.round_trip(TxId::NONE, &request)?;
        }
        Ok(())
    }

    /// Reads a value.
    pub fn read(&mut self, tx: TxId, path: &str) -> Result<Vec<u8>> {
        self.request(tx, &Request::Read { path: path.into() })
    }

    /// Writes a value, creating missing parents.
    pub fn write(&mut self, tx: TxId, path: &str, value: &[u8]) -> Result<()> {
        let request = Request::Write {
            path: path.into(),
            value: value.to_vec(),
        };
        self.request(tx, &request).map(drop)
    }

    /// Makes sure a node exists.
    pub fn mkdir(&mut self, tx: TxId, path: &str) -> Result<()> {
        self.request(tx, &Request::Mkdir { path: path.into() })
            .map(drop)
    }

    /// Removes a subtree.
    pub fn rm(&mut self, tx: TxId, path: &str) -> Result<()> {
        self.request(tx, &Request::Rm { path: path.into() })
            .map(drop)
    }

    /// Lists children, falling back to DIRECTORY_PART when the list exceeds one message.
    pub fn directory(&mut self, tx: TxId, path: &str) -> Result<Vec<String>> {
        match self.request(tx, &Request::Directory { path: path.into() }) {
            Ok(payload) => reply::directory(&payload),
            Err(ClientError::Xs(XsErrno::E2big)) => self.directory_in_parts(tx, path),
            Err(e) => Err(e),
        }
    }

    /// Reads a listing in chunks, starting over if it changes meanwhile.
    fn directory_in_parts(&mut self, tx: TxId, path: &str) -> Result<Vec<String>> {
        'restart: loop {
            let (mut names, mut offset, mut generation) = (Vec::new(), 0u32, None);
            loop {
                let request = Request::DirectoryPart {
                    path: path.into(),
                    offset,
                };
                let (gen, chunk, last) = reply::directory_part(&self.request(tx, &request)?)?;
                if *generation.get_or_insert_with(|| gen.clone()) != gen {
                    continue 'restart;
                }
                for name in &chunk {
                    offset = offset.saturating_add(name.len() as u32 + 1);
                }
                names.extend(chunk);
                if last {
                    return Ok(names);
                }
            }
        }
    }

    /// Reads a node's permissions.
    pub fn get_perms(&mut self, tx: TxId, path: &str) -> Result<Perms> {
        reply::perms(&self.request(tx, &Request::GetPerms { path: path.into() })?)
    }

    /// Replaces a node's permissions.
    pub fn set_perms(&mut self, tx: TxId, path: &str, perms: &Perms) -> Result<()> {
        let request = Request::SetPerms {
            path: path.into(),
            perms: perms.clone(),
        };
        self.request(tx, &request).map(drop)
    }

    /// Registers a watch; it fires once at once, and again on every change below `path`.
    pub fn watch(&mut self, path: &str, token: &str) -> Result<()> {
        let request = Request::Watch {
            path: path.into(),
            token: token.into(),
        };
        self.request(TxId::NONE, &request)?;
        self.watches.push((path.into(), token.into()));
        Ok(())
    }

    /// Removes a watch.
    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<()> {
        let request = Request::Unwatch {
            path: path.into(),
            token: token.into(),
        };
        self.watches.retain(|(p, t)| !(p == path && t == token));
        self.request(TxId::NONE, &request).map(drop)
    }

    /// The next watch event, waiting at most `timeout` (forever if `None`).
    pub fn next_event(&mut self, timeout: Option<Duration>) -> Result<Option<WatchEvent>> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(Some(e));
            }
            let message = match self.next_message(timeout) {
                Err(ClientError::Io(_)) if !self.reconnect_window.is_zero() => {
                    self.reconnect()?;
                    continue;
                }
                other => other?,
            };
            match message {
                Some(m) if m.msg_type == MsgType::WatchEvent => {
                    return WatchEvent::parse(m.payload()).map(Some)
                }
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }

    /// Opens a transaction.
    pub fn transaction_start(&mut self) -> Result<TxId> {
        reply::transaction_id(&self.request(TxId::NONE, &Request::TransactionStart)?)
    }

    /// Commits (`true`) or aborts a transaction; a lost commit is `Xs(EAGAIN)`.
    pub fn transaction_end(&mut self, tx: TxId, commit: bool) -> Result<()> {
        self.request(tx, &Request::TransactionEnd { commit })
            .map(drop)
    }

    /// Runs `body` in a transaction and commits it, redoing everything on EAGAIN or when a
    /// restart of xenstored lost the transaction.
    pub fn transaction<T>(
        &mut self,
        mut body: impl FnMut(&mut Client, TxId) -> Result<T>,
    ) -> Result<T> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let tx = self.transaction_start()?;
            let result = body(self, tx);
            let outcome = match result {
                Ok(value) => self.transaction_end(tx, true).map(|()| value),
                Err(e) => {
                    // The transaction may already be gone (lost); its error is the one to report.
                    let _ = self.transaction_end(tx, false);
                    Err(e)
                }
            };
            match outcome {
                Err(e) if e.should_retry() && attempt < TRANSACTION_ATTEMPTS => continue,
                other => return other,
            }
        }
    }

    /// The home path of a domain.
    pub fn get_domain_path(&mut self, domid: DomId) -> Result<String> {
        let payload = self.request(TxId::NONE, &Request::GetDomainPath { domid })?;
        reply::text(&payload, "domain path")
    }

    /// Introduces a domain (privileged).
    pub fn introduce(&mut self, domid: DomId, gfn: u64, port: u32) -> Result<()> {
        let request = Request::Introduce { domid, gfn, port };
        self.request(TxId::NONE, &request).map(drop)
    }

    /// Releases a domain (privileged).
    pub fn release(&mut self, domid: DomId) -> Result<()> {
        self.request(TxId::NONE, &Request::Release { domid })
            .map(drop)
    }

    /// Whether a domain is introduced (privileged).
    pub fn is_domain_introduced(&mut self, domid: DomId) -> Result<bool> {
        reply::boolean(&self.request(TxId::NONE, &Request::IsDomainIntroduced { domid })?)
    }

    /// Drops all watches and transactions of this connection.
    pub fn reset_watches(&mut self) -> Result<()> {
        self.request(TxId::NONE, &Request::ResetWatches)?;
        self.watches.clear();
        self.events.clear();
        Ok(())
    }
}

/// Waits until `fd` is readable or `timeout` passes; `false` on timeout.
fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `pfd` is one valid pollfd that outlives the call, and nfds is 1.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    match r {
        -1 => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(true)
            } else {
                Err(e)
            }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
}
