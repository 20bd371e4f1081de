//! `NativeClient`: the client driver as index.js's `Client` sees it. Commands go in as plain
//! method calls; everything the client has to say comes back in batches to one callback,
//! written in the format of [`super::notice`]. On the JS thread's event loop, a batch made by
//! a loop callback (bytes arrived) is handed to that callback directly when the loop
//! callback's work is done; any other goes through one threadsafe function per client, which
//! calls `pull` (one batch per turn of the loop during a flood). That threadsafe function
//! also keeps Node alive only while the client has work (a socket, an attempt or a reconnect
//! wait), like a `net.Socket`: index.js refs it on `connect()` and unrefs it when the driver
//! reports the client idle.

//!
//! The parts, one file each: `mailbox.rs`, the way batches reach the callback (the
//! [`Mailbox`], the threadsafe function, and `DirectCall`, the caller of the
//! callback on the JS thread, with its `pull` function); `notices.rs`, a batch written as that
//! callback's arguments; `calls.rs`, the `send` and `ack` functions that [`NativeClient::calls`]
//! makes, and the errors with which they refuse; `delivered.rs`, the handle naming an action's
//! id from its notice to its `ack`; `outbox.rs`, the `outbox` option and what opening it found;
//! `stats.rs`, `stats()` and `outboxStats()`.

mod calls;
mod delivered;
mod lookup;
mod mailbox;
mod notices;
mod outbox;
mod stats;

use std::ptr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use napi::bindgen_prelude::{Buffer, Either, Float64Array, FromNapiValue, Function, Unknown};
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi::{sys, Env, Result};
use napi_derive::napi;

pub(super) use self::calls::RawValue;
use self::calls::{call_ack, call_send, function, CallFn, Calls};
use self::lookup::{JsLookup, LookupFn, Lookups};
use self::mailbox::{BatchSink, DirectCall, Mailbox, MailboxCall};
use self::outbox::{
    outbox_error, outbox_options, restored_info, NativeOutboxOptions, NativeRestored,
};
use self::stats::{NativeHealth, NativeOutboxStats, NativeStats};
use super::{internal, thrown};
use crate::client::proxy::Proxy;
use crate::client::{
    client, Batch, ClientHandle, ClientOptions, Command, EventStore, ProxyChoice, Tokio,
};
use crate::credentials::{ClientCredentials, ClientMaterial, Pem};
use crate::errors::ErrorCode;
use crate::session::SessionConfig;

pub(super) use self::notices::write_samples;
#[napi(object, object_to_js = false)]
pub struct NativeClientOptions {
    pub host: String,
    pub port: u32,
    /// Speak TLS; `key` and `cert` are then required.
    pub tls: bool,
    /// Each a PEM document, or a string: the path of a file read at every connection attempt.
    pub key: Option<PemOption>,
    pub cert: Option<PemOption>,
    pub ca: Option<Vec<PemOption>>,
    pub device_name: String,
    pub auto_reconnect: bool,
    pub max_reconnect_attempts: u32,
    pub max_in_flight: u32,
    pub max_queue_size: u32,
    /// Milliseconds, as all durations here; 0 disables the timeouts and keepalive.
    pub reconnect_delay: u32,
    pub max_reconnect_delay: u32,
    pub connect_timeout: u32,
    pub ack_timeout: u32,
    pub keep_alive: u32,
    /// The durable outbox, validated by lib/client.js.
    pub outbox: Option<NativeOutboxOptions>,
    /// Time each answered event for the metrics (see `takeDurations`).
    pub time_events: Option<bool>,
    /// The name for SNI and the gateway's certificate, when not `host`.
    pub servername: Option<String>,
    /// An explicit proxy URL (`proxy: 'http://...'`); read here, refused with
    /// `ERR_INVALID_ARG_VALUE`.
    pub proxy: Option<String>,
    /// `proxy: false`: never through a proxy, whatever the environment says.
    pub direct: Option<bool>,
    /// lib/client.js's caller of the `lookup` option (see `lookup.rs`).
    pub lookup: Option<LookupFn>,
}

/// A PEM document, or the path of a file holding one (lib/tls-options.js turns `{ path }` into
/// the string, and PEM strings into Buffers), or a PKCS#11 URI (a string starting `pkcs11:`;
/// lib/tls-options.js writes a path that would start so as `./pkcs11:...`).
pub type PemOption = Either<Buffer, String>;

