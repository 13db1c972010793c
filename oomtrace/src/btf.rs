//! A small reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): struct member offsets, enum
//! values, and the argument types of functions and BTF-enabled tracepoints.
//!
//! Rust eBPF programs get no CO-RE relocations, so userspace finds the offsets here at load time
//! and hands them to the programs. aya-obj parses BTF too but keeps member lookup private.

use std::{collections::HashMap, path::Path};

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Why BTF could not be read or a lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The blob does not start with the BTF magic.
    #[error("not BTF: bad magic {0:#x}")]
    BadMagic(u16),
    /// The blob ends before what its header or a type says.
    #[error("btf blob truncated at byte {0}")]
    Truncated(usize),
    /// A type kind this reader does not know (a newer kernel): sizes cannot be skipped.
    #[error("unknown btf kind {kind} at type id {id}")]
    UnknownKind { kind: u32, id: u32 },
    /// No struct or union of that name.
    #[error("no struct named `{0}`")]
    NoStruct(String),
    /// The struct has no such member (searched through anonymous members).
    #[error("struct {st} has no member `{member}`")]
    NoMember { st: String, member: String },
    /// The member is a bitfield: it has no byte offset.
    #[error("member `{0}` is a bitfield")]
    Bitfield(String),
    /// A path segment steps into something that is not a struct or union.
    #[error("member `{0}` is not a struct or union")]
    NotComposite(String),
    /// No enum with that variant.
    #[error("no enum `{0}` with variant `{1}`")]
    NoEnum(String, String),
    /// No function, or no `btf_trace_<name>` typedef.
    #[error("no function or tracepoint prototype `{0}`")]
    NoFunction(String),
}

/// A type, described with typedefs and qualifiers resolved away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeDesc {
    Void,
    Int {
        size: u32,
        signed: bool,
        bool_: bool,
    },
    /// A pointer; the pointee is described one level deep (structs by name only).
    Ptr {
        to: Box<TypeDesc>,
    },
    Struct {
        name: String,
        size: u32,
    },
    Union {
        name: String,
        size: u32,
    },
    Enum {
        name: String,
        size: u32,
    },
    Array {
        elem: Box<TypeDesc>,
        elem_size: u32,
        len: u32,
    },
    Func,
    Other(String),
}

/// A struct member found by [`Btf::member`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Byte offset from the start of the outermost struct.
    pub offset: u32,
    pub size: u32,
    pub ty: TypeDesc,
}

#[derive(Debug, Clone)]
struct RawMember {
    name: u32,
    ty: u32,
    /// Bit offset; with `bitfield_size` > 0 a bitfield.
    bit_offset: u32,
    bitfield_size: u32,
}

#[derive(Debug, Clone)]
enum Kind {
    Int {
        size: u32,
        encoding: u32,
    },
    Ptr(u32),
    Array {
        elem: u32,
        len: u32,
    },
    Composite {
        union: bool,
        size: u32,
        members: Vec<RawMember>,
    },
    Enum {
        size: u32,
        values: Vec<(u32, i64)>,
    },
    Ref(u32),
    Func(u32),
    FuncProto {
        ret: u32,
        params: Vec<u32>,
    },
    Other(&'static str),
}

#[derive(Debug, Clone)]
struct Type {
    name: u32,
    kind: Kind,
}

/// Parsed BTF: types by id and an index of names.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    by_name: HashMap<String, Vec<u32>>,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    base: usize,
}

