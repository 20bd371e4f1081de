//! Throwaway public-key infrastructure for tests, the demo and the benchmark: a certificate
//! authority made in memory, issuing server and device certificates on demand. Nothing here is
//! ever written to the repository; keys live only as long as the process that made them.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[error("Certificate generation failed: {0}")]
pub struct PkiError(String);

impl From<rcgen::Error> for PkiError {
    fn from(err: rcgen::Error) -> Self {
        PkiError(err.to_string())
    }
}

/// Which key algorithm a certificate gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyKind {
    /// ECDSA P-256: fast to make, the default.
    #[default]
    EcdsaP256,
    /// RSA 2048, for the RSA key formats (PKCS#1 / PKCS#8) devices use.
    Rsa2048,
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Default)]
pub struct CertRequest {
    pub common_name: String,
    /// DNS names or IP addresses for the subjectAltName extension.
    pub alt_names: Vec<String>,
    /// Allowed for TLS servers (serverAuth).
    pub server: bool,
    /// Allowed for TLS clients (clientAuth).
    pub client: bool,
    pub key: KeyKind,
    /// Validity bounds as seconds since the epoch; default now - 1 h .. now + 1 year.
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    /// The certificate's key, a DER SubjectPublicKeyInfo whose private half is elsewhere (a
    /// hardware token): no key is generated, and [`Issued::key_pem`] is empty.
    pub public_key: Option<Vec<u8>>,
}

/// A public key given as a DER SubjectPublicKeyInfo (RSA, or EC P-256 / P-384).
struct GivenKey {
    bits: Vec<u8>,
    algorithm: &'static rcgen::SignatureAlgorithm,
}

impl GivenKey {
    fn parse(spki: &[u8]) -> Result<Self, PkiError> {
        use x509_parser::prelude::FromDer;
        let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki)
            .map_err(|e| PkiError(format!("Invalid public key: {e}")))?;
        let oid = info.algorithm.algorithm.to_id_string();
        let curve = info
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string());
        let algorithm = match (oid.as_str(), curve.as_deref()) {
            ("1.2.840.113549.1.1.1", _) => &rcgen::PKCS_RSA_SHA256,
            ("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7")) => &rcgen::PKCS_ECDSA_P256_SHA256,
            ("1.2.840.10045.2.1", Some("1.3.132.0.34")) => &rcgen::PKCS_ECDSA_P384_SHA384,
            _ => return Err(PkiError(format!("Unsupported public key algorithm {oid}."))),
        };
        Ok(GivenKey {
            bits: info.subject_public_key.data.to_vec(),
            algorithm,
        })
    }
}

impl rcgen::PublicKeyData for GivenKey {
    fn der_bytes(&self) -> &[u8] {
        &self.bits
    }

    fn algorithm(&self) -> &rcgen::SignatureAlgorithm {
        self.algorithm
    }
}

/// A PEM certificate and its PEM private key (PKCS#8).
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// An in-memory root certificate authority.
pub struct CertificateAuthority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn generate_key(kind: KeyKind) -> Result<KeyPair, PkiError> {
    Ok(match kind {
        KeyKind::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
        KeyKind::Rsa2048 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)?
        }
    })
}

fn timestamp(secs: i64) -> Result<OffsetDateTime, PkiError> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|e| PkiError(e.to_string()))
}

fn validity(
    params: &mut CertificateParams,
    not_before: Option<i64>,
    not_after: Option<i64>,
) -> Result<(), PkiError> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    params.not_before = timestamp(not_before.unwrap_or(now - 3600))?;
    params.not_after = timestamp(not_after.unwrap_or(now + 365 * 24 * 3600))?;
    Ok(())
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "imt-gateway test PKI");
    dn.push(DnType::CommonName, common_name);
    dn
}

impl CertificateAuthority {
    /// A new self-signed root, valid from an hour ago for ten years.
    pub fn new(common_name: &str) -> Result<Self, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc().unix_timestamp();
        validity(
            &mut params,
            Some(now - 3600),
            Some(now + 10 * 365 * 24 * 3600),
        )?;
        let key = generate_key(KeyKind::EcdsaP256)?;
        let cert = params.self_signed(&key)?;
        Ok(CertificateAuthority { cert, key })
    }

    /// The root certificate, PEM: what a peer puts in its `ca`.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// Issues a leaf certificate signed by this authority.
    pub fn issue(&self, req: &CertRequest) -> Result<Issued, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&req.common_name);
        params.subject_alt_names = req
            .alt_names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|e: rcgen::Error| PkiError(e.to_string())),
            })
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if req.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if req.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, req.not_before, req.not_after)?;
        if let Some(spki) = &req.public_key {
            let given = GivenKey::parse(spki)?;
            let cert = params.signed_by(&given, &self.cert, &self.key)?;
            return Ok(Issued {
                cert_pem: cert.pem(),
                key_pem: String::new(),
            });
        }
        let key = generate_key(req.key)?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}
