//! A client of tokenbackd's control socket: JSON lines, one reply per request, in order, on
//! one connection that is kept while it works.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use thiserror::Error;

use super::model::{Filter, ResetCount, Stats, Version};

/// Where the daemon listens when nothing says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/tokenback/control.sock";

/// The protocol this client speaks.
pub const PROTOCOL: u32 = 1;

/// A reply longer than this is not the daemon's (a list of thousands of VBDs is a few MiB).
const MAX_REPLY: u64 = 64 << 20;

#[derive(Debug, Error)]
pub enum SocketError {
    #[error("tokenbackd is not running: nothing listens at {} ({source})", .path.display())]
    NotRunning { path: PathBuf, source: io::Error },
    #[error("cannot connect to {}: {source}", .path.display())]
    Connect { path: PathBuf, source: io::Error },
    #[error("control socket: {0}")]
    Io(#[from] io::Error),
    #[error("tokenbackd closed the control connection")]
    Closed,
    #[error("tokenbackd's reply is longer than {MAX_REPLY} bytes")]
    TooLong,
    #[error("tokenbackd's reply is not what the protocol says ({source}): {line}")]
    Garbage {
        line: String,
        source: serde_json::Error,
    },
    #[error("tokenbackd refused {op}: {error}")]
    Refused { op: String, error: String },
    #[error("tokenbackd speaks control protocol {0}; this tokentop speaks {PROTOCOL}")]
    Protocol(u32),
}

impl SocketError {
    /// Whether the daemon is simply not there (a message to show, not a failure to report).
    pub fn is_not_running(&self) -> bool {
        matches!(self, SocketError::NotRunning { .. } | SocketError::Closed)
    }
}

/// The socket path: `--socket`, else `DIR/tokenbackd.sock` under `--sim DIR`, else
/// `$RUNTIME_DIRECTORY/control.sock`, else the default; as tokenbackd chooses it.
pub fn socket_path(socket: Option<&Path>, sim: Option<&Path>) -> PathBuf {
    if let Some(path) = socket {
        return path.to_owned();
    }
    if let Some(dir) = sim {
        return dir.join("tokenbackd.sock");
    }
    match std::env::var_os("RUNTIME_DIRECTORY") {
        // systemd may give several, separated by colons: the daemon uses the first.
        Some(dirs) if !dirs.is_empty() => {
            let first = dirs
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or("")
                .to_owned();
            Path::new(&first).join("control.sock")
        }
        _ => PathBuf::from(DEFAULT_SOCKET),
    }
}

/// One connection to the daemon.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects, and checks that the daemon speaks our protocol.
    pub fn connect(path: &Path, timeout: Duration) -> Result<(Client, Version), SocketError> {
        let stream = UnixStream::connect(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => SocketError::NotRunning {
                path: path.to_owned(),
                source,
            },
            _ => SocketError::Connect {
                path: path.to_owned(),
                source,
            },
        })?;
        // A daemon that stops answering must not freeze the screen or a scrape.
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut client = Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let version: Version = client.call(json!({"op": "version"}))?;
        if version.protocol != PROTOCOL {
            return Err(SocketError::Protocol(version.protocol));
        }
        Ok((client, version))
    }

    pub fn stats(&mut self, filter: &Filter) -> Result<Stats, SocketError> {
        self.call(with_op("stats", filter))
    }

    /// Zeroes the matching counters.
    pub fn reset(&mut self, filter: &Filter) -> Result<ResetCount, SocketError> {
        #[derive(serde::Deserialize)]
        struct Reply {
            reset: ResetCount,
        }
        Ok(self.call::<Reply>(with_op("reset", filter))?.reset)
    }

    /// Sends one request and reads its reply, refused (`"ok":false`) or parsed as `T`.
    fn call<T: DeserializeOwned>(&mut self, request: Value) -> Result<T, SocketError> {
        let op = request["op"].as_str().unwrap_or("?").to_owned();
        let mut line = request.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).map_err(closed)?;
        let reply = self.read_line()?;
        let garbage = |source| SocketError::Garbage {
            line: reply.trim_end().chars().take(200).collect(),
            source,
        };
        let value: Value = serde_json::from_str(&reply).map_err(garbage)?;
        if value["ok"] != Value::Bool(true) {
            let error = value["error"]
                .as_str()
                .unwrap_or("no reason given")
                .to_owned();
            return Err(SocketError::Refused { op, error });
        }
        serde_json::from_value(value).map_err(garbage)
    }

    fn read_line(&mut self) -> Result<String, SocketError> {
        let mut bytes = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_REPLY)
            .read_until(b'\n', &mut bytes)
            .map_err(closed)?;
        match (n, bytes.last()) {
            (0, _) => Err(SocketError::Closed),
            (_, Some(b'\n')) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            _ if n as u64 >= MAX_REPLY => Err(SocketError::TooLong),
            // A partial line then end of stream: the daemon went away mid-reply.
            _ => Err(SocketError::Closed),
        }
    }
}

