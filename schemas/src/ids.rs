//! Identifier newtypes. Every id ends up as the last token of a NATS subject, so each one refuses
//! anything that is not a valid, wildcard-free subject token.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// The pattern every id matches, also written into the JSON Schemas.
pub const ID_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is {len} bytes long; at most {MAX_ID_LEN} are allowed")]
    TooLong { what: &'static str, len: usize },
    #[error(
        "{what} {value:?} contains {found:?}; only ASCII letters, digits, '_' and '-' are allowed \
         (ids are NATS subject tokens)"
    )]
    InvalidChar {
        what: &'static str,
        value: String,
        found: char,
    },
}

/// Checks that `value` is a valid subject token id; `what` names it in the error.
pub fn validate_token(what: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { what });
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            what,
            len: value.len(),
        });
    }
    if let Some(found) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(IdError::InvalidChar {
            what,
            value: value.to_owned(),
            found,
        });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses and validates an id.
            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate_token($what, &value)?;
                Ok(Self(value))
            }

            /// A new random id with this type's prefix.
            pub fn generate() -> Self {
                Self(format!(concat!($prefix, "{}"), nuid::next()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "description": $what,
                    "pattern": ID_PATTERN,
                })
            }
        }
    };
}

id_type!(
    /// A ride, which is also the saga: every message of a ride's saga carries it.
    RideId, "ride id", "r_"
);
id_type!(
    /// A driver.
    DriverId, "driver id", "d_"
);
id_type!(
    /// A rider (the passenger).
    RiderId, "rider id", "u_"
);
id_type!(
    /// A refund of a ride's captured payment, chosen by whoever asks for it: the same id is the
    /// same refund, however often it is asked for.
    RefundId, "refund id", "rf_"
);
id_type!(
    /// A message; also its `Nats-Msg-Id`, which the stream uses to drop duplicates.
    MessageId, "message id", "m_"
);

impl MessageId {
    /// The id of an output derived deterministically from the input that caused it, so a
    /// redelivered input re-emits identical ids and the stream's duplicate window (and every
    /// consumer's inbox) drops the copies. `label` tells apart several outputs of one input.
    pub fn derive(cause: &MessageId, label: &str) -> MessageId {
        MessageId(format!(
            "m_{:032x}",
            fnv1a_128(&[cause.as_str().as_bytes(), b"/", label.as_bytes()])
        ))
    }

    /// An id derived from any stable key (a deadline, a timer), not from an input message.
    pub fn derive_from_key(key: &str) -> MessageId {
        MessageId(format!("m_{:032x}", fnv1a_128(&[b"key/", key.as_bytes()])))
    }
}

/// FNV-1a, 128-bit: stable across builds and platforms (unlike std's hasher), fast, and good
/// enough to tell message ids apart (not a security boundary).
pub(crate) fn fnv1a_128(parts: &[&[u8]]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut hash = OFFSET;
    for part in parts {
        for byte in *part {
            hash ^= u128::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_subject_wildcards_and_separators() {
        for bad in ["", "a.b", "*", ">", "a b", "é", &"x".repeat(65)] {
            assert!(RideId::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(RideId::parse("r_ABC-123_x").is_ok());
    }

    #[test]
    fn error_names_the_offending_character() {
        let err = DriverId::parse("d.1").unwrap_err().to_string();
        assert!(err.contains("driver id") && err.contains("'.'"), "{err}");
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<RideId>("\"a.b\"").is_err());
        assert_eq!(
            serde_json::from_str::<RideId>("\"r_1\"").unwrap().as_str(),
            "r_1"
        );
    }

    #[test]
    fn derived_ids_are_deterministic_valid_and_distinct() {
        let cause = MessageId::parse("m_input").unwrap();
        let a = MessageId::derive(&cause, "evt.ride.requested");
        assert_eq!(a, MessageId::derive(&cause, "evt.ride.requested"));
        assert_ne!(a, MessageId::derive(&cause, "evt.ride.cancelled"));
        assert!(MessageId::parse(a.as_str()).is_ok());
        assert!(RideId::parse(RideId::generate().as_str()).is_ok());
    }
}
