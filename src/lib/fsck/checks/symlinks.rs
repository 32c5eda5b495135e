//! Check 13 (`symlinks`): symlink targets belong to existing symlinks, and every symlink
//! has one (reading a symlink without target fails).

use rusqlite::Connection;

use super::{Findings, State, check_id, kind_name, query_vec};
use crate::fsck::paths::describe;
use crate::meta;

/// Check 13: targets of missing or non-symlink inodes are deleted; symlinks without
/// target are reported only.
pub(super) fn check_symlinks(c: &Connection, _st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::SYMLINKS;
    let stray: Vec<(i64, Option<u32>)> = query_vec(
        c,
        "SELECT t.inode, i.mode FROM symlink_targets t LEFT JOIN inodes i ON i.id = t.inode
         WHERE i.id IS NULL OR (i.mode & 61440) IN (32768, 16384, 4096, 49152, 8192, 24576)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    for (ino, mode) in stray {
        let msg = match mode {
            None => format!("symlink target of missing inode {ino}; deleted"),
            Some(m) => format!(
                "{} is a {} but has a symlink target; deleted it",
                describe(c, ino)?,
                kind_name(m)
            ),
        };
        meta::inodes::delete_symlink_target(c, ino)?;
        out.add_repaired(CHECK, msg);
    }
    let targetless: Vec<i64> = query_vec(
        c,
        "SELECT i.id FROM inodes i WHERE (i.mode & 61440) = 40960
            AND NOT EXISTS (SELECT 1 FROM symlink_targets t WHERE t.inode = i.id)",
        [],
        |r| r.get(0),
    )?;
    for ino in targetless {
        out.add_reported(
            CHECK,
            format!(
                "symlink {} has no target (reading it fails with EIO); remove it",
                describe(c, ino)?
            ),
        );
    }
    Ok(())
}
