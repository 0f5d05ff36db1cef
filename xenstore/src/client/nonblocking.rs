//! The non-blocking client, driven by a mio event loop.
//!
//! Register it with a [`mio::Registry`], [`AsyncClient::submit`] as many requests as you like
//! (each gets a req_id), call [`AsyncClient::handle_ready`] when its token fires, and take
//! [`Completion`]s in arrival order: replies (matched by req_id) and watch events interleave
//! exactly as xenstored sent them. If xenstored goes away every pending request completes
//! with [`ClientError::Disconnected`] and a [`Completion::Disconnected`] follows; the owner
//! then calls [`AsyncClient::reconnect`] when it likes (e.g. from a timer), which
//! re-registers the watches (each fires once: re-read).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use super::endpoint::{Endpoint, Stream};
use super::{ClientError, Result, TxId, WatchEvent};
use crate::wire::{self, Message, MsgType, Request, XsErrno, FRAME_MAX};

/// Something the client has for its owner.
#[derive(Debug)]
pub enum Completion {
    /// The reply to request `req_id`: its payload, or why it failed.
    Reply {
        /// The id [`AsyncClient::submit`] returned.
        req_id: u32,
        /// Reply payload, or the error.
        result: Result<Vec<u8>>,
    },
    /// A watch event.
    Event(WatchEvent),
    /// The connection broke; call [`AsyncClient::reconnect`].
    Disconnected {
        /// What broke it.
        cause: ClientError,
    },
}

/// What a request in flight was, to check its reply.
struct Pending {
    msg_type: MsgType,
    /// Sent by the client itself (watch re-registration): its reply is not surfaced.
    internal: bool,
}

/// A non-blocking xenstore connection.
pub struct AsyncClient {
    endpoint: Endpoint,
    stream: Option<Stream>,
    token: Option<Token>,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    next_req: u32,
    pending: HashMap<u32, Pending>,
    completions: VecDeque<Completion>,
    watches: Vec<(String, String)>,
}

fn open_nonblocking(endpoint: &Endpoint) -> io::Result<Stream> {
    let stream = endpoint.open()?;
    match &stream {
        Stream::Socket(s) => s.set_nonblocking(true)?,
        Stream::Device(f) => {
            let fd = f.as_raw_fd();
            // SAFETY: fcntl on a descriptor we own, with flag arguments only.
            let r = unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFL);
                libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK)
            };
            if r == -1 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(stream)
}

impl AsyncClient {
    /// Connects to `endpoint`; register the client before submitting.
    pub fn connect(endpoint: Endpoint) -> Result<AsyncClient> {
        let stream = open_nonblocking(&endpoint)?;
        Ok(AsyncClient {
            endpoint,
            stream: Some(stream),
            token: None,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            next_req: 0,
            pending: HashMap::new(),
            completions: VecDeque::new(),
            watches: Vec::new(),
        })
    }

