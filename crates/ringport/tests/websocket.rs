//! WebSocket connections through the engine's protocol seam: a real server
//! with a WebSocket listener beside its framed one, real sockets on
//! loopback, on the backend of this run (`RINGPORT_BACKEND`).

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::ws::{self, Got};
use common::*;
use ringport::handlers::{Chat, Echo};
use ringport::protocol::{MessageKind, UpgradeDecision, UpgradeInfo, WebSocketListener};
use ringport::{CloseReason, ConnId, Context, Handler, LengthDelimited, Server, ServerConfig};

fn ws_config(tweak: impl FnOnce(&mut WebSocketListener)) -> ServerConfig {
    let mut cfg = config();
    let mut ws = WebSocketListener::new("127.0.0.1:0".parse().unwrap());
    tweak(&mut ws);
    cfg.websocket = Some(ws);
    cfg
}

fn start<H: Handler>(
    cfg: ServerConfig,
    handler: impl Fn() -> H + Send + Sync + 'static,
) -> (Server, SocketAddr) {
    let server = Server::start(cfg, LengthDelimited::new(), move |_| handler()).expect("start");
    assert_backend(&server);
    let ws = server.websocket_addr().expect("a websocket listener");
    (server, ws)
}

#[test]
fn echo_keeps_text_and_binary_and_answers_pings() {
    let (server, addr) = start(ws_config(|_| {}), || Echo);
    let mut c = ws::connect(addr, "/", &[]).unwrap();
    c.text("héllo");
    assert_eq!(c.recv(), Got::Text("héllo".into()));
    c.binary(&[0, 1, 2, 255]);
    assert_eq!(c.recv(), Got::Binary(vec![0, 1, 2, 255]));
    let big: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    c.binary(&big);
    assert_eq!(c.recv(), Got::Binary(big));
    c.ping(b"are you there");
    assert_eq!(c.recv(), Got::Pong);
    c.text("");
    assert_eq!(c.recv(), Got::Text(String::new()));
    let stats = server.stats();
    assert_eq!(stats.upgrades, 1);
    server.stop();
}

#[test]
fn websocket_and_framed_clients_share_a_chat_room() {
    let (server, addr) = start(ws_config(|_| {}), || Chat);
    let mut a = ws::connect(addr, "/room", &[]).unwrap();
    let mut b = ws::connect(addr, "/room", &[]).unwrap();
    let mut tcp = connect(server.local_addr());
    // Everyone is in the room once each has seen its own first message.
    assert!(
        wait_until(IO_TIMEOUT, || server.stats().connections == 3),
        "all three connected"
    );
    a.text("from a browser");
    assert_eq!(a.recv(), Got::Text("from a browser".into()));
    assert_eq!(b.recv(), Got::Text("from a browser".into()));
    assert_eq!(read_frame(&mut tcp, 1 << 20).unwrap(), b"from a browser");
    write_frame(&mut tcp, b"from tcp").unwrap();
    assert_eq!(a.recv(), Got::Binary(b"from tcp".to_vec()));
    assert_eq!(b.recv(), Got::Binary(b"from tcp".to_vec()));
    assert_eq!(read_frame(&mut tcp, 1 << 20).unwrap(), b"from tcp");
    b.binary(&[9; 70_000]);
    assert_eq!(a.recv(), Got::Binary(vec![9; 70_000]));
    assert_eq!(read_frame(&mut tcp, 1 << 20).unwrap(), vec![9; 70_000]);
    server.stop();
}

/// Accepts `/chat?token=ok`, choosing the `chat.v2` subprotocol when
/// offered; refuses anything else with 403. Records what it saw.
#[derive(Clone)]
struct Gate(Arc<Mutex<Vec<String>>>);

impl Handler for Gate {
    type ConnState = ();
    fn on_upgrade(
        &mut self,
        _: &mut Context<'_>,
        _: ConnId,
        peer: SocketAddr,
        request: &dyn UpgradeInfo,
    ) -> UpgradeDecision {
        self.0.lock().unwrap().push(format!(
            "{} {} {:?} host={} from={}",
            request.method(),
            request.path(),
            request.query(),
            String::from_utf8_lossy(request.header("host").unwrap_or_default()),
            peer.ip()
        ));
        if request.path() != "/chat" || request.query() != Some("token=ok") {
            return UpgradeDecision::Refuse { status: 403 };
        }
        let subprotocol = request
            .subprotocols()
            .iter()
            .find(|p| *p == "chat.v2")
            .cloned();
        UpgradeDecision::Accept { subprotocol }
    }
    fn on_connect(&mut self, _: &mut Context<'_>, _: ConnId, _: SocketAddr) {}
    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &mut (), m: &[u8]) {
        let kind = ctx.message_kind();
        let _ = ctx.send_as(conn, kind, m);
    }
    fn on_close(&mut self, _: &mut Context<'_>, _: ConnId, _: (), _: CloseReason) {}
}

#[test]
fn the_upgrade_hook_sees_the_request_and_decides() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let gate = Gate(seen.clone());
    let (server, addr) = start(ws_config(|_| {}), move || gate.clone());
    let refused = ws::connect(addr, "/chat?token=bad", &[])
        .err()
        .expect("refused");
    assert!(refused.contains("403"), "{refused}");
    let mut c = ws::connect(addr, "/chat?token=ok", &["chat.v1", "chat.v2"]).unwrap();
    assert_eq!(c.accepted.protocol.as_deref(), Some("chat.v2"));
    c.text("in");
    assert_eq!(c.recv(), Got::Text("in".into()));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[1],
        format!("GET /chat Some(\"token=ok\") host={addr} from=127.0.0.1")
    );
    let stats = server.stats();
    assert_eq!((stats.upgrades, stats.upgrades_refused), (1, 1));
    // The refused one never reached the handler: one connection seen.
    server.stop();
}

