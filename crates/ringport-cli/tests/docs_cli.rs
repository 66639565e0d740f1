//! Guards for the documentation (README.md and docs/*.md):
//! - every `ringport serve ...` and `ringport bench ...` line of a shell
//!   block is run (serve with `--print-config`, bench with `--check`), so a
//!   renamed or removed flag fails here;
//! - every option of the `ringport serve` table in docs/operations.md is one
//!   `ringport serve --help` knows;
//! - every relative link resolves to a file, and every `#anchor` to a
//!   heading of the file it names.
//!
//! The README's and the guide's Rust blocks are compiled as doctests of the
//! library (`crates/ringport/src/lib.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ringport");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// README.md and every file under docs/.
fn doc_files() -> Vec<PathBuf> {
    let root = root();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 5, "docs/ lost files: {docs:?}");
    files.extend(docs);
    files
}

/// The lines of fenced blocks whose info string is `sh` or `bash`, with
/// backslash continuations joined.
fn shell_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_shell = None;
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            in_shell = match in_shell {
                None => Some(matches!(info.trim(), "sh" | "bash")),
                Some(_) => None,
            };
            continue;
        }
        if in_shell != Some(true) {
            continue;
        }
        if let Some(head) = line.trim_end().strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        out.push(std::mem::take(&mut pending));
    }
    out
}

/// Shell words of one command line, up to a comment, pipe, redirection or
/// command separator (single and double quotes understood).
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut started = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, '#' | '|' | ';' | '&' | '>' | '<') if !started => break,
            (None, c) if c.is_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (None, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

/// The `ringport serve|bench ...` invocations shown in a file: the words
/// after `ringport` (also after `cargo run ... -p ringport-cli --`, or a
/// Docker image named ringport).
fn ringport_commands(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in shell_lines(text) {
        let w = words(&line);
        let start = if let Some(i) = w.iter().position(|x| x == "--")
            && w.first().is_some_and(|x| x == "cargo")
            && w.iter().any(|x| x == "ringport-cli")
        {
            Some(i + 1)
        } else {
            w.iter()
                .position(|x| x == "ringport")
                .map(|i| i + 1)
                .filter(|&i| w.get(i).is_some_and(|s| s == "serve" || s == "bench"))
        };
        if let Some(i) = start {
            out.push(w[i..].to_vec());
        }
    }
    out
}

/// A directory with the files the documented commands name.
fn fixture_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringport-docs-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    std::fs::write(dir.join("clients-ca.pem"), cert.cert.pem()).unwrap();
    std::fs::copy(
        root().join("deploy/ringport.toml"),
        dir.join("ringport.toml"),
    )
    .unwrap();
    dir
}

