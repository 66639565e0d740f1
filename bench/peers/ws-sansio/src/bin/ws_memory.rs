//! ws-memory: what a WebSocket connection costs in ringport's protocol core,
//! measured with a counting global allocator (bytes requested from the
//! allocator, live).
//!
//! For each setting, N sessions are created after a real handshake
//! (request parsed, 101 written) and one message is exchanged each way;
//! the live heap delta divided by N is printed with `size_of::<Session>()`.
//!
//! Usage: ws-memory [--conns N]   (default 1000)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use ringport::protocol::websocket::deflate::{Deflater, Inflater};
use ringport::protocol::websocket::{
    AcceptOptions, ClientHandshake, ClientOptions, DeflateConfig, DeflateParams, Event,
    HandshakeLimits, MessageKind, RequestStatus, Session, SessionConfig, parse_request,
};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only
// counts the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as for `realloc` of the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// A server session after a full handshake with `offer` (client options)
/// and the server's `deflate` policy.
fn handshake(deflate_offer: bool, deflate: Option<DeflateConfig>) -> (Session, Session) {
    let mut req = Vec::new();
    let opts = ClientOptions {
        host: "localhost",
        target: "/",
        deflate_level: deflate_offer.then_some(1),
        ..ClientOptions::default()
    };
    let hs = ClientHandshake::new(&opts, &mut req);
    let RequestStatus::Complete { request, .. } = parse_request(&req, &HandshakeLimits::default())
    else {
        panic!("handshake request refused")
    };
    let mut resp = Vec::new();
    let neg = request
        .accept(
            &AcceptOptions {
                deflate,
                ..AcceptOptions::default()
            },
            None,
            &mut resp,
        )
        .expect("accept");
    let ringport::protocol::websocket::ResponseStatus::Complete { accepted, .. } =
        hs.parse_response(&resp)
    else {
        panic!("response refused")
    };
    let cfg = SessionConfig::default();
    (
        Session::server(&cfg, neg.deflate),
        Session::client(&cfg, accepted.deflate),
    )
}

