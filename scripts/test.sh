#!/usr/bin/env bash
# Installs what the tests need (idempotently) and runs every check and test.
# Usage: scripts/test.sh            (full run, as CI does)
#        TOKENBACK_XEN=skip scripts/test.sh   (skip the real-Xen scenarios, loudly)
#        FUZZ_SECONDS=0 scripts/test.sh   (skip the short fuzz runs)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
need_apt=()
command -v xenstore-write >/dev/null 2>&1 || need_apt+=(xenstore-utils)
command -v qemu-system-x86_64 >/dev/null 2>&1 || need_apt+=(qemu-system-x86)
command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
command -v tmux >/dev/null 2>&1 || need_apt+=(tmux)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
if [ ${#need_apt[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}"
fi

step "python packages"
# tokentop's metrics test parses the exposition with Prometheus' own Python parser.
python3 -c 'import prometheus_client' 2>/dev/null ||
    python3 -m pip install -q -r tools/tests/requirements.txt ||
    python3 -m pip install -q --break-system-packages -r tools/tests/requirements.txt

step "rust tools"
cargo fmt --version && cargo clippy --version
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
if ! command -v cargo-deb >/dev/null 2>&1; then
    cargo install --locked cargo-deb
fi

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "tests"
# The end-to-end tests run the daemon as a process: build every binary first (cargo test
# builds only the binaries of packages that have integration tests), and the release
# tokenbackd that the CPU test measures.
cargo build --workspace --bins
cargo build --release --bin tokenbackd
cargo test --workspace

step "shell scripts"
shellcheck -x tests/xen/run tests/xen/dom0/* tests/xen/domU/init tests/xen/scenarios/* \
    xl-scripts/block-tokenback

step "real Xen in QEMU (tests/xen)"
tests/xen/run

step "benchmarks build"
cargo bench --workspace --no-run

step "Debian package"
# Built as an operator builds it, resolved by apt as on a Xen host (simulated: nothing is
# installed here), and unpacked to check that what it installs runs and is where Xen and
# systemd look.
cargo build --release --workspace --bin tokenbackd --bin tokentop
deb=$(cargo deb -p tokenback --no-build | tail -n 1)
apt-get install --simulate -qq "$deb" >/dev/null
unpacked=$(mktemp -d)
dpkg-deb -x "$deb" "$unpacked"
"$unpacked/usr/sbin/tokenbackd" --version
test -x "$unpacked/etc/xen/scripts/block-tokenback"
test -f "$unpacked/lib/systemd/system/tokenbackd.service"
test -f "$unpacked/usr/share/man/man8/tokenbackd.8.gz"
"$unpacked/usr/bin/tokentop" --version
test -f "$unpacked/usr/share/man/man1/tokentop.1.gz"
rm -rf "$unpacked"

step "make install (staged)"
staged=$(mktemp -d)
make --no-print-directory install DESTDIR="$staged" >/dev/null
"$staged/usr/sbin/tokenbackd" --version
"$staged/usr/bin/tokentop" --version
test -x "$staged/etc/xen/scripts/block-tokenback"
test -f "$staged/lib/systemd/system/tokenbackd.service"
make --no-print-directory uninstall DESTDIR="$staged" >/dev/null
test ! -e "$staged/usr/sbin/tokenbackd"
test ! -e "$staged/usr/bin/tokentop"
rm -rf "$staged"

FUZZ_SECONDS=${FUZZ_SECONDS:-20}
if [ "$FUZZ_SECONDS" -gt 0 ]; then
    # cargo-fuzz needs the nightly toolchain (sanitizer flags); say so plainly when it is absent.
    if ! cargo +nightly --version >/dev/null 2>&1; then
        echo "error: the fuzz runs need the nightly toolchain: install it with" >&2
        echo "       rustup toolchain install nightly, or skip them with FUZZ_SECONDS=0 $0" >&2
        exit 1
    fi
    for crate in ring xenstore; do
        [ -d "$crate/fuzz" ] || continue
        for target in $(cd "$crate" && cargo +nightly fuzz list); do
            step "fuzz $crate/$target (${FUZZ_SECONDS}s)"
            (cd "$crate" && cargo +nightly fuzz run "$target" -- \
                -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048)
        done
    done
fi

step "all checks passed"