impl Reader<'_> {
    fn u32(&mut self) -> Result<u32, BtfError> {
        let at = self.pos;
        let b = self
            .data
            .get(at..at + 4)
            .ok_or(BtfError::Truncated(self.base + at))?;
        self.pos += 4;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

impl Btf {
    pub const VMLINUX: &'static str = "/sys/kernel/btf/vmlinux";

    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Btf::from_bytes(&data)
    }

    pub fn from_bytes(data: &[u8]) -> Result<Btf, BtfError> {
        let magic = u16::from_le_bytes([
            *data.first().ok_or(BtfError::Truncated(0))?,
            *data.get(1).ok_or(BtfError::Truncated(1))?,
        ]);
        if magic != MAGIC {
            return Err(BtfError::BadMagic(magic));
        }
        let mut h = Reader {
            data,
            pos: 4,
            base: 0,
        };
        let hdr_len = h.u32()? as usize;
        let (type_off, type_len) = (h.u32()? as usize, h.u32()? as usize);
        let (str_off, str_len) = (h.u32()? as usize, h.u32()? as usize);
        let section = |off: usize, len: usize| {
            let start = hdr_len
                .checked_add(off)
                .ok_or(BtfError::Truncated(usize::MAX))?;
            let end = start
                .checked_add(len)
                .ok_or(BtfError::Truncated(usize::MAX))?;
            data.get(start..end)
                .map(|s| (s, start))
                .ok_or(BtfError::Truncated(data.len()))
        };
        let (type_data, type_base) = section(type_off, type_len)?;
        let (strings, _) = section(str_off, str_len)?;
        let mut btf = Btf {
            types: vec![Type {
                name: 0,
                kind: Kind::Other("void"),
            }],
            strings: strings.to_vec(),
            by_name: HashMap::new(),
        };
        let mut r = Reader {
            data: type_data,
            pos: 0,
            base: type_base,
        };
        while r.pos < type_data.len() {
            let id = btf.types.len() as u32;
            let ty = parse_type(&mut r, id)?;
            if ty.name != 0 {
                let name = btf.str_at(ty.name).to_string();
                btf.by_name.entry(name).or_default().push(id);
            }
            btf.types.push(ty);
        }
        Ok(btf)
    }

    fn str_at(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    /// Follows typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.ty(id).map(|t| &t.kind) {
                Some(Kind::Ref(next)) => id = *next,
                _ => break,
            }
        }
        id
    }

    fn size_of(&self, id: u32) -> u32 {
        match self.ty(self.resolve(id)).map(|t| &t.kind) {
            Some(
                Kind::Int { size, .. } | Kind::Composite { size, .. } | Kind::Enum { size, .. },
            ) => *size,
            Some(Kind::Ptr(_)) => 8,
            Some(Kind::Array { elem, len }) => self.size_of(*elem).saturating_mul(*len),
            _ => 0,
        }
    }

    fn composite(&self, name: &str) -> Result<u32, BtfError> {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .copied()
            .find(|&id| matches!(self.ty(id).map(|t| &t.kind), Some(Kind::Composite { .. })))
            .ok_or_else(|| BtfError::NoStruct(name.to_string()))
    }

    /// Finds a named member in a composite, looking inside anonymous members; returns
    /// (bit offset from the composite's start, member).
    fn find_member(&self, comp: u32, name: &str) -> Option<(u32, RawMember)> {
        let Some(Kind::Composite { members, .. }) = self.ty(self.resolve(comp)).map(|t| &t.kind)
        else {
            return None;
        };
        for m in members {
            if m.name == 0 {
                if let Some((off, found)) = self.find_member(m.ty, name) {
                    return Some((m.bit_offset + off, found));
                }
            } else if self.str_at(m.name) == name {
                return Some((m.bit_offset, m.clone()));
            }
        }
        None
    }

    /// The member at a dotted path (`"live.counter"`) of a struct or union, anonymous members
    /// searched transparently.
    pub fn member(&self, struct_name: &str, path: &str) -> Result<Member, BtfError> {
        let mut comp = self.composite(struct_name)?;
        let mut bits = 0u32;
        let mut found = None;
        for (i, seg) in path.split('.').enumerate() {
            if i > 0 {
                let Some((_, prev)) = &found else {
                    return Err(BtfError::NotComposite(path.to_string()));
                };
                let prev: &RawMember = prev;
                comp = self.resolve(prev.ty);
                if !matches!(self.ty(comp).map(|t| &t.kind), Some(Kind::Composite { .. })) {
                    return Err(BtfError::NotComposite(seg.to_string()));
                }
            }
            let (off, m) = self
                .find_member(comp, seg)
                .ok_or_else(|| BtfError::NoMember {
                    st: struct_name.to_string(),
                    member: path.to_string(),
                })?;
            if m.bitfield_size != 0 {
                return Err(BtfError::Bitfield(path.to_string()));
            }
            bits += off;
            found = Some((bits, m));
        }
        let (bits, m) = found.ok_or_else(|| BtfError::NoMember {
            st: struct_name.to_string(),
            member: path.to_string(),
        })?;
        if bits % 8 != 0 {
            return Err(BtfError::Bitfield(path.to_string()));
        }
        Ok(Member {
            offset: bits / 8,
            size: self.size_of(m.ty),
            ty: self.describe(m.ty, 2),
        })
    }

    pub fn member_offset(&self, struct_name: &str, path: &str) -> Result<u32, BtfError> {
        Ok(self.member(struct_name, path)?.offset)
    }

    pub fn struct_size(&self, name: &str) -> Result<u32, BtfError> {
        Ok(self.size_of(self.composite(name)?))
    }

    pub fn enum_value(&self, enum_name: &str, variant: &str) -> Result<i64, BtfError> {
        self.by_name
            .get(enum_name)
            .into_iter()
            .flatten()
            .find_map(|&id| match &self.ty(id)?.kind {
                Kind::Enum { values, .. } => values
                    .iter()
                    .find(|(n, _)| self.str_at(*n) == variant)
                    .map(|(_, v)| *v),
                _ => None,
            })
            .ok_or_else(|| BtfError::NoEnum(enum_name.to_string(), variant.to_string()))
    }

    fn func_proto_of(&self, name: &str) -> Option<(u32, &[u32])> {
        self.by_name.get(name)?.iter().find_map(|&id| {
            let Kind::Func(proto) = self.ty(id)?.kind else {
                return None;
            };
            match &self.ty(proto)?.kind {
                Kind::FuncProto { ret, params } => Some((*ret, params.as_slice())),
                _ => None,
            }
        })
    }

    /// True if the kernel has a function of this name in BTF (a candidate for fentry/kprobe).
    pub fn has_function(&self, name: &str) -> bool {
        self.func_proto_of(name).is_some()
    }

    /// Parameter types and return type of a kernel function.
    pub fn function_args(&self, name: &str) -> Result<(Vec<TypeDesc>, TypeDesc), BtfError> {
        let (ret, params) = self
            .func_proto_of(name)
            .ok_or_else(|| BtfError::NoFunction(name.to_string()))?;
        Ok((
            params.iter().map(|&p| self.describe(p, 2)).collect(),
            self.describe(ret, 2),
        ))
    }

    /// Arguments of a BTF-enabled tracepoint: the prototype behind `btf_trace_<tp>`, without the
    /// leading `void *__data`.
    pub fn tracepoint_args(&self, tp: &str) -> Result<Vec<TypeDesc>, BtfError> {
        let name = format!("btf_trace_{tp}");
        let not_found = || BtfError::NoFunction(name.clone());
        let id = *self
            .by_name
            .get(&name)
            .and_then(|v| v.first())
            .ok_or_else(not_found)?;
        let ptr = self.resolve(id);
        let Some(Kind::Ptr(proto)) = self.ty(ptr).map(|t| &t.kind) else {
            return Err(not_found());
        };
        let Some(Kind::FuncProto { params, .. }) = self.ty(self.resolve(*proto)).map(|t| &t.kind)
        else {
            return Err(not_found());
        };
        Ok(params
            .iter()
            .skip(1)
            .map(|&p| self.describe(p, 2))
            .collect())
    }

    fn describe(&self, id: u32, depth: u32) -> TypeDesc {
        let id = self.resolve(id);
        if id == 0 {
            return TypeDesc::Void;
        }
        let Some(t) = self.ty(id) else {
            return TypeDesc::Other("bad type id".into());
        };
        let name = self.str_at(t.name).to_string();
        match &t.kind {
            Kind::Int { size, encoding } => TypeDesc::Int {
                size: *size,
                signed: encoding & 1 != 0,
                bool_: encoding & 4 != 0,
            },
            Kind::Ptr(to) => TypeDesc::Ptr {
                to: Box::new(if depth == 0 {
                    TypeDesc::Other("…".into())
                } else {
                    self.describe(*to, depth - 1)
                }),
            },
            Kind::Array { elem, len } => TypeDesc::Array {
                elem: Box::new(self.describe(*elem, depth.saturating_sub(1))),
                elem_size: self.size_of(*elem),
                len: *len,
            },
            Kind::Composite {
                union: false, size, ..
            } => TypeDesc::Struct { name, size: *size },
            Kind::Composite {
                union: true, size, ..
            } => TypeDesc::Union { name, size: *size },
            Kind::Enum { size, .. } => TypeDesc::Enum { name, size: *size },
            Kind::Func(_) | Kind::FuncProto { .. } => TypeDesc::Func,
            Kind::Ref(_) => TypeDesc::Other("reference loop".into()),
            Kind::Other(what) => TypeDesc::Other((*what).into()),
        }
    }
}

