//! Private keys that stay in a hardware token (an HSM, a TPM through tpm2-pkcs11, a secure
//! element, SoftHSM), reached through its PKCS#11 module: the TLS handshake's signature is made
//! by the token ([`TokenKey`], a rustls `SigningKey`), never by this process, which holds only
//! a session and an object handle.
//!
//! A token is named by an RFC 7512 URI ([`Pkcs11Uri`]), e.g.
//! `pkcs11:token=device;object=gateway-key;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234`.
//! The module is loaded at run time (`dlopen` through the `cryptoki` crate), once per process
//! and path, so a build runs and loads where no module is installed; every failure is a
//! [`Pkcs11Error`] with a stable code (`EPKCS11MODULE`, `EPKCS11TOKEN`, `EPKCS11PIN`,
//! `EPKCS11PINLOCKED`, `EPKCS11OBJECT`, `EPKCS11KEYTYPE`, `EPKCS11URI`, `EPKCS11`).
//!
//! A session lost (the token removed, the module's state reset) is opened again at the next
//! use: [`TokenKey::check`] before each connection attempt, and the signature itself.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::{AuthPin, Ulong};
use rustls_pki_types::CertificateDer;
use tokio_rustls::rustls::sign::{Signer, SigningKey};
use tokio_rustls::rustls::{self, OtherError, SignatureAlgorithm, SignatureScheme};

use crate::errors::ErrorCode;

/// Why a token could not be used: a stable code and a message that never holds the PIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Error {
    pub code: &'static str,
    pub message: String,
}

impl Pkcs11Error {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Pkcs11Error {
            code,
            message: message.into(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        ErrorCode::Pkcs11(self.code)
    }
}

impl fmt::Display for Pkcs11Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Pkcs11Error {}

pub const URI: &str = "EPKCS11URI";
pub const MODULE: &str = "EPKCS11MODULE";
pub const TOKEN: &str = "EPKCS11TOKEN";
pub const PIN: &str = "EPKCS11PIN";
pub const PIN_LOCKED: &str = "EPKCS11PINLOCKED";
pub const OBJECT: &str = "EPKCS11OBJECT";
pub const KEY_TYPE: &str = "EPKCS11KEYTYPE";
pub const OTHER: &str = "EPKCS11";

/// What an RFC 7512 URI names: the module, the token, the object, the PIN.
#[derive(Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    pub module: PathBuf,
    pub token: Option<String>,
    pub serial: Option<String>,
    pub slot: Option<u64>,
    pub object: Option<String>,
    pub id: Option<Vec<u8>>,
    /// `type=`: `private`, `cert`, ... (`None`: as the option implies).
    pub kind: Option<String>,
    pin: Option<String>,
    /// The URI as given, `pin-value` left out: what messages name.
    shown: String,
}

impl fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Whether `bytes` are a PKCS#11 URI rather than PEM.
pub fn is_uri(bytes: &[u8]) -> bool {
    bytes.len() >= 7 && bytes[..7].eq_ignore_ascii_case(b"pkcs11:")
}

fn decode(value: &str, name: &str) -> Result<Vec<u8>, Pkcs11Error> {
    crate::percent::decode(value).ok_or_else(|| {
        Pkcs11Error::new(
            URI,
            format!("Bad percent-encoding in the '{name}' attribute."),
        )
    })
}

fn text(value: &str, name: &str) -> Result<String, Pkcs11Error> {
    String::from_utf8(decode(value, name)?)
        .map_err(|_| Pkcs11Error::new(URI, format!("The '{name}' attribute is not UTF-8.")))
}

/// The platform's file name of a module named without its path (`module-name=softhsm2`).
fn module_file(name: &str) -> String {
    if cfg!(windows) {
        format!("{name}.dll")
    } else if cfg!(target_os = "macos") {
        format!("lib{name}.dylib")
    } else {
        format!("lib{name}.so")
    }
}

