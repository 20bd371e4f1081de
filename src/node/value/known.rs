//! What the walk of `encode.rs` compares every object with: the key `constructor`, and the
//! classes it tells apart by identity (`Object`, `Buffer`, `Date`), kept by reference for one
//! environment per thread and released by an environment cleanup hook.
//!
//! JavaScript this may run: `napi_get_named_property` on `globalThis` (a getter or a Proxy
//! there, for `Object`, `Buffer`, `Date`). The rest reads or makes values and references.

use std::ffi::c_void;
use std::ptr;

use napi::{check_status, sys, Result};

use super::global;
use super::to_js::string;

/// What the encoder looks at on every object, made once per encoding so that no property
/// name is made from UTF-8 per object: the key `constructor`, and the classes told apart by
/// identity without reading their names, `Object`, and (`more`, looked up at the first object
/// of another class) `Buffer` and `Date` (undefined when the host has no such function); the
/// classes are kept by reference per environment.
#[derive(Clone, Copy)]
pub(super) struct Known {
    pub(super) constructor: sys::napi_value,
    pub(super) object: sys::napi_value,
    pub(super) more: Option<(sys::napi_value, sys::napi_value)>,
}

thread_local! {
    /// References to `Object`, `Buffer` and `Date` (null when there is no function to refer
    /// to) and to a one-element array holding the key `constructor` as V8 interns it, for one
    /// environment of this thread, the first to encode.
    static KNOWN: std::cell::RefCell<Option<(usize, [sys::napi_ref; 4])>> =
        const { std::cell::RefCell::new(None) };
}

/// The key `constructor` as V8 keeps property names (internalized), in a one-element array
/// (Node-API 8 refers to objects only, not to strings): a key made from UTF-8 on every
/// encoding would be hashed and looked up in V8's string table by every property read with it.
///
/// # Safety
///
/// `env` is current on this, its JavaScript thread, inside a handle scope, where the values
/// made here live.
unsafe fn constructor_key_holder(env: sys::napi_env) -> Result<sys::napi_value> {
    let mut object = ptr::null_mut();
    let mut undefined = ptr::null_mut();
    let mut keys = ptr::null_mut();
    // SAFETY: `env` is current, in a handle scope (the caller's guarantee); `object` is the
    // plain object made by the first call, a handle of that scope, and the out-pointers are
    // locals. Listing the keys of an ordinary object calls no trap; setting `constructor` runs
    // JavaScript only if a program made `Object.prototype.constructor` an accessor, and no
    // pointer into a JavaScript object is held meanwhile.
    unsafe {
        check_status!(sys::napi_create_object(env, &mut object))?;
        check_status!(sys::napi_get_undefined(env, &mut undefined))?;
        check_status!(sys::napi_set_named_property(
            env,
            object,
            c"constructor".as_ptr(),
            undefined
        ))?;
        check_status!(sys::napi_get_all_property_names(
            env,
            object,
            sys::KeyCollectionMode::own_only,
            sys::KeyFilter::enumerable | sys::KeyFilter::skip_symbols,
            sys::KeyConversion::keep_numbers,
            &mut keys
        ))?;
    }
    Ok(keys)
}

/// The cached references of `env`, if it is the environment [`KNOWN`] serves.
fn known_refs(env: sys::napi_env) -> Option<[sys::napi_ref; 4]> {
    KNOWN.with(|k| {
        k.borrow()
            .as_ref()
            .filter(|(owner, _)| *owner == env as usize)
            .map(|(_, refs)| *refs)
    })
}

/// The value `reference` holds, or undefined for a null one (no such function).
///
/// # Safety
///
/// `env` is current on this, its JavaScript thread, inside a handle scope; `reference` is
/// null or a live reference of `env` (one of [`KNOWN`]'s for it).
unsafe fn referred(env: sys::napi_env, reference: sys::napi_ref) -> Result<sys::napi_value> {
    let mut value = ptr::null_mut();
    if reference.is_null() {
        // SAFETY: `env` is current, in a handle scope (the caller's guarantee); the
        // out-pointer is a local.
        check_status!(unsafe { sys::napi_get_undefined(env, &mut value) })?;
    } else {
        // SAFETY: as above, and `reference` is a live reference of `env` (the caller's
        // guarantee). Runs no JavaScript.
        check_status!(unsafe { sys::napi_get_reference_value(env, reference, &mut value) })?;
    }
    Ok(value)
}