/// `key` or `cert`: a PKCS#11 URI names a key (or certificate) in a token.
fn identity_pem(option: PemOption, key: bool) -> std::result::Result<Pem, crate::tls::TlsError> {
    match option {
        Either::B(uri) if crate::pkcs11::is_uri(uri.as_bytes()) => {
            if key {
                Pem::token_key(&uri)
            } else {
                Pem::token_cert(&uri)
            }
        }
        other => Ok(pem(other)),
    }
}

fn pem(option: PemOption) -> Pem {
    match option {
        Either::A(buffer) => Pem::Bytes(buffer.to_vec()),
        Either::B(path) => Pem::File(path.into()),
    }
}

fn material(
    key: PemOption,
    cert: PemOption,
    ca: Option<Vec<PemOption>>,
) -> std::result::Result<ClientMaterial, crate::tls::TlsError> {
    Ok(ClientMaterial {
        key: identity_pem(key, true)?,
        cert: identity_pem(cert, false)?,
        ca: ca.map(|list| list.into_iter().map(pem).collect()),
    })
}

/// `client.certificate` before lib/client.js shapes it: names as `[key, value]` pairs.
#[napi(object)]
pub struct NativeCertificate {
    pub subject: Vec<Vec<String>>,
    pub issuer: Vec<Vec<String>>,
    pub valid_from: String,
    pub valid_to: String,
    pub fingerprint256: String,
    /// The end of the validity, in ms since the epoch.
    pub expires_at: f64,
}

fn millis(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms))
}

fn optional_millis(ms: u32) -> Option<Duration> {
    (ms != 0).then(|| millis(ms))
}

#[napi]
pub struct NativeClient {
    /// The TLS material, asked at every connection attempt; `None` for plain TCP.
    credentials: Option<Arc<ClientCredentials>>,
    handle: ClientHandle,
    sink: Arc<BatchSink>,
    direct: Arc<DirectCall>,
    store: Option<Arc<EventStore>>,
    /// What the latest opening of the outbox found, until JavaScript takes it.
    restored: Mutex<Option<NativeRestored>>,
    /// Lookups waiting for the `lookup` option's answer; none without the option.
    lookups: Option<Arc<Lookups>>,
}

impl Drop for NativeClient {
    fn drop(&mut self) {
        self.direct.release();
    }
}

