//! Storage: the backing block device or file of a VBD and the engines that do its I/O.
//!
//! [`Backing::open`] checks the store once (kind, size, sector sizes, read-only, discard, O_DIRECT)
//! and [`Backing::validate`] checks each request against it. An [`Engine`] is owned by one worker:
//! it takes tagged [`Op`]s, submits them in small chunks, and reports [`Completion`]s through one
//! fd the worker registers with mio, so one wake-up drains many completions.
//!
//! Engines do not order requests: a flush or barrier must be submitted only after the requests
//! it covers have completed. [`OrderGate`], one per VBD, holds them back until then.

mod backing;
mod buf;
mod engine;
mod error;
mod order;

pub use backing::{Backing, BackingKind, Mode};
pub use buf::{BufPool, IoBuf, PAGE_SIZE};
pub use engine::{
    open_engine, open_engine_with, Completion, Engine, EngineKind, Op, Rejected, DEFAULT_CHUNK,
    DEFAULT_DEPTH,
};
pub use error::{OpenError, RequestError};
pub use order::{Class, OrderGate};
