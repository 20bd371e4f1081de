//! The actions the gateway delivered: an action's id as the session keeps it ([`ActionKey`])
//! and the table of those delivered on the current connection and not yet acknowledged
//! ([`Delivered`]).

use crate::protocol::value::write_str;
use crate::protocol::{encode_into, Value};
use crate::spare;
use bytes::Bytes;
use std::cell::Cell;
use std::collections::HashMap;

/// An action's id as the session keeps it until the application acknowledges the action: its
/// MessagePack encoding, in memory of its own. Never a slice of the frame that brought it (a
/// large id would keep the whole frame alive) and never memory JavaScript can write into (a
/// Buffer over the frame's bytes, see `node::value`): what the acknowledgement says is what the
/// server sent. Two ids are the same action's when their encodings are equal, so matching an
/// acknowledgement is a hash lookup.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActionKey(Bytes);

thread_local! {
    /// Where [`ActionKey::from`] encodes an id before copying it into memory of its exact size.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

impl ActionKey {
    /// The id's MessagePack encoding.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// The key of the string id `id`: the key `ActionKey::from(&Value::String(id))` is, made
    /// without the value.
    pub fn string(id: &str) -> ActionKey {
        ActionKey::encoded(|out| write_str(id, out))
    }

    /// The key of the encoding `write` makes: encoded into this thread's scratch list, then
    /// copied once (an encoding grown in a list of its own costs an allocation at each growth,
    /// and another to freeze a list with room to spare).
    fn encoded(write: impl FnOnce(&mut Vec<u8>)) -> ActionKey {
        let mut scratch = spare::take(&SCRATCH);
        write(&mut scratch);
        let key = ActionKey(Bytes::copy_from_slice(&scratch));
        spare::keep(&SCRATCH, scratch, 4096);
        key
    }
}

impl From<&Value> for ActionKey {
    fn from(id: &Value) -> ActionKey {
        ActionKey::encoded(|out| encode_into(id, out))
    }
}

impl From<Value> for ActionKey {
    fn from(id: Value) -> ActionKey {
        ActionKey::from(&id)
    }
}

/// Ids of the actions delivered on the current connection and not yet acknowledged, with how
/// many times each was (a server may deliver one id again before its acknowledgement). The
/// first [`FEW`] are kept in a list, searched by comparing encodings, which for the action or
/// two a device has open costs less than hashing an id twice; more go to a hash map. Every
/// operation is O(1).
#[derive(Debug, Default)]
pub(super) struct Delivered {
    few: Vec<(ActionKey, u32)>,
    /// Made at the first id past [`FEW`], and boxed: every client's task holds a session, and
    /// a pointer is a sixth of an empty map.
    #[allow(clippy::box_collection)]
    many: Option<Box<HashMap<ActionKey, u32>>>,
}

/// How many ids [`Delivered`] keeps in its list.
const FEW: usize = 8;

impl Delivered {
    /// One more delivery of `key`.
    pub(super) fn deliver(&mut self, key: ActionKey) {
        if let Some((_, count)) = self.few.iter_mut().find(|(k, _)| *k == key) {
            *count += 1;
        } else if let Some(count) = self.many.as_mut().and_then(|many| many.get_mut(&key)) {
            *count += 1;
        } else if self.few.len() < FEW {
            self.few.push((key, 1));
        } else {
            self.many.get_or_insert_default().insert(key, 1);
        }
    }

    /// Takes one delivery of `key` off the table: false when none awaits its acknowledgement.
    pub(super) fn acknowledge(&mut self, key: &ActionKey) -> bool {
        if let Some(at) = self.few.iter().position(|(k, _)| k == key) {
            self.few[at].1 -= 1;
            if self.few[at].1 == 0 {
                self.few.swap_remove(at);
            }
            return true;
        }
        let Some(many) = self.many.as_mut() else {
            return false;
        };
        let Some(count) = many.get_mut(key) else {
            return false;
        };
        *count -= 1;
        if *count == 0 {
            many.remove(key);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_delivery_is_acknowledged_once() {
        let key = ActionKey::from(Value::String("a1".into()));
        let mut delivered = Delivered::default();
        assert!(!delivered.acknowledge(&key), "never delivered");
        delivered.deliver(key.clone());
        delivered.deliver(key.clone());
        assert!(delivered.acknowledge(&key));
        assert!(delivered.acknowledge(&key));
        assert!(!delivered.acknowledge(&key), "both deliveries answered");
        assert_eq!(
            crate::protocol::decode(key.bytes()),
            Ok(Value::String("a1".into()))
        );
    }

    #[test]
    fn a_string_ids_key_is_the_key_of_its_value() {
        for id in [
            "",
            "a1",
            "x".repeat(31).as_str(),
            "y".repeat(32).as_str(),
            "\u{436}".repeat(200).as_str(),
            "z".repeat(70_000).as_str(),
        ] {
            assert_eq!(
                ActionKey::string(id),
                ActionKey::from(Value::String(id.into())),
                "{} bytes",
                id.len()
            );
        }
    }

    #[test]
    fn many_open_deliveries_are_each_acknowledged_once_wherever_they_are_kept() {
        let keys: Vec<ActionKey> = (0..3 * FEW)
            .map(|n| ActionKey::from(Value::String(format!("a{n}").into())))
            .collect();
        let mut delivered = Delivered::default();
        // Each delivered twice, the second time after all the others: some in the list,
        // some in the map.
        for key in keys.iter().chain(&keys) {
            delivered.deliver(key.clone());
        }
        assert_eq!(delivered.few.len(), FEW);
        // Acknowledged in another order, as an application may: each twice, then no more.
        for key in keys.iter().rev().chain(&keys) {
            assert!(delivered.acknowledge(key), "{key:?}");
        }
        for key in &keys {
            assert!(
                !delivered.acknowledge(key),
                "{key:?} answered twice already"
            );
        }
        assert!(delivered.few.is_empty() && delivered.many.as_ref().is_some_and(|m| m.is_empty()));
        // The list takes new ids again once emptied.
        delivered.deliver(keys[0].clone());
        assert_eq!(delivered.few.len(), 1);
    }
}
