//! The checked-in manual page is what `tokenbackd --man-page` prints, so it cannot go stale.
#![allow(clippy::tests_outside_test_module)]

mod man_page_common;

#[test]
fn docs_tokenbackd_8_is_the_generated_man_page() {
    man_page_common::assert_generated(
        env!("CARGO_BIN_EXE_tokenbackd"),
        "tokenbackd 8",
        concat!(env!("CARGO_MANIFEST_DIR"), "/docs/tokenbackd.8"),
        "docs/tokenbackd.8",
    );
}
