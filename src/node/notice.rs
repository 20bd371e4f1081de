//! The one format in which the native side tells JavaScript what happened, for the client and
//! the server alike: a batch is one flat list of values, `kind, ...fields, kind, ...fields`,
//! rather than an object per notice: no property names to intern and no hidden classes to
//! build on the path every action and acknowledgement takes.
//!
//! The tables here are the format's only definition: a kind's number is its place in its
//! table, and its fields follow it in the order given. A last field named `...name` stands
//! for as many values as the notice says elsewhere (a shaped action's values, one per key of
//! its shape); a notice's width is that of its other fields plus those values. JavaScript
//! reads the tables at load (`noticeFormat()`, read by `lib/notices.js`), and a reader there
//! that expects other kinds or fields fails at load with `ENOTICEFORMAT`; the writer
//! ([`Flat`]) checks in debug builds that each notice has as many fields as its table says,
//! and `__test__/notices.test.js` runs a batch of every kind through the real writers and
//! readers.

use std::cell::Cell;
use std::ptr;

use napi::bindgen_prelude::ToNapiValue;
use napi::{sys, Result};
use napi_derive::napi;

use super::value::{JsValue, JsValueCopy};
use crate::protocol::Value;
use crate::session::{ErrorDetail, SessionError};
use crate::spare;

/// One kind of notice: its name and the fields that follow its number.
pub struct Spec {
    pub name: &'static str,
    pub fields: &'static [&'static str],
}

/// A kind of notice of one side: its number and its [`Spec`].
pub trait Kind: Copy {
    fn number(self) -> u32;
    fn spec(self) -> &'static Spec;
}

