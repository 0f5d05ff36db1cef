//! A client of tokenbackd's control socket (docs/qos.md, "Control socket"): one JSON object
//! a line each way.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenback::platform::sim::RunDir;

use super::EVENTUALLY;

/// Where tokenbackd serves its control socket under `--sim DIR`.
pub fn socket_of(run: &RunDir) -> PathBuf {
    run.root().join("tokenbackd.sock")
}

/// A connection to the control socket, replies read with a generous timeout.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    pub fn connect(path: &Path) -> Client {
        let stream = UnixStream::connect(path)
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", path.display()));
        stream.set_read_timeout(Some(EVENTUALLY)).unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// The next reply line, parsed.
    pub fn reply(&mut self) -> Value {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).unwrap();
        assert!(
            n > 0,
            "the daemon closed the connection instead of replying"
        );
        assert!(line.ends_with('\n'), "a reply is a whole line: {line:?}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {line:?}: {e}"))
    }

    /// Sends raw bytes and reads one reply.
    pub fn reply_to(&mut self, bytes: &[u8]) -> Value {
        self.send(bytes);
        self.reply()
    }

    pub fn ask(&mut self, request: &Value) -> Value {
        self.send(format!("{request}\n").as_bytes());
        self.reply()
    }

    /// Whether the daemon closed the connection (after any replies still unread).
    pub fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
            Err(e) => panic!("reading until the daemon closes: {e}"),
        }
    }
}
