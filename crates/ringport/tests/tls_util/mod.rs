//! Test certificates made at test time with rcgen (nothing secret is
//! committed), written as PEM files to a fresh directory so that openssl
//! and Python can read them too, and TLS configurations over them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use ringport::tls::{TlsAcceptor, TlsConnector, pem, rustls};

/// A test PKI: a CA, a server certificate for `localhost` and 127.0.0.1,
/// an expired server certificate, a client certificate, and a second CA
/// that signed nothing here.
pub struct Pki {
    pub dir: PathBuf,
}

struct Issuer {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Issuer {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    Issuer {
        cert: params.self_signed(&key).unwrap(),
        key,
    }
}

fn leaf(issuer: &Issuer, names: &[&str], expired: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "ringport test");
    if expired {
        params.not_before = rcgen::date_time_ymd(2001, 1, 1);
        params.not_after = rcgen::date_time_ymd(2002, 1, 1);
    }
    let cert = params.signed_by(&key, &issuer.cert, &issuer.key).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    pub fn new() -> Pki {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringport-tls-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca1 = ca("ringport test CA");
        let ca2 = ca("some other CA");
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        write("ca.pem", &ca1.cert.pem());
        write("other-ca.pem", &ca2.cert.pem());
        let (c, k) = leaf(&ca1, &["localhost", "127.0.0.1"], false);
        write("server.pem", &c);
        write("server.key", &k);
        let (c, k) = leaf(&ca1, &["localhost", "127.0.0.1"], true);
        write("expired.pem", &c);
        write("expired.key", &k);
        let (c, k) = leaf(&ca1, &["client.test"], false);
        write("client.pem", &c);
        write("client.key", &k);
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The server side: `cert` is "server" or "expired"; with `mutual`,
    /// client certificates signed by the CA are required.
    pub fn acceptor(&self, cert: &str, mutual: bool) -> TlsAcceptor {
        TlsAcceptor::new(Arc::new(self.server_config(cert, mutual)))
    }

    pub fn server_config(&self, cert: &str, mutual: bool) -> rustls::ServerConfig {
        let ca = self.path("ca.pem");
        pem::server_config(
            &self.path(&format!("{cert}.pem")),
            &self.path(&format!("{cert}.key")),
            mutual.then_some(ca.as_path()),
            &[],
        )
        .unwrap()
    }

    /// A client trusting `ca` ("ca" or "other-ca"), checking `name`, with
    /// the client certificate if `with_cert`.
    pub fn connector(&self, ca: &str, name: &str, with_cert: bool) -> TlsConnector {
        let cert = self.path("client.pem");
        let key = self.path("client.key");
        let config = pem::client_config(
            Some(&self.path(&format!("{ca}.pem"))),
            false,
            with_cert.then_some((cert.as_path(), key.as_path())),
        )
        .unwrap();
        TlsConnector::with_name(Arc::new(config), name).unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
