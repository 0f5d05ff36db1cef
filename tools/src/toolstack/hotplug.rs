//! Running a disk's hotplug script as libxl does (reference xl-hotplug.md section 4; xen
//! tools/libs/light/libxl_device.c `device_hotplug`, libxl_linux.c `get_hotplug_env`): the
//! script named by the backend's `script` node, argv `[script, add|remove]`, stdin from
//! /dev/null, the `XENBUS_*` environment, killed after 40 s. The simulated host adds
//! `XENSTORED_PATH` so that xenstore-utils reach its xenstored; the script's output goes to
//! `xen-hotplug.log` in the run directory, as Xen's scripts log to xen-hotplug.log.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use xenstore_wire::client::TxId;

use super::{DiskPaths, Toolstack, ToolstackError};

/// LIBXL_HOTPLUG_TIMEOUT: how long a script may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(40);
/// dom0's home, which libxl leaves off XENBUS_PATH.
const DOM0_HOME: &str = "/local/domain/0/";

/// What the script is run for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Add,
    Remove,
}

/// How `xl block-detach` asks: the guest closes the disk, or (`-f`) it has no say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detach {
    Safe,
    Forced,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Add => "add",
            Action::Remove => "remove",
        }
    }
}

impl Toolstack {
    /// `xl block-attach`'s second half: waits up to `timeout` for backend state exactly 2,
    /// runs the script with `add`, and checks that it reported `hotplug-status` connected.
    /// (libxl allows 10 s, LIBXL_INIT_TIMEOUT; the simulated host's callers choose.) A failing script's `hotplug-error` is in the error; the nodes stay (libxl leaves them
    /// for `block-detach`).
    pub fn hotplug_add(
        &mut self,
        paths: &DiskPaths,
        timeout: Duration,
    ) -> Result<(), ToolstackError> {
        self.await_backend_state(paths, "2", timeout)?;
        self.run_script(paths, Action::Add)?;
        let status = self.read_backend(paths, "hotplug-status");
        if status.as_deref() != Some("connected") {
            return Err(ToolstackError::Hotplug {
                backend: paths.backend.clone(),
                message: format!("exited 0 with hotplug-status {status:?}"),
            });
        }
        Ok(())
    }

    /// `xl block-detach` (`-f` with [`Detach::Forced`]): `online` 0 and `state` 5 (forced:
    /// and the front end's directory deleted), waits up to `timeout` for the back end to
    /// close (state 6), runs the script with `remove`, and removes both directories. The
    /// directories go even when the script fails (libxl logs it and goes on); that failure
    /// is then the result.
    pub fn block_detach(
        &mut self,
        paths: &DiskPaths,
        detach: Detach,
        timeout: Duration,
    ) -> Result<(), ToolstackError> {
        match detach {
            Detach::Safe => self.detach_disk(paths)?,
            Detach::Forced => self.force_detach_disk(paths)?,
        }
        self.await_backend_state(paths, "6", timeout)?;
        let removed = self.run_script(paths, Action::Remove);
        self.remove_disk(paths)?;
        removed
    }

    fn read_backend(&mut self, paths: &DiskPaths, key: &str) -> Option<String> {
        let bytes = self
            .xs
            .read(TxId::NONE, &format!("{}/{key}", paths.backend))
            .ok()?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Polls for state `want` exactly, as libxl compares each value it reads.
    pub(super) fn await_backend_state(
        &mut self,
        paths: &DiskPaths,
        want: &str,
        timeout: Duration,
    ) -> Result<(), ToolstackError> {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.read_backend(paths, "state");
            if state.as_deref() == Some(want) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ToolstackError::BackendState {
                    backend: paths.backend.clone(),
                    want: want.to_owned(),
                    state,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(super) fn run_script(
        &mut self,
        paths: &DiskPaths,
        action: Action,
    ) -> Result<(), ToolstackError> {
        let script = self
            .read_backend(paths, "script")
            .ok_or_else(|| ToolstackError::Hotplug {
                backend: paths.backend.clone(),
                message: "no script node".into(),
            })?;
        let relative = paths
            .backend
            .strip_prefix(DOM0_HOME)
            .unwrap_or(&paths.backend);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.run.root().join("xen-hotplug.log"))
            .map_err(|source| ToolstackError::Script {
                script: script.clone(),
                source,
            })?;
        let spawned = Command::new(&script)
            .arg(action.name())
            .env("script", &script)
            .env("XENBUS_TYPE", "vbd")
            .env("XENBUS_PATH", relative)
            .env("XENBUS_BASE_PATH", "backend")
            .env("XENSTORED_PATH", self.run.xenstored_socket())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|source| ToolstackError::Script {
                script: script.clone(),
                source,
            })?)
            .stderr(log)
            .spawn();
        let mut child = spawned.map_err(|source| ToolstackError::Script {
            script: script.clone(),
            source,
        })?;
        let deadline = Instant::now() + SCRIPT_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ToolstackError::Hotplug {
                        backend: paths.backend.clone(),
                        message: format!("{script} {} timed out", action.name()),
                    });
                }
                Err(source) => return Err(ToolstackError::Script { script, source }),
            }
        };
        if status.success() {
            return Ok(());
        }
        let error = self.read_backend(paths, "hotplug-error");
        Err(ToolstackError::Hotplug {
            backend: paths.backend.clone(),
            message: error.unwrap_or_else(|| format!("{script} {}: {status}", action.name())),
        })
    }
}
