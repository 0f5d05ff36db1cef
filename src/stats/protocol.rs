//! The control socket's protocol (docs/qos.md, "Control socket"): one JSON object a line each
//! way. This module frames lines and parses requests; it knows nothing of sockets, so that
//! garbage, partial and overlong input are tested here without one.

use serde_json::{json, Map, Value};

use crate::xenbus::DeviceId;

/// The protocol's version, in `{"op":"version"}`'s reply.
pub const PROTOCOL: u32 = 1;
/// The longest request line accepted, without its "\n".
pub const MAX_LINE: usize = 64 * 1024;

/// Why a request line was refused; the text goes back in `{"ok":false,"error":...}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request line longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a JSON object")]
    NotObject,
    #[error("no \"op\"")]
    NoOp,
    #[error("\"op\" must be a string")]
    OpNotString,
    #[error("unknown op \"{0}\" (known: version, list, stats, reset)")]
    UnknownOp(String),
    #[error("\"{field}\" must be {want}")]
    BadFilter {
        field: &'static str,
        want: &'static str,
    },
}

/// Which VBDs and groups a `stats` or `reset` is about: a VBD matches when every given filter
/// matches it; a group is matched by `group` alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub domid: Option<u16>,
    pub devid: Option<u32>,
    pub group: Option<String>,
}

impl Filter {
    /// Whether the VBD `id`, a member of `group` if any, matches.
    pub fn matches_vbd(&self, id: DeviceId, group: Option<&str>) -> bool {
        self.domid.map_or(true, |d| d == id.frontend_id.0)
            && self.devid.map_or(true, |d| d == id.devid)
            && self.group.as_deref().map_or(true, |g| group == Some(g))
    }

    /// Whether the group `name` matches.
    pub fn matches_group(&self, name: &str) -> bool {
        self.group.as_deref().map_or(true, |g| g == name)
    }

    fn parse(request: &Map<String, Value>) -> Result<Filter, RequestError> {
        let number = |field: &'static str, max: u64, want: &'static str| match request.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|&n| n <= max)
                .map(Some)
                .ok_or(RequestError::BadFilter { field, want }),
        };
        let domid = number("domid", u16::MAX.into(), "an integer from 0 to 65535")?;
        let devid = number("devid", u32::MAX.into(), "an integer from 0 to 4294967295")?;
        let group = match request.get("group") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(name.clone()),
            Some(_) => {
                return Err(RequestError::BadFilter {
                    field: "group",
                    want: "a string",
                })
            }
        };
        Ok(Filter {
            // In range: checked above.
            domid: domid.map(|n| n as u16),
            devid: devid.map(|n| n as u32),
            group,
        })
    }
}

/// A request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Version,
    List,
    Stats(Filter),
    Reset(Filter),
}

impl Request {
    /// Parses one line (without its "\n"); unknown fields are ignored.
    pub fn parse(line: &[u8]) -> Result<Request, RequestError> {
        let value: Value =
            serde_json::from_slice(line).map_err(|e| RequestError::NotJson(e.to_string()))?;
        let Value::Object(request) = value else {
            return Err(RequestError::NotObject);
        };
        let op = match request.get("op") {
            None => return Err(RequestError::NoOp),
            Some(Value::String(op)) => op.as_str(),
            Some(_) => return Err(RequestError::OpNotString),
        };
        match op {
            "version" => Ok(Request::Version),
            "list" => Ok(Request::List),
            "stats" => Ok(Request::Stats(Filter::parse(&request)?)),
            "reset" => Ok(Request::Reset(Filter::parse(&request)?)),
            other => Err(RequestError::UnknownOp(other.to_owned())),
        }
    }
}

/// The reply to a refused request.
pub fn error_reply(error: &str) -> Value {
    json!({"ok": false, "error": error})
}

/// One reply as a line.
pub fn encode(reply: &Value) -> Vec<u8> {
    let mut line = reply.to_string().into_bytes();
    line.push(b'\n');
    line
}

