//! Deserializers that check a size limit before they allocate.
//!
//! serde's own `Vec` and `String` impls allocate first and let the caller check
//! afterwards. A manifest comes from a peer, so every variable-length field goes
//! through one of these instead: a declared length over the limit is refused
//! before a byte is reserved for it.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, SeqAccess, Visitor};

/// Deserializes a text string of at most `MAX` bytes.
pub fn string<'de, D: Deserializer<'de>, const MAX: usize>(d: D) -> Result<String, D::Error> {
    struct V<const MAX: usize>;
    impl<const MAX: usize> Visitor<'_> for V<MAX> {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a string of at most {MAX} bytes")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            if v.len() > MAX {
                return Err(E::invalid_length(v.len(), &self));
            }
            Ok(v.to_owned())
        }
    }
    d.deserialize_str(V::<MAX>)
}

/// Deserializes an optional text string of at most `MAX` bytes.
pub fn opt_string<'de, D: Deserializer<'de>, const MAX: usize>(
    d: D,
) -> Result<Option<String>, D::Error> {
    struct V<const MAX: usize>;
    impl<'de, const MAX: usize> Visitor<'de> for V<MAX> {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "null or a string of at most {MAX} bytes")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            string::<D, MAX>(d).map(Some)
        }
    }
    d.deserialize_option(V::<MAX>)
}

/// Deserializes a byte string of at most `MAX` bytes.
pub fn bytes<'de, D: Deserializer<'de>, const MAX: usize>(d: D) -> Result<Vec<u8>, D::Error> {
    struct V<const MAX: usize>;
    impl<const MAX: usize> Visitor<'_> for V<MAX> {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a byte string of at most {MAX} bytes")
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            if v.len() > MAX {
                return Err(E::invalid_length(v.len(), &self));
            }
            Ok(v.to_vec())
        }
    }
    d.deserialize_bytes(V::<MAX>)
}

/// The most items reserved up front for a list, whatever its declared length.
const PREALLOCATE_MAX: usize = 1024;

/// Deserializes a list of at most `MAX` items.
pub fn vec<'de, D, T, const MAX: usize>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: de::Deserialize<'de>,
{
    struct V<T, const MAX: usize>(PhantomData<T>);
    impl<'de, T: de::Deserialize<'de>, const MAX: usize> Visitor<'de> for V<T, MAX> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a list of at most {MAX} items")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let declared = seq.size_hint().unwrap_or(0);
            if declared > MAX {
                return Err(de::Error::invalid_length(declared, &self));
            }
            // Reserve for what is declared, but never more than a small
            // bound: the items themselves may still turn out to be missing.
            let mut out = Vec::with_capacity(declared.min(PREALLOCATE_MAX));
            while let Some(item) = seq.next_element()? {
                if out.len() == MAX {
                    return Err(de::Error::invalid_length(MAX + 1, &self));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V::<T, MAX>(PhantomData))
}
