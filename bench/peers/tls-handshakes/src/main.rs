//! tls-handshakes: measures TLS handshakes per second of a framed echo
//! server. Each of `--conns` loops repeats: connect, full TLS handshake
//! (session resumption off), one 64-byte frame and its echo, close. Prints
//! handshakes/s and, with `--server-pid`, the server's CPU time per
//! handshake (from /proc/PID/stat), as one JSON line.
//!
//! Usage: tls-handshakes --addr HOST:PORT [--conns 16] [--duration 5]
//!        [--warmup 1] [--server-pid PID] [--name localhost]
//! The server's certificate is not checked (test certificates).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug)]
struct AnyCert(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY-free: sysconf through the shell is overkill; CLK_TCK is 100 on Linux.
    Some(ticks / 100.0)
}

fn main() {
    let addr: std::net::SocketAddr = arg("--addr")
        .unwrap_or_else(|| "127.0.0.1:7001".into())
        .parse()
        .expect("--addr HOST:PORT");
    let conns: usize = arg("--conns").map_or(16, |v| v.parse().expect("--conns N"));
    let duration = Duration::from_secs_f64(arg("--duration").map_or(5.0, |v| v.parse().unwrap()));
    let warmup = Duration::from_secs_f64(arg("--warmup").map_or(1.0, |v| v.parse().unwrap()));
    let name = ServerName::try_from(arg("--name").unwrap_or_else(|| "localhost".into())).unwrap();
    let pid = arg("--server-pid");

    let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(
            provider.signature_verification_algorithms,
        )))
        .with_no_client_auth();
    // Every handshake a full one.
    config.resumption = rustls::client::Resumption::disabled();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (count, secs, cpu) = rt.block_on(async {
        for _ in 0..conns {
            let (connector, name) = (connector.clone(), name.clone());
            let (done, failed, stop) = (done.clone(), failed.clone(), stop.clone());
            tokio::spawn(async move {
                let payload = [7u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    let one = async {
                        let tcp = tokio::net::TcpStream::connect(addr).await?;
                        tcp.set_nodelay(true)?;
                        let mut s = connector.connect(name.clone(), tcp).await?;
                        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
                        frame.extend_from_slice(&payload);
                        s.write_all(&frame).await?;
                        let mut back = [0u8; 68];
                        s.read_exact(&mut back).await?;
                        s.shutdown().await?;
                        Ok::<_, std::io::Error>(())
                    };
                    match tokio::time::timeout(Duration::from_secs(10), one).await {
                        Ok(Ok(())) => done.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
        tokio::time::sleep(warmup).await;
        let (n0, c0, t0) = (
            done.load(Ordering::Relaxed),
            pid.as_deref().and_then(cpu_secs),
            Instant::now(),
        );
        tokio::time::sleep(duration).await;
        let (n1, c1, secs) = (
            done.load(Ordering::Relaxed),
            pid.as_deref().and_then(cpu_secs),
            t0.elapsed().as_secs_f64(),
        );
        stop.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
        (n1 - n0, secs, c0.zip(c1).map(|(a, b)| b - a))
    });
    let rate = count as f64 / secs;
    let cpu_us = cpu.map(|c| c * 1e6 / count.max(1) as f64);
    println!(
        "{{\"handshakes\":{count},\"secs\":{secs:.3},\"handshakes_per_sec\":{rate:.1},\"failed\":{},\"server_cpu_us_per_handshake\":{}}}",
        failed.load(Ordering::Relaxed),
        cpu_us.map_or("null".into(), |v| format!("{v:.1}"))
    );
}