impl Pkcs11Uri {
    /// Parses `pkcs11:<path attributes>?<query attributes>`. Attributes this package does not
    /// use are refused (fail closed): a misspelt `objet=` must not pick another key.
    pub fn parse(uri: &str) -> Result<Self, Pkcs11Error> {
        let bad = |why: String| Pkcs11Error::new(URI, format!("Invalid PKCS#11 URI: {why}"));
        if !is_uri(uri.as_bytes()) {
            return Err(bad("it must start with 'pkcs11:'.".into()));
        }
        let rest = &uri[7..];
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut parsed = Pkcs11Uri {
            module: PathBuf::new(),
            token: None,
            serial: None,
            slot: None,
            object: None,
            id: None,
            kind: None,
            pin: None,
            shown: String::new(),
        };
        let mut module_name = None;
        let mut module_path = None;
        let mut shown_query = Vec::new();
        for part in path.split(';').filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("'{part}' is not name=value.")))?;
            match name {
                "token" => parsed.token = Some(text(value, name)?),
                "serial" => parsed.serial = Some(text(value, name)?),
                "slot-id" => {
                    parsed.slot = Some(
                        text(value, name)?
                            .parse()
                            .map_err(|_| bad(format!("slot-id '{value}' is not a number.")))?,
                    )
                }
                "object" => parsed.object = Some(text(value, name)?),
                "id" => parsed.id = Some(decode(value, name)?),
                "type" => parsed.kind = Some(text(value, name)?),
                // Informative attributes the module or token already answer for.
                "manufacturer"
                | "model"
                | "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-description"
                | "slot-manufacturer" => {}
                _ => return Err(bad(format!("unknown attribute '{name}'."))),
            }
        }
        for part in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("'{part}' is not name=value.")))?;
            match name {
                "module-path" => module_path = Some(text(value, name)?),
                "module-name" => module_name = Some(text(value, name)?),
                "pin-value" => {
                    parsed.pin = Some(text(value, name)?);
                    continue;
                }
                "pin-source" => {
                    let source = text(value, name)?;
                    let file = source.strip_prefix("file:").unwrap_or(&source);
                    let read = std::fs::read_to_string(file).map_err(|e| {
                        Pkcs11Error::new(PIN, format!("Cannot read the PIN file {file}: {e}"))
                    })?;
                    parsed.pin = Some(read.trim_end_matches(['\r', '\n']).to_string());
                }
                _ => return Err(bad(format!("unknown query attribute '{name}'."))),
            }
            shown_query.push(part);
        }
        parsed.module = match (module_path, module_name) {
            (Some(path), _) => PathBuf::from(path),
            (None, Some(name)) => PathBuf::from(module_file(&name)),
            (None, None) => {
                return Err(Pkcs11Error::new(
                    MODULE,
                    "The PKCS#11 URI names no module: add ?module-path=/path/to/module.so.",
                ))
            }
        };
        if parsed.object.is_none() && parsed.id.is_none() {
            return Err(bad(
                "it names no object: add object=<label> or id=<hex>.".into()
            ));
        }
        parsed.shown = if shown_query.is_empty() {
            format!("pkcs11:{path}")
        } else {
            format!("pkcs11:{path}?{}", shown_query.join("&"))
        };
        Ok(parsed)
    }
}

/// The module loaded for `path`: loaded and initialized once per process, kept while it lives
/// (modules are not made to be unloaded and loaded again).
fn module(path: &PathBuf) -> Result<Pkcs11, Pkcs11Error> {
    static MODULES: Mutex<Vec<(PathBuf, Pkcs11)>> = Mutex::new(Vec::new());
    let mut modules = MODULES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, module)) = modules.iter().find(|(p, _)| p == path) {
        return Ok(module.clone());
    }
    let shown = path.display();
    let module = Pkcs11::new(path).map_err(|e| {
        Pkcs11Error::new(
            MODULE,
            format!("Cannot load the PKCS#11 module {shown}: {e}"),
        )
    })?;
    match module.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(Pkcs11Error::new(
                MODULE,
                format!("The PKCS#11 module {shown} failed to start: {e}"),
            ))
        }
    }
    modules.push((path.clone(), module.clone()));
    Ok(module)
}

/// A token's answer as a coded error: `what` says what was being done.
fn failed(err: CkError, what: &str) -> Pkcs11Error {
    let code = match &err {
        CkError::Pkcs11(rv, _) => match rv {
            RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange => PIN,
            RvError::PinLocked | RvError::PinExpired => PIN_LOCKED,
            RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::DeviceRemoved
            | RvError::SlotIdInvalid
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::UserNotLoggedIn
            | RvError::DeviceError => TOKEN,
            RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid => OBJECT,
            RvError::KeyTypeInconsistent
            | RvError::KeyFunctionNotPermitted
            | RvError::MechanismInvalid
            | RvError::MechanismParamInvalid => KEY_TYPE,
            _ => OTHER,
        },
        _ => OTHER,
    };
    Pkcs11Error::new(code, format!("PKCS#11: {what}: {err}"))
}