/// The close code of the server's close frame after `bytes`.
fn close_code_after(addr: SocketAddr, bytes: &[u8]) -> Got {
    let mut c = ws::connect(addr, "/", &[]).unwrap();
    c.raw(bytes);
    loop {
        match c.recv() {
            Got::Closed(code) => return Got::Closed(code),
            Got::Eof => return Got::Eof,
            _ => {}
        }
    }
}

#[test]
fn protocol_errors_close_with_their_codes() {
    let (server, addr) = start(
        ws_config(|ws| {
            ws.session.max_message = 1000;
            ws.session.max_frame = 1000;
        }),
        || Echo,
    );
    // An unmasked client frame: 1002.
    assert_eq!(
        close_code_after(addr, &[0x81, 0x02, b'h', b'i']),
        Got::Closed(1002)
    );
    // Invalid UTF-8 in a text message (masked with a zero key): 1007.
    assert_eq!(
        close_code_after(addr, &[0x81, 0x82, 0, 0, 0, 0, 0xc3, 0x28]),
        Got::Closed(1007)
    );
    // Over the message limit: 1009.
    let mut big = vec![0x82, 0xfe, 0x04, 0x00, 0, 0, 0, 0];
    big.extend_from_slice(&[0u8; 1024]);
    assert_eq!(close_code_after(addr, &big), Got::Closed(1009));
    // A reserved opcode: 1002.
    assert_eq!(
        close_code_after(addr, &[0x83, 0x80, 0, 0, 0, 0]),
        Got::Closed(1002)
    );
    server.stop();
}

#[test]
fn a_stopping_server_says_going_away() {
    let (server, addr) = start(ws_config(|_| {}), || Echo);
    let mut c = ws::connect(addr, "/", &[]).unwrap();
    c.text("x");
    assert_eq!(c.recv(), Got::Text("x".into()));
    let stopper = std::thread::spawn(move || server.stop());
    assert_eq!(c.recv(), Got::Closed(1001));
    stopper.join().unwrap();
}

#[test]
fn heartbeats_are_pings_and_pongs_keep_a_client_alive() {
    let mut cfg = ws_config(|_| {});
    cfg.heartbeat = Some(Duration::from_millis(100));
    cfg.idle_timeout = Some(Duration::from_millis(600));
    cfg.tick = Duration::from_millis(20);
    let (server, addr) = start(cfg, || Echo);
    let mut c = ws::connect(addr, "/", &[]).unwrap();
    // The server pings (an empty ping frame, 0x89 0x00) while the client
    // says nothing; answering them (`recv` does) keeps it open well past
    // the idle timeout.
    let raw = c.read_raw();
    assert_eq!(&raw[..2], &[0x89, 0x00], "{raw:?}");
    let started = std::time::Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        c.ping(b"");
        if c.recv() == Got::Pong {
            pings += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    c.text("still here");
    assert_eq!(c.recv(), Got::Text("still here".into()));
    assert!(pings > 5);
    assert!(server.stats().heartbeats >= 1);
    server.stop();
}

#[test]
fn a_message_trickled_in_is_closed_at_the_frame_timeout_and_counted() {
    let mut cfg = ws_config(|ws| ws.session.max_message = 1 << 20);
    cfg.frame_timeout = Some(Duration::from_millis(300));
    cfg.tick = Duration::from_millis(20);
    let (server, addr) = start(cfg, || Echo);
    // A prompt client is not affected.
    let mut prompt = ws::connect(addr, "/", &[]).unwrap();
    // A 1000-byte binary message (zero masking key), its first part only,
    // then a byte every 50 ms: each byte resets the idle timer, so only
    // the frame timeout catches it.
    let mut slow = ws::connect(addr, "/", &[]).unwrap();
    let mut message = vec![0x82, 0xfe, 0x03, 0xe8, 0, 0, 0, 0];
    message.extend_from_slice(&[7u8; 1000]);
    slow.raw(&message[..100]);
    let started = std::time::Instant::now();
    let mut sent = 100;
    let code = loop {
        assert!(started.elapsed() < IO_TIMEOUT, "never closed");
        prompt.binary(b"here");
        assert_eq!(prompt.recv(), Got::Binary(b"here".to_vec()));
        if slow.raw_checked(&message[sent..sent + 1]).is_err() {
            break slow.recv();
        }
        sent += 1;
        if let Some(got) = slow.try_recv(Duration::from_millis(50)) {
            break got;
        }
    };
    assert_eq!(code, Got::Closed(1008), "policy violation");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "not before its time: {:?}",
        started.elapsed()
    );
    assert!(wait_until(IO_TIMEOUT, || server.stats().frame_timeouts == 1));
    server.stop();
}