    /// Registers the connection's fd with `registry` under `token` (edge-triggered).
    pub fn register(&mut self, registry: &Registry, token: Token) -> Result<()> {
        let stream = self.stream.as_ref().ok_or(ClientError::Disconnected)?;
        let fd = stream.as_fd().as_raw_fd();
        registry.register(
            &mut SourceFd(&fd),
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.token = Some(token);
        Ok(())
    }

    /// Whether the connection is up.
    pub fn is_connected(&self) -> bool {
        self.stream.is_some()
    }

    /// Number of requests awaiting replies.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Queues a request and returns its req_id; the reply comes as a [`Completion::Reply`].
    pub fn submit(&mut self, tx: TxId, request: &Request) -> Result<u32> {
        if self.stream.is_none() {
            return Err(ClientError::Disconnected);
        }
        match request {
            Request::Watch { path, token } => self.watches.push((path.clone(), token.clone())),
            Request::Unwatch { path, token } => {
                self.watches.retain(|(p, t)| !(p == path && t == token))
            }
            Request::ResetWatches => self.watches.clear(),
            _ => {}
        }
        let req_id = self.send(tx, request, false)?;
        self.flush();
        Ok(req_id)
    }

    fn send(&mut self, tx: TxId, request: &Request, internal: bool) -> Result<u32> {
        // Skip ids still in flight (after 2^32 requests) and 0, which events use.
        loop {
            self.next_req = self.next_req.wrapping_add(1);
            if self.next_req != 0 && !self.pending.contains_key(&self.next_req) {
                break;
            }
        }
        let req_id = self.next_req;
        let msg = super::encode_request(&self.endpoint, req_id, tx, request)?;
        msg.encode_into(&mut self.wbuf);
        let msg_type = msg.msg_type;
        self.pending.insert(req_id, Pending { msg_type, internal });
        Ok(req_id)
    }

    /// The next reply or event, in arrival order.
    pub fn next_completion(&mut self) -> Option<Completion> {
        self.completions.pop_front()
    }

    /// Does the I/O the fd is ready for: sends queued requests, reads replies and events.
    /// Call it whenever the client's token fires (spurious calls are harmless).
    pub fn handle_ready(&mut self, registry: &Registry) {
        self.flush();
        if let Err(e) = self.read_all() {
            self.lose_connection(registry, e);
        }
    }

    fn flush(&mut self) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        while self.wpos < self.wbuf.len() {
            match stream.write(&self.wbuf[self.wpos..]) {
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock waits for the next writable edge; other errors show up on read.
                Err(_) => return,
            }
        }
        self.wbuf.clear();
        self.wpos = 0;
    }

    fn read_all(&mut self) -> Result<()> {
        loop {
            while let Some((m, used)) = wire::decode(&self.rbuf)? {
                self.rbuf.drain(..used);
                self.dispatch(m)?;
            }
            let Some(stream) = self.stream.as_mut() else {
                return Ok(());
            };
            let start = self.rbuf.len();
            self.rbuf.resize(start + FRAME_MAX, 0);
            let r = stream.read(&mut self.rbuf[start..]);
            self.rbuf.truncate(start + *r.as_ref().unwrap_or(&0));
            match r {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn dispatch(&mut self, m: Message) -> Result<()> {
        if m.msg_type == MsgType::WatchEvent {
            let event = WatchEvent::parse(m.payload())?;
            self.completions.push_back(Completion::Event(event));
            return Ok(());
        }
        // A reply to nothing we sent is ignored, as libxenstore ignores req_id altogether.
        let req_id = m.req_id;
        let Some(p) = self.pending.remove(&req_id) else {
            return Ok(());
        };
        let result = match m.msg_type {
            MsgType::Error => Err(ClientError::Xs(XsErrno::from_payload(m.payload()))),
            t if t == p.msg_type => Ok(m.into_payload()),
            got => Err(ClientError::UnexpectedReply {
                got,
                sent: p.msg_type,
            }),
        };
        if !p.internal {
            self.completions
                .push_back(Completion::Reply { req_id, result });
        }
        Ok(())
    }

    fn lose_connection(&mut self, registry: &Registry, cause: ClientError) {
        if let Some(stream) = self.stream.take() {
            let fd = stream.as_fd().as_raw_fd();
            let _ = registry.deregister(&mut SourceFd(&fd));
        }
        self.rbuf.clear();
        self.wbuf.clear();
        self.wpos = 0;
        let mut lost: Vec<(u32, Pending)> = self.pending.drain().collect();
        lost.sort_by_key(|(id, _)| *id);
        for (req_id, p) in lost {
            if !p.internal {
                self.completions.push_back(Completion::Reply {
                    req_id,
                    result: Err(ClientError::Disconnected),
                });
            }
        }
        self.completions
            .push_back(Completion::Disconnected { cause });
    }

    /// Tries once to connect again; on success registers with the same token and
    /// re-registers every watch.
    pub fn reconnect(&mut self, registry: &Registry) -> Result<()> {
        let token = self.token.ok_or(ClientError::Disconnected)?;
        self.stream = Some(open_nonblocking(&self.endpoint)?);
        self.register(registry, token)?;
        for (path, token) in self.watches.clone() {
            self.send(TxId::NONE, &Request::Watch { path, token }, true)?;
        }
        self.flush();
        Ok(())
    }
}
