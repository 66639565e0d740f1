//! `ringport serve --tls-cert/--tls-key` and `ringport bench --tls`:
//! echo over TLS, a certificate reload on SIGHUP that keeps open
//! connections, and the load generator against a TLS server. Certificates
//! are made here with rcgen.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use ringport::Client;
use ringport::tls::{TlsConnector, pem};

/// Writes a CA (`{name}-ca.pem`) and a certificate for 127.0.0.1 and
/// localhost signed by it (`server.pem`, `server.key`) into `dir`.
fn issue(dir: &Path, name: &str) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, name);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    std::fs::write(dir.join(format!("{name}-ca.pem")), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringport-cli-tls-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn connector(ca: &Path) -> TlsConnector {
    let config = pem::client_config(Some(ca), false, None).unwrap();
    TlsConnector::with_name(Arc::new(config), "localhost").unwrap()
}

fn tls_client(port: u16, ca: &Path) -> std::io::Result<Client> {
    let mut c = Client::connect_tls(("127.0.0.1", port), &connector(ca))?;
    c.set_timeout(Some(IO_TIMEOUT))?;
    Ok(c)
}

#[test]
fn serve_tls_echoes_and_reloads_its_certificate_on_sighup() {
    let dir = temp_dir("reload");
    issue(&dir, "first");
    let cert = dir.join("server.pem");
    let key = dir.join("server.key");
    let server = serve(&[
        "--shards",
        "1",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let first_ca = dir.join("first-ca.pem");
    let mut old = tls_client(server.port, &first_ca).unwrap();
    old.send(b"before reload").unwrap();
    assert_eq!(old.recv().unwrap(), b"before reload");

    // New files from another CA; SIGHUP.
    issue(&dir, "second");
    let mut server = server;
    server.proc.signal(libc::SIGHUP);
    server
        .proc
        .wait_for_stderr("TLS certificate reloaded", Duration::from_secs(10));
    // The open connection goes on with its session.
    old.send(b"after reload").unwrap();
    assert_eq!(old.recv().unwrap(), b"after reload");
    // New connections get the new certificate.
    let mut new = tls_client(server.port, &dir.join("second-ca.pem")).unwrap();
    new.send(b"new cert").unwrap();
    assert_eq!(new.recv().unwrap(), b"new cert");
    let err = tls_client(server.port, &first_ca).expect_err("old CA no longer fits");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // A bad file at the next SIGHUP keeps the certificate in use.
    std::fs::write(&key, "not a key").unwrap();
    server.proc.signal(libc::SIGHUP);
    server
        .proc
        .wait_for_stderr("keeping the certificate in use", Duration::from_secs(10));
    let mut again = tls_client(server.port, &dir.join("second-ca.pem")).unwrap();
    again.send(b"still served").unwrap();
    assert_eq!(again.recv().unwrap(), b"still served");
    let log = server.stop_with(libc::SIGTERM);
    assert!(!log.contains("panicked"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_tls_files_fail_at_start() {
    let dir = temp_dir("bad");
    std::fs::write(dir.join("empty.pem"), "").unwrap();
    let empty = dir.join("empty.pem");
    let out = Command::new(BIN)
        .args(["serve", "--addr", "127.0.0.1:0", "--tls-cert"])
        .arg(&empty)
        .arg("--tls-key")
        .arg(&empty)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("empty.pem"), "{err}");
    // --tls-key alone is a usage error.
    let out = Command::new(BIN)
        .args(["serve", "--tls-key"])
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_tls_measures_a_tls_server() {
    let dir = temp_dir("bench");
    issue(&dir, "bench");
    let server = serve(&[
        "--shards",
        "1",
        "--tls-cert",
        dir.join("server.pem").to_str().unwrap(),
        "--tls-key",
        dir.join("server.key").to_str().unwrap(),
    ]);
    let addr = format!("127.0.0.1:{}", server.port);
    let json = dir.join("bench.json");
    let run = |extra: &[&str]| {
        Command::new(BIN)
            .args(["bench", "--addr", &addr, "-c", "10", "--duration", "1"])
            .args(["--warmup", "0.2", "--sources", "127.0.0.1", "--tls"])
            .args(extra)
            .arg("--json")
            .arg(&json)
            .output()
            .unwrap()
    };
    let ca = dir.join("bench-ca.pem");
    let out = run(&["--tls-ca", ca.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = std::fs::read_to_string(&json).unwrap();
    assert!(
        report.contains("\"connections_established\":10"),
        "{report}"
    );
    assert!(report.contains("\"ok\":true"), "{report}");
    // --insecure skips the certificate check.
    let out = run(&["--insecure"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The system CA bundle does not know the test CA: every connect fails.
    let out = run(&[]);
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("UnknownIssuer") || text.contains("ca-certificates"),
        "{text}"
    );
    server.stop_with(libc::SIGTERM);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--tls-alpn`: the server's list is offered; a client offering `other`
/// and `myproto/0` gets `myproto/0` (the first of the server's list that
/// the client offers) and its echo.
#[test]
fn serve_tls_alpn_negotiates_a_protocol_of_its_list() {
    use ringport::tls::rustls;
    use std::io::Write as _;
    let dir = temp_dir("alpn");
    issue(&dir, "alpn");
    let cert = dir.join("server.pem");
    let key = dir.join("server.key");
    let server = serve(&[
        "--shards",
        "1",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-alpn",
        "myproto/1,myproto/0",
    ]);
    let mut config = pem::client_config(Some(&dir.join("alpn-ca.pem")), false, None).unwrap();
    config.alpn_protocols = vec![b"other".to_vec(), b"myproto/0".to_vec()];
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let mut sock = server.connect();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).expect("handshake");
    }
    assert_eq!(conn.alpn_protocol(), Some(&b"myproto/0"[..]));
    let mut stream = rustls::Stream::new(&mut conn, &mut sock);
    stream.write_all(b"\0\0\0\x05hello").unwrap();
    stream.flush().unwrap();
    let mut echo = [0u8; 9];
    std::io::Read::read_exact(&mut stream, &mut echo).unwrap();
    assert_eq!(&echo, b"\0\0\0\x05hello");
    server.stop_with(libc::SIGTERM);
    let _ = std::fs::remove_dir_all(&dir);
}
