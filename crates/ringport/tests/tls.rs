//! TLS on both backends (run once per backend by scripts/test.sh): echo
//! and chat over TLS, split and pipelined records, 1,000 concurrent TLS
//! connections through tokio-rustls, certificate failures on both sides,
//! and bad input (plaintext, truncated handshakes, garbage records, a
//! handshake that never finishes) that closes one connection and nothing
//! else.

mod common;
mod tls_util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ringport::tls::rustls;
use ringport::{Client, CloseReason, Event, LengthDelimited, Server, handlers::Chat};
use tls_util::Pki;

fn tls_echo(pki: &Pki, cert: &str, mutual: bool) -> Server {
    let acceptor = pki.acceptor(cert, mutual);
    start_echo(|c| c.tls = Some(acceptor))
}

fn tls_client(addr: SocketAddr, pki: &Pki) -> Client {
    let mut c =
        Client::connect_tls(addr, &pki.connector("ca", "localhost", false)).expect("TLS connect");
    c.set_timeout(Some(IO_TIMEOUT)).unwrap();
    c
}

/// A rustls client connection over a raw socket, handshake done.
fn raw_tls(addr: SocketAddr, pki: &Pki) -> (rustls::ClientConnection, TcpStream) {
    let connector = pki.connector("ca", "localhost", false);
    let mut conn = rustls::ClientConnection::new(connector.config, connector.server_name).unwrap();
    let mut sock = connect(addr);
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).expect("handshake");
    }
    (conn, sock)
}

#[test]
fn echo_over_tls_from_0_bytes_to_16_mib() {
    let pki = Pki::new();
    let server = tls_echo(&pki, "server", false);
    let mut client = tls_client(server.local_addr(), &pki);
    for (i, len) in [
        0usize,
        1,
        5,
        1000,
        16_379,
        16_384,
        16_389,
        65_536,
        100_000,
        1 << 20,
        16 << 20,
    ]
    .into_iter()
    .enumerate()
    {
        let payload = pattern(i as u64, len);
        client.send(&payload).unwrap();
        let echo = client.recv().unwrap();
        assert_bytes_eq(&echo, &payload, &format!("echo of {len} bytes"));
    }
    let stats = server.stop();
    assert_eq!(stats.tls_handshakes, 1);
    assert_eq!(stats.tls_failures, 0);
    assert_eq!(stats.messages_in, 11);
    // Decrypted bytes go through the framer: no direct receive into it.
    assert_eq!(stats.direct_recvs, 0);
}

#[test]
fn split_records_and_pipelined_frames() {
    let pki = Pki::new();
    let server = tls_echo(&pki, "server", false);
    let (mut conn, mut sock) = raw_tls(server.local_addr(), &pki);
    // 300 frames encrypted in one go, written to the socket in pieces of
    // 1 to 37 bytes: records split anywhere, several frames per record.
    let payloads: Vec<Vec<u8>> = (0..300)
        .map(|i| pattern(i, (i * 37) as usize % 3000))
        .collect();
    let mut plain = Vec::new();
    for p in &payloads {
        plain.extend_from_slice(&frame(p));
    }
    conn.set_buffer_limit(None);
    conn.writer().write_all(&plain).unwrap();
    let mut wire = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut wire).unwrap();
    }
    let mut step = 1;
    for piece in wire.chunks(37).flat_map(|c| {
        let (a, b) = c.split_at(c.len().min(step));
        step = step % 36 + 1;
        [a, b]
    }) {
        sock.write_all(piece).unwrap();
    }
    let mut stream = rustls::Stream::new(&mut conn, &mut sock);
    for (i, p) in payloads.iter().enumerate() {
        let echo = read_frame(&mut stream, usize::MAX).unwrap();
        assert_bytes_eq(&echo, p, &format!("pipelined echo {i}"));
    }
    let stats = server.stop();
    assert_eq!(stats.messages_in, 300);
}