#[napi]
impl NativeClient {
    #[napi(constructor, catch_unwind)]
    pub fn new(
        env: Env,
        mut options: NativeClientOptions,
        on_batch: Function<'_, Unknown<'_>, ()>,
    ) -> Result<Self, ErrorCode> {
        let port = u16::try_from(options.port)
            .map_err(|_| thrown(ErrorCode::BadPort, "Port should be >= 0 and < 65536."))?;
        let route = route(&mut options)?;
        let lookups = route.lookups.clone();
        let credentials = if options.tls {
            let (Some(key), Some(cert)) = (options.key, options.cert) else {
                return Err(thrown(ErrorCode::InvalidKey, "Invalid private key."));
            };
            Some(Arc::new(ClientCredentials::new(material(
                key, cert, options.ca,
            )?)?))
        } else {
            None
        };
        let mut session = SessionConfig::new(options.device_name);
        session.auto_reconnect = options.auto_reconnect;
        session.max_reconnect_attempts = options.max_reconnect_attempts;
        session.max_in_flight = options.max_in_flight.max(1) as usize;
        session.max_queue_size = options.max_queue_size as usize;
        session.time_events = options.time_events.unwrap_or(false);
        // Opened before anything else, so a locked outbox fails the constructor at once.
        let opened = match &options.outbox {
            Some(outbox) => {
                let store = outbox_options(outbox, options.max_queue_size)?;
                Some(EventStore::open(&outbox.path, store).map_err(outbox_error)?)
            }
            None => None,
        };
        let callback = napi::JsValue::raw(&on_batch);
        let mailbox: Arc<Mailbox> = Arc::default();
        let reactor = super::uv::reactor(&env);
        let direct = Arc::new(DirectCall::new(&env, callback, mailbox.clone()).map_err(internal)?);
        let pull = DirectCall::pull_function(&direct).map_err(internal)?;
        // SAFETY: `env` is this constructor call's environment, on its thread, and `pull` a
        // function made in it just above.
        let sink =
            Arc::new(unsafe { BatchSink::from_napi_value(env.raw(), pull) }.map_err(internal)?);
        let threadsafe = sink.clone();
        let direct_call = reactor.is_some().then(|| direct.clone());
        let (handle, task) = client(
            ClientOptions {
                host: options.host,
                port,
                resolver: route.resolver,
                servername: route.servername,
                proxy: route.proxy,
                tls: None,
                credentials: credentials.clone(),
                session,
                reconnect_delay: millis(options.reconnect_delay),
                max_reconnect_delay: millis(options.max_reconnect_delay),
                connect_timeout: optional_millis(options.connect_timeout),
                ack_timeout: optional_millis(options.ack_timeout),
                keep_alive: optional_millis(options.keep_alive),
                reactor: reactor.clone().unwrap_or_else(|| Arc::new(Tokio)),
                store: opened.as_ref().map(|(store, _)| store.clone()),
                backlog: mailbox.backlog.clone(),
            },
            move |batch: Batch| {
                // A batch joining one already on its way needs no call of its own; else it
                // goes directly when a loop callback made it, by the threadsafe function if not.
                if mailbox.post(batch)
                    && !direct_call
                        .as_ref()
                        .is_some_and(super::uv::call_after_callback)
                {
                    threadsafe.call(MailboxCall, ThreadsafeFunctionCallMode::NonBlocking);
                }
            },
        );
        match reactor {
            Some(reactor) => reactor.spawn(Box::pin(task)),
            None => {
                napi::bindgen_prelude::spawn(task);
            }
        }
        let mut restored = None;
        let store = match opened {
            Some((store, found)) => {
                napi::bindgen_prelude::spawn(EventStore::syncer(&store));
                restored = Some(restored_info(&store, &found));
                // The first command: ahead of every send.
                if !found.events.is_empty() {
                    handle.command(Command::Restore(found.events));
                }
                Some(store)
            }
            None => None,
        };
        let client = NativeClient {
            credentials,
            handle,
            sink,
            direct,
            store,
            restored: Mutex::new(restored),
            lookups,
        };
        // Idle until the first connect().
        client.unref(env).map_err(internal)?;
        Ok(client)
    }

    /// Starts a connection cycle and keeps Node alive for it.
    #[napi(catch_unwind)]
    pub fn connect(&self, env: Env, cycle: u32) -> Result<()> {
        self.refer(env)?;
        run_command(
            &self.handle,
            Command::Connect {
                cycle: u64::from(cycle),
            },
        );
        Ok(())
    }

