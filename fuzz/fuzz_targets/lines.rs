//! libFuzzer target: `ringport_fuzz::check_lines` (see `src/lib.rs` for the
//! input layout and the checks). The stable runner runs the same check with
//! `framer_stable --target lines`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringport_fuzz::check_lines(data);
});
