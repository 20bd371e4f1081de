//! TLS material for both ends of the gateway: PEM keys and certificates as users hand them to
//! us (strings or Buffers, PKCS#1, PKCS#8 or SEC1 keys), turned into rustls configurations.
//! Every failure is a [`TlsError`] with a stable code, so a bad file is reported, not panicked on.

use std::sync::{Arc, Mutex, Weak};

use crate::errors::ErrorCode;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::sign::{CertifiedKey, SingleCertAndKey};
use tokio_rustls::rustls::{self, server::WebPkiClientVerifier};

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
    /// A file named by a `{ path }` option could not be read (`ENOENT`, `EACCES`, ...).
    #[error("Cannot read {name}: {reason}")]
    Read {
        name: String,
        code: ErrorCode,
        reason: String,
    },
    /// Material read from a file was refused: the option and its path, then why.
    #[error("{name}: {inner}")]
    InFile { name: String, inner: Box<TlsError> },
    /// The device certificate's validity ended (`CERT_HAS_EXPIRED`), checked before a
    /// connection attempt.
    #[error("The client certificate ({name}) expired on {valid_to}.")]
    Expired { name: String, valid_to: String },
    /// A key (or certificate) in a hardware token could not be used (`EPKCS11*`).
    #[error("{0}")]
    Pkcs11(crate::pkcs11::Pkcs11Error),
}

impl From<crate::pkcs11::Pkcs11Error> for TlsError {
    fn from(err: crate::pkcs11::Pkcs11Error) -> Self {
        TlsError::Pkcs11(err)
    }
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
            TlsError::Read { code, .. } => code.clone(),
            TlsError::InFile { inner, .. } => inner.code(),
            TlsError::Expired { .. } => ErrorCode::Cert("CERT_HAS_EXPIRED"),
            TlsError::Pkcs11(err) => err.code(),
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

/// Trust anchors from PEM documents, each of which may hold several certificates. A `ca` that
/// was given fails closed: no documents, or a document without a certificate, is refused rather
/// than read as "no `ca`" (which would trust the platform's roots, or admit any client).
pub fn root_store(pems: &[Vec<u8>]) -> Result<rustls::RootCertStore, TlsError> {
    if pems.is_empty() {
        return Err(TlsError::InvalidCa("no CA certificate given".into()));
    }
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
    // A key in a token (a PKCS#11 URI in place of PEM) signs there; so is a `type=cert` URI
    // read there, now.
    let certs = if crate::pkcs11::is_uri(cert) {
        vec![crate::pkcs11::read_certificate(&uri_of(cert)?)?]
    } else {
        parse_certs(cert)?
    };
    let key = if crate::pkcs11::is_uri(key) {
        ServerKey::Token(token_key(&uri_of(key)?, &certs)?)
    } else {
        ServerKey::Der(parse_key(key)?)
    };
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
    let config = match key {
        ServerKey::Der(key) => builder.with_single_cert(certs, key).map_err(config_error)?,
        ServerKey::Token(key) => {
            let certified = CertifiedKey::new(certs, Arc::new(key));
            builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)))
        }
    };
    Ok(Arc::new(config))
}

enum ServerKey {
    Der(PrivateKeyDer<'static>),
    Token(crate::pkcs11::TokenSigningKey),
}

/// The URI in an option's bytes.
fn uri_of(bytes: &[u8]) -> Result<crate::pkcs11::Pkcs11Uri, TlsError> {
    let text = std::str::from_utf8(bytes).map_err(|_| {
        crate::pkcs11::Pkcs11Error::new(crate::pkcs11::URI, "Invalid PKCS#11 URI: not UTF-8.")
    })?;
    Ok(crate::pkcs11::Pkcs11Uri::parse(text.trim())?)
}

/// The token's key named by `uri`, checked against the certificate: one signature made by the
/// token and verified with the certificate's public key (`EKEYMISMATCH` when it fails).
pub(crate) fn token_key(
    uri: &crate::pkcs11::Pkcs11Uri,
    certs: &[CertificateDer<'static>],
) -> Result<crate::pkcs11::TokenSigningKey, TlsError> {
    let key = crate::pkcs11::TokenKey::shared(uri)?;
    let (_, parsed) = x509_parser::parse_x509_certificate(certs[0].as_ref())
        .map_err(|_| TlsError::InvalidCertificate)?;
    key.matches(&parsed.public_key().subject_public_key.data)?;
    Ok(crate::pkcs11::TokenSigningKey(key))
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
///
/// Clients given the same key, certificate and CA share the parsed parts (the signing key,
/// the certificates, the verifier with its trust anchors) while any of them lives; each gets
/// a configuration and a resumption store of its own.
pub fn client_config(
    key: &[u8],
    cert: &[u8],
    ca: Option<&[Vec<u8>]>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    client_parts(key, cert, ca)?.config()
}

/// The parsed parts of a client's TLS material: shared by the clients given the same bytes
/// while any of them holds them (see [`client_config`]).
#[derive(Clone)]
pub struct ClientParts {
    pub(crate) provider: Arc<CryptoProvider>,
    pub(crate) verifier: Arc<WebPkiServerVerifier>,
    pub(crate) identity: Arc<dyn ResolvesClientCert>,
    /// What the device certificate says (`client.certificate`).
    pub info: Arc<crate::credentials::CertificateInfo>,
}

impl ClientParts {
    /// A configuration of its own (and a resumption store) over these parts.
    pub fn config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_webpki_verifier(self.verifier.clone())
            .with_client_cert_resolver(self.identity.clone());
        // A client speaks to one gateway: its resumption store needs room for that one server's
        // tickets, not rustls's default of 32 servers (a table per client; docs/ARCHITECTURE.md
        // section 7 gives its size).
        config.resumption = rustls::client::Resumption::in_memory_sessions(RESUMPTION_TICKETS);
        Ok(Arc::new(config))
    }
}

/// The verifier of a gateway's certificate: anchored in `ca`, or in the platform's roots.
pub(crate) fn server_verifier(
    ca: Option<&[Vec<u8>]>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    let roots = match ca {
        Some(pems) => root_store(pems)?,
        None => platform_roots(),
    };
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))
}

