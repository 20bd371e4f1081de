//! The `lookup` option: names resolved by a JavaScript function with Node's `dns.lookup`
//! signature instead of the system's resolver.
//!
//! The driver never calls JavaScript itself. [`JsLookup::resolve`] files a oneshot under a
//! fresh id and queues `(id, host)` on a threadsafe function (weak: it keeps no process
//! alive), whose JavaScript side (lib/client.js) calls the user's `lookup` on a later turn of
//! the loop, outside any poll of the driver, with no Rust borrow held. The answer comes back
//! through `NativeClient::lookupDone(id, ...)`, a plain native call, which completes the
//! oneshot the resolving future awaits. The same path serves both drivers: on libuv the
//! threadsafe call is dispatched by the loop after the current callback, on tokio it crosses
//! threads.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::FnArgs;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use tokio::sync::oneshot;

use crate::client::{Resolve, Resolving};
use crate::errors::ErrorCode;
use crate::session::SessionError;

/// The JavaScript side of `lookup`, called with `(id, host)`; weak, so it never keeps Node
/// alive (the client's own threadsafe function does while it has work).
pub type LookupFn =
    ThreadsafeFunction<FnArgs<(u32, String)>, (), FnArgs<(u32, String)>, Status, false, true>;

/// What a lookup answers: addresses, or the error its callback gave.
type Answer = Result<Vec<IpAddr>, SessionError>;

/// Lookups waiting for JavaScript's answer, by id.
#[derive(Default)]
pub struct Lookups {
    next: AtomicU32,
    waiting: Mutex<HashMap<u32, oneshot::Sender<Answer>>>,
}

impl Lookups {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, oneshot::Sender<Answer>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Files a lookup: its id and the receiver of its answer. Lookups whose attempt was given
    /// up (the receiver dropped) are forgotten here.
    fn file(&self) -> (u32, oneshot::Receiver<Answer>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut waiting = self.lock();
        waiting.retain(|_, sender| !sender.is_closed());
        waiting.insert(id, tx);
        (id, rx)
    }

    /// JavaScript's answer to lookup `id`: the error (`code`, `message`) its callback gave, or
    /// its addresses. An id answered already, or unknown, is ignored (a callback called twice).
    pub fn answer(&self, id: u32, error: Option<(String, String)>, addresses: Vec<String>) {
        let Some(sender) = self.lock().remove(&id) else {
            return;
        };
        let answer = match error {
            Some((code, message)) => Err(SessionError::new(ErrorCode::Io(code), message)),
            None => addresses
                .iter()
                .map(|address| {
                    address.parse::<IpAddr>().map_err(|_| {
                        SessionError::new(
                            ErrorCode::Io("ERR_INVALID_IP_ADDRESS".into()),
                            format!("lookup gave {address:?}, which is not an IP address"),
                        )
                    })
                })
                .collect(),
        };
        let _ = sender.send(answer);
    }
}

/// A [`Resolve`] that asks the application's `lookup` function.
pub struct JsLookup {
    pub call: LookupFn,
    pub lookups: Arc<Lookups>,
}

impl Resolve for JsLookup {
    fn resolve(&self, host: &str, port: u16) -> Resolving {
        let (id, answer) = self.lookups.file();
        let status = self.call.call(
            FnArgs::from((id, host.to_owned())),
            ThreadsafeFunctionCallMode::NonBlocking,
        );
        let host = host.to_owned();
        Box::pin(async move {
            if status != Status::Ok {
                return Err(io::Error::other(SessionError::new(
                    ErrorCode::Internal,
                    format!("lookup {host} could not be called ({status})"),
                )));
            }
            match answer.await {
                Ok(Ok(addresses)) => Ok(addresses
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect()),
                Ok(Err(err)) => Err(io::Error::other(err)),
                // The client went away with the lookup unanswered.
                Err(_) => Err(io::Error::other(SessionError::new(
                    ErrorCode::NotFound,
                    format!("lookup {host} was not answered"),
                ))),
            }
        })
    }
}
