//! Offsets of a few kernel struct members, read from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`), so the kernel programs read the right bytes on any kernel.
//!
//! A general BTF parser builds every one of the kernel's ~100,000 types in memory (about 60 MB
//! for a moment at start-up, which is this service's whole memory budget); this walks the type
//! section once, keeping only the position of each type, and resolves the few members asked for.

use std::fmt;

const MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, PartialEq, Eq)]
pub enum BtfError {
    Truncated,
    BadMagic,
    UnknownKind(u32),
    NoSuchType(String),
    NoSuchMember(String),
}

impl fmt::Display for BtfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BtfError::Truncated => f.write_str("BTF data is truncated"),
            BtfError::BadMagic => f.write_str("not BTF data (bad magic)"),
            BtfError::UnknownKind(kind) => write!(f, "unknown BTF kind {kind}"),
            BtfError::NoSuchType(name) => write!(f, "no struct {name} in BTF"),
            BtfError::NoSuchMember(path) => write!(f, "no member {path} in BTF"),
        }
    }
}

impl std::error::Error for BtfError {}

/// BTF type information: the raw bytes and where each type starts.
pub struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Offset in `types` of type id `i + 1` (id 0 is `void`).
    starts: Vec<u32>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    let bytes = data.get(at..at + 4).ok_or(BtfError::Truncated)?;
    Ok(u32::from_ne_bytes(bytes.try_into().expect("4 bytes")))
}