/// The slot holding the token the URI names.
fn find_slot(module: &Pkcs11, uri: &Pkcs11Uri) -> Result<Slot, Pkcs11Error> {
    let slots = module
        .get_slots_with_token()
        .map_err(|e| failed(e, "listing the slots"))?;
    for slot in slots {
        if uri.slot.is_some_and(|id| id != slot.id()) {
            continue;
        }
        let Ok(info) = module.get_token_info(slot) else {
            continue;
        };
        if uri
            .token
            .as_deref()
            .is_some_and(|t| t != info.label().trim_end())
        {
            continue;
        }
        if uri
            .serial
            .as_deref()
            .is_some_and(|s| s != info.serial_number().trim_end())
        {
            continue;
        }
        return Ok(slot);
    }
    Err(Pkcs11Error::new(
        TOKEN,
        format!("No token matching {uri} in the module (is it plugged in?)."),
    ))
}

/// A session on the token, logged in when the token asks for a PIN.
fn open_session(module: &Pkcs11, uri: &Pkcs11Uri) -> Result<(Slot, Session), Pkcs11Error> {
    let slot = find_slot(module, uri)?;
    let info = module
        .get_token_info(slot)
        .map_err(|e| failed(e, "reading the token's information"))?;
    let session = module
        .open_ro_session(slot)
        .map_err(|e| failed(e, "opening a session"))?;
    if info.login_required() {
        if info.user_pin_locked() {
            return Err(Pkcs11Error::new(
                PIN_LOCKED,
                format!("The token's user PIN is locked ({uri}): too many wrong PINs."),
            ));
        }
        let Some(pin) = &uri.pin else {
            return Err(Pkcs11Error::new(
                PIN,
                format!("The token asks for a PIN: add pin-value or pin-source to {uri}."),
            ));
        };
        let pin = AuthPin::new(pin.clone().into());
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => {
                let mut err = failed(e, "logging in");
                if err.code == PIN {
                    err.message = format!("Wrong PIN for the token ({uri}).");
                } else if err.code == PIN_LOCKED {
                    err.message =
                        format!("The token's user PIN is locked ({uri}): too many wrong PINs.");
                }
                return Err(err);
            }
        }
    }
    Ok((slot, session))
}

/// What an option's URI must name: its `type=`, the option, the object's class and name.
struct Wanted {
    kind: &'static str,
    option: &'static str,
    class: ObjectClass,
    what: &'static str,
    /// What the error calls it.
    noun: &'static str,
}

impl Wanted {
    const KEY: Wanted = Wanted {
        kind: "private",
        option: "key",
        class: ObjectClass::PRIVATE_KEY,
        what: "private key",
        noun: "key",
    };
    const CERT: Wanted = Wanted {
        kind: "cert",
        option: "cert",
        class: ObjectClass::CERTIFICATE,
        what: "certificate",
        noun: "certificate",
    };
}

/// The module, the token's slot, a session on it (logged in when the token asks) and the one
/// object the URI names, which must be of the `type=` the option takes.
fn open_object(
    uri: &Pkcs11Uri,
    wanted: Wanted,
) -> Result<(Pkcs11, Slot, Session, ObjectHandle), Pkcs11Error> {
    if let Some(kind) = uri.kind.as_deref() {
        if kind != wanted.kind {
            return Err(Pkcs11Error::new(
                OBJECT,
                format!(
                    "options.{} names an object of type '{kind}' ({uri}): a {} is type={}.",
                    wanted.option, wanted.noun, wanted.kind
                ),
            ));
        }
    }
    let module = module(&uri.module)?;
    let (slot, session) = open_session(&module, uri)?;
    let object = find_object(&session, uri, wanted.class, wanted.what)?;
    Ok((module, slot, session, object))
}

/// The one object of `class` the URI names.
fn find_object(
    session: &Session,
    uri: &Pkcs11Uri,
    class: ObjectClass,
    what: &str,
) -> Result<ObjectHandle, Pkcs11Error> {
    let mut template = vec![Attribute::Class(class)];
    if let Some(label) = &uri.object {
        template.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    let found = session
        .find_objects(&template)
        .map_err(|e| failed(e, "finding the object"))?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Pkcs11Error::new(
            OBJECT,
            format!("No {what} matching {uri} on the token."),
        )),
        _ => Err(Pkcs11Error::new(
            OBJECT,
            format!("Several objects ({what}) match {uri}: name one with object= and id=."),
        )),
    }
}

/// The kinds of key a TLS signature can be made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa { pss: bool, pkcs1: bool },
    EcP256,
    EcP384,
}

const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

