//! A small reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): struct member offsets, enum
//! values, and the argument types of functions and BTF-enabled tracepoints.
//!
//! Rust eBPF programs get no CO-RE relocations, so userspace looks the offsets up here at load
//! time and hands them to the programs. The blob is walked once to record where each type's
//! record starts and to index names; records are decoded lazily, on lookup.

use std::path::PathBuf;

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;

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

/// Bound on typedef/qualifier chains, anonymous-member nesting and pointer/array nesting in
/// descriptions, so that malformed (cyclic) BTF cannot recurse forever.
const MAX_DEPTH: u32 = 32;
/// Bound on the members examined by one anonymous-member search (malformed BTF could make the
/// search exponential).
const SEARCH_BUDGET: usize = 1 << 20;

/// Why BTF could not be read, or why a lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error("cannot read btf from {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The blob does not start with the BTF magic 0xeb9f (little-endian).
    #[error("bad magic {found:#06x} at byte 0: not a little-endian btf blob (expected 0xeb9f)")]
    BadMagic { found: u16 },
    /// The header is inconsistent or of an unsupported version.
    #[error("bad btf header: {0}")]
    BadHeader(String),
    /// The blob ends before what its header or a type record says.
    #[error("btf blob truncated at byte {at}: {what}")]
    Truncated { at: usize, what: String },
    /// A type kind this reader does not know (a newer kernel?): the rest cannot be walked.
    #[error("unknown btf kind {kind} for type id {id} at byte {at}")]
    UnknownKind { kind: u32, id: u32, at: usize },
    /// No struct or union of that name (only forward declarations do not count).
    #[error("no struct named `{0}`")]
    NoStruct(String),
    /// The struct has no member at that path (anonymous members are searched too).
    #[error("struct {st} has no member `{path}`")]
    NoMember { st: String, path: String },
    /// The member is a bitfield, so it has no byte offset.
    #[error("member `{st}.{path}` is a bitfield")]
    Bitfield { st: String, path: String },
    /// A path steps into a member that is not a struct or union.
    #[error("member `{st}.{path}` is not a struct or union, so the path cannot go further")]
    NotComposite { st: String, path: String },
    /// No enum (ENUM or ENUM64) of that name.
    #[error("no enum named `{0}`")]
    NoEnum(String),
    /// The enum exists but has no such variant.
    #[error("enum {name} has no variant `{variant}`")]
    NoVariant { name: String, variant: String },
    /// No BTF_KIND_FUNC of that name.
    #[error("no function named `{0}` in btf")]
    NoFunction(String),
    /// No `btf_trace_<tp>` typedef: the tracepoint does not exist or is not BTF-enabled.
    #[error("no btf tracepoint `{0}` (no typedef btf_trace_{0})")]
    NoTracepoint(String),
    /// A type exists but is not shaped as a well-formed kernel's would be.
    #[error("type id {id} (`{name}`): {what}")]
    BadType {
        id: u32,
        name: String,
        what: &'static str,
    },
}

/// A type, with typedefs and qualifiers resolved away (but `bool` is an [`TypeDesc::Int`] with
/// `bool_` set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeDesc {
    /// `void` (type id 0), e.g. a function's return type or the pointee of `void *`.
    Void,
    /// An integer (or `char`/`bool`) of `size` bytes.
    Int {
        size: u32,
        signed: bool,
        bool_: bool,
    },
    /// A pointer. The pointee is described without expanding structs (they are named only);
    /// pointer/array chains deeper than an internal bound end in [`TypeDesc::Other`].
    Ptr { to: Box<TypeDesc> },
    /// A struct, by name (empty if anonymous). `size` is 0 if it is only forward-declared.
    Struct { name: String, size: u32 },
    /// A union, by name (empty if anonymous). `size` is 0 if it is only forward-declared.
    Union { name: String, size: u32 },
    /// An enum (ENUM or ENUM64) of `size` bytes.
    Enum { name: String, size: u32 },
    /// An array of `len` elements of `elem_size` bytes.
    Array {
        elem: Box<TypeDesc>,
        elem_size: u32,
        len: u32,
    },
    /// A function or function prototype (usually behind a [`TypeDesc::Ptr`]).
    Func,
    /// Anything else (floats, varargs `...`, malformed references), described in words.
    Other(String),
}

/// A struct member found by [`Btf::member`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Byte offset from the start of the outermost struct.
    pub(crate) offset: u32,
    /// Size of the member's type in bytes.
    pub(crate) size: u32,
    /// The member's type.
    pub(crate) ty: TypeDesc,
}

