//! Opening a backing store: kind, size, sector sizes, read-only, discard, O_DIRECT; and the
//! storage-level check of each request against it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::engine::Op;
use super::error::{OpenError, RequestError};

// <linux/fs.h> block ioctls (0x12 is the block layer's ioctl type).
const BLKROGET: libc::c_ulong = 0x125e;
const BLKSSZGET: libc::c_ulong = 0x1268;
const BLKPBSZGET: libc::c_ulong = 0x127b;
const BLKDISCARD: libc::c_ulong = 0x1277;
// _IOR(0x12, 114, size_t) on 64-bit.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;

/// What the toolstack's `mode` key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `mode=w`.
    ReadWrite,
    /// `mode=r`.
    ReadOnly,
}

/// What kind of object backs the VBD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackingKind {
    /// A block device (LVM LV, AoE, loop, ...).
    Block,
    /// A regular file.
    File,
}

/// An open backing store and what was learnt about it at open.
#[derive(Debug)]
pub struct Backing {
    file: File,
    kind: BackingKind,
    /// Atomic because the worker reads it per request while a resize updates it.
    size: AtomicU64,
    logical: u32,
    physical: u32,
    read_only: bool,
    direct: bool,
    discard: bool,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_owned(),
        source,
    }
}

fn open_file(path: &Path, write: bool, direct: bool) -> io::Result<File> {
    let flags = if direct { libc::O_DIRECT } else { 0 };
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(flags)
        .open(path)
}

impl Backing {
    /// Open `path`. A read-write open that the kernel refuses as read-only (EROFS, EACCES)
    /// falls back to read-only; O_DIRECT refused (EINVAL, e.g. tmpfs) falls back to buffered I/O.
    pub fn open(path: &Path, mode: Mode) -> Result<Backing, OpenError> {
        let meta = std::fs::metadata(path).map_err(io_err(path))?;
        let kind = if meta.file_type().is_block_device() {
            BackingKind::Block
        } else if meta.file_type().is_file() {
            BackingKind::File
        } else {
            return Err(OpenError::NotBlockOrFile {
                path: path.to_owned(),
            });
        };
        let mut read_only = mode == Mode::ReadOnly;
        let mut direct = true;
        let file = loop {
            match open_file(path, !read_only, direct) {
                Ok(f) => break f,
                Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => direct = false,
                Err(e)
                    if !read_only
                        && matches!(e.raw_os_error(), Some(libc::EROFS) | Some(libc::EACCES)) =>
                {
                    read_only = true
                }
                Err(e) => return Err(io_err(path)(e)),
            }
        };
        let fd = file.as_raw_fd();
        let (size, logical, physical, discard) = match kind {
            BackingKind::Block => {
                let bytes = block_size_bytes(fd).map_err(io_err(path))?;
                let logical = ioctl_int(fd, BLKSSZGET).map_err(io_err(path))?;
                let physical = ioctl_int(fd, BLKPBSZGET).map_err(io_err(path))?;
                if ioctl_int(fd, BLKROGET).map_err(io_err(path))? != 0 {
                    read_only = true;
                }
                (bytes, logical, physical, block_discard(meta.rdev()))
            }
            // Files: 512-byte logical sectors unless the filesystem needs coarser O_DIRECT
            // offsets; its block size as the physical one.
            BackingKind::File => {
                let logical = if direct {
                    dio_offset_align(fd).max(512)
                } else {
                    512
                };
                let physical = (meta.blksize() as u32).clamp(512, 4096).max(logical);
                (meta.len(), logical, physical, true)
            }
        };
        if !logical.is_power_of_two()
            || logical < 512
            || physical < logical
            || !physical.is_power_of_two()
        {
            return Err(OpenError::BadSectorSize {
                path: path.to_owned(),
                logical,
                physical,
            });
        }
        Ok(Backing {
            file,
            kind,
            size: AtomicU64::new(size),
            logical,
            physical,
            read_only,
            direct,
            discard,
        })
    }

