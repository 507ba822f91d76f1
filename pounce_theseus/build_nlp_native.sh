#!/usr/bin/env bash
# Development build of rust/src/nlp.rs with the `nlp` feature as its own extension module
# (pounce_theseus/_nlp_native), for as long as rust/Cargo.toml does not list pounce-nlp and
# pounce-restoration. Same Rust source as pounce_kkt._native's nlp_solve; nothing else.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${NLP_NATIVE_BUILD_DIR:-/tmp/pounce-theseus-nlp-native}"
mkdir -p "$work/src"
cat > "$work/Cargo.toml" <<TOML
[package]
name = "pounce-theseus-nlp-dev"
version = "0.1.0"
edition = "2021"
publish = false
[lib]
name = "_nlp_native"
crate-type = ["cdylib"]
[features]
default = ["nlp"]
nlp = []
[dependencies]
pyo3 = { version = "0.30", features = ["extension-module", "abi3-py310"] }
numpy = "0.30"
pounce-algorithm = "=0.14.0"
pounce-nlp = "=0.14.0"
pounce-restoration = "=0.14.0"
pounce-feral = "=0.14.0"
[profile.release]
opt-level = 3
codegen-units = 16
TOML
cat > "$work/src/lib.rs" <<RS
use pyo3::prelude::*;
#[path = "$root/rust/src/nlp.rs"]
mod nlp;
#[pymodule]
fn _nlp_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    nlp::register(m)
}
RS
[ -f "$work/Cargo.lock" ] || cp "$root/rust/Cargo.lock" "$work/Cargo.lock"
(cd "$work" && CARGO_TARGET_DIR="$work/target" cargo build --release -q)
cp "$work/target/release/lib_nlp_native.so" "$root/pounce_theseus/_nlp_native.abi3.so"
echo "built $root/pounce_theseus/_nlp_native.abi3.so"