#[test]
fn chat_broadcast_reaches_every_tls_client() {
    let pki = Pki::new();
    let acceptor = pki.acceptor("server", false);
    let mut cfg = config();
    cfg.tls = Some(acceptor);
    let server = Server::start(cfg, LengthDelimited::new(), |_| Chat).unwrap();
    assert_backend(&server);
    let mut clients: Vec<Client> = (0..3)
        .map(|_| tls_client(server.local_addr(), &pki))
        .collect();
    // A connection joins "everyone" once the server finished its handshake.
    assert!(wait_until(IO_TIMEOUT, || server.stats().tls_handshakes == 3));
    clients[0].send(b"hello all").unwrap();
    for c in &mut clients {
        assert_eq!(c.recv().unwrap(), b"hello all");
    }
    server.stop();
}

#[test]
fn thousand_concurrent_tls_connections_through_tokio_rustls() {
    const N: usize = 1000;
    let pki = Pki::new();
    let server = tls_echo(&pki, "server", false);
    let addr = server.local_addr();
    let connector = pki.connector("ca", "localhost", false);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tls = tokio_rustls::TlsConnector::from(connector.config.clone());
        let mut streams = Vec::with_capacity(N);
        // Connected 100 at a time (the listen backlog and the test's pace),
        // all held open together.
        for batch in 0..N / 100 {
            let mut tasks = Vec::new();
            for _ in 0..100 {
                let tls = tls.clone();
                let name = connector.server_name.clone();
                tasks.push(tokio::spawn(async move {
                    let tcp = tokio::net::TcpStream::connect(addr).await?;
                    tcp.set_nodelay(true)?;
                    tls.connect(name, tcp).await
                }));
            }
            for t in tasks {
                let s = tokio::time::timeout(IO_TIMEOUT, t)
                    .await
                    .expect("handshake in time")
                    .unwrap()
                    .unwrap_or_else(|e| panic!("batch {batch}: {e}"));
                streams.push(s);
            }
        }
        let mut tasks = Vec::new();
        for (i, mut s) in streams.into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                let payload = pattern(i as u64, 100 + i);
                s.write_all(&frame(&payload)).await.unwrap();
                let mut h = [0u8; 4];
                s.read_exact(&mut h).await.unwrap();
                let mut echo = vec![0u8; u32::from_be_bytes(h) as usize];
                s.read_exact(&mut echo).await.unwrap();
                assert_eq!(echo, payload, "echo on connection {i}");
                s
            }));
        }
        let mut held = Vec::new();
        for t in tasks {
            held.push(tokio::time::timeout(IO_TIMEOUT, t).await.unwrap().unwrap());
        }
        assert_eq!(server.stats().connections, N as u64);
        for mut s in held {
            s.shutdown().await.unwrap();
        }
    });
    assert!(wait_until(IO_TIMEOUT, || server.stats().connections == 0));
    let stats = server.stop();
    assert_eq!(stats.tls_handshakes, N as u64);
    assert_eq!(stats.messages_in, N as u64);
    assert_eq!(stats.tls_failures, 0);
}