/// The key `constructor` and `Object`: what every object is compared with.
///
/// # Safety
///
/// `env` is current on this, its JavaScript thread, inside a handle scope, where the values
/// read live.
pub(super) unsafe fn known(env: sys::napi_env) -> Result<Known> {
    if let Some(refs) = known_refs(env) {
        // SAFETY: `env` is current, in a handle scope (the caller's guarantee), and `refs`
        // are `KNOWN`'s for `env`, live until its cleanup hook; `holder` is the one-element
        // array of `constructor_key_holder`, whose element 0 is a data property (no getter),
        // and the out-pointer is a local.
        unsafe {
            let object = referred(env, refs[0])?;
            let holder = referred(env, refs[3])?;
            let mut constructor = ptr::null_mut();
            check_status!(sys::napi_get_element(env, holder, 0, &mut constructor))?;
            return Ok(Known {
                constructor,
                object,
                more: None,
            });
        }
    }
    // SAFETY: as above. `global` may run JavaScript (getters on `globalThis`); no pointer into
    // a JavaScript object is held meanwhile.
    let (constructor, classes) = unsafe {
        (
            string(env, "constructor")?,
            [
                global(env, c"Object")?,
                global(env, c"Buffer")?,
                global(env, c"Date")?,
            ],
        )
    };
    if KNOWN.with(|k| k.borrow().is_none()) {
        let mut refs = [ptr::null_mut(); 4];
        for (reference, value) in refs.iter_mut().zip(classes) {
            let mut kind = 0;
            // SAFETY: as above; `value` was read into this scope just above, and the
            // out-pointers are locals (`reference`, an element of `refs`).
            unsafe {
                check_status!(sys::napi_typeof(env, value, &mut kind))?;
                if kind == sys::ValueType::napi_function {
                    check_status!(sys::napi_create_reference(env, value, 1, reference))?;
                }
            }
        }
        // SAFETY: as above. The references are kept in `KNOWN` for `env` and deleted by
        // `forget_known`, the cleanup hook registered for `env` here, with `env` as its
        // argument.
        unsafe {
            let holder = constructor_key_holder(env)?;
            check_status!(sys::napi_create_reference(env, holder, 1, &mut refs[3]))?;
            KNOWN.with(|k| *k.borrow_mut() = Some((env as usize, refs)));
            check_status!(sys::napi_add_env_cleanup_hook(
                env,
                Some(forget_known),
                env.cast()
            ))?;
        }
    }
    let [object, buffer, date] = classes;
    Ok(Known {
        constructor,
        object,
        more: Some((buffer, date)),
    })
}

/// `Buffer` and `Date` (undefined when the host has no such function), needed only for an
/// object whose class is not `Object`.
///
/// # Safety
///
/// As [`known`].
pub(super) unsafe fn buffer_and_date(
    env: sys::napi_env,
) -> Result<(sys::napi_value, sys::napi_value)> {
    // SAFETY: `env` is current, in a handle scope (the caller's guarantee), and `refs` are
    // `KNOWN`'s for `env`, live until its cleanup hook. `global` may run JavaScript (getters
    // on `globalThis`); no pointer into a JavaScript object is held meanwhile.
    unsafe {
        match known_refs(env) {
            Some(refs) => Ok((referred(env, refs[1])?, referred(env, refs[2])?)),
            None => Ok((global(env, c"Buffer")?, global(env, c"Date")?)),
        }
    }
}

/// The environment that made [`KNOWN`] is going away: its references go with it.
///
/// # Safety
///
/// Called by Node as the cleanup hook registered by [`known`], on the environment's
/// JavaScript thread: `env` is that environment, still able to delete its references.
unsafe extern "C" fn forget_known(env: *mut c_void) {
    let env: sys::napi_env = env.cast();
    let taken = KNOWN.with(|k| {
        let mut k = k.borrow_mut();
        match k.as_ref() {
            Some((owner, _)) if *owner == env as usize => k.take(),
            _ => None,
        }
    });
    if let Some((_, refs)) = taken {
        for reference in refs.into_iter().filter(|r| !r.is_null()) {
            // SAFETY: `env` is the environment going away, on its thread (the caller's
            // guarantee), and `reference` one of its references, taken out of `KNOWN` above
            // so deleted once.
            unsafe { sys::napi_delete_reference(env, reference) };
        }
    }
}
