//! Check 12 (`xattrs`): every extended attribute belongs to an existing inode and has a
//! name; one whose name is lost keeps its value under a made-up name.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};

use super::{Findings, State, check_id, file_type, has_valid_type, query_vec};
use crate::fsck::paths::describe;
use crate::meta;
use crate::meta::names::{add_name, del_name};

/// Check 12: xattrs of missing inodes are deleted; xattrs whose name is missing are
/// renamed `user.lost+found_<n>` (`trusted.` on inodes other than files and directories,
/// which cannot hold `user.` attributes).
pub(super) fn check_xattrs(c: &Connection, _st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::XATTRS;
    // (inode, name_id, inode mode, name exists)
    let rows: Vec<(i64, i64, Option<u32>, bool)> = query_vec(
        c,
        "SELECT x.inode, x.name_id, i.mode, n.id IS NOT NULL FROM ext_attributes x
         LEFT JOIN inodes i ON i.id = x.inode LEFT JOIN names n ON n.id = x.name_id
         WHERE i.id IS NULL OR n.id IS NULL",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    let mut deleted: BTreeMap<i64, u64> = BTreeMap::new();
    for (ino, name_id, mode, _) in &rows {
        if mode.is_none() {
            meta::xattrs::remove(c, *ino, *name_id)?;
            *deleted.entry(*ino).or_default() += 1;
        }
    }
    for (ino, n) in deleted {
        out.add_repaired(
            CHECK,
            format!("{n} extended attributes of missing inode {ino}; deleted"),
        );
    }
    for (ino, name_id, mode, _) in rows {
        let Some(mode) = mode else { continue };
        let prefix = if matches!(file_type(mode), libc::S_IFREG | libc::S_IFDIR) || !has_valid_type(mode) {
            "user."
        } else {
            "trusted."
        };
        let mut n = name_id;
        let new = loop {
            let candidate = format!("{prefix}lost+found_{n}");
            let id = add_name(c, candidate.as_bytes())?;
            let taken: bool = c.query_row(
                "SELECT EXISTS (SELECT 1 FROM ext_attributes WHERE inode = ?1 AND name_id = ?2)",
                params![ino, id],
                |r| r.get(0),
            )?;
            if !taken {
                meta::xattrs::rename(c, ino, name_id, id)?;
                break candidate;
            }
            del_name(c, id)?;
            n += 1;
        };
        out.add_repaired(
            CHECK,
            format!(
                "an extended attribute of {} has no name (name id {name_id} is missing); renamed {new}",
                describe(c, ino)?
            ),
        );
    }
    Ok(())
}