/// The client's handshake error, as text.
fn client_error(addr: SocketAddr, connector: &ringport::tls::TlsConnector) -> String {
    match Client::connect_tls(addr, connector) {
        Ok(_) => panic!("TLS connect succeeded against expectations"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn untrusted_expired_or_mismatched_certificates_fail_on_both_sides() {
    let pki = Pki::new();
    let good = tls_echo(&pki, "server", false);
    let expired = tls_echo(&pki, "expired", false);
    let cases = [
        (
            &good,
            pki.connector("other-ca", "localhost", false),
            "UnknownIssuer",
        ),
        (&expired, pki.connector("ca", "localhost", false), "expired"),
        (
            &good,
            pki.connector("ca", "other.example", false),
            "not valid for name",
        ),
    ];
    for (n, (server, connector, want)) in cases.into_iter().enumerate() {
        let failures = server.stats().tls_failures;
        let err = client_error(server.local_addr(), &connector);
        assert!(
            err.contains(want),
            "case {n}: client error {err:?} lacks {want}"
        );
        // The server got the client's alert and closed with a TLS reason.
        assert!(
            wait_until(IO_TIMEOUT, || server.stats().tls_failures == failures + 1),
            "case {n}: server did not count the failure"
        );
    }
    // Both servers still serve.
    let mut c = tls_client(good.local_addr(), &pki);
    c.send(b"still here").unwrap();
    assert_eq!(c.recv().unwrap(), b"still here");
    assert!(wait_until(IO_TIMEOUT, || good.stats().connections == 1));
    assert_eq!(expired.stats().connections, 0);
}

#[test]
fn mutual_tls_requires_a_client_certificate() {
    let pki = Pki::new();
    let server = tls_echo(&pki, "server", true);
    let addr = server.local_addr();
    // With a certificate signed by the CA: served.
    let mut c = Client::connect_tls(addr, &pki.connector("ca", "localhost", true)).unwrap();
    c.set_timeout(Some(IO_TIMEOUT)).unwrap();
    c.send(b"mutual").unwrap();
    assert_eq!(c.recv().unwrap(), b"mutual");
    // Without: TLS 1.3 finishes the client's side of the handshake; the
    // server's alert is what the client reads next.
    let result =
        Client::connect_tls(addr, &pki.connector("ca", "localhost", false)).and_then(|mut c| {
            c.set_timeout(Some(IO_TIMEOUT))?;
            c.send(b"no certificate")?;
            c.recv()
        });
    let err = result
        .expect_err("served without a client certificate")
        .to_string();
    assert!(err.contains("CertificateRequired"), "client error: {err}");
    assert!(wait_until(IO_TIMEOUT, || server.stats().tls_failures == 1));
    assert_eq!(server.stats().tls_handshakes, 1);
}

#[test]
fn garbage_after_the_handshake_closes_with_a_tls_reason() {
    let pki = Pki::new();
    let mut cfg = config();
    cfg.tls = Some(pki.acceptor("server", false));
    let server = Server::start_events(cfg, LengthDelimited::new()).unwrap();
    let (mut conn, mut sock) = raw_tls(server.local_addr(), &pki);
    // The server's side completes on the client's Finished, sent with the
    // first frame.
    write_frame(&mut rustls::Stream::new(&mut conn, &mut sock), b"hi").unwrap();
    let id = match next(&server) {
        Event::Connected { conn, .. } => conn,
        other => panic!("expected Connected, got {other:?}"),
    };
    assert!(matches!(next(&server), Event::Message { .. }));
    // An application-data record of 40 random bytes: fails authentication.
    let mut record = vec![0x17, 0x03, 0x03, 0x00, 40];
    record.extend_from_slice(&pattern(7, 40));
    sock.write_all(&record).unwrap();
    match expect_closed(&server, id) {
        CloseReason::Tls(why) => assert!(why.contains("ecrypt"), "reason: {why}"),
        other => panic!("expected a TLS close, got {other:?}"),
    }
    // The server sent its alert and closed.
    expect_eof(&mut sock, IO_TIMEOUT);
    assert_eq!(server.stop().tls_failures, 1);
}

/// The first bytes a real client sends: its ClientHello record.
fn client_hello(pki: &Pki) -> Vec<u8> {
    let connector = pki.connector("ca", "localhost", false);
    let mut conn = rustls::ClientConnection::new(connector.config, connector.server_name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

#[test]
fn bad_input_closes_only_the_offender_and_leaks_nothing() {
    let pki = Pki::new();
    let acceptor = pki.acceptor("server", false);
    let acceptor = acceptor.with_handshake_timeout(Duration::from_millis(300));
    let server = start_echo(|c| c.tls = Some(acceptor));
    let addr = server.local_addr();
    let mut good = tls_client(addr, &pki);
    good.send(b"before").unwrap();
    assert_eq!(good.recv().unwrap(), b"before");

    // A plaintext frame to the TLS port: an alert (a record of type 21) or
    // nothing, then the close; never an echo.
    let mut s = connect(addr);
    write_frame(&mut s, b"plaintext").unwrap();
    let got = expect_eof(&mut s, IO_TIMEOUT);
    assert!(
        got.is_empty() || got[0] == 0x15,
        "plaintext answered with {got:?}"
    );

    // Half a ClientHello, then the end of the stream.
    let hello = client_hello(&pki);
    let mut s = connect(addr);
    s.write_all(&hello[..hello.len() / 2]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    expect_eof(&mut s, IO_TIMEOUT);

    // Records of random bytes instead of a handshake.
    let mut s = connect(addr);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, 64];
    record.extend_from_slice(&pattern(3, 64));
    s.write_all(&record).unwrap();
    let got = expect_eof(&mut s, IO_TIMEOUT);
    assert!(
        got.is_empty() || got[0] == 0x15,
        "garbage answered with {got:?}"
    );

    // A handshake that never finishes: half a hello, then silence.
    let mut s = connect(addr);
    s.write_all(&hello[..10]).unwrap();
    expect_eof(&mut s, IO_TIMEOUT);
    // And one that never starts.
    let mut s = connect(addr);
    expect_eof(&mut s, IO_TIMEOUT);

    // Everyone else is served; every offender's slot is free again.
    good.send(b"after").unwrap();
    assert_eq!(good.recv().unwrap(), b"after");
    // A connection leaves the open count when its close begins and counts
    // as closed when the socket's close completes: wait for both.
    assert!(wait_until(IO_TIMEOUT, || {
        let st = server.stats();
        st.connections == 1 && st.closed == 5
    }));
    let stats = server.stats();
    assert_eq!(stats.accepted, 6);
    assert_eq!(stats.closed, 5);
    assert_eq!(stats.tls_handshake_timeouts, 2);
    // Plaintext, garbage and the two timeouts; the truncated hello ended in
    // an end of stream.
    assert_eq!(stats.tls_failures, 4);
    assert_eq!(stats.tls_handshakes, 1);
    drop(good);
    let stats = server.stop();
    assert_eq!(stats.closed, 6);
}

#[test]
fn server_close_sends_close_notify() {
    let pki = Pki::new();
    let mut cfg = config();
    cfg.tls = Some(pki.acceptor("server", false));
    let server = Server::start_events(cfg, LengthDelimited::new()).unwrap();
    let (mut conn, mut sock) = raw_tls(server.local_addr(), &pki);
    write_frame(&mut rustls::Stream::new(&mut conn, &mut sock), b"x").unwrap();
    let id = match next(&server) {
        Event::Connected { conn, .. } => conn,
        other => panic!("expected Connected, got {other:?}"),
    };
    server.send(id, &b"bye"[..]).unwrap();
    server.close(id).unwrap();
    let mut stream = rustls::Stream::new(&mut conn, &mut sock);
    assert_eq!(read_frame(&mut stream, 100).unwrap(), b"bye");
    // A clean TLS end of stream (close_notify), not a truncation.
    let mut rest = Vec::new();
    assert_eq!(stream.read_to_end(&mut rest).unwrap(), 0);
    server.stop();
}

#[test]
fn outbound_tls_connect_and_its_failure_reach_the_handler() {
    use std::sync::Mutex;
    use std::sync::mpsc;
    let pki = Pki::new();
    let target = tls_echo(&pki, "server", false);
    type Outcome = Result<Vec<u8>, String>;
    let (tx, rx) = mpsc::channel::<Outcome>();
    struct Probe(Arc<Mutex<mpsc::Sender<Outcome>>>);
    impl ringport::Handler for Probe {
        type ConnState = ();
        fn on_connect(
            &mut self,
            ctx: &mut ringport::Context<'_>,
            conn: ringport::ConnId,
            _: SocketAddr,
        ) {
            ctx.send(conn, b"over tls").unwrap();
        }
        fn on_message(
            &mut self,
            _: &mut ringport::Context<'_>,
            _: ringport::ConnId,
            _: &mut (),
            m: &[u8],
        ) {
            let _ = self.0.lock().unwrap().send(Ok(m.to_vec()));
        }
        fn on_connect_failed(
            &mut self,
            _: &mut ringport::Context<'_>,
            _: SocketAddr,
            e: std::io::Error,
        ) {
            let _ = self.0.lock().unwrap().send(Err(e.to_string()));
        }
    }
    let tx = Arc::new(Mutex::new(tx));
    let mut cfg = config();
    cfg.listen = false;
    let client = Server::start(cfg, LengthDelimited::new(), move |_| Probe(tx.clone())).unwrap();
    client
        .connect_tls(
            target.local_addr(),
            None,
            pki.connector("ca", "localhost", false),
        )
        .unwrap();
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap().unwrap(), b"over tls");
    client
        .connect_tls(
            target.local_addr(),
            None,
            pki.connector("other-ca", "localhost", false),
        )
        .unwrap();
    let err = rx
        .recv_timeout(IO_TIMEOUT)
        .unwrap()
        .expect_err("untrusted server");
    assert!(err.contains("UnknownIssuer"), "connect failure: {err}");
    let stats = client.stop();
    assert_eq!(stats.tls_handshakes, 1);
    assert_eq!(stats.tls_failures, 1);
}

/// ALPN: the server offers `myproto/1, myproto/0`; a client offering
/// `other, myproto/0` gets `myproto/0` and its echo, a client offering
/// only `nope` is refused in the handshake (`no_application_protocol`),
/// counted as a TLS failure, and nothing else is affected.
#[test]
fn alpn_negotiates_a_common_protocol_and_refuses_a_client_without_one() {
    let pki = Pki::new();
    let tls = ringport::tls::pem::server_config(
        &pki.path("server.pem"),
        &pki.path("server.key"),
        None,
        &[b"myproto/1".to_vec(), b"myproto/0".to_vec()],
    )
    .unwrap();
    let acceptor = ringport::tls::TlsAcceptor::new(Arc::new(tls));
    let server = start_echo(|c| c.tls = Some(acceptor));
    let client = |offer: &[&[u8]]| {
        let mut config =
            ringport::tls::pem::client_config(Some(&pki.path("ca.pem")), false, None).unwrap();
        config.alpn_protocols = offer.iter().map(|p| p.to_vec()).collect();
        let conn = rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();
        (conn, connect(server.local_addr()))
    };

    let (mut conn, mut sock) = client(&[b"other", b"myproto/0"]);
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).expect("handshake");
    }
    assert_eq!(conn.alpn_protocol(), Some(&b"myproto/0"[..]));
    let mut stream = rustls::Stream::new(&mut conn, &mut sock);
    write_frame(&mut stream, b"over myproto/0").unwrap();
    assert_eq!(read_frame(&mut stream, 64).unwrap(), b"over myproto/0");

    let (mut refused, mut sock2) = client(&[b"nope"]);
    let mut error = None;
    while refused.is_handshaking() {
        if let Err(e) = refused.complete_io(&mut sock2) {
            error = Some(e);
            break;
        }
    }
    let error = error.expect("the handshake fails").to_string();
    assert!(
        error.to_lowercase().contains("noapplicationprotocol")
            || error.to_lowercase().contains("no_application_protocol"),
        "{error}"
    );
    assert!(wait_until(IO_TIMEOUT, || server.stats().tls_failures == 1));
    // The first client is still served.
    let mut stream = rustls::Stream::new(&mut conn, &mut sock);
    write_frame(&mut stream, b"still here").unwrap();
    assert_eq!(read_frame(&mut stream, 64).unwrap(), b"still here");
    let stats = server.stop();
    assert_eq!(stats.tls_handshakes, 1, "{stats:?}");
    assert_eq!(stats.tls_failures, 1, "{stats:?}");
}
