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
        Self::from_value(value.and_then(super::frontend::parse_decimal).unwrap_or(0))
    }

    /// The state a number names.
    pub fn from_value(value: u32) -> Self {
        match value {
            0 => XenbusState::Unknown,
            1 => XenbusState::Initialising,
            2 => XenbusState::InitWait,
            3 => XenbusState::Initialised,
            4 => XenbusState::Connected,
            5 => XenbusState::Closing,
            6 => XenbusState::Closed,
            other => XenbusState::Other(other),
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
    fn states_have_xenbus_h_values() {
        let named = [
            (0, XenbusState::Unknown),
            (1, XenbusState::Initialising),
            (2, XenbusState::InitWait),
            (3, XenbusState::Initialised),
            (4, XenbusState::Connected),
            (5, XenbusState::Closing),
            (6, XenbusState::Closed),
        ];
        for (value, state) in named {
            assert_eq!(XenbusState::from_value(value), state);
            assert_eq!(state.value(), value);
        }
        // Reconfiguring and anything else keep their value, so that they can be reported.
        assert_eq!(XenbusState::from_value(7), XenbusState::Other(7));
        assert_eq!(XenbusState::Other(99).value(), 99);
    }

    #[test]
    fn round_trip_and_garbage() {
        for n in 0..=8 {
            assert_eq!(XenbusState::from_key(Some(&n.to_string())).value(), n);
        }
        assert_eq!(XenbusState::from_key(None), XenbusState::Unknown);
        assert_eq!(XenbusState::from_key(Some("4x")), XenbusState::Unknown);
    }
}