fn parse_type(r: &mut Reader<'_>, id: u32) -> Result<Type, BtfError> {
    let name = r.u32()?;
    let info = r.u32()?;
    let size_or_type = r.u32()?;
    let vlen = info & 0xffff;
    let kind_flag = info >> 31 != 0;
    let kind = match (info >> 24) & 0x1f {
        KIND_INT => {
            let extra = r.u32()?;
            Kind::Int {
                size: size_or_type,
                encoding: (extra >> 24) & 0xf,
            }
        }
        KIND_PTR => Kind::Ptr(size_or_type),
        KIND_ARRAY => {
            let elem = r.u32()?;
            let _index = r.u32()?;
            let len = r.u32()?;
            Kind::Array { elem, len }
        }
        k @ (KIND_STRUCT | KIND_UNION) => {
            let mut members = Vec::with_capacity(vlen as usize);
            for _ in 0..vlen {
                let (name, ty, off) = (r.u32()?, r.u32()?, r.u32()?);
                let (bit_offset, bitfield_size) = if kind_flag {
                    (off & 0x00ff_ffff, off >> 24)
                } else {
                    (off, 0)
                };
                members.push(RawMember {
                    name,
                    ty,
                    bit_offset,
                    bitfield_size,
                });
            }
            Kind::Composite {
                union: k == KIND_UNION,
                size: size_or_type,
                members,
            }
        }
        KIND_ENUM => {
            let mut values = Vec::with_capacity(vlen as usize);
            for _ in 0..vlen {
                let (n, v) = (r.u32()?, r.u32()?);
                let v = if kind_flag {
                    i64::from(v as i32)
                } else {
                    i64::from(v)
                };
                values.push((n, v));
            }
            Kind::Enum {
                size: size_or_type,
                values,
            }
        }
        KIND_ENUM64 => {
            let mut values = Vec::with_capacity(vlen as usize);
            for _ in 0..vlen {
                let (n, lo, hi) = (r.u32()?, r.u32()?, r.u32()?);
                values.push((n, ((u64::from(hi) << 32) | u64::from(lo)) as i64));
            }
            Kind::Enum {
                size: size_or_type,
                values,
            }
        }
        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
            Kind::Ref(size_or_type)
        }
        KIND_FUNC => Kind::Func(size_or_type),
        KIND_FUNC_PROTO => {
            let mut params = Vec::with_capacity(vlen as usize);
            for _ in 0..vlen {
                let (_name, ty) = (r.u32()?, r.u32()?);
                params.push(ty);
            }
            Kind::FuncProto {
                ret: size_or_type,
                params,
            }
        }
        KIND_FWD => Kind::Other("forward declaration"),
        KIND_VAR | KIND_DECL_TAG => {
            r.u32()?;
            Kind::Other("var or tag")
        }
        KIND_DATASEC => {
            for _ in 0..vlen * 3 {
                r.u32()?;
            }
            Kind::Other("datasec")
        }
        KIND_FLOAT => Kind::Other("float"),
        kind => return Err(BtfError::UnknownKind { kind, id }),
    };
    Ok(Type { name, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob from type records (each a list of u32 words) and a string table.
    struct Enc {
        types: Vec<u32>,
        strings: Vec<u8>,
    }

    impl Enc {
        fn new() -> Self {
            Enc {
                types: Vec::new(),
                strings: vec![0],
            }
        }
        fn s(&mut self, s: &str) -> u32 {
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }
        fn push(&mut self, words: &[u32]) {
            self.types.extend_from_slice(words);
        }
        fn info(kind: u32, vlen: u32, flag: bool) -> u32 {
            (u32::from(flag) << 31) | (kind << 24) | vlen
        }
        fn blob(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            let tl = (self.types.len() * 4) as u32;
            for w in [24, 0, tl, tl, self.strings.len() as u32] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            for w in &self.types {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// 1 int, 2 struct inner { int a; int b; }, 3 struct outer { int x; union { inner in; };
    /// int bits:3; }, 4 anon union, 5 typedef outer_t, 6 ptr → outer, 7 enum e {A=1,B=7},
    /// 8 func_proto(void*, outer*, int) → int, 9 ptr → 8, 10 typedef btf_trace_tp → 9,
    /// 11 func f → 8.
    fn sample() -> Btf {
        let mut e = Enc::new();
        let int = e.s("int");
        e.push(&[int, Enc::info(KIND_INT, 0, false), 4, (1 << 24) | 32]);
        let (inner, a, b) = (e.s("inner"), e.s("a"), e.s("b"));
        e.push(&[
            inner,
            Enc::info(KIND_STRUCT, 2, false),
            8,
            a,
            1,
            0,
            b,
            1,
            32,
        ]);
        let (outer, x, inn, bits) = (e.s("outer"), e.s("x"), e.s("in"), e.s("bits"));
        e.push(&[outer, Enc::info(KIND_STRUCT, 3, true), 16]);
        e.push(&[x, 1, 0, 0, 4, 64, bits, 1, (3 << 24) | 96]);
        e.push(&[0, Enc::info(KIND_UNION, 1, false), 8, inn, 2, 0]);
        let outer_t = e.s("outer_t");
        e.push(&[outer_t, Enc::info(KIND_TYPEDEF, 0, false), 3]);
        e.push(&[0, Enc::info(KIND_PTR, 0, false), 3]);
        let (en, va, vb) = (e.s("e"), e.s("A"), e.s("B"));
        e.push(&[en, Enc::info(KIND_ENUM, 2, false), 4, va, 1, vb, 7]);
        e.push(&[0, Enc::info(KIND_FUNC_PROTO, 3, false), 1, 0, 0, 0, 6, 0, 1]);
        e.push(&[0, Enc::info(KIND_PTR, 0, false), 8]);
        let tp = e.s("btf_trace_tp");
        e.push(&[tp, Enc::info(KIND_TYPEDEF, 0, false), 9]);
        let f = e.s("f");
        e.push(&[f, Enc::info(KIND_FUNC, 0, false), 8]);
        Btf::from_bytes(&e.blob()).unwrap()
    }

    #[test]
    fn members_through_anonymous_unions_and_nested_paths() {
        let btf = sample();
        assert_eq!(btf.member_offset("outer", "x").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "in").unwrap(), 8);
        assert_eq!(btf.member_offset("outer", "in.b").unwrap(), 12);
        let m = btf.member("outer", "in.a").unwrap();
        assert_eq!((m.offset, m.size), (8, 4));
        assert_eq!(
            m.ty,
            TypeDesc::Int {
                size: 4,
                signed: true,
                bool_: false
            }
        );
        assert_eq!(btf.struct_size("outer").unwrap(), 16);
        assert!(matches!(
            btf.member("outer", "bits"),
            Err(BtfError::Bitfield(_))
        ));
        assert!(matches!(
            btf.member("outer", "nope"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member("outer", "x.y"),
            Err(BtfError::NotComposite(_))
        ));
        assert!(matches!(
            btf.member("nostruct", "x"),
            Err(BtfError::NoStruct(_))
        ));
    }

    #[test]
    fn enums_functions_and_tracepoints() {
        let btf = sample();
        assert_eq!(btf.enum_value("e", "B").unwrap(), 7);
        assert!(btf.enum_value("e", "C").is_err());
        assert!(btf.has_function("f"));
        assert!(!btf.has_function("g"));
        let (params, ret) = btf.function_args("f").unwrap();
        assert_eq!(params.len(), 3);
        assert!(matches!(ret, TypeDesc::Int { size: 4, .. }));
        let args = btf.tracepoint_args("tp").unwrap();
        assert_eq!(args.len(), 2);
        assert_eq!(
            args[0],
            TypeDesc::Ptr {
                to: Box::new(TypeDesc::Struct {
                    name: "outer".into(),
                    size: 16
                })
            }
        );
        assert!(btf.tracepoint_args("nope").is_err());
    }

    #[test]
    fn truncated_and_foreign_blobs_are_errors_not_panics() {
        let mut e = Enc::new();
        let int = e.s("int");
        e.push(&[int, Enc::info(KIND_INT, 0, false), 4, 32]);
        let blob = e.blob();
        for cut in 0..blob.len() {
            assert!(Btf::from_bytes(&blob[..cut]).is_err(), "cut at {cut}");
        }
        assert!(matches!(
            Btf::from_bytes(b"\x7fELF...."),
            Err(BtfError::BadMagic(_))
        ));
        let mut bad = Enc::new();
        bad.push(&[0, Enc::info(31, 0, false), 0]);
        assert!(matches!(
            Btf::from_bytes(&bad.blob()),
            Err(BtfError::UnknownKind { kind: 31, id: 1 })
        ));
    }

    /// Facts of the kernel this runs on, checked where its BTF is readable.
    #[test]
    fn the_running_kernel() {
        let path = Path::new(Btf::VMLINUX);
        if !path.exists() {
            eprintln!("no {}: not applicable on this kernel", path.display());
            return;
        }
        let btf = Btf::from_file(path).unwrap();
        let pid = btf.member_offset("task_struct", "pid").unwrap();
        assert_eq!(btf.member_offset("task_struct", "tgid").unwrap(), pid + 4);
        assert_eq!(btf.member("task_struct", "comm").unwrap().size, 16);
        assert!(btf.has_function("oom_kill_process"));
        let (args, _) = btf.function_args("oom_kill_process").unwrap();
        assert!(
            matches!(&args[0], TypeDesc::Ptr { to } if matches!(&**to, TypeDesc::Struct { name, .. } if name == "oom_control"))
        );
        assert!(btf.enum_value("cgroup_subsys_id", "memory_cgrp_id").is_ok());
        assert_eq!(btf.member("signal_struct", "live.counter").unwrap().size, 4);
        let exit = btf.tracepoint_args("sched_process_exit").unwrap();
        assert!(
            matches!(&exit[0], TypeDesc::Ptr { to } if matches!(&**to, TypeDesc::Struct { name, .. } if name == "task_struct"))
        );
    }
}
