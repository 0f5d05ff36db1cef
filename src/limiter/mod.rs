//! Token-bucket QoS: pure arithmetic over an injected clock.
