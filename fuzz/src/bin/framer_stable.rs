//! Runs the fuzz checks on stable Rust, without libFuzzer (those of the
//! `framer` target, i.e. every decoder, or of the target named by
//! `--target`: `length_delimited_tokio`, `length_delimited_netty`, `lines`,
//! `raw`, `ws_frames`, `ws_handshake`, `ws_inflate`): either
//! replays given inputs (files, or directories of files such as a libFuzzer
//! corpus or `artifacts/framer/`), or, with no paths, checks generated
//! inputs for a while. Coverage-blind, so a complement to `cargo fuzz`, not
//! a replacement.
//!
//! ```text
//! cargo run --release --bin framer_stable -- [--target T] [--seconds N] [--seed S] [PATH...]
//! ```
//!
//! An input that fails is written to
//! `artifacts/framer_stable/crash-<target>-<seed>-<n>`
//! (replay it by passing that path) and the run exits non-zero.

use std::panic;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringport_fuzz::{Check, Rng, TARGETS, generate_for};

fn main() -> ExitCode {
    let mut seconds = 30u64;
    let mut seed = None;
    let mut target = String::from("framer");
    let mut paths = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => seconds = parse(args.next(), "--seconds"),
            "--seed" => seed = Some(parse(args.next(), "--seed")),
            "--target" => target = args.next().unwrap_or_default(),
            "-h" | "--help" => {
                eprintln!(
                    "usage: framer_stable [--target T] [--seconds N] [--seed S] [PATH...]\n\
                     targets: {}",
                    names()
                );
                return ExitCode::SUCCESS;
            }
            _ => paths.push(PathBuf::from(arg)),
        }
    }
    let Some(&(name, check)) = TARGETS.iter().find(|(n, _)| *n == target) else {
        eprintln!("unknown target {target:?}; targets: {}", names());
        return ExitCode::FAILURE;
    };
    if paths.is_empty() {
        random(name, check, seconds, seed)
    } else {
        replay(name, check, &paths)
    }
}

fn names() -> String {
    TARGETS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse(v: Option<String>, name: &str) -> u64 {
    v.and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{name} needs a number"))
}

fn random(name: &str, check: Check, seconds: u64, seed: Option<u64>) -> ExitCode {
    let seed = seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut rng = Rng::new(seed);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut n = 0u64;
    let mut bytes = 0usize;
    while Instant::now() < deadline {
        for _ in 0..64 {
            let input = generate_for(name, &mut rng);
            bytes += input.len();
            if panic::catch_unwind(|| check(&input)).is_err() {
                let dir = Path::new("artifacts/framer_stable");
                let path = dir.join(format!("crash-{name}-{seed}-{n}"));
                let saved =
                    std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, &input));
                match saved {
                    Ok(()) => eprintln!(
                        "FAILED on input {n} (seed {seed}); saved to {}",
                        path.display()
                    ),
                    Err(e) => {
                        eprintln!("FAILED on input {n} (seed {seed}); could not save it: {e}")
                    }
                }
                return ExitCode::FAILURE;
            }
            n += 1;
        }
    }
    println!(
        "framer_stable: target {name}, seed {seed}: {n} inputs ({bytes} bytes) in {seconds} s, \
         0 failures"
    );
    ExitCode::SUCCESS
}

fn replay(name: &str, check: Check, paths: &[PathBuf]) -> ExitCode {
    let mut files = Vec::new();
    for p in paths {
        match std::fs::read_dir(p) {
            Ok(entries) => files.extend(entries.filter_map(|e| e.ok()).map(|e| e.path())),
            Err(_) => files.push(p.clone()),
        }
    }
    files.sort();
    let mut failed = 0;
    for f in &files {
        let input = match std::fs::read(f) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("{}: {e}", f.display());
                failed += 1;
                continue;
            }
        };
        if panic::catch_unwind(|| check(&input)).is_err() {
            eprintln!("FAILED: {}", f.display());
            failed += 1;
        }
    }
    println!(
        "framer_stable: target {name}: replayed {} inputs, {failed} failures",
        files.len()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