#[test]
fn a_silent_client_is_closed_at_the_handshake_timeout() {
    let mut cfg = ws_config(|ws| ws.handshake_timeout = Duration::from_millis(300));
    cfg.tick = Duration::from_millis(20);
    let (server, addr) = start(cfg, || Echo);
    let mut silent = connect(addr);
    let mut byte = [0u8; 1];
    let n = std::io::Read::read(&mut silent, &mut byte).unwrap_or(0);
    assert_eq!(n, 0, "closed unanswered");
    assert!(
        wait_until(IO_TIMEOUT, || server.stats().upgrade_timeouts == 1),
        "counted"
    );
    server.stop();
}

#[test]
fn an_oversized_request_head_is_refused_with_431() {
    let (server, addr) = start(ws_config(|ws| ws.handshake.max_head_bytes = 512), || Echo);
    let mut s = connect(addr);
    let head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(1000)
    );
    std::io::Write::write_all(&mut s, head.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(server.stats().upgrades_refused, 1);
    server.stop();
}

#[test]
fn text_sent_with_send_as_reaches_other_shards_as_text() {
    // Two shards: a broadcast of a text message reaches WebSocket clients
    // on both as text.
    let (server, addr) = start(ws_config(|_| {}), || Chat);
    // Clients until both shards hold one (the kernel spreads connections
    // over the shards' listeners by a hash; bounded).
    let mut clients: Vec<ws::Ws> = Vec::new();
    let mut shards = std::collections::HashSet::new();
    while shards.len() < 2 {
        assert!(clients.len() < 64, "clients never reached both shards");
        clients.push(ws::connect(addr, "/", &[]).unwrap());
        let n = clients.len() as u64;
        assert!(
            wait_until(IO_TIMEOUT, || server.stats().connections == n),
            "all connected"
        );
        shards = server
            .connections(IO_TIMEOUT)
            .connections
            .iter()
            .map(|c| c.conn.shard())
            .collect();
    }
    clients[0].send(MessageKind::Text, b"to all");
    for c in &mut clients {
        assert_eq!(c.recv(), Got::Text("to all".into()));
    }
    server.stop();
}

#[test]
fn a_client_that_does_not_read_is_paused_and_loses_nothing() {
    // A small high-water mark: the echoes fill the queue while the client
    // sends without reading; reading from it pauses (its input waits), and
    // every echo arrives, in order, once it reads.
    let mut cfg = ws_config(|_| {});
    cfg.send_high_water = 64 * 1024;
    let (server, addr) = start(cfg, || Echo);
    let mut c = ws::connect(addr, "/", &[]).unwrap();
    let mut writer = c.stream.try_clone().unwrap();
    // More than loopback socket buffers hold (several MiB each way).
    const N: u32 = 20_000;
    let sender = std::thread::spawn(move || {
        let mut session = ringport::protocol::websocket::Session::client(
            &ringport::protocol::websocket::SessionConfig::default(),
            None,
        );
        let mut out = Vec::new();
        for i in 0..N {
            let mut m = i.to_be_bytes().to_vec();
            m.resize(1000, (i % 251) as u8);
            out.clear();
            session.send(MessageKind::Binary, &m, &mut out).unwrap();
            std::io::Write::write_all(&mut writer, &out).unwrap();
        }
    });
    // Not reading until the server had to pause this connection.
    assert!(
        wait_until(IO_TIMEOUT, || server.stats().read_pauses > 0),
        "reading paused"
    );
    for i in 0..N {
        match c.recv() {
            Got::Binary(m) => {
                assert_eq!(m.len(), 1000);
                assert_eq!(u32::from_be_bytes(m[..4].try_into().unwrap()), i);
            }
            other => panic!("message {i}: {other:?}"),
        }
    }
    sender.join().unwrap();
    server.stop();
}

