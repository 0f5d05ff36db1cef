//! A response in protocol-neutral form, and the statuses a back end sends.

use crate::abi::{BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY};

/// One `blkif_response`, independent of the protocol's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response {
    /// The request's `id`.
    pub id: u64,
    /// The request's operation (an indirect request's `indirect_op`).
    pub operation: u8,
    /// `BLKIF_RSP_*`; a front end must expect any value here.
    pub status: i16,
}

/// The outcomes a back end reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// `BLKIF_RSP_OKAY`.
    Okay,
    /// `BLKIF_RSP_ERROR`: an I/O error or a malformed request.
    Error,
    /// `BLKIF_RSP_EOPNOTSUPP`: the operation is unknown or not offered.
    NotSupported,
}

impl Status {
    /// The wire value.
    pub const fn raw(self) -> i16 {
        match self {
            Status::Okay => BLKIF_RSP_OKAY,
            Status::Error => BLKIF_RSP_ERROR,
            Status::NotSupported => BLKIF_RSP_EOPNOTSUPP,
        }
    }
}