impl<'a> Btf<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Btf<'a>, BtfError> {
        let magic = data.get(0..2).ok_or(BtfError::Truncated)?;
        if u16::from_ne_bytes([magic[0], magic[1]]) != MAGIC {
            return Err(BtfError::BadMagic);
        }
        let header_len = u32_at(data, 4)? as usize;
        let section = |offset_at: usize| -> Result<&'a [u8], BtfError> {
            let offset = header_len + u32_at(data, offset_at)? as usize;
            let len = u32_at(data, offset_at + 4)? as usize;
            data.get(offset..offset + len).ok_or(BtfError::Truncated)
        };
        let types = section(8)?;
        let strings = section(16)?;
        let mut starts = Vec::new();
        let mut at = 0;
        while at < types.len() {
            starts.push(at as u32);
            let info = u32_at(types, at + 4)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                2 | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | 12 | 16
                | KIND_TYPE_TAG => 0,
                other => return Err(BtfError::UnknownKind(other)),
            };
            at += 12 + extra;
        }
        Ok(Btf {
            types,
            strings,
            starts,
        })
    }

    fn name(&self, offset: u32) -> &[u8] {
        let rest = self.strings.get(offset as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    fn record(&self, id: u32) -> Result<(u32, u32, u32, usize), BtfError> {
        let at = *self
            .starts
            .get((id as usize).wrapping_sub(1))
            .ok_or(BtfError::Truncated)? as usize;
        let info = u32_at(self.types, at + 4)?;
        Ok((
            u32_at(self.types, at)?,
            info,
            u32_at(self.types, at + 8)?,
            at,
        ))
    }

    fn struct_id(&self, name: &str) -> Result<u32, BtfError> {
        (1..=self.starts.len() as u32)
            .find(|&id| {
                self.record(id).is_ok_and(|(name_off, info, _, _)| {
                    (info >> 24) & 0x1f == KIND_STRUCT && self.name(name_off) == name.as_bytes()
                })
            })
            .ok_or_else(|| BtfError::NoSuchType(name.to_owned()))
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..32 {
            let (_, info, target, _) = self.record(id)?;
            match (info >> 24) & 0x1f {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = target
                }
                _ => return Ok(id),
            }
        }
        Err(BtfError::Truncated)
    }

    /// The type and bit offset of member `name` of the struct or union `id`, looking into its
    /// anonymous struct and union members too (`mm_struct` keeps all its fields in one).
    fn find_member(
        &self,
        id: u32,
        name: &[u8],
        depth: u32,
    ) -> Result<Option<(u32, u32)>, BtfError> {
        let (_, info, _, at) = self.record(self.resolve(id)?)?;
        let kind = (info >> 24) & 0x1f;
        if depth > 8 || (kind != KIND_STRUCT && kind != KIND_UNION) {
            return Ok(None);
        }
        let kind_flag = info >> 31 == 1;
        for i in 0..(info & 0xffff) as usize {
            let member = at + 12 + 12 * i;
            let member_name = self.name(u32_at(self.types, member)?);
            let member_id = u32_at(self.types, member + 4)?;
            let raw = u32_at(self.types, member + 8)?;
            let bits = if kind_flag { raw & 0x00ff_ffff } else { raw };
            if member_name == name {
                return Ok(Some((member_id, bits)));
            }
            if member_name.is_empty()
                && let Some((inner_id, inner_bits)) =
                    self.find_member(member_id, name, depth + 1)?
            {
                return Ok(Some((inner_id, bits + inner_bits)));
            }
        }
        Ok(None)
    }

    /// Byte offset of `path` (`se.sum_exec_runtime`) inside struct `name`.
    pub fn member_offset(&self, name: &str, path: &str) -> Result<u32, BtfError> {
        let missing = || BtfError::NoSuchMember(format!("{name}.{path}"));
        let mut id = self.struct_id(name)?;
        let mut offset_bits = 0u32;
        for member_name in path.split('.') {
            let (member_id, member_bits) = self
                .find_member(id, member_name.as_bytes(), 0)?
                .ok_or_else(missing)?;
            id = member_id;
            offset_bits += member_bits;
        }
        if !offset_bits.is_multiple_of(8) {
            return Err(missing());
        }
        Ok(offset_bits / 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_on_this_kernel_are_plausible_and_consistent() {
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            panic!("this test needs a kernel with BTF (/sys/kernel/btf/vmlinux)");
        };
        let btf = Btf::parse(&data).unwrap();
        let signal = btf.member_offset("task_struct", "signal").unwrap();
        let se = btf.member_offset("task_struct", "se").unwrap();
        let runtime = btf
            .member_offset("task_struct", "se.sum_exec_runtime")
            .unwrap();
        let in_se = btf
            .member_offset("sched_entity", "sum_exec_runtime")
            .unwrap();
        assert_eq!(runtime, se + in_se, "a nested path adds the offsets");
        assert!(
            signal > 0 && signal.is_multiple_of(8),
            "a pointer is aligned: {signal}"
        );
        let sum = btf
            .member_offset("signal_struct", "sum_sched_runtime")
            .unwrap();
        assert!(sum.is_multiple_of(8));
        // Members of an anonymous struct (all of `mm_struct`'s on recent kernels).
        let start = btf.member_offset("mm_struct", "arg_start").unwrap();
        let end = btf.member_offset("mm_struct", "arg_end").unwrap();
        assert_eq!(end, start + 8, "arg_end follows arg_start");
        assert_eq!(
            btf.member_offset("task_struct", "no_such_member"),
            Err(BtfError::NoSuchMember("task_struct.no_such_member".into()))
        );
        assert_eq!(
            btf.member_offset("no_such_struct", "x"),
            Err(BtfError::NoSuchType("no_such_struct".into()))
        );
    }

    #[test]
    fn agrees_with_a_complete_parser() {
        struct Bytes<'a>(&'a [u8]);
        impl btfparse::Readable for Bytes<'_> {
            fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
                let at = offset as usize;
                let src = self.0.get(at..at + buffer.len()).ok_or_else(|| {
                    btfparse::Error::new(btfparse::ErrorKind::IOError, "out of range")
                })?;
                buffer.copy_from_slice(src);
                Ok(())
            }
        }
        let data = std::fs::read("/sys/kernel/btf/vmlinux").expect("kernel BTF");
        let reference = btfparse::TypeInformation::new(&Bytes(&data)).unwrap();
        let ours = Btf::parse(&data).unwrap();
        for (name, path) in [
            ("task_struct", "signal"),
            ("task_struct", "se.sum_exec_runtime"),
            ("signal_struct", "sum_sched_runtime"),
            ("task_struct", "tgid"),
            ("cgroup", "kn"),
        ] {
            let id = reference.id_of(name).unwrap();
            let (_, offset) = reference.offset_of(id, path).unwrap();
            let btfparse::Offset::ByteOffset(expected) = offset else {
                panic!("{name}.{path} is a bit field");
            };
            assert_eq!(
                ours.member_offset(name, path),
                Ok(expected),
                "{name}.{path}"
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(Btf::parse(b"").err(), Some(BtfError::Truncated));
        assert_eq!(
            Btf::parse(b"\x00\x00\x01\x00").err(),
            Some(BtfError::BadMagic)
        );
        let mut header = vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
        header.extend_from_slice(&[0xff; 16]);
        assert_eq!(Btf::parse(&header).err(), Some(BtfError::Truncated));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 0..512), magic in any::<bool>()) {
                if magic && bytes.len() >= 2 {
                    bytes[..2].copy_from_slice(&MAGIC.to_ne_bytes());
                }
                if let Ok(btf) = Btf::parse(&bytes) {
                    let _ = btf.member_offset("task_struct", "se.sum_exec_runtime");
                }
            }
        }
    }
}