fn key_kind(
    module: &Pkcs11,
    slot: Slot,
    session: &Session,
    key: ObjectHandle,
    uri: &Pkcs11Uri,
) -> Result<KeyKind, Pkcs11Error> {
    let attributes = session
        .get_attributes(
            key,
            &[
                AttributeType::KeyType,
                AttributeType::EcParams,
                AttributeType::Modulus,
                AttributeType::Sign,
            ],
        )
        .map_err(|e| failed(e, "reading the key's attributes"))?;
    let mut key_type = None;
    let mut params = None;
    let mut modulus_bits = None;
    for attribute in attributes {
        match attribute {
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::EcParams(p) => params = Some(p),
            Attribute::Modulus(m) => {
                let significant = m.iter().skip_while(|&&b| b == 0).count();
                modulus_bits = Some(significant * 8);
            }
            Attribute::Sign(false) => {
                return Err(Pkcs11Error::new(
                    KEY_TYPE,
                    format!("The key {uri} is not allowed to sign (CKA_SIGN is false)."),
                ))
            }
            _ => {}
        }
    }
    let mechanisms = module.get_mechanism_list(slot).unwrap_or_default();
    let has = |m: MechanismType| mechanisms.contains(&m);
    // Peers verify RSA signatures of 2048 bits and more (rustls, webpki).
    if key_type == Some(KeyType::RSA) && modulus_bits.is_some_and(|bits| bits < 2048) {
        return Err(Pkcs11Error::new(
            KEY_TYPE,
            format!("The RSA key {uri} is shorter than the 2048 bits TLS peers accept."),
        ));
    }
    let kind = match key_type {
        Some(KeyType::RSA) => KeyKind::Rsa {
            pss: has(MechanismType::RSA_PKCS_PSS),
            pkcs1: has(MechanismType::RSA_PKCS),
        },
        Some(KeyType::EC) if params.as_deref() == Some(P256) => KeyKind::EcP256,
        Some(KeyType::EC) if params.as_deref() == Some(P384) => KeyKind::EcP384,
        Some(KeyType::EC) => {
            return Err(Pkcs11Error::new(
                KEY_TYPE,
                format!("The EC key {uri} is on a curve TLS is not used with here (P-256 and P-384 are)."),
            ))
        }
        other => {
            return Err(Pkcs11Error::new(
                KEY_TYPE,
                format!(
                    "The key {uri} is of a type TLS cannot sign with here ({}); RSA, EC P-256 and P-384 can.",
                    other.map_or_else(|| "unknown".to_string(), |t| t.to_string())
                ),
            ))
        }
    };
    let usable = match kind {
        KeyKind::Rsa { pss, pkcs1 } => pss || pkcs1,
        KeyKind::EcP256 | KeyKind::EcP384 => has(MechanismType::ECDSA),
    };
    if !usable && !mechanisms.is_empty() {
        return Err(Pkcs11Error::new(
            KEY_TYPE,
            format!("The token offers no signature mechanism TLS can use with {uri} (CKM_RSA_PKCS_PSS, CKM_RSA_PKCS, CKM_ECDSA)."),
        ));
    }
    Ok(kind)
}

/// An open session and the key's handle in it.
struct Open {
    session: Session,
    key: ObjectHandle,
}

/// A private key held by a token: rustls's `SigningKey`, every signature made by the token.
pub struct TokenKey {
    uri: Pkcs11Uri,
    module: Pkcs11,
    kind: KeyKind,
    /// `None` once the session was lost; opened again at the next use. One signature at a time
    /// per key (a session runs one operation at a time).
    open: Mutex<Option<Open>>,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenKey({}, {:?})", self.uri, self.kind)
    }
}

impl TokenKey {
    /// The key the URI names: the one another client or server of this process holds for the
    /// same URI (one session for all of them, signatures taken in turn), or opened now.
    pub fn shared(uri: &Pkcs11Uri) -> Result<Arc<Self>, Pkcs11Error> {
        static SHARED: Mutex<Vec<(Pkcs11Uri, std::sync::Weak<TokenKey>)>> = Mutex::new(Vec::new());
        let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        shared.retain(|(_, key)| key.strong_count() > 0);
        if let Some(key) = shared
            .iter()
            .find(|(held, _)| held == uri)
            .and_then(|(_, key)| key.upgrade())
        {
            return Ok(key);
        }
        let key = Self::open(uri)?;
        shared.push((uri.clone(), Arc::downgrade(&key)));
        Ok(key)
    }

