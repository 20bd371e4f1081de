//! An action's shape: its type and the keys of its parameters, in order. The Node.js client
//! tells JavaScript a shape once (a `shape` notice, see `node::notice`), then hands over each
//! action of that shape as its id, the shape's number and the parameters' values (a
//! `shapedAction` notice), and `lib/client.js` builds the parameters object:
//! `parameters[key] = value`, key by key in order, as `napi_set_property` would, but in
//! JavaScript, where a store costs a few dozen instructions instead of the 1,700 of a Node-API
//! call, and with the type and the keys made as JavaScript strings once instead of once per
//! action (docs/performance.md).
//!
//! A client tells at most [`MAX_SHAPES`] shapes, each of at most [`MAX_KEYS`] keys and
//! [`MAX_BYTES`] bytes of type and keys; an action of any other shape, or whose parameters are
//! not an object, goes to JavaScript whole, as every action did before.

use crate::protocol::Value;

/// How many shapes one client tells JavaScript; later ones are not told.
pub(crate) const MAX_SHAPES: usize = 64;
/// The most keys a shape has.
pub(crate) const MAX_KEYS: usize = 16;
/// The most bytes of type and keys together a shape has.
pub(crate) const MAX_BYTES: usize = 1024;

/// The shapes a client has told JavaScript (or is telling it, in the batch being written),
/// each numbered by its place. Lives on the JavaScript thread, in the client's `DirectCall`:
/// nothing else reads it. Found by comparing type and keys, which for the few shapes a device
/// uses costs less than hashing them first.
#[derive(Default)]
pub(crate) struct Shapes {
    shapes: Vec<Shape>,
    /// How many of them JavaScript has certainly been told (see [`Shapes::settle`]).
    told: usize,
}

/// A type and the keys of parameters, in order.
struct Shape {
    kind: Box<str>,
    keys: Box<[Box<str>]>,
}

/// The shape of an action, as [`Shapes::shape`] finds it.
pub(crate) enum Shaped<'a> {
    /// Told before: its number.
    Known(u32),
    /// New: its number, the type and the keys to tell JavaScript first.
    New(u32, &'a str, &'a [Box<str>]),
}

impl Shapes {
    /// The shape of an action of type `kind` with `parameters`, if it is one a client tells:
    /// parameters that are a map of 1 to [`MAX_KEYS`] keys, and type and keys of at most
    /// [`MAX_BYTES`] bytes. A new shape is numbered while there is room for it.
    pub(crate) fn shape(&mut self, kind: &str, parameters: &Value) -> Option<Shaped<'_>> {
        let Value::Map(entries) = parameters else {
            return None;
        };
        if entries.is_empty() || entries.len() > MAX_KEYS {
            return None;
        }
        let bytes = entries
            .iter()
            .fold(kind.len(), |sum, (key, _)| sum + key.len());
        if bytes > MAX_BYTES {
            return None;
        }
        let same = |shape: &Shape| {
            *shape.kind == *kind
                && shape.keys.len() == entries.len()
                && shape.keys.iter().zip(entries).all(|(a, (b, _))| **a == **b)
        };
        if let Some(at) = self.shapes.iter().position(same) {
            return Some(Shaped::Known(at as u32));
        }
        if self.shapes.len() >= MAX_SHAPES {
            return None;
        }
        self.shapes.push(Shape {
            kind: kind.into(),
            keys: entries.iter().map(|(key, _)| key.as_str().into()).collect(),
        });
        let at = self.shapes.len() - 1;
        let shape = &self.shapes[at];
        Some(Shaped::New(at as u32, &shape.kind, &shape.keys))
    }

    /// The batch written since the last `settle` reached JavaScript (`true`): its new shapes
    /// are known there. Or it did not (the call failed before any JavaScript ran): its new
    /// shapes are forgotten, to be told again with the next action of each.
    pub(crate) fn settle(&mut self, reached: bool) {
        if reached {
            self.told = self.shapes.len();
        } else {
            self.shapes.truncate(self.told);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(keys: &[&str]) -> Value {
        Value::Map(keys.iter().map(|k| ((*k).to_owned(), Value::Nil)).collect())
    }

    fn number(found: Option<Shaped<'_>>) -> Option<(u32, bool)> {
        found.map(|s| match s {
            Shaped::Known(n) => (n, false),
            Shaped::New(n, _, _) => (n, true),
        })
    }

    #[test]
    fn a_shape_is_new_once_then_known_by_type_and_keys_in_order() {
        let mut shapes = Shapes::default();
        // Another order, another split of the same bytes, another type: other shapes. Repeated
        // keys are a shape like any other (each is set in turn, the last one wins).
        let cases: [(&str, &[&str], (u32, bool)); 7] = [
            ("t", &["a", "b"], (0, true)),
            ("t", &["a", "b"], (0, false)),
            ("t", &["b", "a"], (1, true)),
            ("t", &["ab"], (2, true)),
            ("u", &["a", "b"], (3, true)),
            ("t", &["a", "a"], (4, true)),
            ("t", &["b", "a"], (1, false)),
        ];
        for (kind, keys, expected) in cases {
            assert_eq!(
                number(shapes.shape(kind, &map(keys))),
                Some(expected),
                "{kind} {keys:?}"
            );
        }
    }

    #[test]
    fn parameters_that_are_no_small_object_have_no_shape() {
        let mut shapes = Shapes::default();
        assert!(shapes.shape("t", &Value::Nil).is_none());
        assert!(shapes.shape("t", &Value::Array(vec![])).is_none());
        assert!(shapes.shape("t", &map(&[])).is_none());
        let many: Vec<String> = (0..=MAX_KEYS).map(|i| format!("k{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(shapes.shape("t", &map(&many)).is_none());
        assert!(shapes.shape("t", &map(&many[..MAX_KEYS])).is_some());
        let long = "x".repeat(MAX_BYTES);
        assert!(shapes.shape("t", &map(&[&long])).is_none());
        assert!(shapes.shape("", &map(&[&long])).is_some());
    }

    #[test]
    fn a_client_tells_at_most_max_shapes_and_forgets_those_of_a_batch_that_never_arrived() {
        let mut shapes = Shapes::default();
        for i in 0..MAX_SHAPES {
            assert_eq!(
                number(shapes.shape(&format!("t{i}"), &map(&["a"]))),
                Some((i as u32, true))
            );
        }
        assert!(shapes.shape("another", &map(&["a"])).is_none());
        assert_eq!(number(shapes.shape("t3", &map(&["a"]))), Some((3, false)));
        shapes.settle(true);
        assert_eq!(shapes.told, MAX_SHAPES);

        let mut shapes = Shapes::default();
        shapes.shape("t", &map(&["a"]));
        shapes.settle(true);
        shapes.shape("u", &map(&["a"]));
        shapes.settle(false);
        // The batch that told "u" never reached JavaScript: "u" is new again, "t" is not.
        assert_eq!(number(shapes.shape("u", &map(&["a"]))), Some((1, true)));
        assert_eq!(number(shapes.shape("t", &map(&["a"]))), Some((0, false)));
    }
}
