//! The simulated host is not an OS boundary: every process runs as one user and could open a
//! guest's memory file. Its boundary is the platform traits, by convention, and this test keeps
//! the convention: no Rust source outside `src/platform/sim/` names the run directory's memory,
//! grant-table, pin or event-channel files. (Within the crate, the paths of those files are
//! private to `platform::sim`; this catches code that spells a name out instead.)

#![cfg(test)]

use std::path::{Path, PathBuf};

/// How code would name the private files: as a path component or the start of one.
const PRIVATE_NAMES: &[&str] = &[
    "\"memory\"",
    "/memory\"",
    "\"grant-table\"",
    "/grant-table\"",
    "\"grant-active\"",
    "/grant-active\"",
    "\"evtchn\"",
    "\"evtchn-",
    "\"grants-",
    ".pins\"",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn nothing_outside_the_sim_names_its_private_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sim = root.join("src/platform/sim");
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let scanned: Vec<_> = files
        .iter()
        .filter(|path| !path.starts_with(&sim) && !path.ends_with(file!()))
        .collect();
    assert!(
        scanned.iter().any(|p| p.starts_with(root.join("tools"))),
        "the tools crate is scanned too"
    );
    let mut offenders = Vec::new();
    for path in scanned {
        let text = std::fs::read_to_string(path).unwrap();
        for (n, line) in text.lines().enumerate() {
            if PRIVATE_NAMES.iter().any(|name| line.contains(name)) {
                offenders.push(format!("{}:{}: {line}", path.display(), n + 1));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "outside platform::sim, use its API instead:\n{}",
        offenders.join("\n")
    );
}
