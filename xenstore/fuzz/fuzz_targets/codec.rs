//! Decoding arbitrary bytes never panics, never buffers past one frame, and whatever
//! decodes re-encodes to the same bytes; parsed requests survive an encode/parse round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xenstore_wire::wire::{decode, Request, FRAME_MAX};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((msg, used))) = decode(rest) {
        assert!(used <= FRAME_MAX);
        assert_eq!(msg.to_bytes(), &rest[..used]);
        if let Ok(request) = Request::parse(msg.msg_type, msg.payload()) {
            let (t, payload) = request.encode();
            assert_eq!(Request::parse(t, &payload).as_ref(), Ok(&request));
        }
        rest = &rest[used..];
    }
});