#[test]
fn documented_cli_lines_are_accepted() {
    let dir = fixture_dir();
    let mut ran = 0;
    let mut failures = Vec::new();
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for mut args in ringport_commands(&text) {
            let check = if args[0] == "serve" {
                "--print-config"
            } else {
                "--check"
            };
            if !args.iter().any(|a| a == check) {
                args.push(check.into());
            }
            let out = Command::new(BIN)
                .args(&args)
                .current_dir(&dir)
                .env_remove("RINGPORT_CONFIG")
                .output()
                .expect("run ringport");
            ran += 1;
            if !out.status.success() {
                failures.push(format!(
                    "{}: ringport {} -> {}\n{}",
                    file.display(),
                    args.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // README (serve, bench x2), operations (serve, bench, TLS) at least.
    assert!(ran >= 8, "only {ran} ringport lines found in the docs");
}

#[test]
fn serve_options_table_matches_the_help() {
    let help = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .expect("ringport serve --help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let text = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
    let section = text
        .split("\n## `ringport serve`")
        .nth(1)
        .expect("operations.md has a `ringport serve` section");
    let section = section.split("\n## ").next().unwrap();
    let mut flags = 0;
    let mut documented = std::collections::HashSet::new();
    for row in section.lines().filter(|l| l.starts_with("| `--")) {
        let cell = row.split(" | ").next().unwrap();
        for flag in cell.split('`').filter(|p| p.starts_with("--")) {
            let name = flag.split([' ', '=']).next().unwrap();
            assert!(
                help.contains(&format!("{name} ")) || help.contains(&format!("{name}\n")),
                "docs/operations.md names {name}, which `ringport serve --help` does not know"
            );
            flags += 1;
        }
        // Options may also be named in a row's text (e.g. the TLS row).
        for span in row.split('`').filter(|p| p.starts_with("--")) {
            for word in span.split_whitespace().filter(|w| w.starts_with("--")) {
                documented.insert(word.split('=').next().unwrap().to_string());
            }
        }
    }
    assert!(flags >= 20, "only {flags} options found in the serve table");
    // And the other way round: every option of the help is in the table.
    for line in help.lines() {
        let line = line.trim_start();
        let line = line.strip_prefix("-").map_or(line, |_| {
            line.split_once(", ").map_or(line, |(_, long)| long)
        });
        let Some(name) = line
            .strip_prefix("--")
            .map(|rest| rest.split([' ', '=', '\n']).next().unwrap())
        else {
            continue;
        };
        let name = format!("--{name}");
        if name == "--help" || name == "--version" {
            continue;
        }
        assert!(
            documented.contains(&name),
            "`ringport serve --help` has {name}, which the serve table of docs/operations.md lacks"
        );
    }
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces
/// as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a markdown file's headings (outside code blocks),
/// duplicates numbered as GitHub does.
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    let mut fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
            continue;
        }
        if fence || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let base = slug(title);
        let n = seen.entry(base.clone()).or_insert(0);
        out.push(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// The targets of `[text](target)` links outside code blocks and inline
/// code.
fn link_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
            continue;
        }
        if fence {
            continue;
        }
        // Drop inline code spans.
        let plain: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = plain.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].trim().to_string());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_link_resolves() {
    let mut checked = 0;
    let mut broken = Vec::new();
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for target in link_targets(&text) {
            if target.starts_with("http://")
                || target.starts_with("https://")
                || target.starts_with("mailto:")
            {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let dest = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            if !dest.exists() {
                broken.push(format!("{}: {target}: no such file", file.display()));
                continue;
            }
            if let Some(anchor) = anchor {
                let dest_text = std::fs::read_to_string(&dest).unwrap_or_default();
                if !anchors(&dest_text).iter().any(|a| a == anchor) {
                    broken.push(format!(
                        "{}: {target}: no heading #{anchor} in {}",
                        file.display(),
                        dest.display()
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked >= 30, "only {checked} links checked");
    println!("{checked} links checked, all resolve");
}

#[test]
fn the_checkers_catch_what_they_should() {
    // A documented line is found through a continuation and after `--`.
    let text = "```sh\nringport bench --addr 127.0.0.1:7000 \\\n    --size 64  # comment\n\
                cargo run --release -p ringport-cli -- serve\nkill $(pidof ringport)\n```\n";
    let cmds = ringport_commands(text);
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    assert_eq!(
        cmds[0],
        ["bench", "--addr", "127.0.0.1:7000", "--size", "64"]
    );
    assert_eq!(cmds[1], ["serve"]);
    // A renamed flag fails.
    let out = Command::new(BIN)
        .args(["serve", "--max-frames", "1MiB", "--print-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // Anchors as GitHub makes them, links outside code only.
    let doc = "# A `b` (c)\n## Fan-out: x\n## Fan-out: x\n```\n# not a heading\n```\n";
    assert_eq!(anchors(doc), ["a-b-c", "fan-out-x", "fan-out-x-1"]);
    assert_eq!(
        link_targets("see [a](x.md#y) and `[b](z)`\n```\n[c](w)\n```"),
        ["x.md#y"]
    );
}

#[test]
fn every_example_is_listed_in_the_guide() {
    let guide = std::fs::read_to_string(root().join("docs/guide.md")).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(root().join("crates/ringport/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(!names.is_empty());
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| {
            !guide.contains(&format!("--example {n}`"))
                && !guide.contains(&format!("--example {n} "))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "examples not listed in docs/guide.md's Examples table: {missing:?}"
    );
}