/// Splits what a client sends into lines of at most [`MAX_LINE`] bytes.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no "\n".
    scanned: usize,
}

impl Framer {
    /// Appends bytes read from the client.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete line, without its "\n"; `Err` once a line is too long (the
    /// connection is then closed, so what follows it is never read as requests).
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, RequestError> {
        match self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let end = self.scanned + i;
                self.scanned = 0;
                if end > MAX_LINE {
                    return Err(RequestError::TooLong);
                }
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                Ok(Some(line))
            }
            None => {
                self.scanned = self.buf.len();
                if self.buf.len() > MAX_LINE {
                    return Err(RequestError::TooLong);
                }
                Ok(None)
            }
        }
    }

    /// Whether part of a line is waiting for its end.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::DomId;

    fn parse(line: &str) -> Result<Request, RequestError> {
        Request::parse(line.as_bytes())
    }

    #[test]
    fn requests_parse_with_their_filters_and_unknown_fields_ignored() {
        assert_eq!(parse(r#"{"op":"version"}"#), Ok(Request::Version));
        assert_eq!(parse(r#"{"op":"list","extra":[1,2]}"#), Ok(Request::List));
        assert_eq!(
            parse(r#"{"op":"stats"}"#),
            Ok(Request::Stats(Filter::default()))
        );
        assert_eq!(
            parse(r#"{"op":"reset","domid":5,"devid":51712,"group":"g1","x":null}"#),
            Ok(Request::Reset(Filter {
                domid: Some(5),
                devid: Some(51712),
                group: Some("g1".into()),
            }))
        );
        // Filters are an op's own: a list ignores them, whatever their type.
        assert_eq!(parse(r#"{"op":"list","domid":"x"}"#), Ok(Request::List));
    }

    #[test]
    fn garbage_gets_a_reason() {
        type Want = fn(&RequestError) -> bool;
        let cases: [(&str, Want); 9] = [
            ("hello", |e| matches!(e, RequestError::NotJson(_))),
            ("{\"op\":", |e| matches!(e, RequestError::NotJson(_))),
            ("\u{fffd}\u{0}", |e| matches!(e, RequestError::NotJson(_))),
            ("[1,2]", |e| *e == RequestError::NotObject),
            ("\"stats\"", |e| *e == RequestError::NotObject),
            ("{}", |e| *e == RequestError::NoOp),
            ("{\"op\":7}", |e| *e == RequestError::OpNotString),
            ("{\"op\":\"STATS\"}", |e| {
                *e == RequestError::UnknownOp("STATS".into())
            }),
            ("", |e| matches!(e, RequestError::NotJson(_))),
        ];
        for (line, want) in cases {
            let got = parse(line).expect_err(line);
            assert!(want(&got), "{line:?} gave {got:?}");
        }
        assert!(matches!(
            Request::parse(&[0xff, 0xfe, b'{']),
            Err(RequestError::NotJson(_))
        ));
        assert_eq!(
            parse(r#"{"op":"frobnicate"}"#).unwrap_err().to_string(),
            "unknown op \"frobnicate\" (known: version, list, stats, reset)"
        );
    }

    #[test]
    fn bad_filter_types_and_ranges_are_refused_by_name() {
        for (line, field) in [
            (r#"{"op":"stats","domid":"5"}"#, "domid"),
            (r#"{"op":"stats","domid":-1}"#, "domid"),
            (r#"{"op":"stats","domid":65536}"#, "domid"),
            (r#"{"op":"stats","domid":1.5}"#, "domid"),
            (r#"{"op":"reset","devid":4294967296}"#, "devid"),
            (r#"{"op":"reset","devid":[1]}"#, "devid"),
            (r#"{"op":"stats","group":5}"#, "group"),
            (r#"{"op":"reset","group":{"name":"g"}}"#, "group"),
        ] {
            match parse(line) {
                Err(RequestError::BadFilter { field: f, .. }) => assert_eq!(f, field, "{line}"),
                other => panic!("{line} gave {other:?}"),
            }
        }
        assert_eq!(
            parse(r#"{"op":"stats","domid":"5"}"#)
                .unwrap_err()
                .to_string(),
            "\"domid\" must be an integer from 0 to 65535"
        );
    }

    #[test]
    fn filters_select_vbds_by_every_field_and_groups_by_name() {
        let id = DeviceId {
            frontend_id: DomId(5),
            devid: 51712,
        };
        let filter = |domid, devid, group: Option<&str>| Filter {
            domid,
            devid,
            group: group.map(str::to_owned),
        };
        assert!(Filter::default().matches_vbd(id, None));
        assert!(filter(Some(5), Some(51712), None).matches_vbd(id, None));
        assert!(!filter(Some(6), Some(51712), None).matches_vbd(id, None));
        assert!(!filter(Some(5), Some(51728), None).matches_vbd(id, None));
        assert!(filter(Some(5), None, Some("g1")).matches_vbd(id, Some("g1")));
        assert!(!filter(None, None, Some("g1")).matches_vbd(id, None));
        assert!(!filter(None, None, Some("g1")).matches_vbd(id, Some("g2")));
        assert!(filter(Some(9), None, None).matches_group("g1"));
        assert!(filter(None, None, Some("g1")).matches_group("g1"));
        assert!(!filter(None, None, Some("g1")).matches_group("g2"));
    }

    #[test]
    fn lines_are_split_however_the_bytes_arrive() {
        let mut framer = Framer::default();
        framer.feed(b"{\"op\":\"ver");
        assert_eq!(framer.next_line(), Ok(None));
        assert!(framer.has_partial());
        framer.feed(b"sion\"}\n{\"op\":\"list\"}\n{\"op\"");
        assert_eq!(
            framer.next_line(),
            Ok(Some(b"{\"op\":\"version\"}".to_vec()))
        );
        assert_eq!(framer.next_line(), Ok(Some(b"{\"op\":\"list\"}".to_vec())));
        assert_eq!(framer.next_line(), Ok(None));
        assert!(framer.has_partial());
        framer.feed(b":\"stats\"}\n");
        assert_eq!(framer.next_line(), Ok(Some(b"{\"op\":\"stats\"}".to_vec())));
        assert!(!framer.has_partial());
        // An empty line is a line (refused as not JSON by the parser).
        framer.feed(b"\n");
        assert_eq!(framer.next_line(), Ok(Some(Vec::new())));
    }

    #[test]
    fn a_line_of_exactly_the_limit_passes_and_one_byte_more_is_refused() {
        let mut framer = Framer::default();
        framer.feed(&vec![b' '; MAX_LINE]);
        assert_eq!(framer.next_line(), Ok(None));
        framer.feed(b"\n");
        assert_eq!(framer.next_line().unwrap().unwrap().len(), MAX_LINE);

        // Without its end: refused as soon as it is longer, in pieces.
        let mut framer = Framer::default();
        for _ in 0..64 {
            framer.feed(&[b'x'; 1024]);
            assert_eq!(framer.next_line(), Ok(None));
        }
        framer.feed(b"x");
        assert_eq!(framer.next_line(), Err(RequestError::TooLong));

        // With its end in the same read.
        let mut framer = Framer::default();
        let mut long = vec![b'x'; MAX_LINE + 1];
        long.push(b'\n');
        framer.feed(&long);
        assert_eq!(framer.next_line(), Err(RequestError::TooLong));
    }

    #[test]
    fn replies_are_one_line_each() {
        let line = encode(&error_reply("bad \"thing\"\nhere"));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(line.last(), Some(&b'\n'));
        let back: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(back["ok"], false);
        assert_eq!(back["error"], "bad \"thing\"\nhere");
    }
}
