//! The checked-in manual page is what `tokenbackd --man-page` prints, so it cannot go stale.
#![allow(clippy::tests_outside_test_module)]

use std::process::Command;

#[test]
fn docs_tokenbackd_8_is_the_generated_man_page() {
    let out = Command::new(env!("CARGO_BIN_EXE_tokenbackd"))
        .arg("--man-page")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).unwrap();
    assert!(
        generated.contains(".TH tokenbackd 8"),
        "section 8:\n{generated}"
    );
    let page = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/tokenbackd.8");
    let checked_in = std::fs::read_to_string(page).unwrap();
    assert!(
        checked_in == generated,
        "docs/tokenbackd.8 is stale: regenerate it with \
         `cargo run --bin tokenbackd -- --man-page > docs/tokenbackd.8`"
    );
}
