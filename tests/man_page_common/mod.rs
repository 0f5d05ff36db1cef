//! Checks that a checked-in manual page is what its program's `--man-page` prints, so that it
//! cannot go stale. Shared by tokenbackd's test and tokentop's (tools/tests/tokentop.rs).

use std::process::Command;

/// Runs `exe --man-page` and compares its output with the file `page` (repository-relative
/// `name`, for the message); the page's title line must be `.TH <title>`.
pub fn assert_generated(exe: &str, title: &str, page: &str, name: &str) {
    let out = Command::new(exe).arg("--man-page").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).unwrap();
    assert!(
        generated.contains(&format!(".TH {title}")),
        "{title}:\n{generated}"
    );
    let checked_in = std::fs::read_to_string(page).unwrap();
    let program = title.split(' ').next().unwrap_or(title);
    assert!(
        checked_in == generated,
        "{name} is stale: regenerate it with `cargo run --bin {program} -- --man-page > {name}`"
    );
}
