//! peer-monoio: framed echo server on monoio (io_uring driver),
//! thread-per-core: `--threads N` threads, each with its own runtime and its
//! own SO_REUSEPORT listener.
//!
//! Each connection reads into an owned buffer, parses the frames it holds
//! (4-byte big-endian length, then the payload; at most 16 MiB, a larger
//! header closes the connection) and writes every complete frame parsed from
//! that read back in one owned-buffer write (an echoed frame is byte for byte
//! the received frame, so the write is the parsed prefix of the buffer). A
//! partial trailing frame is moved to the spare buffer and completed by the
//! next reads.

use std::io;
use std::net::TcpListener as StdTcpListener;
use std::thread;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use peer_common::{Args, HEADER_LEN, MAX_FRAME};

/// Initial per-connection read buffer (grown to hold a whole frame if needed).
const READ_BUF: usize = 64 * 1024;

fn main() {
    let args = Args::parse(
        "peer-monoio",
        "framed echo server (monoio io_uring, thread-per-core with SO_REUSEPORT)",
        &[("entries", "io_uring SQ entries per thread (default 4096)")],
    );
    let entries = args.get_usize("entries", 4096) as u32;
    peer_common::raise_nofile_limit();
    peer_common::block_term_signals();
    let listeners = match peer_common::reuseport_listeners(args.addr, args.threads) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("peer-monoio: bind {}: {e}", args.addr);
            std::process::exit(1);
        }
    };
    let bound = listeners[0].local_addr().unwrap_or(args.addr);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
    for (i, l) in listeners.into_iter().enumerate() {
        let ready = ready_tx.clone();
        thread::Builder::new()
            .name(format!("peer-monoio-{i}"))
            .spawn(move || worker(l, entries, ready))
            .expect("spawn worker");
    }
    drop(ready_tx);
    for r in ready_rx.iter().take(args.threads) {
        if let Err(e) = r {
            eprintln!("peer-monoio: worker start: {e}");
            std::process::exit(1);
        }
    }
    peer_common::announce(bound);
    let sig = peer_common::wait_for_term_signal();
    eprintln!(
        "peer-monoio: {}, shutting down",
        peer_common::signal_name(sig)
    );
    // Workers hold only sockets and rings: the kernel reclaims them at exit.
    std::process::exit(0);
}

fn worker(l: StdTcpListener, entries: u32, ready: std::sync::mpsc::Sender<io::Result<()>>) {
    let mut rt = match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(entries)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    rt.block_on(async move {
        let listener = match TcpListener::from_std(l) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        let mut reported = false;
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    monoio::spawn(serve(stream));
                }
                Err(e) => {
                    // EMFILE (fd limit) and the like: stay up, let pending
                    // connections wait in the backlog, retry a bit later.
                    if !reported {
                        eprintln!("peer-monoio: accept: {e} (backing off)");
                        reported = true;
                    }
                    monoio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
        }
    });
}

/// Result of scanning a buffer for frames.
struct Parsed {
    /// Bytes at the front that form complete frames.
    complete: usize,
    /// Total bytes needed to finish the first incomplete frame (0 if unknown).
    need: usize,
    /// A header announced more than MAX_FRAME bytes.
    bad: bool,
}

fn parse(buf: &[u8]) -> Parsed {
    let mut pos = 0;
    loop {
        let rest = &buf[pos..];
        if rest.len() < HEADER_LEN {
            return Parsed {
                complete: pos,
                need: 0,
                bad: false,
            };
        }
        let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if n > MAX_FRAME {
            return Parsed {
                complete: pos,
                need: 0,
                bad: true,
            };
        }
        if rest.len() < HEADER_LEN + n {
            return Parsed {
                complete: pos,
                need: HEADER_LEN + n,
                bad: false,
            };
        }
        pos += HEADER_LEN + n;
    }
}

async fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut stream = stream;
    let mut rbuf: Vec<u8> = Vec::with_capacity(READ_BUF);
    let mut spare: Vec<u8> = Vec::with_capacity(READ_BUF);
    loop {
        if rbuf.len() == rbuf.capacity() {
            rbuf.reserve(READ_BUF);
        }
        let (len, cap) = (rbuf.len(), rbuf.capacity());
        let (res, slice) = stream.read(rbuf.slice_mut(len..cap)).await;
        rbuf = slice.into_inner();
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let p = parse(&rbuf);
        if p.complete > 0 {
            // Keep the partial tail in the spare buffer, write the complete
            // frames straight from the read buffer (owned, no copy).
            spare.clear();
            spare.extend_from_slice(&rbuf[p.complete..]);
            rbuf.truncate(p.complete);
            let (res, buf) = stream.write_all(rbuf).await;
            rbuf = buf;
            if res.is_err() {
                return;
            }
            rbuf.clear();
            std::mem::swap(&mut rbuf, &mut spare);
        }
        if p.bad {
            return;
        }
        if p.need > rbuf.capacity() {
            // Make room for the whole frame so the next reads complete it.
            rbuf.reserve(p.need - rbuf.len());
        }
    }
}