/// Parsed BTF: the raw type records, where each starts, and an index of names.
pub struct Btf {
    /// The blob itself; `types` and `strings` are its two sections.
    data: Blob,
    types: std::ops::Range<usize>,
    strings: std::ops::Range<usize>,
    /// Byte offset in `types` of each type's record, indexed by type id (entry 0, void, unused).
    starts: Vec<u32>,
    /// The names given to [`Btf::from_blob_for`], each with the ids of its types (ascending);
    /// empty where every name is indexed (`all` made at once).
    wanted: Vec<Wanted>,
    /// The index of every name, made on the first lookup of a name not in `wanted`.
    all: std::sync::OnceLock<NameIndex>,
    /// Lookups of names not in `wanted` (each walked by `all`).
    unlisted: std::sync::atomic::AtomicUsize,
    ptr_size: u32,
}

/// A name indexed alone, and the ids of the types so named.
struct Wanted {
    name: String,
    /// Its first eight bytes as [`first_word`] reads them.
    first: u64,
    ids: Vec<u32>,
}

/// The index of every name, a hash table of chains: `heads[hash(name) & mask]` is the first
/// type id of a chain of ids linked by `next` (0 ends it), in ascending id order.
struct NameIndex {
    heads: Vec<u32>,
    next: Vec<u32>,
}

/// The first eight bytes of a name, up to its NUL or the end of `bytes`, zero-padded.
fn first_word(bytes: &[u8]) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let word = match bytes.first_chunk::<8>() {
        Some(w) => u64::from_le_bytes(*w),
        None => {
            let mut w = [0u8; 8];
            w[..bytes.len()].copy_from_slice(bytes);
            u64::from_le_bytes(w)
        }
    };
    // The lowest byte flagged is the first NUL (a false flag only follows a NUL).
    match word.wrapping_sub(ONES) & !word & HIGHS {
        0 => word,
        nuls => word & ((1u64 << (nuls.trailing_zeros() & !7)) - 1),
    }
}

/// Finds the ids of the types named each of `names` or `btf_trace_<tp>` for each of
/// `tracepoints` (and `long int`, for the pointer size), shown every type's name once, in the
/// walk that finds where the types start. A name's first eight bytes pick the few types whose
/// whole name is compared.
struct Finder {
    wanted: Vec<Wanted>,
    /// The wanted names' first words, an open-addressed set (0: empty).
    words: Vec<u64>,
}

impl Finder {
    fn new(names: &[&str], tracepoints: &[&str]) -> Finder {
        let typedefs = tracepoints.iter().map(|t| tracepoint_typedef(t));
        let mut wanted: Vec<Wanted> = (names.iter().map(|n| n.to_string()).chain(typedefs))
            .chain(["long int".to_string()])
            .filter(|n| !n.is_empty())
            .map(|name| Wanted {
                first: first_word(name.as_bytes()),
                name,
                ids: Vec::new(),
            })
            .collect();
        wanted.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        wanted.dedup_by(|a, b| a.name == b.name);
        let mut words = vec![0u64; (wanted.len() * 4).next_power_of_two()];
        for w in &wanted {
            let at = Finder::slot(&words, w.first);
            words[at] = w.first;
        }
        Finder { wanted, words }
    }

    /// Where `word` is in the set, or the empty slot where it would go.
    fn slot(words: &[u64], word: u64) -> usize {
        let mask = words.len() - 1;
        let mut at = (word.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as usize & mask;
        while words[at] != 0 && words[at] != word {
            at = (at + 1) & mask;
        }
        at
    }

    /// Type `id` is named `bytes` (up to its NUL).
    fn visit(&mut self, id: u32, bytes: &[u8]) {
        let word = first_word(bytes);
        if self.words[Finder::slot(&self.words, word)] == 0 {
            return;
        }
        for w in self.wanted.iter_mut().filter(|w| w.first == word) {
            let n = w.name.as_bytes();
            if bytes.starts_with(n) && bytes.get(n.len()).is_none_or(|&b| b == 0) {
                w.ids.push(id);
            }
        }
    }
}

/// A hash of a name, up to its NUL or the end of `bytes`, eight bytes at a time (a byte at a
/// time, hashing the kernel's 126k type names was a third of building the index).
fn hash_name(bytes: &[u8]) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mix = |h: u64, word: u64| {
        (h ^ word)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(26)
    };
    let mut h = 0xcbf2_9ce4_8422_2325;
    let mut rest = bytes;
    loop {
        let (word, len) = match rest.first_chunk::<8>() {
            Some(w) => (u64::from_le_bytes(*w), 8),
            None => {
                let mut w = [0u8; 8];
                w[..rest.len()].copy_from_slice(rest);
                (u64::from_le_bytes(w), rest.len())
            }
        };
        // The lowest byte flagged is the first NUL (a false flag only follows a NUL).
        let nuls = word.wrapping_sub(ONES) & !word & HIGHS;
        if nuls == 0 && len == 8 {
            h = mix(h, word);
            rest = &rest[8..];
            continue;
        }
        let n = ((nuls.trailing_zeros() / 8) as usize).min(len);
        if n > 0 {
            h = mix(h, word & (u64::MAX >> (64 - 8 * n)));
        }
        return h;
    }
}