    /// Loads the module, finds the token, logs in and finds the private key, checking that TLS
    /// can sign with it.
    pub fn open(uri: &Pkcs11Uri) -> Result<Arc<Self>, Pkcs11Error> {
        let (module, slot, session, key) = open_object(uri, Wanted::KEY)?;
        let kind = key_kind(&module, slot, &session, key, uri)?;
        Ok(Arc::new(TokenKey {
            uri: uri.clone(),
            module,
            kind,
            open: Mutex::new(Some(Open { session, key })),
        }))
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    fn state(&self) -> MutexGuard<'_, Option<Open>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reopen(&self) -> Result<Open, Pkcs11Error> {
        let (_, session) = open_session(&self.module, &self.uri)?;
        let key = find_object(&session, &self.uri, ObjectClass::PRIVATE_KEY, "private key")?;
        Ok(Open { session, key })
    }

    /// Whether the token is there and the session usable, opened again if it was lost: asked
    /// before each connection attempt, so that a removed token fails the attempt with its code.
    pub fn check(&self) -> Result<(), Pkcs11Error> {
        let mut open = self.state();
        if let Some(current) = open.as_ref() {
            // The session, the token and the key still answer (a token taken out fails one of
            // them: SoftHSM's the token's information and the key's attributes).
            let info = current.session.get_session_info();
            let present = info
                .as_ref()
                .is_ok_and(|info| self.module.get_token_info(info.slot_id()).is_ok())
                && current
                    .session
                    .get_attributes(current.key, &[AttributeType::Sign])
                    .is_ok();
            if present {
                return Ok(());
            }
            *open = None;
        }
        *open = Some(self.reopen()?);
        Ok(())
    }

    /// `data` (a digest, or a DigestInfo) signed with `mechanism` by the token; a session that
    /// fails is dropped and, once, opened again (a token taken out and put back).
    fn sign_raw(&self, mechanism: &Mechanism<'_>, data: &[u8]) -> Result<Vec<u8>, Pkcs11Error> {
        let mut open = self.state();
        let mut retried = false;
        loop {
            if open.is_none() {
                *open = Some(self.reopen()?);
            }
            let Some(current) = open.as_ref() else {
                continue;
            };
            match current.session.sign(mechanism, current.key, data) {
                Ok(signature) => return Ok(signature),
                Err(err) => {
                    let err = failed(err, &format!("signing with {}", self.uri));
                    *open = None;
                    if retried || !matches!(err.code, TOKEN | OBJECT) {
                        return Err(err);
                    }
                    retried = true;
                }
            }
        }
    }

    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, Pkcs11Error> {
        use aws_lc_rs::digest;
        let (algorithm, hash_mechanism, mgf, digest_info): (_, _, _, &[u8]) = match scheme {
            SignatureScheme::RSA_PSS_SHA256
            | SignatureScheme::RSA_PKCS1_SHA256
            | SignatureScheme::ECDSA_NISTP256_SHA256 => (
                &digest::SHA256,
                MechanismType::SHA256,
                PkcsMgfType::MGF1_SHA256,
                &[
                    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                    0x02, 0x01, 0x05, 0x00, 0x04, 0x20,
                ],
            ),
            SignatureScheme::RSA_PSS_SHA384
            | SignatureScheme::RSA_PKCS1_SHA384
            | SignatureScheme::ECDSA_NISTP384_SHA384 => (
                &digest::SHA384,
                MechanismType::SHA384,
                PkcsMgfType::MGF1_SHA384,
                &[
                    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                    0x02, 0x02, 0x05, 0x00, 0x04, 0x30,
                ],
            ),
            SignatureScheme::RSA_PSS_SHA512 | SignatureScheme::RSA_PKCS1_SHA512 => (
                &digest::SHA512,
                MechanismType::SHA512,
                PkcsMgfType::MGF1_SHA512,
                &[
                    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                    0x02, 0x03, 0x05, 0x00, 0x04, 0x40,
                ],
            ),
            other => {
                return Err(Pkcs11Error::new(
                    KEY_TYPE,
                    format!("No signature with {other:?} here."),
                ))
            }
        };
        let hash = digest::digest(algorithm, message);
        let hash = hash.as_ref();
        match scheme {
            SignatureScheme::RSA_PSS_SHA256
            | SignatureScheme::RSA_PSS_SHA384
            | SignatureScheme::RSA_PSS_SHA512 => {
                let params = PkcsPssParams {
                    hash_alg: hash_mechanism,
                    mgf,
                    // The salt is as long as the hash (at most 64 bytes); `CK_ULONG` is 32
                    // bits on Windows, 64 on Linux.
                    s_len: Ulong::try_from(hash.len()).map_err(|_| {
                        Pkcs11Error::new(KEY_TYPE, format!("No salt of {} bytes.", hash.len()))
                    })?,
                };
                self.sign_raw(&Mechanism::RsaPkcsPss(params), hash)
            }
            SignatureScheme::RSA_PKCS1_SHA256
            | SignatureScheme::RSA_PKCS1_SHA384
            | SignatureScheme::RSA_PKCS1_SHA512 => {
                let mut info = digest_info.to_vec();
                info.extend_from_slice(hash);
                self.sign_raw(&Mechanism::RsaPkcs, &info)
            }
            _ => {
                let raw = self.sign_raw(&Mechanism::Ecdsa, hash)?;
                ecdsa_der(&raw).ok_or_else(|| {
                    Pkcs11Error::new(OTHER, "The token's ECDSA signature has an odd length.")
                })
            }
        }
    }

