//! The xenstore wire format: a 16-byte header and a bounded payload.
//!
//! Layout (xs_wire.h `struct xsd_sockmsg`, host byte order): `type`, `req_id`, `tx_id`, `len`,
//! each a u32, then `len` payload bytes. `len` never exceeds [`PAYLOAD_MAX`]; a frame that
//! claims more is refused from its header alone, before any payload is buffered, so a peer
//! cannot make us allocate more than one header plus [`PAYLOAD_MAX`].

mod errno;
mod request;

pub use errno::XsErrno;
pub use request::{Request, RequestError};

use thiserror::Error;

/// Size of the message header.
pub const HEADER_LEN: usize = 16;
/// Largest payload in either direction (XENSTORE_PAYLOAD_MAX).
pub const PAYLOAD_MAX: usize = 4096;
/// Longest absolute path (XENSTORE_ABS_PATH_MAX).
pub const ABS_PATH_MAX: usize = 3072;
/// Longest relative path (XENSTORE_REL_PATH_MAX).
pub const REL_PATH_MAX: usize = 2048;
/// Largest complete frame.
pub const FRAME_MAX: usize = HEADER_LEN + PAYLOAD_MAX;

macro_rules! msg_types {
    ($($(#[$doc:meta])* $name:ident = $num:literal,)*) => {
        /// Message types (xs_wire.h `enum xsd_sockmsg_type`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum MsgType {
            $($(#[$doc])* $name = $num,)*
        }

        impl MsgType {
            /// The type for a wire number, if it is one Xen defines.
            pub fn from_u32(n: u32) -> Option<MsgType> {
                match n {
                    $($num => Some(MsgType::$name),)*
                    _ => None,
                }
            }
        }
    };
}

msg_types! {
    /// XS_CONTROL (alias XS_DEBUG).
    Control = 0,
    /// List a node's children.
    Directory = 1,
    /// Read a node's value.
    Read = 2,
    /// Read a node's permissions.
    GetPerms = 3,
    /// Register a watch.
    Watch = 4,
    /// Remove a watch.
    Unwatch = 5,
    /// Open a transaction.
    TransactionStart = 6,
    /// Commit or abort a transaction.
    TransactionEnd = 7,
    /// Introduce a domain (privileged).
    Introduce = 8,
    /// Release a domain (privileged).
    Release = 9,
    /// Ask for a domain's home path.
    GetDomainPath = 10,
    /// Write a node's value.
    Write = 11,
    /// Make sure a node exists.
    Mkdir = 12,
    /// Remove a subtree.
    Rm = 13,
    /// Set a node's permissions.
    SetPerms = 14,
    /// Watch event (server to client).
    WatchEvent = 15,
    /// Error reply (server to client).
    Error = 16,
    /// Ask whether a domain is introduced (privileged).
    IsDomainIntroduced = 17,
    /// Resume a domain (privileged).
    Resume = 18,
    /// Give a domain privileges over another (privileged).
    SetTarget = 19,
    /// Drop all watches and transactions of the caller.
    ResetWatches = 21,
    /// A chunk of a long directory listing.
    DirectoryPart = 22,
    /// Read a feature bitmap (Xen 4.21+).
    GetFeature = 23,
    /// Set a feature bitmap (Xen 4.21+).
    SetFeature = 24,
    /// Read a quota (Xen 4.22+).
    GetQuota = 25,
    /// Set a quota (Xen 4.22+).
    SetQuota = 26,
}

/// A malformed frame or payload.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// The header claims more than [`PAYLOAD_MAX`] bytes: the stream cannot be trusted.
    #[error("frame claims a {len}-byte payload, over the {PAYLOAD_MAX}-byte limit")]
    PayloadTooLong {
        /// The claimed length.
        len: u32,
    },
    /// A complete frame whose type Xen does not define. The stream is still in step, so the
    /// receiver may skip `frame_len` bytes and answer `ENOSYS`.
    #[error("unknown message type {msg_type} (req_id {req_id})")]
    UnknownType {
        /// The raw type number.
        msg_type: u32,
        /// The request id, for the error reply.
        req_id: u32,
        /// The transaction id, for the error reply.
        tx_id: u32,
        /// Header plus payload length, to skip the frame.
        frame_len: usize,
    },
    /// A message built with a payload over [`PAYLOAD_MAX`].
    #[error("payload of {len} bytes exceeds the {PAYLOAD_MAX}-byte limit")]
    Oversized {
        /// The payload length.
        len: usize,
    },
}

impl WireError {
    /// Whether the byte stream is lost (the peer must be dropped) rather than one frame bad.
    pub fn is_fatal(&self) -> bool {
        match self {
            WireError::PayloadTooLong { .. } | WireError::Oversized { .. } => true,
            WireError::UnknownType { .. } => false,
        }
    }
}

/// One message: header fields and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// What the message is.
    pub msg_type: MsgType,
    /// Request id, echoed in the reply; 0 in watch events.
    pub req_id: u32,
    /// Transaction id, 0 for none.
    pub tx_id: u32,
    payload: Vec<u8>,
}

impl Message {
    /// A message, refused if the payload exceeds [`PAYLOAD_MAX`].
    pub fn new(
        msg_type: MsgType,
        req_id: u32,
        tx_id: u32,
        payload: Vec<u8>,
    ) -> Result<Message, WireError> {
        if payload.len() > PAYLOAD_MAX {
            return Err(WireError::Oversized { len: payload.len() });
        }
        Ok(Message {
            msg_type,
            req_id,
            tx_id,
            payload,
        })
    }

    /// An `XS_ERROR` reply to a request.
    pub fn error(req_id: u32, tx_id: u32, errno: &XsErrno) -> Message {
        let mut payload = errno.to_payload();
        // A name can only be long if it came from `Other`; keep the frame legal regardless.
        payload.truncate(PAYLOAD_MAX);
        Message {
            msg_type: MsgType::Error,
            req_id,
            tx_id,
            payload,
        }
    }

    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Takes the payload.
    pub fn into_payload(self) -> Vec<u8> {
        self.payload
    }

    /// Length of the encoded frame.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Appends the encoded frame to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.frame_len());
        for field in [
            self.msg_type as u32,
            self.req_id,
            self.tx_id,
            // Lossless: `new` bounds the payload to PAYLOAD_MAX.
            self.payload.len() as u32,
        ] {
            out.extend_from_slice(&field.to_ne_bytes());
        }
        out.extend_from_slice(&self.payload);
    }

    /// The encoded frame.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

fn field(buf: &[u8], index: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&buf[index * 4..index * 4 + 4]);
    u32::from_ne_bytes(word)
}

