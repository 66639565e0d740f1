//! libFuzzer target: `ringport_fuzz::ws::check_inflate` (see `src/ws.rs` for the
//! checks). The stable runner runs the same check with
//! `framer_stable --target ws_inflate`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringport_fuzz::ws::check_inflate(data);
});