    /// Whether this key is the private half of `public_key` (a certificate's subject public
    /// key bits): one signature made by the token, verified here. `EKEYMISMATCH` when not.
    pub fn matches(&self, public_key: &[u8]) -> Result<(), crate::tls::TlsError> {
        use aws_lc_rs::signature;
        const CHALLENGE: &[u8] = b"imt-gateway: does this token key match the certificate?";
        let scheme = self.schemes()[0];
        let algorithm: &dyn signature::VerificationAlgorithm = match scheme {
            SignatureScheme::RSA_PSS_SHA256 => &signature::RSA_PSS_2048_8192_SHA256,
            SignatureScheme::RSA_PKCS1_SHA256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            SignatureScheme::ECDSA_NISTP256_SHA256 => &signature::ECDSA_P256_SHA256_ASN1,
            _ => &signature::ECDSA_P384_SHA384_ASN1,
        };
        let signed = self.sign(scheme, CHALLENGE)?;
        signature::UnparsedPublicKey::new(algorithm, public_key)
            .verify(CHALLENGE, &signed)
            .map_err(|_| crate::tls::TlsError::KeyMismatch)
    }

    /// The schemes this key signs with, in the order preferred.
    fn schemes(&self) -> &'static [SignatureScheme] {
        use SignatureScheme::*;
        match self.kind {
            KeyKind::Rsa {
                pss: true,
                pkcs1: true,
            } => &[
                RSA_PSS_SHA256,
                RSA_PSS_SHA384,
                RSA_PSS_SHA512,
                RSA_PKCS1_SHA256,
                RSA_PKCS1_SHA384,
                RSA_PKCS1_SHA512,
            ],
            KeyKind::Rsa { pss: true, .. } => &[RSA_PSS_SHA256, RSA_PSS_SHA384, RSA_PSS_SHA512],
            KeyKind::Rsa { .. } => &[RSA_PKCS1_SHA256, RSA_PKCS1_SHA384, RSA_PKCS1_SHA512],
            KeyKind::EcP256 => &[ECDSA_NISTP256_SHA256],
            KeyKind::EcP384 => &[ECDSA_NISTP384_SHA384],
        }
    }
}

/// A raw `r || s` ECDSA signature (PKCS#11's form) as the DER `ECDSA-Sig-Value` TLS sends.
fn ecdsa_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) || raw.len() > 132 {
        return None;
    }
    let integer = |bytes: &[u8]| {
        let start = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        let bytes = &bytes[start..];
        let mut out = vec![0x02];
        let pad = bytes[0] & 0x80 != 0;
        out.push((bytes.len() + usize::from(pad)) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(bytes);
        out
    };
    let (r, s) = raw.split_at(raw.len() / 2);
    let body = [integer(r), integer(s)].concat();
    let mut out = vec![0x30];
    if body.len() >= 0x80 {
        out.push(0x81);
    }
    out.push(body.len() as u8);
    out.extend_from_slice(&body);
    Some(out)
}

/// rustls's view of a [`TokenKey`]: shared by the configurations that use it, each
/// handshake's signer holding it while it signs.
#[derive(Debug, Clone)]
pub struct TokenSigningKey(pub Arc<TokenKey>);

impl SigningKey for TokenSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = *self.0.schemes().iter().find(|s| offered.contains(s))?;
        Some(Box::new(TokenSigner {
            key: self.0.clone(),
            scheme,
        }))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.0.kind {
            KeyKind::Rsa { .. } => SignatureAlgorithm::RSA,
            KeyKind::EcP256 | KeyKind::EcP384 => SignatureAlgorithm::ECDSA,
        }
    }
}

/// One handshake's signer: the key and the scheme chosen.
#[derive(Debug)]
struct TokenSigner {
    key: Arc<TokenKey>,
    scheme: SignatureScheme,
}

