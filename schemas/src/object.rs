//! Deserializing a struct from a JSON object only. Derived `Deserialize` impls also accept a
//! struct as an array of its field values (`["m_1", "cmd.ride.start", ...]`), a form the JSON
//! Schemas refuse; decoding goes through [`Object`] so that it refuses it too.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

/// A `T` read from a JSON object, never from an array.
#[derive(Debug)]
pub(crate) struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Only<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Only<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(Only(PhantomData)).map(Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Pair {
        a: u8,
        b: u8,
    }

    #[test]
    fn objects_pass_and_arrays_are_refused() {
        assert_eq!(
            serde_json::from_str::<Object<Pair>>(r#"{"a":1,"b":2}"#)
                .unwrap()
                .0
                .b,
            2
        );
        assert!(serde_json::from_str::<Pair>("[1,2]").is_ok());
        assert_eq!(
            serde_json::from_str::<Object<Pair>>("[1,2]")
                .unwrap_err()
                .to_string(),
            "invalid type: sequence, expected a JSON object at line 1 column 0"
        );
        assert!(serde_json::from_str::<Object<Pair>>(r#"{"a":1,"b":2,"c":3}"#).is_err());
    }
}
