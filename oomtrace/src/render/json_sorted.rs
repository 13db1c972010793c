//! JSON written straight to a byte buffer with every object's keys in sorted order: the bytes
//! `serde_json::to_value(x)?.to_string()` gives (serde_json's `Value` keeps objects in a
//! `BTreeMap`, so the lines oomtrace has always written have sorted keys), without building
//! the `Value` tree (a `String` per key, a node per field, a copy of every string) for each
//! finding. Each object's `"key":value` pairs are written where they fall, their ranges noted
//! with their keys. While the keys come in order (a struct whose fields are declared in key
//! order) nothing moves; at the end of an object whose keys did not, its pairs are put in key
//! order behind it and moved down over it. A key given twice keeps its last value, as `Value`'s
//! map does.

use std::borrow::Cow;

use serde::{
    Serialize,
    ser::{self, Impossible},
};

/// What failed (a map key that is not a string or a number, or a type's own error).
#[derive(Debug)]
pub(crate) struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

pub(crate) type Result<T> = std::result::Result<T, Error>;

/// Appends `v` to `out` as JSON with sorted keys; on an error `out` is as it was.
#[cfg(test)]
pub(crate) fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) -> Result<()> {
    let len = out.len();
    v.serialize(Ser { out }).inspect_err(|_| out.truncate(len))
}

/// One object being written to `out`: its `{` is at `start`, its pairs follow.
pub(crate) struct Object<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
    entries: Vec<Entry>,
    /// Every key so far came after the one before it: the pairs are where they belong.
    in_order: bool,
}

struct Entry {
    key: Cow<'static, str>,
    /// `"key":value` in `out`.
    pair: std::ops::Range<usize>,
}

impl<'a> Object<'a> {
    /// An object to be written at the end of `out`.
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        let start = out.len();
        out.push(b'{');
        Object {
            out,
            start,
            entries: Vec::with_capacity(16),
            in_order: true,
        }
    }

    /// Adds the fields of `v`, a struct or a map (e.g. a derived, internally tagged enum), to
    /// this object, as `Value` would if they were inserted one by one.
    pub(crate) fn merge<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        v.serialize(Into { obj: self })
    }

    /// Adds `key` with the value `v`.
    pub(crate) fn field<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) -> Result<()> {
        self.put(Cow::Borrowed(key), v)
    }

    fn put<T: Serialize + ?Sized>(&mut self, key: Cow<'static, str>, v: &T) -> Result<()> {
        if !self.entries.is_empty() {
            self.out.push(b',');
        }
        let at = self.out.len();
        write_key(self.out, &key);
        v.serialize(Ser {
            out: &mut *self.out,
        })?;
        if self.entries.last().is_some_and(|last| last.key >= key) {
            self.in_order = false;
        }
        self.entries.push(Entry {
            key,
            pair: at..self.out.len(),
        });
        Ok(())
    }

    /// Writes the object's end, its pairs in key order; gives the buffer back. Pairs that came
    /// out of order are copied behind the object in order and then moved down over it: no
    /// allocation.
    pub(crate) fn finish(self) -> &'a mut Vec<u8> {
        let Object {
            out,
            start,
            mut entries,
            in_order,
        } = self;
        if in_order {
            out.push(b'}');
            return out;
        }
        // Of a key given twice the last (the later value) stays last, and is the one kept; an
        // unstable sort with that order allocates nothing.
        entries.sort_unstable_by(|a, b| a.key.cmp(&b.key).then(a.pair.start.cmp(&b.pair.start)));
        let mid = out.len();
        out.push(b'{');
        let mut first = true;
        for (i, e) in entries.iter().enumerate() {
            if entries.get(i + 1).is_some_and(|next| next.key == e.key) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_within(e.pair.clone());
        }
        out.push(b'}');
        out.drain(start..mid);
        out
    }
}

/// `"key":`; a key of printable ASCII without `"` or `\` (every field name) as it is.
fn write_key(out: &mut Vec<u8>, key: &str) {
    if key
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
    } else {
        write_str(out, key);
        out.push(b':');
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Writes the value it is given as JSON, objects with sorted keys.
struct Ser<'a> {
    out: &'a mut Vec<u8>,
}

