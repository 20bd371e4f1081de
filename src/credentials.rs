//! A client's TLS material as a source the driver asks at every connection attempt
//! ([`ClientCredentials::attempt`]): PEM given in memory (parsed once, the parsed parts shared
//! with other clients given the same bytes, see [`crate::tls::client_config`]) or named by a
//! file path, read again at each attempt, so a certificate renewed on disk is used at the next
//! connection. Material can be replaced at run time ([`ClientCredentials::set`]); what the
//! device certificate says is kept as a [`CertificateInfo`].

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use tokio_rustls::rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::ClientConfig;

use crate::errors::fs_code;
use crate::tls::{self, ClientParts, TlsError};

/// One PEM document: bytes given, or a file read at every use; or, for a key, a key held by a
/// hardware token (a PKCS#11 URI; see [`Pem::token_key`]).
#[derive(Debug, Clone)]
pub enum Pem {
    Bytes(Vec<u8>),
    File(PathBuf),
    Token(Arc<TokenSource>),
}

/// A private key in a token, as `key` names it: opened once (when the identity is first made)
/// and checked before every connection attempt, so that a token removed fails the attempt with
/// its code and is used again once back.
pub struct TokenSource {
    uri: crate::pkcs11::Pkcs11Uri,
    /// The URI as given: what tells one key from another (never shown: it may hold the PIN).
    given: Vec<u8>,
    key: Mutex<Option<crate::pkcs11::TokenSigningKey>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSource({})", self.uri)
    }
}

impl TokenSource {
    /// The key, opened now if it was not, checked against the certificate `certs[0]`.
    fn key(
        &self,
        certs: &[CertificateDer<'static>],
    ) -> Result<crate::pkcs11::TokenSigningKey, TlsError> {
        let mut key = self.key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = key.as_ref() {
            let (_, parsed) = x509_parser::parse_x509_certificate(certs[0].as_ref())
                .map_err(|_| TlsError::InvalidCertificate)?;
            open.0
                .matches(&parsed.public_key().subject_public_key.data)?;
            return Ok(open.clone());
        }
        let open = tls::token_key(&self.uri, certs)?;
        *key = Some(open.clone());
        Ok(open)
    }

    /// The token still there (its session opened again if it was lost).
    fn check(&self) -> Result<(), TlsError> {
        let key = self.key.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match key {
            Some(key) => Ok(key.0.check()?),
            None => Ok(()),
        }
    }
}

impl Pem {
    /// `key` given as a PKCS#11 URI: parsed now (`EPKCS11URI`, `EPKCS11MODULE` without a
    /// module); the token is opened with the first identity made of it.
    pub fn token_key(uri: &str) -> Result<Pem, TlsError> {
        Ok(Pem::Token(Arc::new(TokenSource {
            uri: crate::pkcs11::Pkcs11Uri::parse(uri)?,
            given: uri.as_bytes().to_vec(),
            key: Mutex::new(None),
        })))
    }

    /// `cert` given as a PKCS#11 URI (`type=cert`): read from the token now, as PEM.
    pub fn token_cert(uri: &str) -> Result<Pem, TlsError> {
        let uri = crate::pkcs11::Pkcs11Uri::parse(uri)?;
        let der = crate::pkcs11::read_certificate(&uri)?;
        Ok(Pem::Bytes(
            pem_armour("CERTIFICATE", der.as_ref()).into_bytes(),
        ))
    }

    /// The option as the user named it, with the file's path when it is one.
    fn name(&self, option: &str) -> String {
        match self {
            Pem::Bytes(_) => format!("options.{option}"),
            Pem::File(path) => format!("options.{option} ({})", path.display()),
            Pem::Token(token) => format!("options.{option} ({})", token.uri),
        }
    }

    fn read(&self, option: &str) -> Result<Cow<'_, [u8]>, TlsError> {
        match self {
            Pem::Bytes(bytes) => Ok(Cow::Borrowed(bytes)),
            Pem::Token(token) => {
                token.check()?;
                Ok(Cow::Borrowed(&token.given))
            }
            Pem::File(path) => std::fs::read(path).map(Cow::Owned).map_err(|err| {
                let code = fs_code(&err);
                TlsError::Read {
                    name: self.name(option),
                    code,
                    reason: err.to_string(),
                }
            }),
        }
    }

