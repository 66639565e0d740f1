//! peer-tokio-rustls: peer-tokio behind TLS. The same framed echo
//! (tokio-util `LengthDelimitedCodec`, `feed` per frame, one `flush` per
//! batch) over tokio-rustls's `TlsStream`, with a rustls server
//! configuration built like ringport's (`ring` provider, safe default
//! versions, no client authentication, default session tickets).
//! Takes `--cert FILE --key FILE` (PEM) besides `--addr` and `--threads`.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, SinkExt, StreamExt};
use peer_common::{Args, BACKLOG, MAX_FRAME};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio_rustls::TlsAcceptor;
use tokio_util::bytes::Bytes;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

fn fail(msg: String) -> ! {
    eprintln!("peer-tokio-rustls: {msg}");
    std::process::exit(1)
}

fn tls_config(cert: &str, key: &str) -> rustls::ServerConfig {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect())
        .unwrap_or_else(|e| fail(format!("--cert {cert}: {e}")));
    let key =
        PrivateKeyDer::from_pem_file(key).unwrap_or_else(|e| fail(format!("--key {key}: {e}")));
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .unwrap_or_else(|e| fail(format!("TLS configuration: {e}")))
}

fn main() {
    let args = Args::parse(
        "peer-tokio-rustls",
        "framed echo server over TLS (tokio + tokio-rustls + LengthDelimitedCodec)",
        &[
            ("cert", "certificate chain, PEM"),
            ("key", "private key, PEM"),
        ],
    );
    let (Some(cert), Some(key)) = (args.get_str("cert"), args.get_str("key")) else {
        fail("--cert FILE and --key FILE are required".into());
    };
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(cert, key)));
    peer_common::raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format!("runtime: {e}")));
    let code = rt.block_on(async move {
        let listener = match bind(&args) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("peer-tokio-rustls: bind {}: {e}", args.addr);
                return 1;
            }
        };
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            _ => {
                eprintln!("peer-tokio-rustls: cannot install signal handlers");
                return 1;
            }
        };
        peer_common::announce(listener.local_addr().unwrap_or(args.addr));
        let accepting = tokio::spawn(accept_loop(listener, acceptor));
        let sig = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        eprintln!("peer-tokio-rustls: {sig}, shutting down");
        accepting.abort();
        0
    });
    rt.shutdown_timeout(Duration::from_millis(500));
    std::process::exit(code);
}

fn bind(args: &Args) -> io::Result<TcpListener> {
    let std_listener = peer_common::reuseport_listener(args.addr, BACKLOG)?;
    std_listener.set_nonblocking(true)?;
    TcpListener::from_std(std_listener)
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor) {
    let mut reported = false;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, acceptor.clone()));
            }
            Err(e) => {
                if !reported {
                    eprintln!("peer-tokio-rustls: accept: {e} (backing off)");
                    reported = true;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

async fn serve(stream: TcpStream, acceptor: TlsAcceptor) {
    let _ = stream.set_nodelay(true);
    // The same bound on a stalled handshake as ringport's default.
    let Ok(Ok(stream)) =
        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
    else {
        return;
    };
    let codec = LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(MAX_FRAME)
        .new_codec();
    let mut framed = Framed::new(stream, codec);
    while let Some(Ok(frame)) = framed.next().await {
        if framed.feed(frame.freeze()).await.is_err() {
            return;
        }
        loop {
            match framed.next().now_or_never() {
                Some(Some(Ok(frame))) => {
                    if framed.feed(frame.freeze()).await.is_err() {
                        return;
                    }
                }
                Some(Some(Err(_))) | Some(None) => {
                    let _ = SinkExt::<Bytes>::flush(&mut framed).await;
                    return;
                }
                None => break,
            }
        }
        if SinkExt::<Bytes>::flush(&mut framed).await.is_err() {
            return;
        }
    }
}