impl Ser<'_> {
    fn plain<T: Serialize>(self, v: T) -> Result<()> {
        serde_json::to_writer(&mut *self.out, &v).map_err(|e| Error(e.to_string()))
    }
}

/// An array being written.
struct Seq<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl Seq<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        v.serialize(Ser {
            out: &mut *self.out,
        })
    }

    fn close(self) {
        self.out.push(b']');
    }
}

/// A `{"Variant": …}` wrapper around an array or an object (externally tagged variants).
struct Variant<T> {
    inner: T,
}

/// A map or a struct being written, and the map key waiting for its value.
struct Map<'a> {
    obj: Object<'a>,
    key: Option<String>,
    /// Closes a `{"Variant":` wrapper after the object.
    variant: bool,
}

impl<'a> ser::Serializer for Ser<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Seq<'a>;
    type SerializeTuple = Seq<'a>;
    type SerializeTupleStruct = Seq<'a>;
    type SerializeTupleVariant = Variant<Seq<'a>>;
    type SerializeMap = Map<'a>;
    type SerializeStruct = Map<'a>;
    type SerializeStructVariant = Map<'a>;

    fn serialize_bool(self, v: bool) -> Result<()> {
        self.plain(v)
    }
    fn serialize_i8(self, v: i8) -> Result<()> {
        self.plain(v)
    }
    fn serialize_i16(self, v: i16) -> Result<()> {
        self.plain(v)
    }
    fn serialize_i32(self, v: i32) -> Result<()> {
        self.plain(v)
    }
    fn serialize_i64(self, v: i64) -> Result<()> {
        self.plain(v)
    }
    fn serialize_i128(self, v: i128) -> Result<()> {
        // As `Value`: within 64 bits, or an error.
        if let Ok(v) = i64::try_from(v) {
            self.plain(v)
        } else if let Ok(v) = u64::try_from(v) {
            self.plain(v)
        } else {
            Err(Error("number out of range".into()))
        }
    }
    fn serialize_u8(self, v: u8) -> Result<()> {
        self.plain(v)
    }
    fn serialize_u16(self, v: u16) -> Result<()> {
        self.plain(v)
    }
    fn serialize_u32(self, v: u32) -> Result<()> {
        self.plain(v)
    }
    fn serialize_u64(self, v: u64) -> Result<()> {
        self.plain(v)
    }
    fn serialize_u128(self, v: u128) -> Result<()> {
        match u64::try_from(v) {
            Ok(v) => self.plain(v),
            Err(_) => Err(Error("number out of range".into())),
        }
    }
    fn serialize_f32(self, v: f32) -> Result<()> {
        // `Value` keeps an f32 as the f64 it widens to, and writes that.
        self.plain(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<()> {
        self.plain(v)
    }
    fn serialize_char(self, v: char) -> Result<()> {
        self.plain(v)
    }
    fn serialize_str(self, v: &str) -> Result<()> {
        write_str(self.out, v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        self.plain(v)
    }
    fn serialize_none(self) -> Result<()> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<()> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<()> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<()> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _i: u32,
        variant: &'static str,
    ) -> Result<()> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        v: &T,
    ) -> Result<()> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _i: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<()> {
        let mut obj = Object::new(self.out);
        obj.field(variant, v)?;
        obj.finish();
        Ok(())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Seq<'a>> {
        self.out.push(b'[');
        Ok(Seq {
            out: self.out,
            first: true,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq<'a>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Seq<'a>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _i: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Variant<Seq<'a>>> {
        // One key, so no sorting: written in place.
        self.out.push(b'{');
        write_str(self.out, variant);
        self.out.push(b':');
        Ok(Variant {
            inner: self.serialize_seq(Some(len))?,
        })
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Map<'a>> {
        Ok(Map {
            obj: Object::new(self.out),
            key: None,
            variant: false,
        })
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Map<'a>> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _i: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Map<'a>> {
        self.out.push(b'{');
        write_str(self.out, variant);
        self.out.push(b':');
        Ok(Map {
            obj: Object::new(self.out),
            key: None,
            variant: true,
        })
    }
}

/// A sequence, a tuple and a tuple struct are all written as a JSON array.
macro_rules! array_impls {
    ($($trait:ident::$method:ident),*) => {$(
        impl ser::$trait for Seq<'_> {
            type Ok = ();
            type Error = Error;
            fn $method<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
                self.element(v)
            }
            fn end(self) -> Result<()> {
                self.close();
                Ok(())
            }
        }
    )*};
}
array_impls!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field
);