    /// Whether batches carry acknowledgement notices (off until called): `lib/client.js` turns
    /// them on when an `acknowledgement` listener is added, and off when one arrives that
    /// nobody listens for.
    #[napi(catch_unwind)]
    pub fn acknowledgements(&self, on: bool) {
        self.direct
            .mailbox()
            .acknowledgements
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// `send` and `ack` as plain functions, made once per client (see [`Calls`]).
    #[napi(
        catch_unwind,
        ts_return_type = "{ send(seq: number, id: unknown, type: string, bundle: unknown): (Error & { code: string }) | string | undefined, ack(id: unknown, code?: string, message?: string): void }"
    )]
    pub fn calls(&self, env: Env) -> Result<RawValue> {
        let calls = Arc::new(Calls {
            handle: self.handle.clone(),
            store: self.store.clone(),
        });
        let env = env.raw();
        // SAFETY: `env` is this method call's environment, on its thread and in its handle
        // scope; `function` hands one count of `calls` to each JavaScript function, released
        // by that function's finalizer.
        unsafe {
            let mut object = ptr::null_mut();
            napi::check_status!(sys::napi_create_object(env, &mut object))?;
            for (name, call) in [(c"send", call_send as CallFn), (c"ack", call_ack as CallFn)] {
                let function = function(env, name, call, calls.clone())?;
                napi::check_status!(sys::napi_set_named_property(
                    env,
                    object,
                    name.as_ptr(),
                    function
                ))?;
            }
            Ok(RawValue(object))
        }
    }

    /// Closes the client; unless `keep_queue`, closes its outbox too (after the session has
    /// let go of its events), so that another client may open it.
    #[napi(catch_unwind)]
    pub fn close(&self, keep_queue: bool) -> Result<(), ErrorCode> {
        run_command(&self.handle, Command::Close { keep_queue });
        match &self.store {
            Some(store) if !keep_queue => store.close().map_err(outbox_error),
            _ => Ok(()),
        }
    }

    /// Opens the outbox again after `close()` (at `connect()`, or at a `send()` before it):
    /// the events found are queued ahead of anything sent after. True when it was opened now
    /// (`takeRestored()` then has what it found), false when it was open or there is none.
    #[napi(catch_unwind)]
    pub fn reopen_outbox(&self) -> Result<bool, ErrorCode> {
        let Some(store) = &self.store else {
            return Ok(false);
        };
        let Some(found) = store.reopen().map_err(outbox_error)? else {
            return Ok(false);
        };
        *self.restored.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(restored_info(store, &found));
        if !found.events.is_empty() {
            run_command(&self.handle, Command::Restore(found.events));
        }
        Ok(true)
    }

    /// What the latest opening of the outbox found, once; null without an outbox or after it
    /// was taken.
    #[napi(catch_unwind)]
    pub fn take_restored(&self) -> Option<NativeRestored> {
        self.restored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// The outbox's counters; null without an outbox.
    #[napi(catch_unwind)]
    pub fn outbox_stats(&self) -> Option<NativeOutboxStats> {
        Some(NativeOutboxStats::of(&self.store.as_ref()?.stats()))
    }

    /// Replaces the TLS material, checked first: refused material throws with its code and
    /// the old stays in force. `ca` left out keeps the anchors in force. With `reconnect`, the
    /// connection in hand is replaced at once. Returns the material's generation, which
    /// `connectedCredentials()` reaches once a connection used it.
    #[napi(catch_unwind)]
    pub fn set_credentials(
        &self,
        key: PemOption,
        cert: PemOption,
        ca: Option<Vec<PemOption>>,
        reconnect: bool,
    ) -> Result<u32, ErrorCode> {
        let Some(credentials) = &self.credentials else {
            return Err(thrown(
                ErrorCode::TlsConfig,
                "setCredentials() needs a TLS client (a host other than 'localhost').",
            ));
        };
        let keep_ca = ca.is_none();
        let generation = credentials.set(material(key, cert, ca)?, keep_ca)?;
        if reconnect {
            run_command(&self.handle, Command::Reconnect);
        }
        Ok(u32::try_from(generation).unwrap_or(u32::MAX))
    }

    /// The generation of the TLS material the latest connection used (0: the first).
    #[napi(catch_unwind)]
    pub fn connected_credentials(&self) -> u32 {
        self.credentials.as_ref().map_or(0, |c| {
            u32::try_from(c.connected_generation()).unwrap_or(u32::MAX)
        })
    }

    /// What the device certificate in force says; null without TLS.
    #[napi(catch_unwind)]
    pub fn certificate(&self) -> Option<NativeCertificate> {
        let info = self.credentials.as_ref()?.certificate();
        let pairs = |names: &[(String, String)]| {
            names
                .iter()
                .map(|(key, value)| vec![key.clone(), value.clone()])
                .collect()
        };
        Some(NativeCertificate {
            subject: pairs(&info.subject),
            issuer: pairs(&info.issuer),
            valid_from: info.valid_from.clone(),
            valid_to: info.valid_to.clone(),
            fingerprint256: info.fingerprint256.clone(),
            expires_at: info.not_after as f64 * 1000.0,
        })
    }

    /// The client's counters, read without waiting for its task (see `ClientHandle::stats`).
    #[napi(catch_unwind)]
    pub fn stats(&self) -> NativeStats {
        NativeStats::of(&self.handle.stats())
    }

    /// The durations (seconds, from `send()` to the acknowledgement) of the events answered
    /// since the last call, for the metrics' histogram: empty unless the client was made with
    /// `timeEvents`.
    #[napi(catch_unwind)]
    pub fn take_durations(&self) -> Float64Array {
        Float64Array::new(self.handle.take_durations())
    }

    /// `client.health()`'s numbers (see [`NativeHealth`]), read without waiting for the task.
    #[napi(catch_unwind)]
    pub fn health(&self) -> NativeHealth {
        let outbox = self.store.as_ref().map(|store| store.stats());
        let expires_at = self
            .credentials
            .as_ref()
            .map(|c| c.certificate().not_after as f64 * 1000.0);
        NativeHealth::of(&self.handle.stats(), outbox.as_ref(), expires_at)
    }

    /// Makes the client's task panic: the test suite's proof that a panic in the core reaches
    /// JavaScript as an `error`, not as an abort. Refused unless `IMT_GATEWAY_TEST_HOOKS=1`
    /// was in the environment when the addon loaded (the tests that need it set it), so the
    /// binary that ships, and is tested, cannot be crashed by it in production.
    #[napi(js_name = "__crash", catch_unwind)]
    pub fn crash(&self) -> Result<()> {
        if !super::test_hooks() {
            return Err(napi::Error::from_reason(
                "__crash is a test hook (IMT_GATEWAY_TEST_HOOKS=1 when the addon loads)",
            ));
        }
        run_command(&self.handle, Command::Crash);
        Ok(())
    }

    /// The `lookup` option's answer to lookup `id`: `code` and `message` when its callback
    /// gave an error, else the addresses. Lets the client act on it at once.
    #[napi(catch_unwind)]
    pub fn lookup_done(
        &self,
        id: u32,
        code: Option<String>,
        message: Option<String>,
        addresses: Vec<String>,
    ) {
        if let Some(lookups) = &self.lookups {
            let error = code.map(|code| (code, message.unwrap_or_default()));
            super::uv::run_after(|| lookups.answer(id, error, addresses));
        }
    }

    /// Keeps the Node process alive while the client has work.
    #[napi(js_name = "ref", catch_unwind)]
    pub fn refer(&self, env: Env) -> Result<()> {
        self.keep_alive(env, true)
    }

    /// Lets the Node process exit even though the client has work.
    #[napi(catch_unwind)]
    pub fn unref(&self, env: Env) -> Result<()> {
        self.keep_alive(env, false)
    }
}