/// Decodes the first frame in `buf`.
///
/// Returns `Ok(None)` while the frame is incomplete (read more, at most [`FRAME_MAX`] bytes
/// are ever needed), else the message and the number of bytes it used. The length is checked
/// as soon as the header is in, so a peer claiming a huge payload is refused at once.
pub fn decode(buf: &[u8]) -> Result<Option<(Message, usize)>, WireError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = field(buf, 3);
    if len as usize > PAYLOAD_MAX {
        return Err(WireError::PayloadTooLong { len });
    }
    let frame_len = HEADER_LEN + len as usize;
    if buf.len() < frame_len {
        return Ok(None);
    }
    let (raw_type, req_id, tx_id) = (field(buf, 0), field(buf, 1), field(buf, 2));
    let msg_type = MsgType::from_u32(raw_type).ok_or(WireError::UnknownType {
        msg_type: raw_type,
        req_id,
        tx_id,
        frame_len,
    })?;
    let message = Message {
        msg_type,
        req_id,
        tx_id,
        payload: buf[HEADER_LEN..frame_len].to_vec(),
    };
    Ok(Some((message, frame_len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(t: u32, req: u32, tx: u32, len: u32) -> Vec<u8> {
        [t, req, tx, len]
            .iter()
            .flat_map(|f| f.to_ne_bytes())
            .collect()
    }

    #[test]
    fn header_layout_matches_xs_wire() {
        let m = Message::new(MsgType::Write, 7, 9, b"a\0b".to_vec()).unwrap();
        let bytes = m.to_bytes();
        assert_eq!(&bytes[..HEADER_LEN], &header(11, 7, 9, 3)[..]);
        assert_eq!(&bytes[HEADER_LEN..], b"a\0b");
    }

    #[test]
    fn huge_claim_is_refused_from_the_header_alone() {
        let buf = header(2, 1, 0, 1 << 30);
        assert_eq!(
            decode(&buf),
            Err(WireError::PayloadTooLong { len: 1 << 30 })
        );
        assert!(decode(&buf).unwrap_err().is_fatal());
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let bytes = Message::new(MsgType::Read, 1, 0, b"/a\0".to_vec())
            .unwrap()
            .to_bytes();
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(decode(&bytes).unwrap().unwrap().1, bytes.len());
    }

    #[test]
    fn unknown_type_is_skippable() {
        let mut buf = header(20, 5, 0, 2);
        buf.extend_from_slice(b"x\0");
        let err = decode(&buf).unwrap_err();
        assert!(!err.is_fatal());
        assert_eq!(
            err,
            WireError::UnknownType {
                msg_type: 20,
                req_id: 5,
                tx_id: 0,
                frame_len: 18
            }
        );
    }

    #[test]
    fn oversized_message_cannot_be_built() {
        assert_eq!(
            Message::new(MsgType::Write, 0, 0, vec![0; PAYLOAD_MAX + 1]),
            Err(WireError::Oversized {
                len: PAYLOAD_MAX + 1
            })
        );
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(
            t in prop::sample::select(vec![0u32, 1, 2, 3, 4, 5, 6, 7, 11, 15, 16, 21, 22]),
            req in any::<u32>(),
            tx in any::<u32>(),
            payload in prop::collection::vec(any::<u8>(), 0..=PAYLOAD_MAX),
        ) {
            let m = Message::new(MsgType::from_u32(t).unwrap(), req, tx, payload).unwrap();
            let mut bytes = m.to_bytes();
            bytes.extend_from_slice(b"trailing");
            let (back, used) = decode(&bytes).unwrap().unwrap();
            prop_assert_eq!(back, m);
            prop_assert_eq!(used, bytes.len() - 8);
        }

        // Frames whose length field matches their payload (or claims too much, sometimes),
        // of known and unknown types, cut anywhere: every outcome of `decode` is checked.
        // (Random bytes would almost only reach the length check; the codec fuzz target
        // covers arbitrary input.)
        #[test]
        fn decode_of_consistent_frames_cut_anywhere(
            t in prop_oneof![
                3 => prop::sample::select(vec![0u32, 1, 2, 3, 4, 5, 6, 7, 11, 15, 16, 21, 22]),
                1 => any::<u32>(),
            ],
            req in any::<u32>(),
            tx in any::<u32>(),
            payload in prop_oneof![
                4 => prop::collection::vec(any::<u8>(), 0..64),
                1 => prop::collection::vec(any::<u8>(), 0..=PAYLOAD_MAX),
            ],
            overlong in prop::option::weighted(0.1, 1u32..=u32::MAX - PAYLOAD_MAX as u32),
            cut in any::<prop::sample::Index>(),
        ) {
            let claimed = match overlong {
                Some(extra) => PAYLOAD_MAX as u32 + extra,
                None => payload.len() as u32,
            };
            let mut bytes = header(t, req, tx, claimed);
            bytes.extend_from_slice(&payload);
            bytes.extend_from_slice(b"next frame");
            let cut = cut.index(bytes.len() + 1);
            let frame_len = HEADER_LEN + payload.len();
            let got = decode(&bytes[..cut]);
            if cut < HEADER_LEN {
                prop_assert_eq!(got, Ok(None));
            } else if overlong.is_some() {
                prop_assert_eq!(got, Err(WireError::PayloadTooLong { len: claimed }));
            } else if cut < frame_len {
                prop_assert_eq!(got, Ok(None));
            } else if let Some(msg_type) = MsgType::from_u32(t) {
                let expected = Message::new(msg_type, req, tx, payload).unwrap();
                prop_assert_eq!(got, Ok(Some((expected, frame_len))));
            } else {
                let unknown = WireError::UnknownType { msg_type: t, req_id: req, tx_id: tx, frame_len };
                prop_assert_eq!(got, Err(unknown));
            }
        }
    }
}