impl ser::SerializeTupleVariant for Variant<Seq<'_>> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        self.inner.element(v)
    }
    fn end(self) -> Result<()> {
        let out = self.inner.out;
        out.extend_from_slice(b"]}");
        Ok(())
    }
}

impl Map<'_> {
    fn close(self) {
        let out = self.obj.finish();
        if self.variant {
            out.push(b'}');
        }
    }
}

impl ser::SerializeMap for Map<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        self.key = Some(key.serialize(KeySer)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        let key = self
            .key
            .take()
            .ok_or_else(|| Error("a map value without its key".into()))?;
        self.obj.put(Cow::Owned(key), v)
    }
    fn end(self) -> Result<()> {
        self.close();
        Ok(())
    }
}

impl ser::SerializeStruct for Map<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) -> Result<()> {
        self.obj.field(key, v)
    }
    fn end(self) -> Result<()> {
        self.close();
        Ok(())
    }
}

impl ser::SerializeStructVariant for Map<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) -> Result<()> {
        self.obj.field(key, v)
    }
    fn end(self) -> Result<()> {
        self.close();
        Ok(())
    }
}

/// A map key as `Value` makes it: a string as is, a number or a bool as its text.
struct KeySer;

fn key_error() -> Error {
    Error("key must be a string".into())
}

impl ser::Serializer for KeySer {
    type Ok = String;
    type Error = Error;
    type SerializeSeq = Impossible<String, Error>;
    type SerializeTuple = Impossible<String, Error>;
    type SerializeTupleStruct = Impossible<String, Error>;
    type SerializeTupleVariant = Impossible<String, Error>;
    type SerializeMap = Impossible<String, Error>;
    type SerializeStruct = Impossible<String, Error>;
    type SerializeStructVariant = Impossible<String, Error>;

