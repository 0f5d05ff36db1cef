//! The hotplug script's part for a disk (`block-tokenback add`, DESIGN "What the hotplug
//! script writes"): once the back end is in InitWait (libxl runs the script then), the QoS
//! keys, then `physical-device-path`, then `hotplug-status=connected`.

use std::path::Path;
use std::time::{Duration, Instant};

use xenstore_wire::client::blocking::Client;
use xenstore_wire::client::TxId;

use super::SimError;

/// Plays the script for the disk whose backend directory is `backend`.
pub fn add(
    xs: &mut Client,
    backend: &str,
    qos: &[(String, String)],
    storage: &Path,
    deadline: Instant,
) -> Result<(), SimError> {
    wait_init_wait(xs, backend, deadline)?;
    let storage = storage.display().to_string();
    let xs_err = |e| SimError::Xenstore(format!("hotplug of {backend}: {e}"));
    xs.transaction(|xs, tx| {
        for (key, value) in qos {
            xs.write(tx, &format!("{backend}/{key}"), value.as_bytes())?;
        }
        Ok(())
    })
    .map_err(xs_err)?;
    xs.write(
        TxId::NONE,
        &format!("{backend}/physical-device-path"),
        storage.as_bytes(),
    )
    .map_err(xs_err)?;
    xs.write(
        TxId::NONE,
        &format!("{backend}/hotplug-status"),
        b"connected",
    )
    .map_err(xs_err)
}

/// Waits for backend state exactly 2, as libxl does before it runs the script.
fn wait_init_wait(xs: &mut Client, backend: &str, deadline: Instant) -> Result<(), SimError> {
    let state = format!("{backend}/state");
    loop {
        if xs.read(TxId::NONE, &state).ok().as_deref() == Some(b"2") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(SimError::NoInitWait(backend.to_owned()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
