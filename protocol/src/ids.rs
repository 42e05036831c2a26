//! Validated identifiers. Jobs and workers are named by random UUIDs (they
//! are created by many parties and shown to people); units and replicas by
//! database integers (there are millions, and only their owner may use them).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// An id that did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseIdError(&'static str);

impl fmt::Display for ParseIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a valid {}", self.0)
    }
}

impl std::error::Error for ParseIdError {}

macro_rules! uuid_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("The id of a ", $what, ".")]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn random() -> Self {
                $name(Uuid::new_v4())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s)
                    .map($name)
                    .map_err(|_| ParseIdError(concat!($what, " id (a UUID)")))
            }
        }
    };
}

macro_rules! int_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("The id of a ", $what, ".")]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        /// Refuses zero and negative numbers, as parsing does: the
        /// coordinator numbers rows from 1.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let n = i64::deserialize(d)?;
                if n > 0 {
                    Ok($name(n))
                } else {
                    Err(serde::de::Error::custom(concat!(
                        "a ",
                        $what,
                        " id is a positive integer"
                    )))
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse::<i64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map($name)
                    .ok_or(ParseIdError(concat!($what, " id (a positive integer)")))
            }
        }
    };
}

uuid_id!(JobId, "job");
uuid_id!(WorkerId, "worker");
int_id!(UnitId, "unit");
int_id!(ReplicaId, "replica");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_only_their_own_shape() {
        let j = JobId::random();
        assert_eq!(j.to_string().parse::<JobId>().unwrap(), j);
        assert!("42".parse::<JobId>().is_err());
        assert_eq!("42".parse::<UnitId>().unwrap(), UnitId(42));
        assert!("-1".parse::<ReplicaId>().is_err());
        assert!("x".parse::<ReplicaId>().is_err());
        assert_eq!(serde_json::from_str::<UnitId>("7").unwrap(), UnitId(7));
        let e = serde_json::from_str::<ReplicaId>("0").unwrap_err();
        assert!(
            e.to_string().contains("a replica id is a positive integer"),
            "{e}"
        );
        assert!(serde_json::from_str::<ReplicaId>("-3").is_err());
    }
}