    fn is_file(&self) -> bool {
        matches!(self, Pem::File(_) | Pem::Token(_))
    }

    /// `err` about this document: named with its file, when it is one.
    fn refused(&self, option: &str, err: TlsError) -> TlsError {
        match self {
            Pem::Bytes(_) | Pem::Token(_) => err,
            Pem::File(_) => TlsError::InFile {
                name: self.name(option),
                inner: Box::new(err),
            },
        }
    }
}

/// A client's `key`, `cert` and `ca` (`None`: the platform's roots).
#[derive(Debug, Clone)]
pub struct ClientMaterial {
    pub key: Pem,
    pub cert: Pem,
    pub ca: Option<Vec<Pem>>,
}

/// What a certificate says, named and formatted as Node's `tls.PeerCertificate` names it.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateInfo {
    /// Attributes in order, short names as OpenSSL's (`CN`, `O`, `OU`, `C`, ...).
    pub subject: Vec<(String, String)>,
    pub issuer: Vec<(String, String)>,
    /// As `Jan  1 00:00:00 2026 GMT`.
    pub valid_from: String,
    pub valid_to: String,
    /// SHA-256 of the DER, as `AA:BB:...`.
    pub fingerprint256: String,
    /// Seconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
}

impl CertificateInfo {
    pub fn of(cert: &CertificateDer<'_>) -> Result<Self, TlsError> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|_| TlsError::InvalidCertificate)?;
        let validity = parsed.validity();
        let (not_before, not_after) = (
            validity.not_before.timestamp(),
            validity.not_after.timestamp(),
        );
        Ok(CertificateInfo {
            subject: names(parsed.subject()),
            issuer: names(parsed.issuer()),
            valid_from: openssl_time(not_before),
            valid_to: openssl_time(not_after),
            fingerprint256: colon_hex(&sha256(cert.as_ref())),
            not_before,
            not_after,
        })
    }

    /// Milliseconds from `now` to the end of the validity (negative once expired).
    pub fn expires_in(&self, now: SystemTime) -> i64 {
        let now_ms = match now.duration_since(UNIX_EPOCH) {
            Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
        };
        self.not_after.saturating_mul(1000).saturating_sub(now_ms)
    }
}

fn names(name: &x509_parser::x509::X509Name<'_>) -> Vec<(String, String)> {
    name.iter_attributes()
        .map(|attribute| {
            let oid = attribute.attr_type().to_id_string();
            let key = short_name(&oid).map_or(oid, str::to_string);
            let value = match attribute.as_str() {
                Ok(text) => text.to_string(),
                Err(_) => String::from_utf8_lossy(attribute.attr_value().data).into_owned(),
            };
            (key, value)
        })
        .collect()
}

/// OpenSSL's short names of the usual name attributes (as Node shows them).
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.17" => "postalCode",
        "2.5.4.42" => "GN",
        "2.5.4.46" => "dnQualifier",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        _ => return None,
    })
}

/// `Jan  1 00:00:00 2026 GMT`, as OpenSSL prints a time (and Node's `valid_to`).
fn openssl_time(secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{} {:>2} {:02}:{:02}:{:02} {} GMT",
            MONTHS[usize::from(u8::from(t.month())) - 1],
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.year()
        ),
        Err(_) => secs.to_string(),
    }
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    let suite = tokio_rustls::rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;
    match suite.tls13() {
        Some(tls13) => tls13.common.hash_provider.hash(bytes).as_ref().to_vec(),
        None => Vec::new(),
    }
}

