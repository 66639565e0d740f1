//! TLS interoperability with clients written elsewhere: `openssl s_client`
//! and Python's `ssl` module (TLS 1.3 and 1.2, mutual TLS, a clean
//! close_notify exchange), against ringport's echo server on the backend
//! scripts/test.sh selects. Both programs are required (CI installs
//! openssl; python3 is part of the machine).

mod common;
mod tls_util;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use common::*;
use ringport::Server;
use tls_util::Pki;

fn tls_echo(pki: &Pki, mutual: bool) -> Server {
    let acceptor = pki.acceptor("server", mutual);
    start_echo(|c| c.tls = Some(acceptor))
}

/// Runs `openssl s_client` with `args`, writes one frame to it and returns
/// what it printed: the echoed frame on success.
fn s_client(server: &Server, args: &[&str], payload: &[u8]) -> (Vec<u8>, String) {
    let addr = server.local_addr().to_string();
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr,
            "-quiet",
            "-verify_return_error",
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl (Debian package openssl) is installed");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&frame(payload)).unwrap();
    stdin.flush().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let want = 4 + payload.len();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while got.len() < want {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = tx.send(got);
    });
    let got = rx.recv_timeout(IO_TIMEOUT).unwrap_or_default();
    drop(stdin);
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (got, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn openssl_s_client_gets_its_echo() {
    if !require_program("openssl", "openssl", "openssl") {
        return;
    }
    let pki = Pki::new();
    let server = tls_echo(&pki, false);
    let ca = pki.path("ca.pem");
    let payload = pattern(1, 20_000);
    let (got, err) = s_client(
        &server,
        &["-CAfile", ca.to_str().unwrap(), "-servername", "localhost"],
        &payload,
    );
    assert_bytes_eq(
        &got,
        &frame(&payload),
        &format!("s_client echo (stderr: {err})"),
    );
    // TLS 1.2 as well.
    let (got, err) = s_client(
        &server,
        &["-CAfile", ca.to_str().unwrap(), "-tls1_2"],
        b"tls1.2",
    );
    assert_bytes_eq(
        &got,
        &frame(b"tls1.2"),
        &format!("TLS 1.2 echo (stderr: {err})"),
    );
    assert_eq!(server.stop().tls_handshakes, 2);
}

#[test]
fn openssl_s_client_mutual_tls_and_untrusted_server() {
    if !require_program("openssl", "openssl", "openssl") {
        return;
    }
    let pki = Pki::new();
    let server = tls_echo(&pki, true);
    let ca = pki.path("ca.pem");
    let cert = pki.path("client.pem");
    let key = pki.path("client.key");
    let (got, err) = s_client(
        &server,
        &[
            "-CAfile",
            ca.to_str().unwrap(),
            "-cert",
            cert.to_str().unwrap(),
            "-key",
            key.to_str().unwrap(),
        ],
        b"mutual",
    );
    assert_bytes_eq(
        &got,
        &frame(b"mutual"),
        &format!("mTLS echo (stderr: {err})"),
    );
    // A client that trusts another CA refuses the server.
    let other = pki.path("other-ca.pem");
    let (got, err) = s_client(&server, &["-CAfile", other.to_str().unwrap()], b"x");
    assert!(got.is_empty());
    assert!(err.contains("verify error"), "s_client said: {err}");
    assert!(wait_until(IO_TIMEOUT, || server.stats().tls_failures == 1));
}

const PYTHON_CLIENT: &str = r#"
import socket, ssl, struct, sys
port, ca, version = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
if version == "1.2":
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("closed after %d of %d bytes" % (len(b), n))
        b += c
    return b
with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        for n in (0, 1, 1000, 16384, 300000):
            payload = bytes((i * 7 + n) % 251 for i in range(n))
            s.sendall(struct.pack(">I", n) + payload)
            (m,) = struct.unpack(">I", recvn(s, 4))
            assert recvn(s, m) == payload, "echo of %d bytes differs" % n
        v = s.version()
        s.unwrap()  # close_notify both ways
        print("ok", v)
"#;

fn python(server: &Server, pki: &Pki, version: &str) -> String {
    let out = Command::new("python3")
        .args(["-c", PYTHON_CLIENT])
        .arg(server.local_addr().port().to_string())
        .arg(pki.path("ca.pem"))
        .arg(version)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn python_ssl_client_echo_and_close_notify() {
    if !require_program("python3", "python3", "python3") {
        return;
    }
    let pki = Pki::new();
    let server = tls_echo(&pki, false);
    assert_eq!(python(&server, &pki, "1.3"), "ok TLSv1.3");
    assert_eq!(python(&server, &pki, "1.2"), "ok TLSv1.2");
    assert!(wait_until(IO_TIMEOUT, || server.stats().connections == 0));
    let stats = server.stop();
    assert_eq!(stats.tls_handshakes, 2);
    assert_eq!(stats.tls_failures, 0);
    // Python's unwrap() closed with close_notify: a clean end of stream.
    assert_eq!(stats.truncated_frames, 0);
}
