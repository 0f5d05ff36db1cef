//! `XenbusState` (xen/include/public/io/xenbus.h), as the `state` keys hold it.

/// A `state` key's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XenbusState {
    /// 0: also what a missing or unreadable `state` means.
    Unknown,
    Initialising,
    InitWait,
    Initialised,
    Connected,
    Closing,
    Closed,
    /// 7 and 8 (Reconfiguring, Reconfigured: not used by vbd) or any other number.
    Other(u32),
}

impl XenbusState {
    /// Reads a `state` key (`None` when absent); garbage reads as Unknown, as in Linux.
    pub fn from_key(value: Option<&str>) -> Self {
        match value.and_then(super::frontend::parse_decimal) {
            None | Some(0) => XenbusState::Unknown,
            Some(1) => XenbusState::Initialising,
            Some(2) => XenbusState::InitWait,
            Some(3) => XenbusState::Initialised,
            Some(4) => XenbusState::Connected,
            Some(5) => XenbusState::Closing,
            Some(6) => XenbusState::Closed,
            Some(other) => XenbusState::Other(other),
        }
    }

    /// The value written to a `state` key.
    pub fn value(self) -> u32 {
        match self {
            XenbusState::Unknown => 0,
            XenbusState::Initialising => 1,
            XenbusState::InitWait => 2,
            XenbusState::Initialised => 3,
            XenbusState::Connected => 4,
            XenbusState::Closing => 5,
            XenbusState::Closed => 6,
            XenbusState::Other(value) => value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        for n in 0..=8 {
            assert_eq!(XenbusState::from_key(Some(&n.to_string())).value(), n);
        }
        assert_eq!(XenbusState::from_key(None), XenbusState::Unknown);
        assert_eq!(XenbusState::from_key(Some("4x")), XenbusState::Unknown);
    }
}
