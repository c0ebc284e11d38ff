//! Tracefs: where it is mounted (mounting it when it is not) and the record layout of a
//! tracepoint, read from its `format` file so that no kernel's layout is compiled in.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use procfs::process::MountInfo;
use tracing::info;

/// Where aya looks for tracefs; the first that is mounted is used.
const MOUNT_POINTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Finds tracefs in /proc/self/mountinfo at one of the places aya attaches through, and mounts
/// it at /sys/kernel/tracing when it is at neither.
pub fn ensure_mounted() -> anyhow::Result<PathBuf> {
    if let Some(point) = mounted_at(crate::procfs::own_mounts()?) {
        return Ok(point);
    }
    let target = MOUNT_POINTS[0];
    rustix::mount::mount(
        "nodev",
        target,
        "tracefs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .with_context(|| format!("tracefs is not mounted and mounting it at {target} failed"))?;
    info!(target, "mounted tracefs");
    Ok(PathBuf::from(target))
}

/// Where tracefs is mounted among the places aya attaches through, from the lines of a mountinfo.
pub fn mounted_at(mounts: impl IntoIterator<Item = MountInfo>) -> Option<PathBuf> {
    let tracefs: Vec<PathBuf> = mounts
        .into_iter()
        .filter(|m| m.fs_type == "tracefs")
        .map(|m| m.mount_point)
        .collect();
    MOUNT_POINTS
        .iter()
        .map(PathBuf::from)
        .find(|point| tracefs.contains(point))
}

/// One field of a tracepoint record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
}

/// The fields of a tracepoint's record, by name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Format {
    fields: HashMap<String, Field>,
}

impl Format {
    pub fn read(tracefs: &Path, category: &str, name: &str) -> anyhow::Result<Format> {
        let path = tracefs
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Format::parse(&text))
    }

    /// Parses lines like `\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;`.
    /// Lines that do not have that shape are skipped.
    pub fn parse(text: &[u8]) -> Format {
        let text = String::from_utf8_lossy(text);
        let mut fields = HashMap::new();
        for line in text.lines() {
            let mut declaration = None;
            let (mut offset, mut size) = (None, None);
            for part in line.split(';') {
                let part = part.trim();
                if let Some(decl) = part.strip_prefix("field:") {
                    declaration = Some(decl);
                } else if let Some(value) = part.strip_prefix("offset:") {
                    offset = value.parse().ok();
                } else if let Some(value) = part.strip_prefix("size:") {
                    size = value.parse().ok();
                }
            }
            let (Some(declaration), Some(offset), Some(size)) = (declaration, offset, size) else {
                continue;
            };
            // `char comm[16]` → `comm`; `__data_loc char[] filename` → `filename`.
            let Some(name) = declaration.split_whitespace().last() else {
                continue;
            };
            let name = name.split('[').next().unwrap_or(name);
            fields.insert(name.to_owned(), Field { offset, size });
        }
        Format { fields }
    }

    /// The field, which must exist with this size.
    pub fn require(&self, name: &str, size: u32) -> anyhow::Result<Field> {
        match self.fields.get(name) {
            Some(field) if field.size == size => Ok(*field),
            Some(field) => bail!(
                "field {name} has size {} where {size} is expected",
                field.size
            ),
            None => bail!("no field {name}"),
        }
    }

    /// The field if it exists with this size.
    pub fn optional(&self, name: &str, size: u32) -> Option<Field> {
        self.fields.get(name).filter(|f| f.size == size).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXIT: &[u8] = b"name: sched_process_exit\nID: 369\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n\
\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n\n\
print fmt: \"comm=%s pid=%d\", REC->comm, REC->pid\n";

    #[test]
    fn finds_tracefs_where_aya_looks() {
        let debugfs_only = b"30 20 0:12 / /sys/kernel/debug rw - debugfs debugfs rw\n\
31 30 0:13 / /sys/kernel/debug/tracing rw - tracefs tracefs rw\n";
        assert_eq!(
            mounted_at(crate::procfs::mounts(debugfs_only)),
            Some(PathBuf::from("/sys/kernel/debug/tracing"))
        );
        let elsewhere = b"31 30 0:13 / /mnt/trace rw - tracefs tracefs rw\n";
        assert_eq!(mounted_at(crate::procfs::mounts(elsewhere)), None);
        assert_eq!(mounted_at(crate::procfs::mounts(b"")), None);
    }

    #[test]
    fn fields_with_offsets_and_sizes() {
        let format = Format::parse(EXIT);
        assert_eq!(
            format.require("pid", 4).unwrap(),
            Field {
                offset: 24,
                size: 4
            }
        );
        assert_eq!(
            format.require("comm", 16).unwrap(),
            Field {
                offset: 8,
                size: 16
            }
        );
        assert_eq!(
            format.optional("group_dead", 1),
            Some(Field {
                offset: 32,
                size: 1
            })
        );
        assert!(format.require("pid", 8).is_err());
        assert!(format.require("nope", 4).is_err());
        assert_eq!(format.optional("nope", 4), None);
    }

    #[test]
    fn data_loc_fields() {
        let format =
            Format::parse(b"\tfield:__data_loc char[] dst_path;\toffset:28;\tsize:4;\tsigned:0;\n");
        assert_eq!(format.require("dst_path", 4).unwrap().offset, 28);
    }

    #[test]
    fn garbage_gives_no_fields() {
        assert_eq!(Format::parse(b""), Format::default());
        assert_eq!(
            Format::parse(b"field:;offset:x;size:;\n\xff\xfe;;;"),
            Format::default()
        );
        assert_eq!(Format::parse(b"field: ;offset:1;size:1;").fields.len(), 0);
    }

    #[test]
    fn this_kernel_has_the_tracepoints_we_use() {
        let tracefs = ensure_mounted().expect("tracefs mountable (tests run as root)");
        let newtask = Format::read(&tracefs, "task", "task_newtask").unwrap();
        newtask.require("pid", 4).unwrap();
        newtask.require("clone_flags", 8).unwrap();
        let attach = Format::read(&tracefs, "cgroup", "cgroup_attach_task").unwrap();
        for (field, size) in [
            ("dst_root", 4),
            ("dst_level", 4),
            ("pid", 4),
            ("dst_path", 4),
        ] {
            attach.require(field, size).unwrap();
        }
        Format::read(&tracefs, "sched", "sched_process_exit")
            .unwrap()
            .require("pid", 4)
            .unwrap();
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
                let _ = Format::parse(&bytes);
            }

            #[test]
            fn round_trips(fields in proptest::collection::btree_map("[a-z_]{1,12}", (0u32..4096, 1u32..64), 1..10)) {
                let text: String = fields
                    .iter()
                    .map(|(name, (offset, size))| {
                        format!("\tfield:int {name};\toffset:{offset};\tsize:{size};\tsigned:1;\n")
                    })
                    .collect();
                let format = Format::parse(text.as_bytes());
                for (name, (offset, size)) in &fields {
                    prop_assert_eq!(format.require(name, *size).unwrap(), Field { offset: *offset, size: *size });
                }
            }
        }
    }
}
