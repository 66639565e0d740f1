//! libFuzzer target: arbitrary bytes, cut at arbitrary points, into framers.
//! The checks live in `ringport_fuzz::check_framer` so that the stable
//! runner (`framer_stable`) and the unit tests run exactly the same code.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ringport_fuzz::check_framer(data);
});
