//! TLS on the same engine (feature `tls`): rustls between the socket and
//! the codec, on both backends, with no thread or event loop of its own.
//!
//! rustls is used through its I/O-free connection API: the engine hands it
//! the bytes a receive brought (`read_tls`), takes the plaintext out into
//! the framer, and lets it encrypt each queued frame straight into the
//! connection's send queue (`write_tls`), which the backend writes like any
//! other. So everything that works on the send queue and on received
//! bytes (backpressure, the slow-consumer policy, idle and frame timeouts,
//! the connection limit, generational ids, broadcast) works unchanged; the
//! queue simply holds ciphertext.
//!
//! - Server side: [`crate::ServerConfig::tls`] takes a [`TlsAcceptor`]
//!   made from a rustls [`rustls::ServerConfig`]; every accepted connection
//!   is TLS. [`TlsAcceptor::reload`] swaps the configuration (a new
//!   certificate) for connections accepted afterwards; open ones are not
//!   touched.
//! - Client side: [`crate::Context::connect_tls`] and
//!   [`crate::Server::connect_tls`] open outbound TLS connections described
//!   by a [`TlsConnector`]; [`crate::Client::connect_tls`] is the blocking
//!   client.
//! - The handler hears of a TLS connection (`on_connect`) once its handshake
//!   is complete. A handshake that fails or does not finish within the
//!   handshake timeout closes the connection with
//!   [`crate::CloseReason::Tls`] (counted in [`crate::Stats::tls_failures`]
//!   and [`crate::Stats::tls_handshake_timeouts`]); the handler never sees
//!   it (an outbound one is reported to `on_connect_failed`). A TLS error
//!   after the handshake (a corrupt record) closes it with the same reason,
//!   after `on_connect`, so `on_close` hears it.
//! - Closing flushes the queue, then a `close_notify` alert; the peer's
//!   `close_notify` is its end of stream.
//!
//! [`pem`] loads certificates and keys from PEM files into rustls
//! configurations (what `ringport serve --tls-cert` uses).
//!
//! ```no_run
//! use std::path::Path;
//! use std::sync::Arc;
//! use ringport::tls::{TlsAcceptor, TlsConnector, pem};
//! use ringport::{Client, LengthDelimited, Server, ServerConfig, handlers::Echo};
//!
//! let tls = pem::server_config(Path::new("cert.pem"), Path::new("key.pem"), None, &[])?;
//! let acceptor = TlsAcceptor::new(Arc::new(tls));
//! let mut config = ServerConfig::new("127.0.0.1:7443".parse().unwrap());
//! config.tls = Some(acceptor.clone());
//! let server = Server::start(config, LengthDelimited::new(), |_| Echo)?;
//!
//! let client_config = pem::client_config(Some(Path::new("cert.pem")), false, None)?;
//! let connector = TlsConnector::with_name(Arc::new(client_config), "localhost")?;
//! let mut client = Client::connect_tls(server.local_addr(), &connector)?;
//! client.send(b"ping")?;
//! assert_eq!(client.recv()?, b"ping");
//!
//! // A renewed certificate, for connections accepted from now on:
//! let renewed = pem::server_config(Path::new("cert.pem"), Path::new("key.pem"), None, &[])?;
//! acceptor.reload(Arc::new(renewed));
//! # Ok::<(), std::io::Error>(())
//! ```

pub mod pem;

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use rustls;
pub use rustls_pki_types::ServerName;

/// How long a handshake may take by default before the connection is
/// closed with [`crate::CloseReason::Tls`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server side of TLS: a rustls server configuration that can be
/// replaced while the server runs. Cheap to clone; clones share the
/// configuration, so a clone kept by the application reloads the server's.
#[derive(Clone)]
pub struct TlsAcceptor {
    config: Arc<RwLock<Arc<rustls::ServerConfig>>>,
    handshake_timeout: Duration,
}

impl TlsAcceptor {
    /// Accepted connections use `config` (certificate, client
    /// authentication, ALPN, versions: all the user's choice).
    pub fn new(config: Arc<rustls::ServerConfig>) -> Self {
        TlsAcceptor {
            config: Arc::new(RwLock::new(config)),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// A handshake not complete this long after the connection was accepted
    /// closes it (default [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How long a handshake may take before the connection is closed.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// Connections accepted from now on use `config` (e.g. a renewed
    /// certificate); open connections keep the one they started with.
    pub fn reload(&self, config: Arc<rustls::ServerConfig>) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// The configuration new connections get.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("alpn", &self.current().alpn_protocols)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

/// The client side of TLS for one outbound connection: a rustls client
/// configuration and the name the server's certificate must carry.
#[derive(Clone, Debug)]
pub struct TlsConnector {
    /// The rustls client configuration.
    pub config: Arc<rustls::ClientConfig>,
    /// The name the server's certificate must carry.
    pub server_name: ServerName<'static>,
    /// How long the handshake may take before the connection fails.
    pub handshake_timeout: Duration,
}

impl TlsConnector {
    /// Connects with `config`, checking the server's certificate against
    /// `server_name` (a DNS name or an IP address).
    pub fn new(config: Arc<rustls::ClientConfig>, server_name: ServerName<'static>) -> Self {
        TlsConnector {
            config,
            server_name,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Like [`TlsConnector::new`], with the name given as a string.
    pub fn with_name(
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> std::io::Result<Self> {
        let name = ServerName::try_from(server_name.to_owned()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad TLS server name {server_name:?}: {e}"),
            )
        })?;
        Ok(Self::new(config, name))
    }
}