/// An enum of kinds and its table, numbered in order, so the two cannot differ.
macro_rules! notices {
    ($(#[$meta:meta])* enum $kind:ident in $table:ident {
        $($(#[$vmeta:meta])* $variant:ident = $name:literal [$($field:literal),*],)*
    }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $kind {
            $($(#[$vmeta])* $variant,)*
        }

        pub const $table: &[Spec] = &[$(Spec { name: $name, fields: &[$($field),*] },)*];

        impl Kind for $kind {
            fn number(self) -> u32 {
                self as u32
            }
            fn spec(self) -> &'static Spec {
                &$table[self as usize]
            }
        }
    };
}

notices! {
    /// What the client tells `lib/client.js`.
    enum ClientKind in CLIENT {
        Connect = "connect" [],
        Drain = "drain" [],
        /// `delivered`: what `ack` passes back for the id when JavaScript could change the id
        /// object (see `node::client::delivered::delivered_handle`), else null.
        Action = "action" ["id", "type", "payload", "delivered"],
        /// The type and parameter keys of the actions of shape number `shape`, told before the
        /// first of them (`crate::shapes`); `keys` is an array of strings.
        Shape = "shape" ["shape", "type", "keys"],
        /// An action whose parameters are an object of a shape told before: its values follow,
        /// one per key of the shape, in its order. `delivered` as for `action`.
        ShapedAction = "shapedAction" ["id", "shape", "delivered", "...values"],
        /// `code` and `message` undefined when the server sent none.
        Acknowledgement = "acknowledgement" ["correlid", "status", "code", "message"],
        /// The event's callback, without error.
        Done = "done" ["seq"],
        /// The event's callback, with that error; `refused` when it is the gateway's verdict (an
        /// acknowledgement with an error), not a local failure.
        Failed = "failed" ["seq", "code", "message", "refused"],
        Reconnect = "reconnect" [],
        Disconnect = "disconnect" [],
        /// `proxyStatus` and `socksReply`: what a refusing proxy answered (`EPROXY`), else null.
        Error = "error" ["code", "message", "proxyStatus", "socksReply"],
        /// The client stopped after an internal error; fail every callback.
        Fatal = "fatal" ["code", "message"],
        /// The client went idle after the `connect()` with this cycle number.
        Idle = "idle" ["cycle"],
        /// Something the client recovered from by itself, never an `error`.
        Recovered = "recovered" ["code", "message"],
        /// The connection's state changed: its name, the reconnect delay in ms (backoff) or
        /// null, and whether an attempt just failed before WELCOME.
        State = "state" ["state", "delay", "failed"],
    }
}

notices! {
    /// What the bundled server tells `lib/server.js`. `connection` is an object
    /// `{id, remoteAddress, remotePort, deviceName, subject}`, null where there is none.
    enum ServerKind in SERVER {
        Connection = "connection" ["connection"],
        Hello = "hello" ["connection"],
        /// `decision` names the verdict `decide()` gives, null when the server decides alone.
        Event = "event" ["connection", "id", "type", "payload", "decision"],
        /// `ticket` names the `queueAction()`, null for an echo; `code` and `message` undefined
        /// when the device sent none.
        Acknowledgement = "acknowledgement" ["connection", "correlid", "ticket", "status", "code", "message"],
        Discarded = "discarded" ["ticket"],
        ClientError = "clientError" ["connection", "code", "message"],
        Disconnect = "disconnect" ["connection"],
        Close = "close" [],
    }
}

/// A kind as `noticeFormat()` gives it.
#[napi(object, object_from_js = false)]
pub struct NoticeSpec {
    pub kind: String,
    pub number: u32,
    pub fields: Vec<String>,
}

#[napi(object, object_from_js = false)]
pub struct NoticeFormat {
    pub client: Vec<NoticeSpec>,
    pub server: Vec<NoticeSpec>,
}

fn specs(table: &[Spec]) -> Vec<NoticeSpec> {
    table
        .iter()
        .enumerate()
        .map(|(number, spec)| NoticeSpec {
            kind: spec.name.to_owned(),
            number: number as u32,
            fields: spec.fields.iter().map(|f| (*f).to_owned()).collect(),
        })
        .collect()
}

/// The notice tables, read by `lib/notices.js` at load.
// napi registers exports only outside `cfg(test)`, so a test build sees no caller.
#[cfg_attr(test, allow(dead_code))]
#[napi(catch_unwind)]
pub fn notice_format() -> NoticeFormat {
    NoticeFormat {
        client: specs(CLIENT),
        server: specs(SERVER),
    }
}

thread_local! {
    /// The list of values of the last batch handed over on this thread ([`Flat::recycle`]).
    static SPARE_VALUES: Cell<Vec<sys::napi_value>> = const { Cell::new(Vec::new()) };
}

/// A batch's values, made in the current handle scope.
pub struct Flat {
    env: sys::napi_env,
    pub values: Vec<sys::napi_value>,
    /// The notice being written: where its kind is in `values`, and its spec.
    open: Option<(usize, &'static Spec)>,
}

impl Flat {
    /// # Safety
    ///
    /// `env` is the environment of the JavaScript thread this runs on, in a handle scope that
    /// outlives the `Flat` and the values it makes.
    pub unsafe fn new(env: sys::napi_env, capacity: usize) -> Flat {
        let mut values = spare::take(&SPARE_VALUES);
        values.reserve(capacity);
        Flat {
            env,
            values,
            open: None,
        }
    }

    /// Gives back a batch's list of values once the call that read them has returned, for the
    /// next [`Flat::new`] on this thread: a batch then costs no allocation for its list.
    pub fn recycle(values: Vec<sys::napi_value>) {
        spare::keep(&SPARE_VALUES, values, 4096);
    }

    /// In debug builds: the notice written last has as many fields as its table says.
    fn check(&self) -> Result<()> {
        if cfg!(debug_assertions) {
            if let Some((at, spec)) = self.open {
                let written = self.values.len() - at - 1;
                let rest = spec.fields.last().is_some_and(|f| f.starts_with("..."));
                let fixed = spec.fields.len() - usize::from(rest);
                let fits = if rest {
                    written > fixed
                } else {
                    written == fixed
                };
                if !fits {
                    return Err(napi::Error::from_reason(format!(
                        "notice {} written with {written} fields, its table has {}",
                        spec.name,
                        spec.fields.len()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The batch is complete (see [`Flat::check`]).
    pub fn finish(self) -> Result<Flat> {
        self.check()?;
        Ok(self)
    }

    fn push(&mut self, value: sys::napi_value) -> Result<()> {
        self.values.push(value);
        Ok(())
    }

    /// The values as one array.
    pub fn into_array(self) -> Result<sys::napi_value> {
        let mut array = ptr::null_mut();
        // SAFETY: `env` and the values are of this thread and its open handle scope (`new`).
        unsafe {
            napi::check_status!(sys::napi_create_array_with_length(
                self.env,
                self.values.len(),
                &mut array
            ))?;
            for (index, &value) in self.values.iter().enumerate() {
                napi::check_status!(sys::napi_set_element(self.env, array, index as u32, value))?;
            }
        }
        Flat::recycle(self.values);
        Ok(array)
    }

    /// Starts a notice of `kind`.
    pub fn kind(&mut self, kind: impl Kind) -> Result<()> {
        self.check()?;
        self.open = Some((self.values.len(), kind.spec()));
        self.number(f64::from(kind.number()))
    }

    pub fn number(&mut self, n: f64) -> Result<()> {
        let mut value = ptr::null_mut();
        // SAFETY: `env` is this thread's, in an open handle scope (`new`).
        napi::check_status!(unsafe { sys::napi_create_double(self.env, n, &mut value) })?;
        self.push(value)
    }

    /// A number, or null.
    pub fn optional_number(&mut self, n: Option<f64>) -> Result<()> {
        match n {
            Some(n) => self.number(n),
            None => self.null(),
        }
    }

    pub fn null(&mut self) -> Result<()> {
        let mut value = ptr::null_mut();
        // SAFETY: `env` is this thread's, in an open handle scope (`new`).
        napi::check_status!(unsafe { sys::napi_get_null(self.env, &mut value) })?;
        self.push(value)
    }

    pub fn string(&mut self, s: &str) -> Result<()> {
        let mut value = ptr::null_mut();
        // SAFETY: `env` is this thread's, in an open handle scope (`new`); `s` is valid UTF-8
        // of the length given.
        napi::check_status!(unsafe {
            sys::napi_create_string_utf8(self.env, s.as_ptr().cast(), s.len() as isize, &mut value)
        })?;
        self.push(value)
    }

    /// A string, or undefined.
    pub fn optional_string(&mut self, s: Option<&str>) -> Result<()> {
        match s {
            Some(s) => self.string(s),
            None => {
                let mut value = ptr::null_mut();
                // SAFETY: `env` is this thread's, in an open handle scope (`new`).
                napi::check_status!(unsafe { sys::napi_get_undefined(self.env, &mut value) })?;
                self.push(value)
            }
        }
    }

    /// A value from the wire (a large binary may share the frame's bytes).
    pub fn value(&mut self, v: Value) -> Result<()> {
        // SAFETY: `env` is this thread's, in an open handle scope (`new`).
        let value = unsafe { JsValue::to_napi_value(self.env, JsValue(v)) }?;
        self.push(value)
    }

    /// A value from the wire with every binary copied (see [`JsValueCopy`]).
    pub fn value_copy(&mut self, v: Value) -> Result<()> {
        // SAFETY: `env` is this thread's, in an open handle scope (`new`).
        let value = unsafe { JsValueCopy::to_napi_value(self.env, JsValueCopy(v)) }?;
        self.push(value)
    }

    /// Any value napi-rs can make.
    pub fn object(&mut self, v: impl ToNapiValue) -> Result<()> {
        // SAFETY: `env` is this thread's, in an open handle scope (`new`).
        let value = unsafe { ToNapiValue::to_napi_value(self.env, v) }?;
        self.push(value)
    }

    /// A value already made in this scope.
    pub fn raw(&mut self, value: sys::napi_value) -> Result<()> {
        self.push(value)
    }

    pub fn env(&self) -> sys::napi_env {
        self.env
    }

    /// `code, message`.
    pub fn error(&mut self, err: SessionError) -> Result<()> {
        self.string(err.code.code())?;
        self.string(&err.message)
    }

    /// `code, message, proxyStatus, socksReply` (the last two null unless a proxy answered).
    pub fn error_detail(&mut self, err: SessionError) -> Result<()> {
        let detail = err.detail;
        self.error(err)?;
        let (status, reply) = match detail {
            Some(ErrorDetail::ProxyStatus(status)) => (Some(f64::from(status)), None),
            Some(ErrorDetail::SocksReply(reply)) => (None, Some(f64::from(reply))),
            None => (None, None),
        };
        self.optional_number(status)?;
        self.optional_number(reply)
    }
}

/// A batch of each side with a notice of every kind, made by the writers the client and the
/// server use: `__test__/notices.test.js` dispatches them through `lib/`'s readers. A test
/// hook (`IMT_GATEWAY_TEST_HOOKS=1` when the addon loaded), as `__crash` is.
#[cfg_attr(test, allow(dead_code))]
#[napi(
    js_name = "__noticeSamples",
    catch_unwind,
    ts_return_type = "{ client: unknown[], server: unknown[] }"
)]
pub fn notice_samples(env: napi::Env) -> Result<super::client::RawValue> {
    if !super::test_hooks() {
        return Err(napi::Error::from_reason(
            "__noticeSamples is a test hook (IMT_GATEWAY_TEST_HOOKS=1 when the addon loads)",
        ));
    }
    let env = env.raw();
    let mut object = ptr::null_mut();
    // SAFETY: `env` is this call's environment, on its thread and in its handle scope, which
    // holds every value made here until the call returns.
    unsafe {
        napi::check_status!(sys::napi_create_object(env, &mut object))?;
        let mut client = Flat::new(env, 64);
        super::client::write_samples(&mut client)?;
        let client = client.finish()?.into_array()?;
        let mut server = Flat::new(env, 64);
        super::server::write_samples(&mut server)?;
        let server = server.finish()?.into_array()?;
        napi::check_status!(sys::napi_set_named_property(
            env,
            object,
            c"client".as_ptr(),
            client
        ))?;
        napi::check_status!(sys::napi_set_named_property(
            env,
            object,
            c"server".as_ptr(),
            server
        ))?;
    }
    Ok(super::client::RawValue(object))
}