    fn serialize_bool(self, v: bool) -> Result<String> {
        Ok(v.to_string())
    }
    fn serialize_i8(self, v: i8) -> Result<String> {
        Ok(v.to_string())
    }
    fn serialize_i16(self, v: i16) -> Result<String> {
        Ok(v.to_string())
    }
    fn serialize_i32(self, v: i32) -> Result<String> {
        Ok(v.to_string())
    }
    fn serialize_i64(self, v: i64) -> Result<String> {
        Ok(v.to_string())
    }
    fn serialize_i128(self, v: i128) -> Result<String> {
        Ok(v.to_string())
    }
    fn serialize_u8(self, v: u8) -> Result<String> {
        Ok(v.to_string())
    }
    fn serialize_u16(self, v: u16) -> Result<String> {
        Ok(v.to_string())
    }
    fn serialize_u32(self, v: u32) -> Result<String> {
        Ok(v.to_string())
    }
    fn serialize_u64(self, v: u64) -> Result<String> {
        Ok(v.to_string())
    }
    fn serialize_u128(self, v: u128) -> Result<String> {
        Ok(v.to_string())
    }
    fn serialize_f32(self, _v: f32) -> Result<String> {
        // `Value` writes a float key its own way: not needed here, refused.
        Err(key_error())
    }
    fn serialize_f64(self, _v: f64) -> Result<String> {
        Err(key_error())
    }
    fn serialize_char(self, v: char) -> Result<String> {
        Ok(v.to_string())
    }
    fn serialize_str(self, v: &str) -> Result<String> {
        Ok(v.to_string())
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<String> {
        Err(key_error())
    }
    fn serialize_none(self) -> Result<String> {
        Err(key_error())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _v: &T) -> Result<String> {
        Err(key_error())
    }
    fn serialize_unit(self) -> Result<String> {
        Err(key_error())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<String> {
        Err(key_error())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _i: u32,
        variant: &'static str,
    ) -> Result<String> {
        Ok(variant.to_string())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        v: &T,
    ) -> Result<String> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _i: u32,
        _variant: &'static str,
        _v: &T,
    ) -> Result<String> {
        Err(key_error())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq> {
        Err(key_error())
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple> {
        Err(key_error())
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct> {
        Err(key_error())
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _i: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        Err(key_error())
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap> {
        Err(key_error())
    }
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self::SerializeStruct> {
        Err(key_error())
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _i: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant> {
        Err(key_error())
    }
}

/// Serializes a struct's or a map's fields into an [`Object`] already open.
struct Into<'o, 'a> {
    obj: &'o mut Object<'a>,
}

/// The fields going into an [`Object`] already open, and the map key waiting for its value.
struct IntoFields<'o, 'a> {
    obj: &'o mut Object<'a>,
    key: Option<String>,
}

fn not_an_object() -> Error {
    Error("only a struct or a map merges into an object".into())
}

impl<'o, 'a> ser::Serializer for Into<'o, 'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Impossible<(), Error>;
    type SerializeTuple = Impossible<(), Error>;
    type SerializeTupleStruct = Impossible<(), Error>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = IntoFields<'o, 'a>;
    type SerializeStruct = IntoFields<'o, 'a>;
    type SerializeStructVariant = Impossible<(), Error>;

    fn serialize_bool(self, _v: bool) -> Result<()> {
        Err(not_an_object())
    }
    fn serialize_i8(self, _v: i8) -> Result<()> {
        Err(not_an_object())
    }
    fn serialize_i16(self, _v: i16) -> Result<()> {
        Err(not_an_object())
    }
    fn serialize_i32(self, _v: i32) -> Result<()> {
        Err(not_an_object())
    }
    fn serialize_i64(self, _v: i64) -> Result<()> {
        Err(not_an_object())
    }
    fn serialize_u8(self, _v: u8) -> Result<()> {
        Err(not_an_object())
    }
    fn serialize_u16(self, _v: u16) -> Result<()> {
        Err(not_an_object())
    }
    fn serialize_u32(self, _v: u32) -> Result<()> {
        Err(not_an_object())
    }
    fn serialize_u64(self, _v: u64) -> Result<()> {
        Err(not_an_object())
    }
    fn serialize_f32(self, _v: f32) -> Result<()> {
        Err(not_an_object())
    }
    fn serialize_f64(self, _v: f64) -> Result<()> {
        Err(not_an_object())
    }
    fn serialize_char(self, _v: char) -> Result<()> {
        Err(not_an_object())
    }
    fn serialize_str(self, _v: &str) -> Result<()> {
        Err(not_an_object())
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<()> {
        Err(not_an_object())
    }
    fn serialize_none(self) -> Result<()> {
        Err(not_an_object())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<()> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<()> {
        Err(not_an_object())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<()> {
        Err(not_an_object())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _i: u32,
        _variant: &'static str,
    ) -> Result<()> {
        Err(not_an_object())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        v: &T,
    ) -> Result<()> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _i: u32,
        _variant: &'static str,
        _v: &T,
    ) -> Result<()> {
        Err(not_an_object())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq> {
        Err(not_an_object())
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple> {
        Err(not_an_object())
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct> {
        Err(not_an_object())
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _i: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        Err(not_an_object())
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<IntoFields<'o, 'a>> {
        Ok(IntoFields {
            obj: self.obj,
            key: None,
        })
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<IntoFields<'o, 'a>> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _i: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant> {
        Err(not_an_object())
    }
}

impl ser::SerializeMap for IntoFields<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        self.key = Some(key.serialize(KeySer)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        let key = self
            .key
            .take()
            .ok_or_else(|| Error("a map value without its key".into()))?;
        self.obj.put(Cow::Owned(key), v)
    }
    fn end(self) -> Result<()> {
        Ok(())
    }
}

impl ser::SerializeStruct for IntoFields<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) -> Result<()> {
        self.obj.field(key, v)
    }
    fn end(self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde::Serialize;

    use super::*;

    fn same<T: Serialize>(v: &T) {
        let mut out = b"x".to_vec();
        write(&mut out, v).unwrap();
        let want = serde_json::to_value(v).unwrap().to_string();
        assert_eq!(std::str::from_utf8(&out[1..]).unwrap(), want);
    }

    #[derive(Serialize)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    enum Tagged {
        Zeta { b: u32, a: Option<String> },
        Alpha,
    }

    #[derive(Serialize)]
    enum Outer {
        Tuple(u8, i64),
        Struct { y: f64, x: f32 },
        New(Vec<Tagged>),
        Unit,
    }

    #[derive(Serialize)]
    struct Nested {
        zz: Vec<Outer>,
        b: BTreeMap<u32, String>,
        h: HashMap<String, bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<u8>,
        a: (char, (), [u8; 2]),
        s: &'static str,
        neg: i128,
        nan: f64,
        inf: f32,
        #[serde(flatten)]
        flat: Tagged,
    }

    #[test]
    fn the_bytes_are_values_bytes() {
        let n = Nested {
            zz: vec![
                Outer::Tuple(1, -2),
                Outer::Struct { y: 0.1, x: 0.1 },
                Outer::New(vec![
                    Tagged::Zeta {
                        b: 3,
                        a: Some("\"q\"\n\u{1}é".into()),
                    },
                    Tagged::Alpha,
                ]),
                Outer::Unit,
            ],
            b: [(9, "nine".into()), (10, "ten".into()), (100, "x".into())].into(),
            h: [
                ("b".into(), true),
                ("a".into(), false),
                ("é".into(), true),
                ("q\"\\\n".into(), false),
            ]
            .into(),
            skipped: None,
            a: ('c', (), [7, 8]),
            s: "tab\t",
            neg: -5,
            nan: f64::NAN,
            inf: f32::INFINITY,
            flat: Tagged::Zeta { b: 1, a: None },
        };
        same(&n);
        same(&vec![n]);
        same(&Tagged::Alpha);
        // The forensics of a live victim: a map keyed by numbers (tracer pids).
        same(&crate::host::forensics::Forensics {
            tgid: 7,
            state: Some("t (tracing stop)".into()),
            tracer_comms: [(10, "gdb".into()), (9, "strace".into())].into(),
            stopped_tracers: vec![10, 9],
            notes: vec!["a \"note\"".into()],
            ..Default::default()
        });
        same(&BTreeMap::<String, u8>::new());
        same(&Vec::<u8>::new());
        same(&u64::MAX);
        same(&-1.5e300);
    }

    #[test]
    fn a_merged_object_sorts_and_keeps_a_keys_last_value() {
        let mut out = Vec::new();
        let mut o = Object::new(&mut out);
        o.field("kind", "first").unwrap();
        o.merge(&Tagged::Zeta { b: 2, a: None }).unwrap();
        o.field("b", &5).unwrap();
        o.field("aa", &[1, 2]).unwrap();
        o.finish();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"a":null,"aa":[1,2],"b":5,"kind":"zeta"}"#
        );
        let mut out = Vec::new();
        assert!(Object::new(&mut out).merge(&3u8).is_err());
    }

    /// Declared in key order: written in place, nothing moved (and the same bytes).
    #[derive(Serialize)]
    struct InOrder {
        a: u8,
        b: Vec<InOrder>,
        c: Option<Box<InOrder>>,
        d: BTreeMap<String, u8>,
    }

    #[test]
    fn keys_in_order_are_written_in_place() {
        let leaf = || InOrder {
            a: 1,
            b: vec![],
            c: None,
            d: [("x".into(), 1), ("y".into(), 2)].into(),
        };
        let v = InOrder {
            a: 0,
            b: vec![leaf(), leaf()],
            c: Some(Box::new(leaf())),
            d: BTreeMap::new(),
        };
        same(&v);
        // In order but a key given twice: the last value is kept, as `Value` keeps it.
        let mut out = Vec::new();
        let mut o = Object::new(&mut out);
        o.field("a", &1).unwrap();
        o.field("b", &2).unwrap();
        o.field("b", &3).unwrap();
        o.field("c", &4).unwrap();
        o.finish();
        assert_eq!(std::str::from_utf8(&out).unwrap(), r#"{"a":1,"b":3,"c":4}"#);
        let mut out = b"[".to_vec();
        Object::new(&mut out).finish();
        assert_eq!(out, b"[{}");
    }

    #[test]
    fn a_map_key_that_is_no_string_nor_number_fails() {
        let mut out = b"x".to_vec();
        let m: BTreeMap<Vec<u8>, u8> = [(vec![1], 1)].into();
        assert!(write(&mut out, &m).is_err());
        assert_eq!(out, b"x");
        assert!(serde_json::to_value(&m).is_err());
    }
}