/// DER bytes as a PEM document with `label`.
fn pem_armour(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut base64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                base64.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                base64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in base64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The device's key and certificate: parsed once (given in memory), or files.
enum Identity {
    Fixed,
    Files { key: Pem, cert: Pem },
}

/// The anchors for the gateway's certificate: parsed once, or with at least one file.
enum Trust {
    Fixed,
    Files(Vec<Pem>),
}

struct State {
    identity: Identity,
    trust: Trust,
    /// The parts in force, and the configuration made of them (reused while they last, so
    /// that a reconnect can resume the TLS session).
    parts: ClientParts,
    config: Arc<ClientConfig>,
    /// SHA-256 over the bytes the file-backed parts were made of: unchanged bytes are not
    /// parsed again.
    identity_read: Vec<u8>,
    trust_read: Vec<u8>,
    generation: u64,
}

/// A client's TLS material, asked for a configuration at every connection attempt.
pub struct ClientCredentials {
    state: Mutex<State>,
    /// The generation of the material the latest attempt used, and the latest connection.
    attempted: AtomicU64,
    connected: AtomicU64,
}

impl ClientCredentials {
    /// Reads and checks everything now: a file that cannot be read, or material that does
    /// not parse, is refused with its code (fail fast).
    pub fn new(material: ClientMaterial) -> Result<Self, TlsError> {
        let state = State::load(material, None, 0)?;
        Ok(ClientCredentials {
            state: Mutex::new(state),
            attempted: AtomicU64::new(0),
            connected: AtomicU64::new(0),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the material, checked first (on refusal the old stays in force); `ca: None`
    /// with `keep_ca` keeps the anchors in force. Returns the new generation.
    pub fn set(&self, material: ClientMaterial, keep_ca: bool) -> Result<u64, TlsError> {
        let mut state = self.state();
        let keep = keep_ca.then_some(&*state);
        let next = State::load(material, keep, state.generation + 1)?;
        *state = next;
        Ok(state.generation)
    }

    /// The configuration for a connection attempt starting now: files read again (parsed
    /// again only when their bytes changed), and a device certificate past its end refused
    /// with `CERT_HAS_EXPIRED`.
    pub fn attempt(&self, now: SystemTime) -> Result<Arc<ClientConfig>, TlsError> {
        let mut state = self.state();
        state.refresh()?;
        let info = &state.parts.info;
        if info.expires_in(now) <= 0 {
            let name = match &state.identity {
                Identity::Files { cert, .. } => cert.name("cert"),
                Identity::Fixed => "options.cert".into(),
            };
            return Err(TlsError::Expired {
                name,
                valid_to: info.valid_to.clone(),
            });
        }
        self.attempted.store(state.generation, Ordering::Relaxed);
        Ok(state.config.clone())
    }

    /// The attempt that used [`ClientCredentials::attempt`]'s latest answer connected.
    pub fn opened(&self) {
        self.connected
            .store(self.attempted.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// The generation of the material of the latest connection (0: the first material).
    pub fn connected_generation(&self) -> u64 {
        self.connected.load(Ordering::Relaxed)
    }

    /// What the device certificate in force says.
    pub fn certificate(&self) -> Arc<CertificateInfo> {
        self.state().parts.info.clone()
    }
}

impl State {
    fn load(
        material: ClientMaterial,
        keep: Option<&State>,
        generation: u64,
    ) -> Result<Self, TlsError> {
        let ClientMaterial { key, cert, ca } = material;
        let identity_files = key.is_file() || cert.is_file();
        let kept = match (&ca, keep) {
            (None, Some(kept)) => Some(kept),
            _ => None,
        };
        let trust = match (&ca, kept) {
            (_, Some(kept)) => match &kept.trust {
                Trust::Files(pems) => Trust::Files(pems.clone()),
                Trust::Fixed => Trust::Fixed,
            },
            (Some(pems), None) if pems.iter().any(Pem::is_file) => Trust::Files(pems.clone()),
            _ => Trust::Fixed,
        };
        let provider = tls::provider();
        let mut identity_read = Vec::new();
        let mut trust_read = Vec::new();
        let parts = match (&key, &cert, &trust, kept) {
            // All in memory: parsed once, the parsed parts shared with other clients.
            (Pem::Bytes(k), Pem::Bytes(c), Trust::Fixed, None) => {
                let ca = ca.as_ref().map(|pems| bytes_of(pems));
                tls::client_parts(k, c, ca.as_deref())?
            }
            // A key in a token with the rest in memory: shared the same way (one session for
            // the clients of this process with the same key), the token checked at each
            // attempt all the same.
            (Pem::Token(token), Pem::Bytes(c), Trust::Fixed, None) => {
                let ca = ca.as_ref().map(|pems| bytes_of(pems));
                let parts = tls::client_parts(&token.given, c, ca.as_deref())?;
                let signing =
                    crate::pkcs11::TokenSigningKey(crate::pkcs11::TokenKey::shared(&token.uri)?);
                *token.key.lock().unwrap_or_else(|p| p.into_inner()) = Some(signing);
                identity_read = tls::fingerprint(&token.given, c, None);
                parts
            }
            _ => {
                let verifier = match (&trust, kept) {
                    (Trust::Files(pems), _) => {
                        let (verifier, read) = read_trust(pems, &provider)?;
                        trust_read = read;
                        verifier
                    }
                    (Trust::Fixed, Some(kept)) => kept.parts.verifier.clone(),
                    (Trust::Fixed, None) => {
                        let ca = ca.as_ref().map(|pems| bytes_of(pems));
                        tls::server_verifier(ca.as_deref(), &provider)?
                    }
                };
                let ((identity, info), read) = read_identity(&key, &cert, &provider)?;
                if identity_files {
                    identity_read = read;
                }
                ClientParts {
                    provider,
                    verifier,
                    identity,
                    info,
                }
            }
        };
        let config = parts.config()?;
        Ok(State {
            identity: if identity_files {
                Identity::Files { key, cert }
            } else {
                Identity::Fixed
            },
            trust,
            parts,
            config,
            identity_read,
            trust_read,
            generation,
        })
    }

    /// Reads the files again; parts whose bytes changed are parsed again, and a new
    /// configuration is made when a part changed.
    fn refresh(&mut self) -> Result<(), TlsError> {
        let mut changed = false;
        if let Identity::Files { key, cert } = &self.identity {
            let (key_bytes, cert_bytes) = (key.read("key")?, cert.read("cert")?);
            let read = tls::fingerprint(&key_bytes, &cert_bytes, None);
            if read != self.identity_read {
                let (identity, info) =
                    parse_identity(key, cert, &key_bytes, &cert_bytes, &self.parts.provider)?;
                self.parts.identity = identity;
                self.parts.info = info;
                self.identity_read = read;
                changed = true;
            }
        }
        if let Trust::Files(pems) = &self.trust {
            let (bytes, read) = read_pems(pems)?;
            if read != self.trust_read {
                self.parts.verifier = verifier_of(pems, &bytes, &self.parts.provider)?;
                self.trust_read = read;
                changed = true;
            }
        }
        if changed {
            self.config = self.parts.config()?;
        }
        Ok(())
    }
}

/// The bytes of documents known to be in memory.
fn bytes_of(pems: &[Pem]) -> Vec<Vec<u8>> {
    pems.iter()
        .filter_map(|pem| match pem {
            Pem::Bytes(bytes) => Some(bytes.clone()),
            Pem::File(_) | Pem::Token(_) => None,
        })
        .collect()
}

type IdentityParts = (Arc<dyn ResolvesClientCert>, Arc<CertificateInfo>);

fn read_identity(
    key: &Pem,
    cert: &Pem,
    provider: &Arc<CryptoProvider>,
) -> Result<(IdentityParts, Vec<u8>), TlsError> {
    let (key_bytes, cert_bytes) = (key.read("key")?, cert.read("cert")?);
    let parts = parse_identity(key, cert, &key_bytes, &cert_bytes, provider)?;
    Ok((parts, tls::fingerprint(&key_bytes, &cert_bytes, None)))
}

fn parse_identity(
    key: &Pem,
    cert: &Pem,
    key_bytes: &[u8],
    cert_bytes: &[u8],
    provider: &Arc<CryptoProvider>,
) -> Result<IdentityParts, TlsError> {
    let certs = tls::parse_certs(cert_bytes).map_err(|e| cert.refused("cert", e))?;
    if let Pem::Token(token) = key {
        let signing = token.key(&certs)?;
        let info = CertificateInfo::of(&certs[0])?;
        let certified = tokio_rustls::rustls::sign::CertifiedKey::new(certs, Arc::new(signing));
        return Ok((
            Arc::new(tokio_rustls::rustls::sign::SingleCertAndKey::from(
                certified,
            )),
            Arc::new(info),
        ));
    }
    let parsed_key = tls::parse_key(key_bytes).map_err(|e| key.refused("key", e))?;
    tls::identity_from(parsed_key, certs, provider).map_err(|e| {
        if key.is_file() && !cert.is_file() {
            key.refused("key", e)
        } else {
            cert.refused("cert", e)
        }
    })
}

fn read_pems(pems: &[Pem]) -> Result<(Vec<Vec<u8>>, Vec<u8>), TlsError> {
    let bytes = pems
        .iter()
        .map(|pem| pem.read("ca").map(Cow::into_owned))
        .collect::<Result<Vec<_>, _>>()?;
    let read = tls::fingerprint(b"", b"", Some(&bytes));
    Ok((bytes, read))
}

fn verifier_of(
    pems: &[Pem],
    bytes: &[Vec<u8>],
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    tls::server_verifier(Some(bytes), provider).map_err(|e| {
        let named = pems.iter().find(|pem| pem.is_file()).unwrap_or(&pems[0]);
        named.refused("ca", e)
    })
}

fn read_trust(
    pems: &[Pem],
    provider: &Arc<CryptoProvider>,
) -> Result<(Arc<WebPkiServerVerifier>, Vec<u8>), TlsError> {
    let (bytes, read) = read_pems(pems)?;
    Ok((verifier_of(pems, &bytes, provider)?, read))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::ErrorCode;
    use crate::pki::{CertRequest, CertificateAuthority, Issued};

    fn device(ca: &CertificateAuthority, name: &str, not_after: Option<i64>) -> Issued {
        ca.issue(&CertRequest {
            common_name: name.into(),
            client: true,
            not_after,
            ..CertRequest::default()
        })
        .unwrap()
    }

    fn in_memory(issued: &Issued, ca: &CertificateAuthority) -> ClientMaterial {
        ClientMaterial {
            key: Pem::Bytes(issued.key_pem.clone().into_bytes()),
            cert: Pem::Bytes(issued.cert_pem.clone().into_bytes()),
            ca: Some(vec![Pem::Bytes(ca.cert_pem().into_bytes())]),
        }
    }

    fn cn(credentials: &ClientCredentials) -> String {
        let info = credentials.certificate();
        info.subject
            .iter()
            .find(|(key, _)| key == "CN")
            .map(|(_, value)| value.clone())
            .unwrap()
    }

    #[test]
    fn material_in_memory_is_parsed_once_and_shared_and_its_configuration_kept() {
        let ca = CertificateAuthority::new("root").unwrap();
        let issued = device(&ca, "one", None);
        let first = ClientCredentials::new(in_memory(&issued, &ca)).unwrap();
        let second = ClientCredentials::new(in_memory(&issued, &ca)).unwrap();
        let now = SystemTime::now();
        let (a, b) = (first.attempt(now).unwrap(), second.attempt(now).unwrap());
        assert!(Arc::ptr_eq(
            &a.client_auth_cert_resolver,
            &b.client_auth_cert_resolver
        ));
        assert!(
            !Arc::ptr_eq(&a, &b),
            "a configuration (and ticket store) each"
        );
        assert!(Arc::ptr_eq(&a, &first.attempt(now).unwrap()), "kept");
        assert!(Arc::ptr_eq(&first.certificate(), &second.certificate()));
    }

    #[test]
    fn files_are_read_at_every_attempt_and_parsed_again_only_when_they_changed() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::new("root").unwrap();
        let (key, cert, roots) = (
            dir.path().join("key"),
            dir.path().join("cert"),
            dir.path().join("ca"),
        );
        let write = |issued: &Issued| {
            std::fs::write(&key, &issued.key_pem).unwrap();
            std::fs::write(&cert, &issued.cert_pem).unwrap();
        };
        write(&device(&ca, "one", None));
        std::fs::write(&roots, ca.cert_pem()).unwrap();
        let credentials = ClientCredentials::new(ClientMaterial {
            key: Pem::File(key.clone()),
            cert: Pem::File(cert.clone()),
            ca: Some(vec![Pem::File(roots.clone())]),
        })
        .unwrap();
        let now = SystemTime::now();
        let first = credentials.attempt(now).unwrap();
        assert!(Arc::ptr_eq(&first, &credentials.attempt(now).unwrap()));
        // Renewed on disk: the next attempt uses it.
        write(&device(&ca, "two", None));
        let renewed = credentials.attempt(now).unwrap();
        assert!(!Arc::ptr_eq(&first, &renewed));
        assert_eq!(cn(&credentials), "two");
        // Gone: the attempt fails with the file's code and path; back: it succeeds.
        std::fs::remove_file(&cert).unwrap();
        let err = credentials.attempt(now).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Io("ENOENT".into()));
        assert!(
            err.to_string().contains(&cert.display().to_string()),
            "{err}"
        );
        std::fs::write(&cert, "garbage").unwrap();
        let err = credentials.attempt(now).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidCert);
        assert!(err.to_string().starts_with("options.cert ("), "{err}");
        write(&device(&ca, "three", None));
        credentials.attempt(now).unwrap();
        assert_eq!(cn(&credentials), "three");
        // Missing at construction: refused at once.
        std::fs::remove_file(&roots).unwrap();
        let refused = ClientCredentials::new(ClientMaterial {
            key: Pem::File(key),
            cert: Pem::File(cert),
            ca: Some(vec![Pem::File(roots)]),
        });
        assert_eq!(
            refused.err().unwrap().code(),
            ErrorCode::Io("ENOENT".into())
        );
    }

    #[test]
    fn an_expired_certificate_fails_the_attempt_with_cert_has_expired() {
        let ca = CertificateAuthority::new("root").unwrap();
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let issued = device(&ca, "old", Some(secs + 60));
        let credentials = ClientCredentials::new(in_memory(&issued, &ca)).unwrap();
        credentials.attempt(now).unwrap();
        let later = now + std::time::Duration::from_secs(61);
        let err = credentials.attempt(later).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Cert("CERT_HAS_EXPIRED"));
        assert!(credentials.certificate().expires_in(later) < 0);
    }

    #[test]
    fn refused_material_leaves_the_old_in_force_and_a_kept_ca_stays() {
        let ca = CertificateAuthority::new("root").unwrap();
        let credentials =
            ClientCredentials::new(in_memory(&device(&ca, "one", None), &ca)).unwrap();
        let other = device(&ca, "two", None);
        let mismatched = ClientMaterial {
            key: Pem::Bytes(device(&ca, "three", None).key_pem.into_bytes()),
            cert: Pem::Bytes(other.cert_pem.clone().into_bytes()),
            ca: None,
        };
        assert_eq!(
            credentials.set(mismatched, true).unwrap_err(),
            TlsError::KeyMismatch
        );
        assert_eq!(cn(&credentials), "one");
        let verifier = credentials.state().parts.verifier.clone();
        let mut next = in_memory(&other, &ca);
        next.ca = None;
        assert_eq!(credentials.set(next, true).unwrap(), 1);
        assert_eq!(cn(&credentials), "two");
        assert!(Arc::ptr_eq(&verifier, &credentials.state().parts.verifier));
    }

    #[test]
    fn times_and_fingerprints_are_written_as_node_writes_them() {
        assert_eq!(openssl_time(0), "Jan  1 00:00:00 1970 GMT");
        assert_eq!(openssl_time(1_798_761_599), "Dec 31 23:59:59 2026 GMT");
        assert_eq!(colon_hex(&[0xab, 0x01]), "AB:01");
    }
}