    /// Block device or file.
    pub fn kind(&self) -> BackingKind {
        self.kind
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// Read the size again (after the toolstack resized the LV or file) and return it in bytes;
    /// later requests are checked against it.
    pub fn refresh_size(&self) -> io::Result<u64> {
        let bytes = match self.kind {
            BackingKind::Block => block_size_bytes(self.fd())?,
            BackingKind::File => self.file.metadata()?.len(),
        };
        self.size.store(bytes, Ordering::Relaxed);
        Ok(bytes)
    }

    /// Size in 512-byte sectors (xenstore's `sectors`), rounded down.
    pub fn sectors(&self) -> u64 {
        self.size_bytes() / 512
    }

    /// Logical block size in bytes (xenstore's `sector-size`).
    pub fn logical_block_size(&self) -> u32 {
        self.logical
    }

    /// Physical block size in bytes (xenstore's `physical-sector-size`).
    pub fn physical_block_size(&self) -> u32 {
        self.physical
    }

    /// Whether writes, flushes and discards are refused.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Whether the store was opened with O_DIRECT (false: buffered, e.g. on tmpfs).
    pub fn direct(&self) -> bool {
        self.direct
    }

    /// Whether discard is offered (block device with discard_max_bytes > 0, or a file).
    pub fn discard(&self) -> bool {
        self.discard
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// The storage-level check of one request (blkif shape is checked by the ring layer).
    pub fn validate(&self, op: &Op) -> Result<(), RequestError> {
        let block = u64::from(self.logical);
        let aligned = |what, value: u64| {
            if value % block == 0 {
                Ok(())
            } else {
                Err(RequestError::Misaligned {
                    what,
                    value,
                    block: self.logical,
                })
            }
        };
        let (offset, len) = match op {
            Op::Flush => {
                return if self.read_only {
                    Err(RequestError::ReadOnly)
                } else {
                    Ok(())
                };
            }
            Op::Read { offset, bufs } | Op::Write { offset, bufs } => {
                if matches!(op, Op::Write { .. }) && self.read_only {
                    return Err(RequestError::ReadOnly);
                }
                for b in bufs {
                    aligned("buffer start", b.start() as u64)?;
                    aligned("length", b.len() as u64)?;
                }
                (*offset, bufs.iter().map(|b| b.len() as u64).sum())
            }
            Op::Discard { offset, len } => {
                if self.read_only {
                    return Err(RequestError::ReadOnly);
                }
                if !self.discard {
                    return Err(RequestError::DiscardUnsupported);
                }
                aligned("length", *len)?;
                (*offset, *len)
            }
        };
        aligned("offset", offset)?;
        if len == 0 {
            return Err(RequestError::Empty);
        }
        let size = self.size_bytes();
        if offset.checked_add(len).map_or(true, |end| end > size) {
            return Err(RequestError::PastEnd { offset, len, size });
        }
        Ok(())
    }

    /// Discard `[offset, offset + len)`: BLKDISCARD on a block device, a punched hole in a file.
    /// Blocking; the engines call it off the worker or accept the cost (see each engine).
    pub(crate) fn discard_sync(&self, offset: u64, len: u64) -> io::Result<()> {
        match self.kind {
            BackingKind::Block => {
                let range = [offset, len];
                // SAFETY: BLKDISCARD reads two u64 (start, length) through the valid pointer.
                check(unsafe { libc::ioctl(self.fd(), BLKDISCARD, range.as_ptr()) })
            }
            BackingKind::File => {
                let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
                let (off, n) = (to_off(offset)?, to_off(len)?);
                // SAFETY: fallocate on our own fd with plain integer arguments.
                check(unsafe { libc::fallocate(self.fd(), mode, off, n) })
            }
        }
    }
}

pub(crate) fn to_off(v: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(v).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))
}

pub(crate) fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn block_size_bytes(fd: RawFd) -> io::Result<u64> {
    let mut bytes: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which is valid.
    check(unsafe { libc::ioctl(fd, BLKGETSIZE64, &mut bytes) })?;
    Ok(bytes)
}

fn ioctl_int(fd: RawFd, req: libc::c_ulong) -> io::Result<u32> {
    let mut v: libc::c_int = 0;
    // SAFETY: these block ioctls write one int through the valid pointer.
    check(unsafe { libc::ioctl(fd, req, &mut v) })?;
    u32::try_from(v).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// The file offset alignment O_DIRECT needs (statx STATX_DIOALIGN, Linux 6.1); 0 when the
/// kernel does not say.
fn dio_offset_align(fd: RawFd) -> u32 {
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: statx fills the struct through the valid pointer; the empty path names `fd`.
    let rc = unsafe {
        libc::statx(
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            stx.as_mut_ptr(),
        )
    };
    if rc < 0 {
        return 0;
    }
    // SAFETY: statx succeeded, and a zeroed statx is a valid value anyway.
    let stx = unsafe { stx.assume_init() };
    if stx.stx_mask & libc::STATX_DIOALIGN != 0 {
        stx.stx_dio_offset_align
    } else {
        0
    }
}

/// A block device offers discard when its queue says it can discard something.
fn block_discard(rdev: u64) -> bool {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    std::fs::read_to_string(format!(
        "/sys/dev/block/{major}:{minor}/queue/discard_max_bytes"
    ))
    .ok()
    .and_then(|s| s.trim().parse::<u64>().ok())
    .is_some_and(|n| n > 0)
}
