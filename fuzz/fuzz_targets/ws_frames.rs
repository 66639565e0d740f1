//! libFuzzer target: `ringport_fuzz::ws::check_frames` (see `src/ws.rs` for the
//! checks). The stable runner runs the same check with
//! `framer_stable --target ws_frames`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringport_fuzz::ws::check_frames(data);
});