type Identity = (
    Arc<dyn ResolvesClientCert>,
    Arc<crate::credentials::CertificateInfo>,
);

pub(crate) fn identity_from(
    key: PrivateKeyDer<'static>,
    certs: Vec<CertificateDer<'static>>,
    provider: &Arc<CryptoProvider>,
) -> Result<Identity, TlsError> {
    let info = crate::credentials::CertificateInfo::of(&certs[0])?;
    let certified = CertifiedKey::from_der(certs, key, provider).map_err(config_error)?;
    Ok((Arc::new(SingleCertAndKey::from(certified)), Arc::new(info)))
}

/// The parts for `key`, `cert` and `ca`: those another client holds for the same bytes, or
/// parsed now.
pub fn client_parts(
    key: &[u8],
    cert: &[u8],
    ca: Option<&[Vec<u8>]>,
) -> Result<ClientParts, TlsError> {
    let fingerprint = fingerprint(key, cert, ca);
    {
        let mut shared = shared_parts();
        shared.retain(SharedParts::alive);
        let found = shared
            .iter_mut()
            .filter(|_| !fingerprint.is_empty())
            .find(|parts| parts.fingerprint == fingerprint);
        if let Some(found) = found {
            if let Some(parts) = found.upgrade(cert) {
                return Ok(parts);
            }
        }
    }
    // Checked in this order, each with its code: the key, the certificate, the CA, and
    // whether the key matches the certificate. A key in a token (a PKCS#11 URI) is opened
    // last, after what can be checked here.
    let token = crate::pkcs11::is_uri(key);
    let parsed = if token { None } else { Some(parse_key(key)?) };
    let certs = parse_certs(cert)?;
    let provider = provider();
    let verifier = server_verifier(ca, &provider)?;
    let (identity, info) = match parsed {
        Some(key) => identity_from(key, certs, &provider)?,
        None => {
            let signing = token_key(&uri_of(key)?, &certs)?;
            let info = crate::credentials::CertificateInfo::of(&certs[0])?;
            let identity: Arc<dyn ResolvesClientCert> = Arc::new(SingleCertAndKey::from(
                CertifiedKey::new(certs, Arc::new(signing)),
            ));
            (identity, Arc::new(info))
        }
    };
    shared_parts().push(SharedParts {
        fingerprint,
        provider: Arc::downgrade(&provider),
        verifier: Arc::downgrade(&verifier),
        identity: Arc::downgrade(&identity),
        info: Arc::downgrade(&info),
    });
    Ok(ClientParts {
        provider,
        verifier,
        identity,
        info,
    })
}

/// What clients with the same TLS material share, held weakly: the clients' configurations
/// hold them.
struct SharedParts {
    /// SHA-256 over the material, so that no copy of the key is kept here.
    fingerprint: Vec<u8>,
    provider: Weak<CryptoProvider>,
    verifier: Weak<WebPkiServerVerifier>,
    identity: Weak<dyn ResolvesClientCert>,
    info: Weak<crate::credentials::CertificateInfo>,
}

impl SharedParts {
    fn alive(&self) -> bool {
        self.identity.strong_count() > 0
    }

