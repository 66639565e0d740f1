//! Where `ringport serve` takes its settings from: flags, then `RINGPORT_*`
//! environment variables (both by clap), then the `--config` TOML file,
//! then the defaults; checks that need two options; `--print-config`.

use std::ffi::OsString;
use std::path::Path;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use ringport_cli::{duration_text, size_text};

use crate::serve::{CodecKind, ServeArgs, value_name};
use crate::{Cli, Command};

/// Options that are not settings and so have no key in the file.
const NOT_IN_FILE: [&str; 3] = ["config", "print-config", "help"];

/// The largest payload the 4-byte length field of `--codec length` carries.
pub const MAX_LENGTH_FRAME: u64 = u32::MAX as u64;

/// Parses the command line, merging the `--config` file; exits with status
/// 2 (clap's usage-error status) naming the option on any bad value.
pub fn parse() -> Cli {
    let mut cmd = Cli::command();
    let matches = cmd.get_matches_mut();
    let matches = match matches.subcommand() {
        Some(("serve", sub)) => match sub.get_one::<std::path::PathBuf>("config") {
            Some(path) => with_file(&mut cmd, sub, path),
            None => matches,
        },
        _ => matches,
    };
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut cmd).exit());
    if let Command::Serve(args) = &cli.command
        && let Err(message) = check(args)
    {
        let serve = cmd
            .find_subcommand_mut("serve")
            .expect("serve is a subcommand");
        serve.error(ErrorKind::ValueValidation, message).exit();
    }
    cli
}

/// Parses again with the file's values added as flags, for the options
/// that neither a flag nor an environment variable set.
fn with_file(cmd: &mut clap::Command, sub: &ArgMatches, path: &Path) -> ArgMatches {
    let shown = path.display();
    let fail = |cmd: &mut clap::Command, message: String| -> ! {
        cmd.error(ErrorKind::ValueValidation, message).exit()
    };
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| fail(cmd, format!("--config {shown}: {e}")));
    let table: toml::Table = text
        .parse()
        .unwrap_or_else(|e| fail(cmd, format!("--config {shown}: not valid TOML: {e}")));
    let serve = cmd
        .find_subcommand("serve")
        .expect("serve is a subcommand")
        .clone();
    let keys: Vec<&str> = serve
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| !NOT_IN_FILE.contains(l))
        .collect();
    let mut extra: Vec<OsString> = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let Some(arg) = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && !NOT_IN_FILE.contains(&long.as_str()))
        else {
            fail(
                cmd,
                format!(
                    "--config {shown}: unknown key '{key}' (keys are serve's option names: {})",
                    keys.join(", ")
                ),
            )
        };
        if matches!(
            sub.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let value = match value {
            // A switch (e.g. `ws-deflate = true`): named, or left out.
            toml::Value::Boolean(true) => {
                extra.push(format!("--{long}").into());
                continue;
            }
            toml::Value::Boolean(false) => continue,
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            other => fail(
                cmd,
                format!(
                    "--config {shown}: '{key}' must be a string, a number or a boolean, not {}",
                    other.type_str()
                ),
            ),
        };
        extra.push(format!("--{long}={value}").into());
    }
    let argv = std::env::args_os().chain(extra);
    match cmd.try_get_matches_from_mut(argv) {
        Ok(matches) => matches,
        Err(e) => {
            let _ = e.print();
            eprintln!("note: the value comes from --config {shown}");
            std::process::exit(2);
        }
    }
}

fn line_after(out: &mut String, key: &str, value: String) {
    out.push_str(&format!("{key} = {value}\n"));
}

/// Checks that involve more than one option.
pub fn check(args: &ServeArgs) -> Result<(), String> {
    if args.codec == CodecKind::Length && args.max_frame > MAX_LENGTH_FRAME {
        return Err(format!(
            "invalid value '{}' for '--max-frame <BYTES>': --codec length carries the payload \
             length in 4 bytes, so a frame is at most 4GiB - 1 ({MAX_LENGTH_FRAME} bytes)",
            size_text(args.max_frame)
        ));
    }
    Ok(())
}

