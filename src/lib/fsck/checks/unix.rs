//! Check 15 (`unix`): POSIX conventions the kernel relies on: a valid file type, a
//! symlink's size is its target's length, and the fields and rows that only some file
//! types may have. Only the file type and a symlink's size are repaired.

use rusqlite::Connection;

use super::{Findings, State, check_id, drop_ids, file_type, fill_ids, kind_name, query_vec};
use crate::fsck::paths::{column_bytes, describe, lossy};
use crate::meta;

/// Check 15: POSIX conventions. Inodes without a valid file type are fixed (directory
/// if they have entries, else symlink if they have a target, else regular file), and so
/// is a symlink's size; the rest is reported only.
pub(super) fn check_unix(c: &Connection, _st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::UNIX;
    let typeless: Vec<(i64, u32, bool, bool)> = query_vec(
        c,
        "SELECT i.id, i.mode,
                EXISTS (SELECT 1 FROM contents c WHERE c.parent_inode = i.id),
                EXISTS (SELECT 1 FROM symlink_targets t WHERE t.inode = i.id)
         FROM inodes i WHERE (i.mode & 61440) NOT IN (32768, 16384, 40960, 4096, 49152, 8192, 24576)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    for (id, mode, has_children, has_target) in typeless {
        let new_type = if has_children {
            libc::S_IFDIR
        } else if has_target {
            libc::S_IFLNK
        } else {
            libc::S_IFREG
        };
        let new_mode = new_type | (mode & 0o7777);
        meta::inodes::set_mode(c, id, new_mode)?;
        out.add_repaired(
            CHECK,
            format!(
                "{} has no valid file type (mode {mode:o}); made it a {}",
                describe(c, id)?,
                kind_name(new_mode)
            ),
        );
        if has_children && has_target {
            meta::inodes::delete_symlink_target(c, id)?;
            out.add_repaired(
                CHECK,
                format!("directory {} had a symlink target; deleted it", describe(c, id)?),
            );
        }
    }

    let symlinks: Vec<(i64, i64, i64)> = query_vec(
        c,
        "SELECT i.id, i.size, length(t.target) FROM inodes i JOIN symlink_targets t ON t.inode = i.id
         WHERE (i.mode & 61440) = 40960 AND i.size != length(t.target)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    for (id, size, len) in symlinks {
        meta::inodes::set_size(c, id, len)?;
        out.add_repaired(
            CHECK,
            format!(
                "symlink {} has size {size} but a target of {len} bytes; size set to {len}",
                describe(c, id)?
            ),
        );
    }

    let odd: Vec<(i64, u32, i64, i64)> = query_vec(
        c,
        "SELECT id, mode, size, rdev FROM inodes
         WHERE (size != 0 AND (mode & 61440) IN (4096, 49152, 8192, 24576))
            OR (rdev != 0 AND (mode & 61440) NOT IN (8192, 24576))",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    for (id, mode, size, rdev) in odd {
        let special = matches!(
            file_type(mode),
            libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFCHR | libc::S_IFBLK
        );
        if size != 0 && special {
            out.add_reported(
                CHECK,
                format!("{} is a {} but has size {size}", describe(c, id)?, kind_name(mode)),
            );
        }
        if rdev != 0 && !matches!(file_type(mode), libc::S_IFCHR | libc::S_IFBLK) {
            out.add_reported(
                CHECK,
                format!(
                    "{} is a {} but has a device number ({rdev})",
                    describe(c, id)?,
                    kind_name(mode)
                ),
            );
        }
    }

    // Entries under a non-directory; data blocks of a non-regular file.
    for (sql, what) in [
        (
            "SELECT DISTINCT c.parent_inode, p.mode FROM contents c JOIN inodes p ON p.id = c.parent_inode
             WHERE (p.mode & 61440) != 16384",
            "directory entries",
        ),
        (
            "SELECT DISTINCT ib.inode, i.mode FROM inode_blocks ib JOIN inodes i ON i.id = ib.inode
             WHERE (i.mode & 61440) != 32768",
            "data blocks",
        ),
    ] {
        let wrong: Vec<(i64, u32)> = query_vec(c, sql, [], |r| Ok((r.get(0)?, r.get(1)?)))?;
        for (id, mode) in wrong {
            out.add_reported(
                CHECK,
                format!("{} is a {} but has {what}", describe(c, id)?, kind_name(mode)),
            );
        }
    }

    let long: Vec<i64> = query_vec(
        c,
        "SELECT id FROM names WHERE length(name) > ?1",
        [crate::fs::NAME_MAX as i64],
        |r| r.get(0),
    )?;
    if !long.is_empty() {
        fill_ids(c, long)?;
        let entries: Vec<(i64, Vec<u8>)> = query_vec(
            c,
            "SELECT c.parent_inode, n.name FROM contents c JOIN names n ON n.id = c.name_id
             WHERE c.name_id IN (SELECT id FROM temp.fsck_ids)",
            [],
            |r| Ok((r.get(0)?, column_bytes(r, 1)?.unwrap_or_default())),
        )?;
        drop_ids(c)?;
        for (parent, name) in entries {
            out.add_reported(
                CHECK,
                format!(
                    "entry \"{}...\" in {} has a name of {} bytes (more than {})",
                    lossy(&name[..40]),
                    describe(c, parent)?,
                    name.len(),
                    crate::fs::NAME_MAX
                ),
            );
        }
    }
    Ok(())
}
