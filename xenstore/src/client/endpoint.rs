//! Where xenstored is, found as libxenstore finds it (xs.c, xenstore-common.h).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::{ClientError, Result};
use crate::wire::{HEADER_LEN, PAYLOAD_MAX};

/// A way to reach xenstored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix stream socket.
    Socket(PathBuf),
    /// A character device carrying the same stream (`/dev/xen/xenbus`).
    Device(PathBuf),
}

/// Socket paths tried when neither XENSTORED_PATH nor XENSTORED_RUNDIR is set: Xen's default
/// rundir and the `--with-rundir=/run` one.
const SOCKETS: [&str; 2] = ["/var/run/xenstored/socket", "/run/xenstored/socket"];
const DEVICES: [&str; 2] = ["/dev/xen/xenbus", "/proc/xen/xenbus"];

impl Endpoint {
    /// `$XENSTORED_PATH` (a socket, or else a device), else `$XENSTORED_RUNDIR/socket`, else the
    /// standard socket paths, else `/dev/xen/xenbus` (`/proc/xen/xenbus`): the first that
    /// exists.
    pub fn discover() -> Result<Endpoint> {
        if let Some(path) = std::env::var_os("XENSTORED_PATH") {
            return Ok(Endpoint::for_path(Path::new(&path)));
        }
        let mut sockets: Vec<PathBuf> = SOCKETS.iter().map(PathBuf::from).collect();
        if let Some(dir) = std::env::var_os("XENSTORED_RUNDIR") {
            sockets.insert(0, Path::new(&dir).join("socket"));
        }
        let found = sockets
            .into_iter()
            .find(|p| is_socket(p))
            .map(Endpoint::Socket)
            .or_else(|| {
                DEVICES
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.exists())
                    .map(Endpoint::Device)
            });
        found.ok_or_else(|| {
            ClientError::Io(io::Error::new(
                io::ErrorKind::NotFound,
                "no xenstored socket or xenbus device",
            ))
        })
    }

    /// A socket if `path` is one, else a device (as libxenstore decides by stat).
    pub fn for_path(path: &Path) -> Endpoint {
        if is_socket(path) {
            Endpoint::Socket(path.to_owned())
        } else {
            Endpoint::Device(path.to_owned())
        }
    }

    /// The path.
    pub fn path(&self) -> &Path {
        match self {
            Endpoint::Socket(p) | Endpoint::Device(p) => p,
        }
    }

    /// The largest payload a request may carry here: Linux's xenbus device takes a message
    /// only if header and payload together fit in 4096 bytes (xenbus_dev_frontend.c).
    pub fn max_payload(&self) -> usize {
        match self {
            Endpoint::Socket(_) => PAYLOAD_MAX,
            Endpoint::Device(_) => PAYLOAD_MAX - HEADER_LEN,
        }
    }

    pub(crate) fn open(&self) -> io::Result<Stream> {
        match self {
            Endpoint::Socket(p) => UnixStream::connect(p).map(Stream::Socket),
            Endpoint::Device(p) => OpenOptions::new()
                .read(true)
                .write(true)
                .open(p)
                .map(Stream::Device),
        }
    }
}

fn is_socket(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// An open connection to xenstored.
pub(crate) enum Stream {
    Socket(UnixStream),
    Device(File),
}

impl Stream {
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        match self {
            Stream::Socket(s) => s.as_fd(),
            Stream::Device(f) => f.as_fd(),
        }
    }
}

impl io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Socket(s) => s.read(buf),
            Stream::Device(f) => f.read(buf),
        }
    }
}

impl io::Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Socket(s) => s.write(buf),
            Stream::Device(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