impl std::fmt::Debug for Btf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let types = self.starts.len() - 1;
        f.debug_struct("Btf")
            .field("types", &types)
            .finish_non_exhaustive()
    }
}

/// One type record: the common 12-byte header and the kind's trailing data.
#[derive(Clone, Copy)]
struct Ty<'a> {
    id: u32,
    name: u32,
    kind: u32,
    vlen: usize,
    kflag: bool,
    /// `size` for INT, ENUM, STRUCT, UNION, FLOAT, DATASEC; `type` for the others.
    size_or_type: u32,
    extra: &'a [u8],
}

impl Ty<'_> {
    /// Word `i` of the trailing data (its length was checked when the blob was parsed).
    fn word(&self, i: usize) -> u32 {
        le32(self.extra, i * 4).unwrap_or(0)
    }
}

fn bad(t: &Ty<'_>, name: &str, what: &'static str) -> BtfError {
    BtfError::BadType {
        id: t.id,
        name: name.to_string(),
        what,
    }
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    let w = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
}

/// The NUL-terminated string at `off` of the string section, if it is valid UTF-8.
fn cstr(strings: &[u8], off: u32) -> Option<&str> {
    let rest = strings.get(off as usize..)?;
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    std::str::from_utf8(rest.get(..end)?).ok()
}

/// The typedef the kernel declares for a BTF-enabled tracepoint (what tp_btf attaches by).
fn tracepoint_typedef(tp: &str) -> String {
    format!("btf_trace_{tp}")
}

/// Bytes of trailing data after the common header, by kind.
fn extra_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
        | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
        KIND_ARRAY => 12,
        KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
        KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
        _ => return None,
    })
}

/// A BTF blob: mapped where the kernel allows it, else read into memory.
///
/// `/sys/kernel/btf/vmlinux` can be mapped since Linux 6.16: the mapping is of the kernel's own
/// pages (`VM_PFNMAP`), neither copied nor counted in oomtrace's RSS, where a read costs 5.5 MB
/// of heap at start-up (more than a third of oomtrace's peak). Older kernels refuse the mapping.
pub(crate) enum Blob {
    Owned(Vec<u8>),
    Mapped {
        ptr: std::ptr::NonNull<u8>,
        len: usize,
    },
}

// SAFETY: a private read-only mapping, never written, unmapped only on drop.
unsafe impl Send for Blob {}
// SAFETY: as above: shared reads only.
unsafe impl Sync for Blob {}

impl Blob {
    fn as_slice(&self) -> &[u8] {
        match self {
            Blob::Owned(v) => v,
            // SAFETY: `len` bytes mapped readable at `ptr` for as long as `self` lives.
            Blob::Mapped { ptr, len } => unsafe { std::slice::from_raw_parts(ptr.as_ptr(), *len) },
        }
    }

    /// Whether the blob is the kernel's pages mapped (not a copy).
    #[cfg(test)]
    pub(crate) fn mapped(&self) -> bool {
        matches!(self, Blob::Mapped { .. })
    }

    /// Maps the file at `path` read-only, or reads it where it cannot be mapped.
    pub(crate) fn map_or_read(path: &std::path::Path) -> std::io::Result<Blob> {
        use std::{io::Read as _, os::fd::AsRawFd as _};
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
        if len > 0 {
            // SAFETY: a new private read-only mapping of an open file; checked below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE,
                    f.as_raw_fd(),
                    0,
                )
            };
            if p != libc::MAP_FAILED
                && let Some(ptr) = std::ptr::NonNull::new(p.cast::<u8>())
            {
                return Ok(Blob::Mapped { ptr, len });
            }
        }
        let mut bytes = Vec::with_capacity(len.max(1 << 20));
        f.read_to_end(&mut bytes)?;
        Ok(Blob::Owned(bytes))
    }
}

