//! Order-preserving key codecs and value codecs for typed tables.
//!
//! Keys: a `u64` is 8 big-endian bytes; a string is its bytes with `0x00` escaped as `0x00 0xFF`,
//! ended by `0x00 0x01`. Both sort as their values do, and a tuple is its parts in order, so a
//! prefix of a tuple encodes to a byte prefix of the whole and prefix scans find exactly its keys.

use ruma::{OwnedDeviceId, OwnedRoomId, OwnedUserId};
use serde::{Serialize, de::DeserializeOwned};

use super::StorageError;

const ESCAPE: u8 = 0x00;
const ESCAPED_ZERO: u8 = 0xFF;
const TERMINATOR: u8 = 0x01;

pub trait KeyCodec: Sized {
    fn encode_into(&self, out: &mut Vec<u8>);
    /// Decodes one value from the front of `bytes`, returning the rest.
    fn decode_from(bytes: &[u8]) -> Result<(Self, &[u8]), StorageError>;

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
    fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let (value, rest) = Self::decode_from(bytes)?;
        if rest.is_empty() { Ok(value) } else { Err(StorageError("trailing bytes in key".into())) }
    }
}

impl KeyCodec for u64 {
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_bytes());
    }
    fn decode_from(bytes: &[u8]) -> Result<(Self, &[u8]), StorageError> {
        let (head, rest) = bytes.split_first_chunk::<8>().ok_or_else(|| StorageError("short u64 key".into()))?;
        Ok((u64::from_be_bytes(*head), rest))
    }
}

fn encode_str(s: &str, out: &mut Vec<u8>) {
    for &byte in s.as_bytes() {
        out.push(byte);
        if byte == ESCAPE {
            out.push(ESCAPED_ZERO);
        }
    }
    out.extend_from_slice(&[ESCAPE, TERMINATOR]);
}

fn decode_str(bytes: &[u8]) -> Result<(String, &[u8]), StorageError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == ESCAPE {
            match bytes.get(i + 1) {
                Some(&TERMINATOR) => {
                    let s = String::from_utf8(out).map_err(|_| StorageError("key is not UTF-8".into()))?;
                    return Ok((s, &bytes[i + 2..]));
                }
                Some(&ESCAPED_ZERO) => {
                    out.push(0);
                    i += 2;
                }
                _ => return Err(StorageError("bad escape in string key".into())),
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Err(StorageError("unterminated string key".into()))
}

impl KeyCodec for String {
    fn encode_into(&self, out: &mut Vec<u8>) {
        encode_str(self, out);
    }
    fn decode_from(bytes: &[u8]) -> Result<(Self, &[u8]), StorageError> {
        decode_str(bytes)
    }
}

/// Matrix identifiers are keyed by their string form.
macro_rules! id_key {
    ($($ty:ty),*) => {$(
        impl KeyCodec for $ty {
            fn encode_into(&self, out: &mut Vec<u8>) {
                encode_str(self.as_str(), out);
            }
            fn decode_from(bytes: &[u8]) -> Result<(Self, &[u8]), StorageError> {
                let (s, rest) = decode_str(bytes)?;
                let id = <$ty>::try_from(s).map_err(|e| StorageError(format!("bad id in key: {e}")))?;
                Ok((id, rest))
            }
        }
    )*};
}
id_key!(OwnedUserId, OwnedDeviceId, OwnedRoomId);

macro_rules! tuple_key {
    ($($name:ident),+) => {
        impl<$($name: KeyCodec),+> KeyCodec for ($($name,)+) {
            #[allow(non_snake_case)]
            fn encode_into(&self, out: &mut Vec<u8>) {
                let ($($name,)+) = self;
                $($name.encode_into(out);)+
            }
            #[allow(non_snake_case)]
            fn decode_from(bytes: &[u8]) -> Result<(Self, &[u8]), StorageError> {
                let rest = bytes;
                $(let ($name, rest) = $name::decode_from(rest)?;)+
                Ok((($($name,)+), rest))
            }
        }
    };
}
tuple_key!(A);
tuple_key!(A, B);
tuple_key!(A, B, C);
tuple_key!(A, B, C, D);

pub trait ValueCodec: Sized {
    fn encode_value(&self) -> Result<Vec<u8>, StorageError>;
    fn decode_value(bytes: &[u8]) -> Result<Self, StorageError>;
}

/// Marker trait: values of these types are stored as JSON.
pub trait JsonValue: Serialize + DeserializeOwned {}

impl<T: JsonValue> ValueCodec for T {
    fn encode_value(&self) -> Result<Vec<u8>, StorageError> {
        serde_json::to_vec(self).map_err(|e| StorageError(format!("encode value: {e}")))
    }
    fn decode_value(bytes: &[u8]) -> Result<Self, StorageError> {
        serde_json::from_slice(bytes).map_err(|e| StorageError(format!("decode value: {e}")))
    }
}

impl JsonValue for u64 {}
impl JsonValue for () {}
impl JsonValue for Vec<u64> {}
impl JsonValue for (u64, u64) {}
impl JsonValue for (String, String) {}
impl JsonValue for ruma::OwnedRoomId {}
impl JsonValue for ruma::OwnedUserId {}
impl JsonValue for String {}
impl JsonValue for serde_json::Value {}
impl JsonValue for Box<serde_json::value::RawValue> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_sort_as_their_values_and_round_trip() {
        let values = ["", "\0", "\0\0", "a", "a\0b", "ab", "b"];
        let encoded: Vec<Vec<u8>> = values.iter().map(|v| v.to_string().encode()).collect();
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(encoded, sorted);
        for (value, bytes) in values.iter().zip(&encoded) {
            assert_eq!(String::decode(bytes).unwrap(), *value);
        }
    }

    #[test]
    fn tuple_prefix_is_a_byte_prefix() {
        let whole = ("@a:x".to_owned(), "DEV".to_owned(), 7u64).encode();
        let prefix = ("@a:x".to_owned(),).encode();
        assert!(whole.starts_with(&prefix));
        let other = ("@a:xy".to_owned(), "DEV".to_owned(), 7u64).encode();
        assert!(!other.starts_with(&prefix));
        let decoded = <(String, String, u64)>::decode(&whole).unwrap();
        assert_eq!(decoded, ("@a:x".to_owned(), "DEV".to_owned(), 7));
    }

    #[test]
    fn corrupt_keys_are_errors_not_panics() {
        for bytes in [&b"abc"[..], &[0x00, 0x05], &[1, 2, 3]] {
            assert!(String::decode(bytes).is_err());
            assert!(u64::decode(bytes).is_err());
        }
    }
}