#[test]
fn deflate_is_negotiated_and_a_broadcast_reaches_every_kind_of_client() {
    let (server, addr) = start(
        ws_config(|ws| {
            ws.deflate = Some(ringport::protocol::websocket::DeflateConfig {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                ..Default::default()
            })
        }),
        || Chat,
    );
    let mut deflating: Vec<ws::Ws> = (0..3)
        .map(|_| ws::connect_with(addr, "/", &[], Some(1)).unwrap())
        .collect();
    for c in &deflating {
        let p = c.accepted.deflate.expect("deflate negotiated");
        assert!(p.server_no_context_takeover && p.client_no_context_takeover);
    }
    let mut plain = ws::connect(addr, "/", &[]).unwrap();
    assert!(plain.accepted.deflate.is_none());
    assert!(
        wait_until(IO_TIMEOUT, || server.stats().connections == 4),
        "connected"
    );
    let text = "a compressible line of chat. ".repeat(400);
    let before = server.stats().bytes_out;
    deflating[0].text(&text);
    for c in deflating.iter_mut().chain(std::iter::once(&mut plain)) {
        assert_eq!(c.recv(), Got::Text(text.clone()));
    }
    // Three compressed copies and one plain one left the server: far
    // less than four plain ones.
    let sent = server.stats().bytes_out - before;
    assert!(
        sent < 2 * text.len() as u64,
        "{sent} bytes sent for 4 x {} bytes",
        text.len()
    );
    server.stop();
}

#[test]
fn websocket_openings_take_handshake_places() {
    // One place per shard, one shard: a client that connects and says
    // nothing holds the place until its opening deadline; the next one
    // waits unread meanwhile (its request is not answered), then is served.
    let mut cfg = ws_config(|ws| ws.handshake_timeout = Duration::from_millis(600));
    cfg.shards = 1;
    cfg.max_handshakes_per_shard = 1;
    cfg.tick = Duration::from_millis(20);
    let (server, addr) = start(cfg, || Echo);
    let mut established = ws::connect(addr, "/", &[]).unwrap();
    let silent = connect(addr);
    assert!(
        wait_until(IO_TIMEOUT, || server.stats().connections == 2),
        "the silent one holds the place"
    );
    let started = std::time::Instant::now();
    let waiter = std::thread::spawn(move || {
        let mut c = ws::connect(addr, "/", &[]).unwrap();
        c.text("in");
        assert_eq!(c.recv(), Got::Text("in".into()));
        started.elapsed()
    });
    // Meanwhile the established client is served as usual.
    established.text("still served");
    assert_eq!(established.recv(), Got::Text("still served".into()));
    assert!(
        wait_until(IO_TIMEOUT, || server.stats().handshakes_waiting == 1),
        "the second opening waits for the place"
    );
    let waited = waiter.join().unwrap();
    assert!(
        waited >= Duration::from_millis(300),
        "served only after the silent one left: {waited:?}"
    );
    assert_eq!(server.stats().upgrade_timeouts, 1);
    drop(silent);
    server.stop();
}

#[test]
fn the_message_rate_limit_applies_to_websocket_clients() {
    // Pause (the default policy): every message is answered, no faster
    // than the budget lets them in.
    let mut cfg = ws_config(|_| {});
    let mut limit = ringport::MessageRateLimit::new(100);
    limit.burst = 10;
    cfg.max_message_rate = Some(limit);
    let (server, addr) = start(cfg, || Echo);
    let mut c = ws::connect(addr, "/", &[]).unwrap();
    let started = std::time::Instant::now();
    for i in 0..60u32 {
        c.binary(&i.to_be_bytes());
    }
    for i in 0..60u32 {
        assert_eq!(c.recv(), Got::Binary(i.to_be_bytes().to_vec()));
    }
    // 10 at once, then 50 at 100/s: at least about 0.5 s.
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    assert!(server.stats().rate_limit_pauses > 0);
    server.stop();

    // Close: a flood past the burst ends with close 1008.
    let mut cfg = ws_config(|_| {});
    let mut limit = ringport::MessageRateLimit::new(10);
    limit.burst = 5;
    limit.policy = ringport::RateLimitPolicy::Close;
    cfg.max_message_rate = Some(limit);
    let (server, addr) = start(cfg, || Echo);
    let mut c = ws::connect(addr, "/", &[]).unwrap();
    // The whole flood in one write (the server may close the connection
    // right after the first message over the budget).
    let mut flood = Vec::new();
    for i in 0..50u32 {
        c.session
            .send(MessageKind::Binary, &i.to_be_bytes(), &mut flood)
            .unwrap();
    }
    c.raw(&flood);
    let mut echoed = 0;
    loop {
        match c.recv() {
            Got::Binary(_) => echoed += 1,
            Got::Closed(code) => {
                assert_eq!(code, 1008);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(echoed < 50, "{echoed}");
    assert_eq!(server.stats().rate_limit_closes, 1);
    server.stop();
}