/// The daemon as tokentop sees it over time: connected when asked, reconnected after it
/// went away.
pub struct Daemon {
    path: PathBuf,
    timeout: Duration,
    client: Option<Client>,
    version: Option<Version>,
    connections: u64,
}

impl Daemon {
    pub fn new(path: PathBuf, timeout: Duration) -> Daemon {
        Daemon {
            path,
            timeout,
            client: None,
            version: None,
            connections: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The version the daemon gave when last connected.
    pub fn version(&self) -> Option<&Version> {
        self.version.as_ref()
    }

    /// Counts connections made: a change means a daemon whose clock and counters may be new.
    pub fn connections(&self) -> u64 {
        self.connections
    }

    pub fn stats(&mut self, filter: &Filter) -> Result<Stats, SocketError> {
        self.with_client(|c| c.stats(filter))
    }

    pub fn reset(&mut self, filter: &Filter) -> Result<ResetCount, SocketError> {
        self.with_client(|c| c.reset(filter))
    }

    /// Runs `call` on the connection, made first if there is none. A connection kept from
    /// before may be to a daemon that has since restarted: when it fails, `call` is tried
    /// once more on a new one (a reset done twice zeroes the same counters).
    fn with_client<T>(
        &mut self,
        mut call: impl FnMut(&mut Client) -> Result<T, SocketError>,
    ) -> Result<T, SocketError> {
        let kept = self.client.is_some();
        match self.try_once(&mut call) {
            Err(SocketError::Refused { op, error }) => Err(SocketError::Refused { op, error }),
            Err(_) if kept => self.try_once(&mut call),
            result => result,
        }
    }

    /// `call` on the connection (made first if there is none); a failure other than a
    /// refusal drops the connection.
    fn try_once<T>(
        &mut self,
        call: &mut impl FnMut(&mut Client) -> Result<T, SocketError>,
    ) -> Result<T, SocketError> {
        let client = match &mut self.client {
            Some(client) => client,
            None => {
                let (client, version) = Client::connect(&self.path, self.timeout)?;
                self.connections += 1;
                self.version = Some(version);
                self.client.insert(client)
            }
        };
        let result = call(client);
        if matches!(result, Err(ref e) if !matches!(e, SocketError::Refused { .. })) {
            self.client = None;
        }
        result
    }
}

/// A connection the daemon dropped reads as the daemon gone.
fn closed(error: io::Error) -> SocketError {
    match error.kind() {
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => SocketError::Closed,
        _ => SocketError::Io(error),
    }
}

fn with_op(op: &str, filter: &Filter) -> Value {
    let mut request = serde_json::to_value(filter).expect("a filter is plain JSON");
    request["op"] = Value::from(op);
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_is_found_as_the_daemon_finds_it() {
        let given = socket_path(Some(Path::new("/x/s.sock")), Some(Path::new("/sim")));
        assert_eq!(given, Path::new("/x/s.sock"));
        let sim = socket_path(None, Some(Path::new("/tmp/run")));
        assert_eq!(sim, Path::new("/tmp/run/tokenbackd.sock"));
    }

    #[test]
    fn requests_carry_the_op_and_the_filters() {
        let filter = Filter {
            group: Some("g1".into()),
            ..Filter::default()
        };
        assert_eq!(
            with_op("reset", &filter),
            json!({"op":"reset","group":"g1"})
        );
    }
}
