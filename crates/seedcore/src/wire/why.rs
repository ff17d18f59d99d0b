//! The message of a failed serialization.
//!
//! postcard reports every error raised by a type's own `Serialize` impl as
//! `SerdeSerCustom`, without its text. When an encoding fails that way the
//! value is walked again by [`Sink`], a serializer that writes nothing and
//! keeps the message, so that the user's own words reach the error.

use serde::ser::{self, Serialize};
use std::fmt;

/// The message a value's `Serialize` impl gives when it fails, if it fails
/// (and fails the same way twice).
pub(crate) fn serialize_error<T: Serialize + ?Sized>(value: &T) -> Option<String> {
    value.serialize(Sink).err().map(|Message(m)| m)
}

/// The text of a failed encoding: the value's own message where it gave
/// one, else the codec's error.
pub(crate) fn describe<T: Serialize + ?Sized>(value: &T, e: &postcard::Error) -> String {
    match e {
        postcard::Error::SerdeSerCustom => serialize_error(value).unwrap_or_else(|| e.to_string()),
        _ => e.to_string(),
    }
}

#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

impl ser::Error for Message {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Message(msg.to_string())
    }
}

/// Walks a value, writing nothing.
struct Sink;

macro_rules! accept {
    ($($name:ident($ty:ty)),* $(,)?) => {
        $(fn $name(self, _: $ty) -> Result<(), Message> { Ok(()) })*
    };
}

impl ser::Serializer for Sink {
    type Ok = ();
    type Error = Message;
    type SerializeSeq = Sink;
    type SerializeTuple = Sink;
    type SerializeTupleStruct = Sink;
    type SerializeTupleVariant = Sink;
    type SerializeMap = Sink;
    type SerializeStruct = Sink;
    type SerializeStructVariant = Sink;

    accept!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    );

    fn serialize_none(self) -> Result<(), Message> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), Message> {
        v.serialize(Sink)
    }
    fn serialize_unit(self) -> Result<(), Message> {
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), Message> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Message> {
        v.serialize(Sink)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        v: &T,
    ) -> Result<(), Message> {
        v.serialize(Sink)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Sink, Message> {
        Ok(Sink)
    }
    fn serialize_tuple(self, _: usize) -> Result<Sink, Message> {
        Ok(Sink)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Sink, Message> {
        Ok(Sink)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Sink, Message> {
        Ok(Sink)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Sink, Message> {
        Ok(Sink)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Sink, Message> {
        Ok(Sink)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Sink, Message> {
        Ok(Sink)
    }
    fn collect_str<T: fmt::Display + ?Sized>(self, _: &T) -> Result<(), Message> {
        Ok(())
    }
}

/// The compound serializers: each walks its parts into a fresh `Sink`.
macro_rules! walk_parts {
    ($($trait:ident :: $method:ident),* $(,)?) => {$(
        impl ser::$trait for Sink {
            type Ok = ();
            type Error = Message;
            fn $method<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Message> {
                v.serialize(Sink)
            }
            fn end(self) -> Result<(), Message> {
                Ok(())
            }
        }
    )*};
}

walk_parts!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

/// The named-field serializers: the same, with a field name to ignore.
macro_rules! walk_fields {
    ($($trait:ident),* $(,)?) => {$(
        impl ser::$trait for Sink {
            type Ok = ();
            type Error = Message;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                _: &'static str,
                v: &T,
            ) -> Result<(), Message> {
                v.serialize(Sink)
            }
            fn end(self) -> Result<(), Message> {
                Ok(())
            }
        }
    )*};
}

walk_fields!(SerializeStruct, SerializeStructVariant);

impl ser::SerializeMap for Sink {
    type Ok = ();
    type Error = Message;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), Message> {
        k.serialize(Sink)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Message> {
        v.serialize(Sink)
    }
    fn end(self) -> Result<(), Message> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Refuses;

    impl Serialize for Refuses {
        fn serialize<S: ser::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(ser::Error::custom(
                "refuses: the socket is not serializable",
            ))
        }
    }

    #[test]
    fn the_value_s_own_message_is_kept() {
        let v = (1u32, vec![Some(Refuses)]);
        let e = crate::wire::codec::to_vec(&v, 0).unwrap_err();
        assert_eq!(describe(&v, &e), "refuses: the socket is not serializable");
        assert_eq!(serialize_error(&(1u8, "fine")), None);
    }
}