/// Where the client goes, from the `servername`, `proxy` and `lookup` options.
struct RouteOptions {
    resolver: Arc<dyn crate::client::Resolve>,
    lookups: Option<Arc<Lookups>>,
    servername: Option<String>,
    proxy: ProxyChoice,
}

/// Reads the route options, refusing a server name or proxy URL that cannot be used with
/// `ERR_INVALID_ARG_VALUE` (a proxy's password is never repeated).
fn route(options: &mut NativeClientOptions) -> Result<RouteOptions, ErrorCode> {
    let servername = match &options.servername {
        Some(name) => {
            rustls_pki_types::ServerName::try_from(name.as_str()).map_err(|_| {
                thrown(
                    ErrorCode::InvalidValue,
                    format!("options.servername {name:?} is not a DNS name or an IP address."),
                )
            })?;
            Some(name.clone())
        }
        None => None,
    };
    let proxy = match (&options.proxy, options.direct) {
        (_, Some(true)) => ProxyChoice::Direct,
        (Some(url), _) => ProxyChoice::Through(
            Proxy::parse(url)
                .map_err(|why| thrown(ErrorCode::InvalidValue, format!("options.proxy: {why}.")))?,
        ),
        (None, _) => ProxyChoice::Environment,
    };
    let (resolver, lookups): (Arc<dyn crate::client::Resolve>, _) = match options.lookup.take() {
        Some(call) => {
            let lookups = Arc::new(Lookups::default());
            let resolver = JsLookup {
                call,
                lookups: lookups.clone(),
            };
            (Arc::new(resolver), Some(lookups))
        }
        None => (Arc::new(crate::client::SystemResolver), None),
    };
    Ok(RouteOptions {
        resolver,
        lookups,
        servername,
        proxy,
    })
}

/// Hands `command` to the client and, when the client runs on this thread's loop, lets it
/// act now: an acknowledgement or an event is on the wire before the call returns.
fn run_command(handle: &ClientHandle, command: Command) {
    super::uv::run_after(|| {
        handle.command(command);
    });
}

impl NativeClient {
    fn keep_alive(&self, env: Env, on: bool) -> Result<()> {
        if self.sink.aborted() {
            return Ok(());
        }
        let (env, sink) = (env.raw(), self.sink.raw());
        // SAFETY: `env` is this method call's environment, on its thread, and `sink` is the
        // client's threadsafe function, not yet released (`aborted()` was false just above,
        // on this thread, which is where it is released).
        napi::check_status!(unsafe {
            if on {
                sys::napi_ref_threadsafe_function(env, sink)
            } else {
                sys::napi_unref_threadsafe_function(env, sink)
            }
        })
    }
}
