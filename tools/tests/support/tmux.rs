//! tokentop's screen in a tmux server of its own (-L), read with capture-pane and driven
//! with send-keys. tmux is installed by scripts/test.sh.

use std::process::Command;
use std::time::{Duration, Instant};

use super::EVENTUALLY;

/// A tmux server of its own running tokentop in a window of `width` x `height`.
pub struct Tmux {
    server: String,
}

impl Tmux {
    /// `tokentop ARGS -d 0.3`.
    pub fn start(name: &str, args: &[&str], width: u16, height: u16) -> Tmux {
        let tmux = Tmux {
            server: format!("tt-{name}-{}", std::process::id()),
        };
        let command = format!(
            "{} {} -d 0.3",
            env!("CARGO_BIN_EXE_tokentop"),
            args.join(" ")
        );
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            &command,
        ]);
        tmux
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.server])
            .args(args)
            .output()
            .expect("tmux (scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    /// Types `keys` literally.
    pub fn type_keys(&self, keys: &str) {
        self.run(&["send-keys", "-t", "top", "-l", keys]);
    }

    pub fn press(&self, key: &str) {
        self.run(&["send-keys", "-t", "top", key]);
    }

    /// Waits until the screen satisfies `done`, and returns it.
    pub fn until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + EVENTUALLY;
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "never shown: {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until tokentop has quit (its window, and so the session, gone).
    pub fn until_gone(&self) {
        let deadline = Instant::now() + EVENTUALLY;
        while self.alive() {
            assert!(
                Instant::now() < deadline,
                "tokentop did not quit: {}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["-L", &self.server, "has-session", "-t", "top"])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.server, "kill-server"])
            .output();
    }
}