/// The effective settings as TOML, readable by `--config`. Unset optional
/// settings are shown commented out.
pub fn to_toml(args: &ServeArgs) -> String {
    let s = |v: &str| toml::Value::String(v.to_string()).to_string();
    let mut out = String::from(
        "# ringport serve settings (flags > RINGPORT_* environment > --config file > defaults)\n",
    );
    let mut line = |key: &str, value: String| out.push_str(&format!("{key} = {value}\n"));
    line("addr", s(&args.addr));
    line("backend", s(args.backend.name()));
    let at_limit = match args.at_limit {
        ringport::LimitPolicy::Wait => "wait",
        ringport::LimitPolicy::Refuse => "refuse",
    };
    line("at-limit", s(at_limit));
    line("mode", s(&value_name(args.mode)));
    line("codec", s(&value_name(args.codec)));
    let shards = args.shards.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    );
    line("shards", shards.to_string());
    line("max-frame", s(&size_text(args.max_frame)));
    line("max-connections", args.max_connections.to_string());
    line("send-high-water", s(&size_text(args.send_high_water)));
    line("recv-buffers", args.recv_buffers.to_string());
    line("recv-buffer-size", s(&size_text(args.recv_buffer_size)));
    line("stats-interval", s(&duration_text(args.stats_interval)));
    line("stop-timeout", s(&duration_text(args.stop_timeout)));
    line("log-format", s(&value_name(args.log_format)));
    let mut optional = |key: &str, value: Option<String>, unset: &str| match value {
        Some(v) => out.push_str(&format!("{key} = {v}\n")),
        None => out.push_str(&format!("# {key}: unset ({unset})\n")),
    };
    optional(
        "connections-per-shard",
        args.connections_per_shard.map(|n| n.to_string()),
        "the open-files limit",
    );
    optional(
        "connections-per-ring",
        args.connections_per_ring.map(|n| n.to_string()),
        "the open-files limit",
    );
    optional(
        "idle-timeout",
        args.idle_timeout.map(|d| s(&duration_text(d))),
        "off",
    );
    optional(
        "heartbeat",
        args.heartbeat.map(|d| s(&duration_text(d))),
        "off",
    );
    optional(
        "frame-timeout",
        args.frame_timeout.map(|d| s(&duration_text(d))),
        "off",
    );
    optional(
        "min-receive-rate",
        args.min_receive_rate.map(|n| s(&size_text(n))),
        "none",
    );
    let limits = &args.limits;
    optional(
        "max-connections-per-ip",
        limits.max_connections_per_ip.map(|n| n.to_string()),
        "off",
    );
    optional("ipv6-prefix", Some(limits.ipv6_prefix.to_string()), "64");
    let nets = |list: &[ipnet::IpNet]| {
        (!list.is_empty()).then(|| {
            s(&list
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","))
        })
    };
    optional("allow", nets(&limits.allow), "all admitted");
    optional("deny", nets(&limits.deny), "none denied");
    optional(
        "max-message-rate",
        limits.max_message_rate.map(|n| n.to_string()),
        "off",
    );
    optional(
        "message-burst",
        limits.message_burst.map(|n| n.to_string()),
        "the rate",
    );
    optional(
        "rate-limit-policy",
        Some(s(crate::limit_args::policy_name(limits.rate_limit_policy))),
        "pause",
    );
    optional(
        "max-handshakes",
        Some(limits.max_handshakes.to_string()),
        "256",
    );
    optional("metrics-addr", args.metrics_addr.as_deref().map(s), "off");
    optional("ws-addr", args.ws_addr.as_deref().map(s), "off");
    optional(
        "ws-deflate",
        args.ws_deflate.then(|| "true".to_string()),
        "off",
    );
    optional(
        "cluster",
        args.cluster_args.cluster.as_deref().map(s),
        "no cluster",
    );
    optional(
        "node-id",
        args.cluster_args.node_id.as_deref().map(s),
        "no cluster",
    );
    optional(
        "cluster-history",
        args.cluster_args.cluster_history.as_deref().map(s),
        "no history",
    );
    optional(
        "cluster-history-size",
        Some(args.cluster_args.cluster_history_size.to_string()),
        "1000",
    );
    optional(
        "cluster-history-age",
        Some(s(&duration_text(args.cluster_args.cluster_history_age))),
        "1h",
    );
    optional(
        "cluster-history-replicas",
        Some(args.cluster_args.cluster_history_replicas.to_string()),
        "1",
    );
    optional(
        "cluster-recovery-timeout",
        Some(s(&duration_text(
            args.cluster_args.cluster_recovery_timeout,
        ))),
        "30s",
    );
    optional(
        "cluster-interest",
        Some(s(&value_name(args.cluster_args.cluster_interest))),
        "topic",
    );
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| s(&p.display().to_string()));
    optional("tls-cert", path(&args.tls.tls_cert), "plaintext");
    optional("tls-key", path(&args.tls.tls_key), "plaintext");
    optional(
        "tls-client-ca",
        path(&args.tls.tls_client_ca),
        "no client certificates",
    );
    optional(
        "tls-alpn",
        (!args.tls.tls_alpn.is_empty()).then(|| s(&args.tls.tls_alpn.join(","))),
        "no ALPN",
    );
    line_after(
        &mut out,
        "tls-handshake-timeout",
        s(&duration_text(args.tls.tls_handshake_timeout)),
    );
    out
}
