//! tokenbackd: the block backend daemon (not yet able to serve; see README).

fn main() {
    eprintln!("tokenbackd: the daemon is not built yet; see README.md");
    std::process::exit(2);
}
