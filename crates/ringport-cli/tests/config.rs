//! `ringport serve` settings: flags over RINGPORT_* environment variables
//! over the --config file over defaults, --print-config, bad files.

mod common;

use common::*;

#[test]
fn settings_precedence_is_flag_env_file_default() {
    let file = temp_file(
        "precedence.toml",
        "max-frame = \"1MiB\"\nshards = 3\nmode = \"chat\"\nstats_interval = \"10s\"\n\
         idle-timeout = 30\nrecv-buffers = 1024\n",
    );
    let file = file.to_str().unwrap();
    let (status, out) = print_config(
        &["--config", file, "--mode", "echo", "--recv-buffers", "512"],
        &[
            ("RINGPORT_SHARDS", "2"),
            ("RINGPORT_MODE", "chat"),
            ("RINGPORT_HEARTBEAT", "1m"),
        ],
    );
    assert!(status.success(), "{out}");
    for line in [
        "max-frame = \"1MiB\"",     // file over default
        "shards = 2",               // env over file
        "mode = \"echo\"",          // flag over env and file
        "recv-buffers = 512",       // flag over file
        "stats-interval = \"10s\"", // file (underscore key) over default
        "idle-timeout = \"30s\"",   // file, bare seconds
        "heartbeat = \"1m\"",       // env over default
        "stop-timeout = \"5s\"",    // default
        "codec = \"length\"",       // default
    ] {
        assert!(out.lines().any(|l| l == line), "{line} missing:\n{out}");
    }

    // The printed settings read back as a file give the same settings.
    let (_, first) = print_config(&["--config", file], &[]);
    let again = temp_file("again.toml", &first);
    let (status, second) = print_config(&["--config", again.to_str().unwrap()], &[]);
    assert!(status.success(), "{second}");
    assert_eq!(first, second);

    // The example shipped in deploy/ reads.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/ringport.toml");
    let (status, out) = print_config(&["--config", example], &[]);
    assert!(status.success(), "{out}");
    assert!(out.contains("metrics-addr = \"127.0.0.1:9464\""), "{out}");

    // Without a file: the defaults.
    let (status, out) = print_config(&[], &[]);
    assert!(status.success(), "{out}");
    assert!(out.contains("max-frame = \"16MiB\""), "{out}");
    assert!(out.contains("addr = \"127.0.0.1:7000\""), "{out}");
}

#[test]
fn bad_config_files_are_usage_errors() {
    for (name, text, expect) in [
        (
            "unknown.toml",
            "max-frames = 1\n",
            "unknown key 'max-frames'",
        ),
        ("value.toml", "recv-buffers = 100\n", "for '--recv-buffers "),
        ("limit.toml", "max-frame = \"8GiB\"\n", "for '--max-frame "),
        ("syntax.toml", "shards = \n", "not valid TOML"),
        (
            "type.toml",
            "shards = [1]\n",
            "'shards' must be a string, a number or a boolean",
        ),
    ] {
        let file = temp_file(name, text);
        let (status, out) = print_config(&["--config", file.to_str().unwrap()], &[]);
        assert_eq!(status.code(), Some(2), "{name}: {out}");
        assert!(out.contains(expect), "{name}: {out}");
    }
    // A switch is a boolean in the file, printed back as one.
    let file = temp_file(
        "switch.toml",
        "ws-addr = \"127.0.0.1:0\"\nws-deflate = true\n",
    );
    let (status, out) = print_config(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!(status.code(), Some(0), "{out}");
    assert!(out.contains("ws-deflate = true"), "{out}");
    let file = temp_file("switch-off.toml", "ws-deflate = false\n");
    let (_, out) = print_config(&["--config", file.to_str().unwrap()], &[]);
    assert!(out.contains("# ws-deflate: unset"), "{out}");
    let (status, out) = print_config(&["--config", "/nonexistent/ringport.toml"], &[]);
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(out.contains("/nonexistent/ringport.toml"), "{out}");
}