fn exchange(server: &mut Session, client: &mut Session, payload: &[u8]) {
    let mut wire = Vec::new();
    client.send(MessageKind::Text, payload, &mut wire).unwrap();
    let mut out = Vec::new();
    let r = server.read(&mut wire, &mut out);
    assert!(matches!(r.event, Event::Message(_)), "{:?}", r.event);
    let mut wire = Vec::new();
    server.send(MessageKind::Text, payload, &mut wire).unwrap();
    let r = client.read(&mut wire, &mut out);
    assert!(matches!(r.event, Event::Message(_)), "{:?}", r.event);
    // The next read (of nothing) frees the buffers of the message handed out.
    server.read(&mut [], &mut out);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--conns")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    println!(
        "size_of::<Session>() = {} bytes",
        std::mem::size_of::<Session>()
    );
    println!(
        "per connection, {n} server sessions, after the handshake and one {}-byte message each way:",
        200
    );
    println!("| setting | negotiated | heap per idle server session | DeflateParams::idle_cost |");
    println!("|---|---|---|---|");
    let payload = "a chat message of moderate size, repeated a bit: hello hello hello ".repeat(3);
    let settings: Vec<(&str, bool, Option<DeflateConfig>)> = vec![
        ("no deflate", false, None),
        (
            "deflate, takeover, 15/15 bits",
            true,
            Some(DeflateConfig::default()),
        ),
        (
            "deflate, takeover, 12/12 bits",
            true,
            Some(DeflateConfig {
                server_max_window_bits: 12,
                client_max_window_bits: 12,
                ..DeflateConfig::default()
            }),
        ),
        (
            "deflate, takeover, 9/9 bits",
            true,
            Some(DeflateConfig {
                server_max_window_bits: 9,
                client_max_window_bits: 9,
                ..DeflateConfig::default()
            }),
        ),
        (
            "deflate, no context takeover",
            true,
            Some(DeflateConfig {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                ..DeflateConfig::default()
            }),
        ),
    ];
    for (name, offer, cfg) in settings {
        // Warm up: the per-thread spare contexts (no context takeover) and
        // any other one-time allocation are made before counting.
        {
            let (mut s, mut c) = handshake(offer, cfg);
            exchange(&mut s, &mut c, payload.as_bytes());
        }
        let base = live();
        let mut servers = Vec::with_capacity(n);
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            let (mut s, mut c) = handshake(offer, cfg);
            exchange(&mut s, &mut c, payload.as_bytes());
            servers.push(s);
            // Kept alive meanwhile (as a real peer would be), then dropped
            // so that only the servers' share is counted.
            clients.push(c);
        }
        drop(clients);
        let servers_only = live() - base;
        let vec_part = (servers.capacity() * std::mem::size_of::<Session>()) as isize;
        let per = (servers_only - vec_part) as f64 / n as f64;
        let params: Option<&DeflateParams> = servers[0].deflate_params();
        println!(
            "| {name} | {} | {per:.0} B (+ {} B inline) | {} |",
            params.map_or("none".to_string(), |p| format!(
                "s{} c{}{}{}",
                p.server_max_window_bits,
                p.client_max_window_bits,
                if p.server_no_context_takeover {
                    " snct"
                } else {
                    ""
                },
                if p.client_no_context_takeover {
                    " cnct"
                } else {
                    ""
                }
            )),
            std::mem::size_of::<Session>(),
            params.map_or(0, |p| p.idle_cost(true)),
        );
    }
    // One context of each kind, by window size: what a connection with
    // context takeover keeps (after one 4 KiB message, so that every lazily
    // allocated buffer exists).
    println!();
    println!("one context, live heap after one 4 KiB message (flate2 on zlib-rs, level 1):");
    println!("| window bits | compressor | decompressor |");
    println!("|---|---|---|");
    let sample = payload.repeat(20);
    for bits in 9..=15u8 {
        let base = live();
        let mut d = Deflater::new(bits, 1);
        let mut c = Vec::new();
        d.compress(sample.as_bytes(), &mut c);
        let c_len = c.len();
        let before_drop = live();
        drop(c);
        let comp = before_drop - base - c_len as isize;
        // Input and output buffers made before counting.
        let mut c = Vec::new();
        Deflater::new(bits, 1).compress(sample.as_bytes(), &mut c);
        let mut o = Vec::with_capacity(sample.len() + 1);
        let base = live();
        let mut i = Inflater::new(bits);
        i.inflate(&c, &mut o, sample.len()).unwrap();
        let infl = live() - base;
        assert_eq!(o, sample.as_bytes());
        println!("| {bits} | {comp} B | {infl} B |");
        drop((d, i));
    }

    // The per-message price of no context takeover: a compressor and a
    // decompressor made and dropped per message.
    let (mut s, mut c) = handshake(
        true,
        Some(DeflateConfig {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..DeflateConfig::default()
        }),
    );
    let rounds = 20_000;
    let t = Instant::now();
    for _ in 0..rounds {
        exchange(&mut s, &mut c, payload.as_bytes());
    }
    let nct = t.elapsed().as_secs_f64() * 1e9 / rounds as f64;
    let (mut s, mut c) = handshake(true, Some(DeflateConfig::default()));
    let t = Instant::now();
    for _ in 0..rounds {
        exchange(&mut s, &mut c, payload.as_bytes());
    }
    let takeover = t.elapsed().as_secs_f64() * 1e9 / rounds as f64;
    let (mut s, mut c) = handshake(false, None);
    let t = Instant::now();
    for _ in 0..rounds {
        exchange(&mut s, &mut c, payload.as_bytes());
    }
    let plain = t.elapsed().as_secs_f64() * 1e9 / rounds as f64;
    println!();
    println!(
        "one {}-byte message each way (client compress+mask, server inflate, server compress, client inflate), {rounds} rounds:",
        payload.len()
    );
    println!(
        "  no deflate: {plain:.0} ns/round; deflate with takeover: {takeover:.0} ns/round; no context takeover (contexts reset per message): {nct:.0} ns/round"
    );

    // The server's share on the fast path, no deflate: decode (unmask,
    // validate) a batch of masked 20-byte text frames from one buffer, and
    // frame the same messages for sending.
    let (mut s, mut c) = handshake(false, None);
    let msg = "0123456789abcdefghij";
    let batch = 1000;
    let mut wire = Vec::new();
    for _ in 0..batch {
        c.send(MessageKind::Text, msg.as_bytes(), &mut wire)
            .unwrap();
    }
    let rounds = 2000;
    let mut out = Vec::new();
    let mut work = wire.clone();
    let t = Instant::now();
    let mut n = 0usize;
    for _ in 0..rounds {
        work.copy_from_slice(&wire);
        let mut off = 0;
        loop {
            let r = s.read(&mut work[off..], &mut out);
            off += r.consumed;
            match r.event {
                Event::Message(m) => n += m.as_bytes().len(),
                _ => break,
            }
        }
    }
    let decode = t.elapsed().as_secs_f64() * 1e9 / (rounds * batch) as f64;
    assert_eq!(n, rounds * batch * msg.len());
    let t = Instant::now();
    for _ in 0..rounds {
        out.clear();
        for _ in 0..batch {
            s.send(MessageKind::Text, msg.as_bytes(), &mut out).unwrap();
        }
    }
    let encode = t.elapsed().as_secs_f64() * 1e9 / (rounds * batch) as f64;
    println!();
    println!(
        "server, 20-byte text messages, no deflate ({} messages): read {decode:.1} ns/message (incl. copying the 26-byte frame into place), send {encode:.1} ns/message",
        rounds * batch
    );
}
