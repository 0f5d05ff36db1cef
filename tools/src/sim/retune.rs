//! Changing a limit as an operator does: Debian's `xenstore-write` (package
//! xenstore-utils), pointed at the simulated xenstored's socket with `XENSTORED_PATH`.

use std::path::Path;
use std::process::Command;

use super::SimError;

/// Writes `value` to `path` with `xenstore-write`.
pub fn xenstore_write(socket: &Path, path: &str, value: &str) -> Result<(), SimError> {
    let out = Command::new("xenstore-write")
        .args([path, value])
        .env("XENSTORED_PATH", socket)
        .output()
        .map_err(|e| SimError::XenstoreWrite(format!("{e} (is xenstore-utils installed?)")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(SimError::XenstoreWrite(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    }
}