impl Signer for TokenSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.key
            .sign(self.scheme, message)
            .map_err(|err| rustls::Error::Other(OtherError(Arc::new(err))))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// The certificate the URI names (`type=cert`), read from the token.
pub fn read_certificate(uri: &Pkcs11Uri) -> Result<CertificateDer<'static>, Pkcs11Error> {
    let (_, _, session, cert) = open_object(uri, Wanted::CERT)?;
    let value = session
        .get_attributes(cert, &[AttributeType::Value])
        .map_err(|e| failed(e, "reading the certificate"))?;
    match value.into_iter().next() {
        Some(Attribute::Value(der)) => Ok(CertificateDer::from(der)),
        _ => Err(Pkcs11Error::new(
            OBJECT,
            format!("The certificate {uri} has no value."),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn uris_are_parsed_with_their_percent_encoding_and_unknown_attributes_refused() {
        let uri = Pkcs11Uri::parse(
            "pkcs11:token=my%20device;object=gateway-key;id=%01%ff;type=private?module-path=/usr/lib/x.so&pin-value=12%2634",
        )
        .unwrap();
        assert_eq!(uri.token.as_deref(), Some("my device"));
        assert_eq!(uri.object.as_deref(), Some("gateway-key"));
        assert_eq!(uri.id.as_deref(), Some(&[1u8, 0xff][..]));
        assert_eq!(uri.module, PathBuf::from("/usr/lib/x.so"));
        assert_eq!(uri.pin.as_deref(), Some("12&34"));
        // The PIN is never shown.
        assert!(!format!("{uri} {uri:?}").contains("pin"), "{uri}");
        let code = |text: &str| Pkcs11Uri::parse(text).unwrap_err().code;
        assert_eq!(code("pkcs11:token=a;objet=b?module-path=/x.so"), URI);
        assert_eq!(code("pkcs11:token=a;object=b?module-path=/x.so&pin=1"), URI);
        assert_eq!(code("pkcs11:token=a;object=%zz?module-path=/x.so"), URI);
        assert_eq!(code("pkcs11:token=a?module-path=/x.so"), URI);
        assert_eq!(code("pkcs11:token=a;object=b"), MODULE);
        assert_eq!(code("file:/x"), URI);
    }

    #[test]
    fn a_raw_ecdsa_signature_becomes_der() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r needs a leading zero
        raw[31] = 1;
        raw[63] = 2; // s is 2
        let der = ecdsa_der(&raw).unwrap();
        assert_eq!(&der[..5], &[0x30, 0x26, 0x02, 0x21, 0x00]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 0x01, 0x02]);
        assert_eq!(ecdsa_der(&[1, 2, 3]), None);
    }

    /// The SoftHSM 2 module, when one is installed for the machine this test binary is built
    /// for (under emulation, an arm64 test binary finds the host's x86-64 module: skipped).
    fn module_path() -> Option<PathBuf> {
        let machine: u16 = if cfg!(target_arch = "x86_64") {
            62
        } else if cfg!(target_arch = "aarch64") {
            183
        } else if cfg!(target_arch = "arm") {
            40
        } else {
            0
        };
        [
            "/usr/lib/softhsm/libsofthsm2.so",
            "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
            "/usr/local/lib/softhsm/libsofthsm2.so",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| {
            // The ELF header's e_machine, at byte 18.
            std::fs::read(p).ok().is_some_and(|elf| {
                elf.starts_with(b"\x7fELF") && elf.get(18..20) == Some(&machine.to_le_bytes()[..])
            })
        })
    }

    fn run(program: &str, args: &[&str], conf: &std::path::Path) {
        let out = Command::new(program)
            .args(args)
            .env("SOFTHSM2_CONF", conf)
            .output()
            .unwrap();
        assert!(out.status.success(), "{program} {args:?}: {out:?}");
    }

    /// Against a real token (SoftHSM 2, `scripts/toolchains.sh pkcs11`): keys generated in the
    /// token, a signature of each verified with the public key read back, the errors' codes, and
    /// a lost session opened again. Run in a child process (this test binary, the test below
    /// alone), with SOFTHSM2_CONF in its environment: SoftHSM reads it when it is loaded, and
    /// setting it here would race the other tests' threads reading the environment.
    #[test]
    fn softhsm_keys_sign_in_the_token_and_failures_have_codes() {
        let Some(module) = module_path() else {
            eprintln!(
                "skipped: no SoftHSM 2 module for this machine (bash scripts/toolchains.sh pkcs11)"
            );
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "pkcs11::tests::softhsm_in_a_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SOFTHSM2_CONF", &conf)
            .env("IMT_SOFTHSM_MODULE", &module)
            .env("IMT_SOFTHSM_DIR", dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    #[ignore = "run by softhsm_keys_sign_in_the_token_and_failures_have_codes, in a child process"]
    fn softhsm_in_a_child() {
        let (Some(module), Some(dir), Some(conf)) = (
            std::env::var_os("IMT_SOFTHSM_MODULE").map(PathBuf::from),
            std::env::var_os("IMT_SOFTHSM_DIR").map(PathBuf::from),
            std::env::var_os("SOFTHSM2_CONF").map(PathBuf::from),
        ) else {
            panic!("run by softhsm_keys_sign_in_the_token_and_failures_have_codes");
        };
        let dir = tempfile::TempDir::new_in(&dir).unwrap();
        let m = module.to_str().unwrap();
        run(
            "softhsm2-util",
            &[
                "--init-token",
                "--free",
                "--label",
                "unit",
                "--so-pin",
                "5678",
                "--pin",
                "1234",
            ],
            &conf,
        );
        let tool = |args: &[&str]| {
            let mut all = vec![
                "--module",
                m,
                "--token-label",
                "unit",
                "--login",
                "--pin",
                "1234",
            ];
            all.extend_from_slice(args);
            run("pkcs11-tool", &all, &conf);
        };
        let mut spki = Vec::new();
        for (kind, label, id) in [
            ("rsa:2048", "rsa", "01"),
            ("EC:prime256v1", "ec", "02"),
            ("rsa:1024", "short", "03"),
        ] {
            tool(&[
                "--keypairgen",
                "--key-type",
                kind,
                "--label",
                label,
                "--id",
                id,
            ]);
            let out = dir.path().join(format!("{label}.der"));
            let out = out.to_str().unwrap();
            tool(&[
                "--read-object",
                "--type",
                "pubkey",
                "--label",
                label,
                "-o",
                out,
            ]);
            spki.push(std::fs::read(out).unwrap());
        }
        let uri = |object: &str, pin: &str| {
            Pkcs11Uri::parse(&format!(
                "pkcs11:token=unit;object={object};type=private?module-path={m}&pin-value={pin}"
            ))
            .unwrap()
        };
        let bits = |der: &[u8]| {
            use x509_parser::prelude::FromDer;
            let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(der).unwrap();
            info.subject_public_key.data.to_vec()
        };
        // A wrong PIN, before any login (the token's login is the process's, once made).
        let err = |uri: &Pkcs11Uri| TokenKey::open(uri).unwrap_err().code;
        assert_eq!(err(&uri("rsa", "0000")), PIN);
        let rsa = TokenKey::open(&uri("rsa", "1234")).unwrap();
        let ec = TokenKey::open(&uri("ec", "1234")).unwrap();
        assert_eq!(
            rsa.kind(),
            KeyKind::Rsa {
                pss: true,
                pkcs1: true
            }
        );
        assert_eq!(ec.kind(), KeyKind::EcP256);
        rsa.matches(&bits(&spki[0])).unwrap();
        ec.matches(&bits(&spki[1])).unwrap();
        assert_eq!(
            rsa.matches(&bits(&spki[1])),
            Err(crate::tls::TlsError::KeyMismatch)
        );
        // Every RSA scheme the token signs with verifies.
        for scheme in rsa.schemes() {
            let signer = TokenSigningKey(rsa.clone())
                .choose_scheme(&[*scheme])
                .unwrap();
            assert!(!signer.sign(b"x").unwrap().is_empty());
        }
        // The errors, each with its code.
        assert_eq!(err(&uri("nothing", "1234")), OBJECT);
        assert_eq!(err(&uri("short", "1234")), KEY_TYPE);
        let mut other = uri("rsa", "1234");
        other.token = Some("absent".into());
        assert_eq!(err(&other), TOKEN);
        let mut missing = uri("rsa", "1234");
        missing.module = dir.path().join("no-such-module.so");
        assert_eq!(err(&missing), MODULE);
        // Logged out under the keys (as a token reset does): the next check, or the next
        // signature, logs in again.
        let slot = find_slot(&rsa.module, &uri("rsa", "1234")).unwrap();
        let logout = || {
            let other = rsa.module.open_ro_session(slot).unwrap();
            other.logout().unwrap();
        };
        logout();
        rsa.check().unwrap();
        logout();
        rsa.matches(&bits(&spki[0])).unwrap();
        ec.matches(&bits(&spki[1])).unwrap();
    }
}
