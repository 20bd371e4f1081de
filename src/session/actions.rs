//! The actions the gateway delivered: an action's id as the session keeps it ([`ActionKey`])
//! and the table of those delivered on the current connection and not yet acknowledged
//! ([`Delivered`]).

use crate::protocol::{decode, Value};
use bytes::Bytes;
use std::collections::HashMap;

/// An action's id as the session keeps it until the application acknowledges the action: its
/// MessagePack encoding, in memory of its own. Never a slice of the frame that brought it (a
/// large id would keep the whole frame alive) and never memory JavaScript can write into (a
/// Buffer over the frame's bytes, see `node::value`): what the acknowledgement says is what the
/// server sent. Two ids are the same action's when their encodings are equal, so matching an
/// acknowledgement is a hash lookup.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActionKey(Bytes);

impl ActionKey {
    /// The id again, to write in the acknowledgement.
    pub fn value(&self) -> Value {
        // The key is an encoding of a decoded value, which decodes (to the same value).
        decode(&self.0).unwrap_or(Value::Nil)
    }

    /// The id's MessagePack encoding.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
}

impl From<&Value> for ActionKey {
    fn from(id: &Value) -> ActionKey {
        ActionKey(Bytes::from(crate::protocol::encode(id)))
    }
}

impl From<Value> for ActionKey {
    fn from(id: Value) -> ActionKey {
        ActionKey::from(&id)
    }
}

/// Ids of the actions delivered on the current connection and not yet acknowledged, with how
/// many times each was (a server may deliver one id again before its acknowledgement).
#[derive(Debug, Default)]
pub(super) struct Delivered(HashMap<ActionKey, u32>);

impl Delivered {
    /// One more delivery of `key`.
    pub(super) fn deliver(&mut self, key: ActionKey) {
        *self.0.entry(key).or_default() += 1;
    }

    /// Takes one delivery of `key` off the table: false when none awaits its acknowledgement.
    /// O(1).
    pub(super) fn acknowledge(&mut self, key: &ActionKey) -> bool {
        let Some(count) = self.0.get_mut(key) else {
            return false;
        };
        *count -= 1;
        if *count == 0 {
            self.0.remove(key);
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
        assert_eq!(key.value(), Value::String("a1".into()));
    }
}
