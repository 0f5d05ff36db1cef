//! Refusing to serve `backend/vbd` beside the kernel's xen-blkback, which would claim the same
//! directories (DESIGN "Beside kernel blkback"). `vbd3` is never the kernel's.

use std::path::Path;

use thiserror::Error;

/// The kernel's xen-blkback is loaded and would serve the same backend directories.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "the kernel's xen-blkback is loaded ({evidence}) and serves backend/vbd too; unload it \
     (`modprobe -r xen-blkback`) and blacklist it (`blacklist xen_blkback` in \
     /etc/modprobe.d/), or run tokenbackd with --backend-type vbd3"
)]
pub struct KernelBlkbackLoaded {
    /// The sysfs path that showed it.
    pub evidence: String,
}

/// Checks `sysfs_root` (`/sys` on a real host) for xen-blkback as a module or as a built-in
/// driver of the xen-backend bus.
pub fn check_kernel_blkback(sysfs_root: &Path) -> Result<(), KernelBlkbackLoaded> {
    for relative in ["module/xen_blkback", "bus/xen-backend/drivers/vbd"] {
        let path = sysfs_root.join(relative);
        if path.exists() {
            return Err(KernelBlkbackLoaded {
                evidence: path.display().to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tokenback-sysfs-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_sysfs_without_blkback_passes() {
        let root = scratch("none");
        fs::create_dir_all(root.join("module/xen_evtchn")).unwrap();
        assert_eq!(check_kernel_blkback(&root), Ok(()));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn the_module_or_the_builtin_driver_refuses_and_says_how_to_unload() {
        for relative in ["module/xen_blkback", "bus/xen-backend/drivers/vbd"] {
            let root = scratch(&relative.replace('/', "_"));
            fs::create_dir_all(root.join(relative)).unwrap();
            let err = check_kernel_blkback(&root).unwrap_err();
            assert!(err.evidence.ends_with(relative), "{err}");
            assert!(err.to_string().contains("modprobe -r xen-blkback"), "{err}");
            fs::remove_dir_all(root).unwrap();
        }
    }
}
