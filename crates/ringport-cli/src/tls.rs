//! `ringport serve --tls-cert/--tls-key/--tls-client-ca/--tls-alpn`: the
//! server's TLS configuration from PEM files, reloaded on SIGHUP.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ringport::tls::{TlsAcceptor, pem};
use signal_hook::consts::SIGHUP;
use signal_hook::iterator::Signals;
use tracing::{info, warn};

use clap::Args;
use ringport_cli::parse_positive_duration;

/// The options of `serve` that ask for TLS.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Speak TLS with this certificate chain (PEM; the server's certificate
    /// first). Needs --tls-key. SIGHUP reloads the certificate, key and
    /// client CA files for new connections; open ones are kept.
    #[arg(
        long,
        value_name = "FILE",
        env = "RINGPORT_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        value_name = "FILE",
        env = "RINGPORT_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Mutual TLS: clients must present a certificate signed by a CA in
    /// this PEM file.
    #[arg(
        long,
        value_name = "FILE",
        env = "RINGPORT_TLS_CLIENT_CA",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,

    /// ALPN protocols offered, comma-separated, most preferred first (off
    /// by default).
    #[arg(
        long,
        value_name = "PROTOCOLS",
        env = "RINGPORT_TLS_ALPN",
        value_delimiter = ',',
        requires = "tls_cert"
    )]
    pub tls_alpn: Vec<String>,

    /// A TLS handshake not complete this long after the connection was
    /// accepted closes it (counted in tls_handshake_timeouts).
    #[arg(long, value_name = "DURATION", default_value = "10s",
          env = "RINGPORT_TLS_HANDSHAKE_TIMEOUT", value_parser = parse_positive_duration)]
    pub tls_handshake_timeout: Duration,
}

/// The files a TLS configuration is read from (again at each SIGHUP).
#[derive(Clone)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    alpn: Vec<Vec<u8>>,
}

impl Files {
    fn load(&self) -> Result<Arc<ringport::tls::rustls::ServerConfig>, String> {
        pem::server_config(&self.cert, &self.key, self.client_ca.as_deref(), &self.alpn)
            .map(Arc::new)
            .map_err(|e| format!("TLS configuration: {e}"))
    }
}

/// The acceptor `serve` was asked for (none without --tls-cert), with a
/// thread that reloads its files on SIGHUP: connections accepted after the
/// signal get the new certificate, open ones keep theirs. A reload that
/// fails (a missing or bad file) keeps the configuration in use.
pub fn acceptor(args: &TlsArgs) -> Result<Option<TlsAcceptor>, String> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let files = Files {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: args.tls_client_ca.clone(),
        alpn: args
            .tls_alpn
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect(),
    };
    let acceptor =
        TlsAcceptor::new(files.load()?).with_handshake_timeout(args.tls_handshake_timeout);
    info!(
        cert = %files.cert.display(),
        client_ca = ?files.client_ca,
        alpn = ?args.tls_alpn,
        "TLS on; SIGHUP reloads the certificate"
    );
    let mut signals =
        Signals::new([SIGHUP]).map_err(|e| format!("installing the SIGHUP handler: {e}"))?;
    let reload = acceptor.clone();
    std::thread::Builder::new()
        .name("tls-reload".into())
        .spawn(move || {
            for _ in signals.forever() {
                match files.load() {
                    Ok(config) => {
                        reload.reload(config);
                        info!(cert = %files.cert.display(), "SIGHUP: TLS certificate reloaded");
                    }
                    Err(e) => warn!("SIGHUP: {e}; keeping the certificate in use"),
                }
            }
        })
        .map_err(|e| format!("starting the TLS reload thread: {e}"))?;
    Ok(Some(acceptor))
}
