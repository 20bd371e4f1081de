//! Throwaway certificates for JavaScript tests, the demo and the benchmark
//! (`require('imt-gateway/testing')`), backed by [`crate::pki`].

use napi::Result;
use napi_derive::napi;

use super::{thrown, Thrown};
use crate::errors::ErrorCode;
use crate::pki::{CertRequest, CertificateAuthority, KeyKind};

/// What the options asked for could not be made (a name or date rcgen refuses, an unknown
/// key type): `ERR_INVALID_ARG_VALUE`.
fn failure(err: impl std::fmt::Display) -> Thrown {
    thrown(ErrorCode::InvalidValue, err.to_string())
}

/// What to put in a leaf certificate.
#[napi(object)]
pub struct IssueOptions {
    pub common_name: String,
    /// DNS names and IP addresses (subjectAltName).
    pub alt_names: Option<Vec<String>>,
    pub server: Option<bool>,
    pub client: Option<bool>,
    /// `'ec'` (P-256, the default) or `'rsa'` (2048 bits).
    pub key_type: Option<String>,
    /// Validity bounds, epoch milliseconds.
    pub not_before: Option<f64>,
    pub not_after: Option<f64>,
    /// The certificate's public key, a DER SubjectPublicKeyInfo (a key held elsewhere, e.g. in
    /// a hardware token): no key is made, and `key` comes back empty.
    pub public_key: Option<napi::bindgen_prelude::Buffer>,
}

/// A PEM certificate and its PEM (PKCS#8) private key.
#[napi(object)]
pub struct IssuedCertificate {
    pub cert: String,
    pub key: String,
}

/// An in-memory root CA.
#[napi]
pub struct TestCertificateAuthority {
    inner: CertificateAuthority,
}

#[napi]
impl TestCertificateAuthority {
    #[napi(constructor, catch_unwind)]
    pub fn new(common_name: Option<String>) -> Result<Self, ErrorCode> {
        let name = common_name.unwrap_or_else(|| "imt-gateway test root".into());
        Ok(TestCertificateAuthority {
            inner: CertificateAuthority::new(&name).map_err(failure)?,
        })
    }

    /// The root certificate, PEM.
    #[napi(getter, catch_unwind)]
    pub fn cert(&self) -> String {
        self.inner.cert_pem()
    }

    #[napi(catch_unwind)]
    pub fn issue(&self, options: IssueOptions) -> Result<IssuedCertificate, ErrorCode> {
        let key = match options.key_type.as_deref() {
            None | Some("ec") => KeyKind::EcdsaP256,
            Some("rsa") => KeyKind::Rsa2048,
            Some(other) => return Err(failure(format!("Unknown key type '{other}'."))),
        };
        let secs = |ms: Option<f64>| ms.map(|ms| (ms / 1000.0).floor() as i64);
        let issued = self
            .inner
            .issue(&CertRequest {
                common_name: options.common_name,
                alt_names: options.alt_names.unwrap_or_default(),
                server: options.server.unwrap_or(false),
                client: options.client.unwrap_or(false),
                key,
                not_before: secs(options.not_before),
                not_after: secs(options.not_after),
                public_key: options.public_key.map(|key| key.to_vec()),
            })
            .map_err(failure)?;
        Ok(IssuedCertificate {
            cert: issued.cert_pem,
            key: issued.key_pem,
        })
    }
}
