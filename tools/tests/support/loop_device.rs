//! Loop devices for tests that serve block devices.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A loop device over a file, detached on drop.
pub struct LoopDevice(pub PathBuf);

impl LoopDevice {
    pub fn attach(file: &Path) -> LoopDevice {
        let out = Command::new("losetup")
            .args(["--find", "--show", "--direct-io=on"])
            .arg(file)
            .output()
            .expect("losetup (util-linux) runs");
        assert!(
            out.status.success(),
            "this machine has loop devices: losetup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        LoopDevice(PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}