    /// The parts, if they are all still held. What the certificate says is held only by the
    /// clients that asked for it (`ClientCredentials`): read again from `cert` when gone.
    fn upgrade(&mut self, cert: &[u8]) -> Option<ClientParts> {
        let info = match self.info.upgrade() {
            Some(info) => info,
            None => {
                let certs = parse_certs(cert).ok()?;
                let info = Arc::new(crate::credentials::CertificateInfo::of(&certs[0]).ok()?);
                self.info = Arc::downgrade(&info);
                info
            }
        };
        Some(ClientParts {
            provider: self.provider.upgrade()?,
            verifier: self.verifier.upgrade()?,
            identity: self.identity.upgrade()?,
            info,
        })
    }
}

fn shared_parts() -> std::sync::MutexGuard<'static, Vec<SharedParts>> {
    static SHARED: Mutex<Vec<SharedParts>> = Mutex::new(Vec::new());
    SHARED.lock().unwrap_or_else(|p| p.into_inner())
}

/// SHA-256 over the key, the certificate and each CA document, each with its length.
pub(crate) fn fingerprint(key: &[u8], cert: &[u8], ca: Option<&[Vec<u8>]>) -> Vec<u8> {
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;
    // A TLS 1.3 suite always has its TLS 1.3 half; were it missing, nothing would be shared.
    let Some(tls13) = suite.tls13() else {
        return Vec::new();
    };
    let mut hash = tls13.common.hash_provider.start();
    let mut part = |bytes: &[u8]| {
        hash.update(&(bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    part(key);
    part(cert);
    match ca {
        Some(pems) => {
            part(b"ca");
            pems.iter().for_each(|pem| part(pem));
        }
        None => part(b"platform"),
    }
    hash.finish().as_ref().to_vec()
}

/// Session tickets a client keeps for resuming its TLS session: rustls keeps up to 8 per
/// server, and a store of this size remembers exactly one server.
const RESUMPTION_TICKETS: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CertRequest, CertificateAuthority};

    fn device(ca: &CertificateAuthority, name: &str) -> (Vec<u8>, Vec<u8>) {
        let issued = ca
            .issue(&CertRequest {
                common_name: name.into(),
                client: true,
                ..CertRequest::default()
            })
            .unwrap();
        (issued.key_pem.into_bytes(), issued.cert_pem.into_bytes())
    }

    #[test]
    fn a_ca_given_without_a_certificate_fails_closed() {
        let ca = CertificateAuthority::new("root").unwrap();
        let (key, cert) = device(&ca, "one");
        let server = ca
            .issue(&CertRequest {
                common_name: "localhost".into(),
                server: true,
                ..CertRequest::default()
            })
            .unwrap();
        let no_cert = [key.clone()];
        for pems in [&[][..], &no_cert[..]] {
            let refused = client_config(&key, &cert, Some(pems)).unwrap_err();
            assert_eq!(refused.code(), ErrorCode::InvalidCa);
            let refused = server_config(
                server.key_pem.as_bytes(),
                server.cert_pem.as_bytes(),
                Some(pems),
            )
            .unwrap_err();
            assert_eq!(refused.code(), ErrorCode::InvalidCa);
        }
    }

    #[test]
    fn clients_with_the_same_material_share_its_parsed_parts_but_not_their_sessions() {
        let ca = CertificateAuthority::new("shared root").unwrap();
        let roots = vec![ca.cert_pem().into_bytes()];
        let (key, cert) = device(&ca, "one");
        let first = client_config(&key, &cert, Some(&roots)).unwrap();
        let second = client_config(&key, &cert, Some(&roots)).unwrap();
        assert!(!Arc::ptr_eq(&first, &second), "a configuration each");
        assert!(Arc::ptr_eq(
            &first.client_auth_cert_resolver,
            &second.client_auth_cert_resolver
        ));
        // Another device, or the same one trusting other roots, has parts of its own.
        let (other_key, other_cert) = device(&ca, "two");
        let other = client_config(&other_key, &other_cert, Some(&roots)).unwrap();
        assert!(!Arc::ptr_eq(
            &first.client_auth_cert_resolver,
            &other.client_auth_cert_resolver
        ));
        let platform = client_config(&key, &cert, None).unwrap();
        assert!(!Arc::ptr_eq(
            &first.client_auth_cert_resolver,
            &platform.client_auth_cert_resolver
        ));
        // Refused material is refused every time, with its code.
        let (_, foreign_cert) = device(&ca, "three");
        for _ in 0..2 {
            assert_eq!(
                client_config(&key, &foreign_cert, Some(&roots)).unwrap_err(),
                TlsError::KeyMismatch
            );
        }
        // Once no client holds them, the parts are let go, and parsed again when needed.
        let weak = Arc::downgrade(&first.client_auth_cert_resolver);
        drop((first, second, platform));
        assert!(weak.upgrade().is_none());
        let again = client_config(&key, &cert, Some(&roots)).unwrap();
        assert!(again.client_auth_cert_resolver.has_certs());
    }
}