impl Drop for Blob {
    fn drop(&mut self) {
        if let Blob::Mapped { ptr, len } = self {
            // SAFETY: the mapping made in `map_or_read`, unmapped once.
            unsafe { libc::munmap(ptr.as_ptr().cast(), *len) };
        }
    }
}

impl Btf {
    /// Where the running kernel exposes its own BTF.
    pub const VMLINUX: &'static str = "/sys/kernel/btf/vmlinux";

    /// Reads and parses a BTF file, e.g. [`Btf::VMLINUX`].
    #[cfg(test)]
    pub(crate) fn from_file(path: &std::path::Path) -> Result<Btf, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Btf::from_bytes(&data)
    }

    fn types(&self) -> &[u8] {
        &self.data.as_slice()[self.types.clone()]
    }

    fn strings(&self) -> &[u8] {
        &self.data.as_slice()[self.strings.clone()]
    }

    /// Parses a raw (little-endian, base) BTF blob.
    pub fn from_bytes(data: &[u8]) -> Result<Btf, BtfError> {
        Btf::from_vec(data.to_vec())
    }

    /// Parses a blob it takes ownership of (no copy: the kernel's is 5.5 MB).
    pub fn from_vec(owned: Vec<u8>) -> Result<Btf, BtfError> {
        Btf::from_blob(Blob::Owned(owned))
    }

    /// Parses a blob read or mapped by [`Blob::map_or_read`], every name indexed.
    pub(crate) fn from_blob(owned: Blob) -> Result<Btf, BtfError> {
        Btf::parse(owned, None)
    }

    /// Parses a blob read or mapped by [`Blob::map_or_read`], indexing only `names` (and
    /// `btf_trace_<tp>` for each of `tracepoints`): what oomtrace looks up, a few dozen of the
    /// kernel's ~126k names. Hashing and chaining every name was ~2/3 of the parse (~2-3 ms
    /// of launch). Any other name is still found: its first lookup indexes every name
    /// ([`Btf::unlisted_lookups`] counts such lookups).
    pub(crate) fn from_blob_for(
        owned: Blob,
        names: &[&str],
        tracepoints: &[&str],
    ) -> Result<Btf, BtfError> {
        Btf::parse(owned, Some((names, tracepoints)))
    }

    /// Parses a blob, indexing the names (and tracepoints) given, or every name.
    fn parse(owned: Blob, only: Option<(&[&str], &[&str])>) -> Result<Btf, BtfError> {
        let data = owned.as_slice();
        let truncated = |what: String| BtfError::Truncated {
            at: data.len(),
            what,
        };
        let magic = data.get(..2).ok_or_else(|| truncated("no magic".into()))?;
        let found = u16::from_le_bytes([magic[0], magic[1]]);
        if found != MAGIC {
            return Err(BtfError::BadMagic { found });
        }
        if data.len() < HEADER_LEN {
            return Err(truncated("the header needs 24 bytes".into()));
        }
        let [hdr_len, type_off, type_len, str_off, str_len] =
            [4, 8, 12, 16, 20].map(|at| le32(data, at).unwrap_or(0) as usize);
        if data[2] != 1 || hdr_len < HEADER_LEN {
            let (version, what) = (data[2], "expected version 1, hdr_len >= 24");
            return Err(BtfError::BadHeader(format!(
                "version {version}, hdr_len {hdr_len}: {what}"
            )));
        }
        let section = |off: usize, len: usize, what: &str| {
            let (start, end) = (
                hdr_len.saturating_add(off),
                hdr_len.saturating_add(off).saturating_add(len),
            );
            data.get(start..end)
                .map(|s| (s, start))
                .ok_or_else(|| truncated(format!("{what} section claims bytes {start}..{end}")))
        };
        let (types, types_at) = section(type_off, type_len, "type")?;
        let (strings, _) = section(str_off, str_len, "string")?;

        let mut finder = only.map(|(names, tracepoints)| Finder::new(names, tracepoints));
        let mut starts = Vec::with_capacity(types.len() / 24);
        starts.push(0);
        let mut pos = 0usize;
        while pos < types.len() {
            let id = starts.len() as u32;
            let at = types_at + pos;
            let cut = |len| BtfError::Truncated {
                at: types_at + types.len(),
                what: format!("type id {id} at byte {at} needs {len} bytes"),
            };
            let info = le32(types, pos + 4).ok_or_else(|| cut(12))?;
            let kind = (info >> 24) & 0x1f;
            let unknown = || BtfError::UnknownKind { kind, id, at };
            let len = 12 + extra_len(kind, (info & 0xffff) as usize).ok_or_else(unknown)?;
            if pos + len > types.len() {
                return Err(cut(len));
            }
            let name = le32(types, pos).unwrap_or(0) as usize;
            if let Some(f) = finder.as_mut()
                && name != 0
            {
                f.visit(id, strings.get(name..).unwrap_or(&[]));
            }
            starts.push(pos as u32);
            pos += len;
        }
        let wanted = finder.map_or_else(Vec::new, |f| f.wanted);
        let base = data.as_ptr() as usize;
        let range = |s: &[u8]| {
            let at = s.as_ptr() as usize - base;
            at..at + s.len()
        };
        let (types, strings) = (range(types), range(strings));
        let mut btf = Btf {
            data: owned,
            types,
            strings,
            starts,
            wanted,
            all: std::sync::OnceLock::new(),
            unlisted: std::sync::atomic::AtomicUsize::new(0),
            ptr_size: 8,
        };
        if only.is_none() {
            btf.all.get_or_init(|| btf.index_all());
        }
        // BTF has no pointer size; a pointer is as wide as `long`.
        let long = btf.named("long int", |t| t.kind == KIND_INT).next();
        btf.ptr_size = long.map_or(8, |t| t.size_or_type);
        Ok(btf)
    }

    /// Every name indexed: chains built backwards so that each lists its ids in ascending
    /// order. A bucket for every 8 types (the kernel's: 16k buckets, 64 KB, ~4 named types a
    /// chain): a bucket a type made the table 512 KB, and its random writes missed the cache.
    fn index_all(&self) -> NameIndex {
        let (types, strings) = (self.types(), self.strings());
        let mask = (self.starts.len() / 8).next_power_of_two() - 1;
        let (mut heads, mut next) = (vec![0u32; mask + 1], vec![0u32; self.starts.len()]);
        for (id, &pos) in self.starts.iter().enumerate().skip(1).rev() {
            let name = le32(types, pos as usize).unwrap_or(0) as usize;
            if name != 0 {
                let bucket = hash_name(strings.get(name..).unwrap_or(&[])) as usize & mask;
                next[id] = heads[bucket];
                heads[bucket] = id as u32;
            }
        }
        NameIndex { heads, next }
    }

    /// How many lookups were of a name [`Btf::from_blob_for`] was not given (each made or used
    /// the index of every name).
    #[cfg(test)]
    pub(crate) fn unlisted_lookups(&self) -> usize {
        self.unlisted.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn ty(&self, id: u32) -> Option<Ty<'_>> {
        let pos = *self.starts.get(id as usize)? as usize;
        if id == 0 {
            return None;
        }
        let (name, info) = (le32(self.types(), pos)?, le32(self.types(), pos + 4)?);
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        let len = extra_len(kind, vlen)?;
        Some(Ty {
            id,
            name,
            kind,
            vlen,
            kflag: info >> 31 != 0,
            size_or_type: le32(self.types(), pos + 8)?,
            extra: self.types().get(pos + 12..pos + 12 + len)?,
        })
    }

    fn name_of(&self, t: &Ty<'_>) -> &str {
        cstr(self.strings(), t.name).unwrap_or("")
    }

    /// True if the string at `off` is `name` (no UTF-8 check, no allocation).
    fn name_is(&self, off: u32, name: &str) -> bool {
        let rest = self.strings().get(off as usize..).unwrap_or(&[]);
        rest.starts_with(name.as_bytes()) && rest.get(name.len()).is_none_or(|&b| b == 0)
    }

    /// The types named `name` that pass `keep`.
    fn named<'a>(
        &'a self,
        name: &str,
        keep: impl Fn(&Ty<'_>) -> bool,
    ) -> impl Iterator<Item = Ty<'a>> {
        let listed = self.wanted.binary_search_by(|w| w.name.as_str().cmp(name));
        let (listed, first) = match listed {
            Ok(i) => (self.wanted[i].ids.as_slice(), None),
            Err(_) => {
                if !self.wanted.is_empty() {
                    self.unlisted
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let all = self.all.get_or_init(|| self.index_all());
                let bucket = hash_name(name.as_bytes()) as usize & (all.heads.len() - 1);
                (&[][..], all.heads.get(bucket).copied())
            }
        };
        let next = |&id: &u32| self.all.get()?.next.get(id as usize).copied();
        let chain = std::iter::successors(first, next).take_while(|&id| id != 0);
        (listed.iter().copied().chain(chain))
            .filter_map(|id| self.ty(id))
            .filter(move |t| self.name_is(t.name, name) && keep(t))
    }

    /// Follows typedefs, qualifiers and type tags.
    fn resolve(&self, mut id: u32) -> u32 {
        const MODIFIERS: [u32; 5] = [
            KIND_TYPEDEF,
            KIND_VOLATILE,
            KIND_CONST,
            KIND_RESTRICT,
            KIND_TYPE_TAG,
        ];
        for _ in 0..MAX_DEPTH {
            match self.ty(id) {
                Some(t) if MODIFIERS.contains(&t.kind) => id = t.size_or_type,
                _ => break,
            }
        }
        id
    }

    fn size_of(&self, id: u32, depth: u32) -> u32 {
        let Some(t) = self.ty(self.resolve(id)) else {
            return 0;
        };
        match t.kind {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT => {
                t.size_or_type
            }
            KIND_PTR => self.ptr_size,
            KIND_ARRAY if depth < MAX_DEPTH => {
                self.size_of(t.word(0), depth + 1).saturating_mul(t.word(2))
            }
            _ => 0,
        }
    }

    fn composite(&self, name: &str) -> Result<Ty<'_>, BtfError> {
        self.named(name, |t| matches!(t.kind, KIND_STRUCT | KIND_UNION))
            .next()
            .ok_or_else(|| BtfError::NoStruct(name.to_string()))
    }

    /// Finds member `name` of the composite `t`, searching anonymous struct/union members
    /// transparently. Returns (bit offset within `t`, type id, is a bitfield).
    fn find_member(
        &self,
        t: Ty<'_>,
        name: &str,
        depth: u32,
        budget: &mut usize,
    ) -> Option<(u64, u32, bool)> {
        if !matches!(t.kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        for i in 0..t.vlen {
            *budget = budget.checked_sub(1)?;
            let (m_name, m_ty, m_off) = (t.word(3 * i), t.word(3 * i + 1), t.word(3 * i + 2));
            let (bits, bitfield_size) = match t.kflag {
                true => (u64::from(m_off & 0x00ff_ffff), m_off >> 24),
                false => (u64::from(m_off), 0),
            };
            if m_name == 0 {
                let inner = self.ty(self.resolve(m_ty));
                if let Some(inner) = inner.filter(|_| depth < MAX_DEPTH)
                    && let Some((off, ty, bf)) = self.find_member(inner, name, depth + 1, budget)
                {
                    return Some((bits + off, ty, bf));
                }
            } else if self.name_is(m_name, name) {
                return Some((bits, m_ty, bitfield_size != 0 || self.is_int_bitfield(m_ty)));
            }
        }
        None
    }

    /// An INT narrower than its storage or not at bit 0 (bitfields without kind_flag).
    fn is_int_bitfield(&self, id: u32) -> bool {
        self.ty(self.resolve(id)).is_some_and(|t| {
            let enc = t.word(0);
            t.kind == KIND_INT
                && ((enc >> 16) & 0xff != 0
                    || u64::from(enc & 0xff) != u64::from(t.size_or_type) * 8)
        })
    }

    /// Member at a dotted path inside a struct or union, e.g. `("task_struct", "signal")`,
    /// `("signal_struct", "live.counter")`. Anonymous struct/union members are searched
    /// transparently; typedefs and qualifiers are resolved when stepping into a member. The
    /// offset is in bytes from the start of `struct_name`; bitfields are an error.
    pub fn member(&self, struct_name: &str, path: &str) -> Result<Member, BtfError> {
        let mut comp = self.composite(struct_name)?;
        let (mut bits, mut ty) = (0u64, 0u32);
        let mut walked = 0;
        let err_path = |end: usize| path.get(..end).unwrap_or(path).to_string();
        for (i, seg) in path.split('.').enumerate() {
            if i > 0 {
                comp = self
                    .ty(self.resolve(ty))
                    .filter(|t| matches!(t.kind, KIND_STRUCT | KIND_UNION))
                    .ok_or_else(|| BtfError::NotComposite {
                        st: struct_name.to_string(),
                        path: err_path(walked - 1),
                    })?;
            }
            walked += seg.len() + 1;
            let (off, m_ty, bitfield) = self
                .find_member(comp, seg, 0, &mut { SEARCH_BUDGET })
                .filter(|_| !seg.is_empty())
                .ok_or_else(|| BtfError::NoMember {
                    st: struct_name.to_string(),
                    path: err_path(walked - 1),
                })?;
            bits += off;
            ty = m_ty;
            if bitfield || bits % 8 != 0 {
                return Err(BtfError::Bitfield {
                    st: struct_name.to_string(),
                    path: err_path(walked - 1),
                });
            }
        }
        let offset = u32::try_from(bits / 8);
        Ok(Member {
            offset: offset.map_err(|_| bad(&comp, struct_name, "member offset beyond 4 GiB"))?,
            size: self.size_of(ty, 0),
            ty: self.describe(ty, 0),
        })
    }

    /// Byte offset of [`Btf::member`].
    pub(crate) fn member_offset(&self, struct_name: &str, path: &str) -> Result<u32, BtfError> {
        Ok(self.member(struct_name, path)?.offset)
    }

    /// Size in bytes of the struct or union `name`.
    pub fn struct_size(&self, name: &str) -> Result<u32, BtfError> {
        Ok(self.composite(name)?.size_or_type)
    }

    /// Value of `variant` in the enum (ENUM or ENUM64) `enum_name`. An empty `enum_name`
    /// searches the anonymous enums (the kernel has many, e.g. the one with `MM_ANONPAGES`).
    /// Unsigned 64-bit values above `i64::MAX` wrap.
    pub fn enum_value(&self, enum_name: &str, variant: &str) -> Result<i64, BtfError> {
        let is_enum = |t: &Ty<'_>| matches!(t.kind, KIND_ENUM | KIND_ENUM64);
        let enums: Vec<Ty<'_>> = if enum_name.is_empty() {
            let all = (1..self.starts.len() as u32).filter_map(|id| self.ty(id));
            all.filter(|t| t.name == 0 && is_enum(t)).collect()
        } else {
            self.named(enum_name, is_enum).collect()
        };
        if enums.is_empty() {
            return Err(BtfError::NoEnum(enum_name.to_string()));
        }
        for t in enums {
            let stride = if t.kind == KIND_ENUM { 2 } else { 3 };
            for i in 0..t.vlen {
                if !self.name_is(t.word(stride * i), variant) {
                    continue;
                }
                let lo = t.word(stride * i + 1);
                return Ok(match (t.kind, t.kflag) {
                    (KIND_ENUM, true) => i64::from(lo as i32),
                    (KIND_ENUM, false) => i64::from(lo),
                    _ => ((u64::from(t.word(stride * i + 2)) << 32) | u64::from(lo)) as i64,
                });
            }
        }
        Err(BtfError::NoVariant {
            name: enum_name.to_string(),
            variant: variant.to_string(),
        })
    }

    /// True if a BTF_KIND_FUNC of that name exists (a candidate for fentry/kprobe).
    pub fn has_function(&self, name: &str) -> bool {
        self.function_id(name).is_some()
    }

    /// The type id of the BTF_KIND_FUNC `name` (what fentry/fexit loads attach by).
    pub(crate) fn function_id(&self, name: &str) -> Option<u32> {
        self.named(name, |t| t.kind == KIND_FUNC)
            .next()
            .map(|t| t.id)
    }

    /// A BTF blob that keeps this one's type ids but only the types BTF-attached programs
    /// look up by name: `FUNC <f>` for each of `functions` (fentry/fexit) and
    /// `TYPEDEF btf_trace_<tp>` for each of `tracepoints` (tp_btf). Every other type up to the
    /// last one kept becomes an anonymous `void *`, and the blob ends there.
    ///
    /// aya's program loaders resolve a name to its kernel type id by scanning a fully parsed
    /// `aya::Btf`; parsing the kernel's 126k types takes ~20 ms and ~15 MB. Parsing this
    /// skeleton gives the same ids for a fraction of both.
    pub fn attach_skeleton(&self, functions: &[&str], tracepoints: &[&str]) -> Vec<u8> {
        let typedefs: Vec<String> = tracepoints.iter().map(|t| tracepoint_typedef(t)).collect();
        let wanted = functions
            .iter()
            .map(|f| (*f, KIND_FUNC))
            .chain(typedefs.iter().map(|t| (t.as_str(), KIND_TYPEDEF)));
        let mut strings = vec![0u8];
        let mut kept = Vec::new();
        for (name, kind) in wanted {
            if let Some(t) = self.named(name, |t| t.kind == kind).next() {
                kept.push((t.id, kind, strings.len() as u32));
                strings.extend_from_slice(name.as_bytes());
                strings.push(0);
            }
        }
        kept.sort_unstable();
        kept.dedup_by_key(|k| k.0);
        let last = kept.last().map_or(0, |k| k.0);
        let mut types = Vec::with_capacity(last as usize * 12);
        let mut kept = kept.into_iter().peekable();
        for id in 1..=last {
            let (name, kind) = match kept.next_if(|k| k.0 == id) {
                Some((_, kind, name)) => (name, kind),
                None => (0, KIND_PTR),
            };
            // A FUNC's vlen is its linkage; 0 (static) is as good as any for a name lookup.
            for w in [name, kind << 24, 0] {
                types.extend(w.to_le_bytes());
            }
        }
        let mut out = Vec::with_capacity(HEADER_LEN + types.len() + strings.len());
        out.extend([0x9f, 0xeb, 1, 0]);
        let type_len = types.len() as u32;
        for w in [
            HEADER_LEN as u32,
            0,
            type_len,
            type_len,
            strings.len() as u32,
        ] {
            out.extend(w.to_le_bytes());
        }
        out.extend(types);
        out.extend(strings);
        out
    }

    /// Arguments of a BTF-enabled tracepoint (tp_btf): the prototype behind
    /// `typedef btf_trace_<tp>`, without its leading `void *__data`.
    pub fn tracepoint_args(&self, tp: &str) -> Result<Vec<TypeDesc>, BtfError> {
        let name = tracepoint_typedef(tp);
        let td = self
            .named(&name, |t| t.kind == KIND_TYPEDEF)
            .next()
            .ok_or_else(|| BtfError::NoTracepoint(tp.to_string()))?;
        let proto = self
            .ty(self.resolve(td.size_or_type))
            .filter(|p| p.kind == KIND_PTR)
            .and_then(|p| self.ty(self.resolve(p.size_or_type)))
            .ok_or_else(|| bad(&td, &name, "not a pointer to a function prototype"))?;
        match self.proto(proto, &name)?.0.split_first() {
            Some((_data, args)) => Ok(args.to_vec()),
            None => Err(bad(&td, &name, "no `void *__data` parameter")),
        }
    }

    /// Parameter types and return type of the kernel function `name` (FUNC → FUNC_PROTO).
    /// A variadic function's `...` is `Other("...")`.
    pub fn function_args(&self, name: &str) -> Result<(Vec<TypeDesc>, TypeDesc), BtfError> {
        let func = self
            .named(name, |t| t.kind == KIND_FUNC)
            .next()
            .ok_or_else(|| BtfError::NoFunction(name.to_string()))?;
        let proto = self.ty(func.size_or_type);
        self.proto(proto.ok_or_else(|| bad(&func, name, "no prototype"))?, name)
    }

    fn proto(&self, p: Ty<'_>, name: &str) -> Result<(Vec<TypeDesc>, TypeDesc), BtfError> {
        if p.kind != KIND_FUNC_PROTO {
            return Err(bad(&p, name, "expected a function prototype"));
        }
        let params = (0..p.vlen).map(|i| match (p.word(2 * i), p.word(2 * i + 1)) {
            (0, 0) if i + 1 == p.vlen => TypeDesc::Other("...".into()),
            (_, ty) => self.describe(ty, 0),
        });
        Ok((params.collect(), self.describe(p.size_or_type, 0)))
    }

    fn describe(&self, id: u32, depth: u32) -> TypeDesc {
        let id = self.resolve(id);
        if id == 0 {
            return TypeDesc::Void;
        }
        let Some(t) = self.ty(id) else {
            return TypeDesc::Other(format!("bad type id {id}"));
        };
        let (name, size) = (self.name_of(&t).to_string(), t.size_or_type);
        let deeper = |to: u32| match depth < MAX_DEPTH {
            true => Box::new(self.describe(to, depth + 1)),
            false => Box::new(TypeDesc::Other("…".into())),
        };
        match t.kind {
            KIND_INT => TypeDesc::Int {
                size,
                signed: (t.word(0) >> 24) & 1 != 0,
                bool_: (t.word(0) >> 24) & 4 != 0,
            },
            KIND_PTR => TypeDesc::Ptr {
                to: deeper(t.size_or_type),
            },
            KIND_ARRAY => TypeDesc::Array {
                elem: deeper(t.word(0)),
                elem_size: self.size_of(t.word(0), depth + 1),
                len: t.word(2),
            },
            KIND_STRUCT => TypeDesc::Struct { name, size },
            KIND_UNION => TypeDesc::Union { name, size },
            KIND_FWD if t.kflag => TypeDesc::Union { name, size: 0 },
            KIND_FWD => TypeDesc::Struct { name, size: 0 },
            KIND_ENUM | KIND_ENUM64 => TypeDesc::Enum { name, size },
            KIND_FUNC | KIND_FUNC_PROTO => TypeDesc::Func,
            KIND_FLOAT => TypeDesc::Other(name),
            _ => TypeDesc::Other(format!("btf kind {} (`{name}`)", t.kind)),
        }
    }
}

#[cfg(test)]
mod tests;
