//! TLS material for both ends of the gateway: PEM keys and certificates as users hand them to
//! us (strings or Buffers, PKCS#1, PKCS#8 or SEC1 keys), turned into rustls configurations.
//! Every failure is a [`TlsError`] with a stable code, so a bad file is reported, not panicked on.

use std::sync::Arc;

use crate::errors::ErrorCode;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, crypto::CryptoProvider, server::WebPkiClientVerifier};

/// Why TLS material was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TlsError {
    #[error("Invalid private key.")]
    InvalidKey,
    #[error("Invalid certificate.")]
    InvalidCertificate,
    #[error("Invalid CA certificate: {0}")]
    InvalidCa(String),
    #[error("The private key does not match the certificate.")]
    KeyMismatch,
    #[error("TLS configuration failed: {0}")]
    Config(String),
}

impl TlsError {
    /// The stable `code` JavaScript sees on the `Error`.
    pub fn code(&self) -> ErrorCode {
        match self {
            TlsError::InvalidKey => ErrorCode::InvalidKey,
            TlsError::InvalidCertificate => ErrorCode::InvalidCert,
            TlsError::InvalidCa(_) => ErrorCode::InvalidCa,
            TlsError::KeyMismatch => ErrorCode::KeyMismatch,
            TlsError::Config(_) => ErrorCode::TlsConfig,
        }
    }
}

/// The one crypto provider the package uses (aws-lc-rs), independent of any process default.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The first private key in a PEM document, whatever its encoding.
pub fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| TlsError::InvalidKey)
}

/// Every certificate in a PEM document; at least one is required.
pub fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::InvalidCertificate)?;
    // PEM armour around bytes that are not a certificate is refused here, with the message
    // the user needs, rather than later as an obscure TLS failure.
    let well_formed =
        |der: &CertificateDer<'_>| x509_parser::parse_x509_certificate(der.as_ref()).is_ok();
    if certs.is_empty() || !certs.iter().all(well_formed) {
        return Err(TlsError::InvalidCertificate);
    }
    Ok(certs)
}

/// Trust anchors from PEM documents, each of which may hold several certificates.
pub fn root_store(pems: &[Vec<u8>]) -> Result<rustls::RootCertStore, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    for pem in pems {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::InvalidCa(e.to_string()))?;
        if certs.is_empty() {
            return Err(TlsError::InvalidCa("no certificate in PEM".into()));
        }
        for cert in certs {
            store
                .add(cert)
                .map_err(|e| TlsError::InvalidCa(e.to_string()))?;
        }
    }
    Ok(store)
}

fn config_error(err: rustls::Error) -> TlsError {
    match err {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch,
        other => TlsError::Config(other.to_string()),
    }
}

/// A server configuration: `key` + `cert` identify the server; with `client_ca` every client
/// must present a certificate issued by one of those anchors (mutual TLS, as the real gateway).
pub fn server_config(
    key: &[u8],
    cert: &[u8],
    client_ca: Option<&[Vec<u8>]>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let key = parse_key(key)?;
    let certs = parse_certs(cert)?;
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?;
    let builder = match client_ca {
        Some(pems) => {
            let roots = Arc::new(root_store(pems)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(certs, key).map_err(config_error)?;
    Ok(Arc::new(config))
}

/// The subject of a certificate as an RFC 4514-style string (`CN=device-1, O=...`).
pub fn certificate_subject(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.subject().to_string())
}

/// Trust anchors when the user gave no `ca`: the platform's own store, or, where the platform
/// has none (a bare container), the Mozilla roots compiled in. The original's private CA is
/// not shipped: its intermediate expired in July 2026.
fn platform_roots() -> rustls::RootCertStore {
    let mut store = rustls::RootCertStore::empty();
    let loaded = rustls_native_certs::load_native_certs();
    let (added, _ignored) = store.add_parsable_certificates(loaded.certs);
    if added == 0 {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    store
}

/// A client configuration for mutual TLS: `key` + `cert` identify the device, and the server
/// must present a certificate for the host name that chains to `ca` (or, without `ca`, to the
/// platform's roots).
pub fn client_config(
    key: &[u8],
    cert: &[u8],
    ca: Option<&[Vec<u8>]>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let key = parse_key(key)?;
    let certs = parse_certs(cert)?;
    let roots = match ca {
        Some(pems) => root_store(pems)?,
        None => platform_roots(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(config_error)?;
    // A client speaks to one gateway: its resumption store needs room for that one server's
    // tickets, not rustls's default of 32 servers (a table of about 15 KB per client).
    config.resumption = rustls::client::Resumption::in_memory_sessions(RESUMPTION_TICKETS);
    Ok(Arc::new(config))
}

/// Session tickets a client keeps for resuming its TLS session: rustls keeps up to 8 per
/// server, and a store of this size remembers exactly one server.
const RESUMPTION_TICKETS: usize = 8;
