//! Check 1 (`lost+found`): the root is a directory and `/lost+found` exists and is one;
//! and the quarantine of files that lost data into `/lost+found`. Every later check that
//! moves or links something into `/lost+found` goes through [`lost_found`] here, so the
//! directory is made sure of once.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Findings, State, check_id, file_type, kind_name, mode_of, query_vec};
use crate::fsck::paths::{column_bytes, describe_entry, entry_path, escape, lossy, resolve_free};
use crate::meta;
use crate::meta::names::{insert_entry, move_entry, set_entry_inode, set_entry_parent};
use crate::meta::schema::ROOT_INODE;

/// Create a fresh `lost+found` directory inode (no entry): mode 0700, owned like the
/// root.
fn new_lost_found_inode(c: &Connection, st: &State) -> rusqlite::Result<i64> {
    let (uid, gid): (u32, u32) = c
        .query_row("SELECT uid, gid FROM inodes WHERE id = ?1", [ROOT_INODE], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?
        .unwrap_or((0, 0));
    meta::inodes::insert(c, uid, gid, libc::S_IFDIR | 0o700, 0, st.now, None)
}

/// The `/lost+found` directory, created or repaired first if need be (check 1).
pub(super) fn lost_found(c: &Connection, st: &mut State, out: &mut Findings) -> rusqlite::Result<i64> {
    if let Some(lof) = st.lof {
        return Ok(lof);
    }
    check_lost_found(c, st, out)?;
    Ok(st.lof.expect("check_lost_found sets lof"))
}

/// Check 1: the root is a directory, `/lost+found` exists and is a directory.
pub(super) fn check_lost_found(c: &Connection, st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::LOST_FOUND;
    match mode_of(c, ROOT_INODE)? {
        None => {
            meta::inodes::insert_root(c, 0, 0, libc::S_IFDIR | 0o755, st.now)?;
            out.add_repaired(
                CHECK,
                "the root directory (inode 1) was missing; recreated it (owner root, mode 0755)",
            );
        }
        Some(mode) if file_type(mode) != libc::S_IFDIR => {
            meta::inodes::set_mode(c, ROOT_INODE, libc::S_IFDIR | (mode & 0o7777))?;
            out.add_repaired(
                CHECK,
                format!("the root (inode 1) was a {}; made it a directory", kind_name(mode)),
            );
        }
        Some(_) => {}
    }

    let entry: Option<(i64, i64, Option<u32>)> = c
        .query_row(
            "SELECT c.rowid, c.inode, i.mode FROM contents c JOIN names n ON n.id = c.name_id
             LEFT JOIN inodes i ON i.id = c.inode
             WHERE c.parent_inode = ?1 AND n.name IN (?2, CAST(?2 AS TEXT))",
            params![ROOT_INODE, b"lost+found".as_slice()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    match entry {
        Some((_, ino, Some(mode))) if file_type(mode) == libc::S_IFDIR => {
            st.lof = Some(ino);
        }
        Some((rowid, old, mode)) => {
            let lof = new_lost_found_inode(c, st)?;
            set_entry_inode(c, rowid, lof)?;
            st.lof = Some(lof);
            match mode {
                Some(mode) => {
                    // The old inode keeps its link count: its entry moves into the new
                    // directory.
                    let name = resolve_free(c, lof, format!("inode-{old}").as_bytes())?;
                    insert_entry(c, lof, &name, old)?;
                    out.add_repaired(
                        CHECK,
                        format!(
                            "/lost+found was a {} (inode {old}); created a new directory and moved the old one to /lost+found/{}",
                            kind_name(mode),
                            lossy(&name)
                        ),
                    );
                }
                None => out.add_repaired(
                    CHECK,
                    format!("/lost+found referred to missing inode {old}; created a new directory"),
                ),
            }
        }
        None => {
            // An old SQLite bug made fsck.s3ql move lost+found into itself: move it back.
            let inside_itself: Option<(i64, i64)> = c
                .query_row(
                    "SELECT c.rowid, c.inode FROM contents c JOIN names n ON n.id = c.name_id
                     JOIN inodes i ON i.id = c.inode
                     WHERE n.name IN (?1, CAST(?1 AS TEXT)) AND c.parent_inode = c.inode
                       AND (i.mode & 61440) = 16384
                     LIMIT 1",
                    [b"lost+found".as_slice()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((rowid, ino)) = inside_itself {
                set_entry_parent(c, rowid, ROOT_INODE)?;
                st.lof = Some(ino);
                out.add_repaired(CHECK, "/lost+found was inside itself; moved it back to /");
            } else {
                let lof = new_lost_found_inode(c, st)?;
                insert_entry(c, ROOT_INODE, b"lost+found", lof)?;
                st.lof = Some(lof);
                out.add_repaired(CHECK, "/lost+found was missing; created it");
            }
        }
    }
    Ok(())
}

/// Quarantine the files `inodes` that lost data: report each entry by its path as "may
/// lack data" (`why` says why) and move it into `/lost+found/<escaped path>`. Entries
/// already directly in `/lost+found` stay; inodes that no longer exist are skipped.
pub(super) fn quarantine(
    c: &Connection,
    st: &mut State,
    out: &mut Findings,
    check: &'static str,
    inodes: &[i64],
    why: &str,
) -> rusqlite::Result<()> {
    if inodes.is_empty() {
        return Ok(());
    }
    let lof = lost_found(c, st, out)?;
    for &ino in inodes {
        if mode_of(c, ino)?.is_none() {
            continue;
        }
        let entries: Vec<(i64, i64, i64, Option<Vec<u8>>)> = query_vec(
            c,
            "SELECT c.rowid, c.parent_inode, c.name_id, n.name FROM contents c
             LEFT JOIN names n ON n.id = c.name_id WHERE c.inode = ?1 ORDER BY c.rowid",
            [ino],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, column_bytes(r, 3)?)),
        )?;
        if entries.is_empty() {
            out.add_repaired(check, format!("inode {ino} (no directory entry) may lack data: {why}"));
            continue;
        }
        for (rowid, parent, name_id, name) in entries {
            let name = name.unwrap_or_else(|| format!("inode-{ino}").into_bytes());
            let path = entry_path(c, parent, &name)?;
            let shown = describe_entry(c, parent, &name)?;
            if parent == lof || ino == ROOT_INODE || ino == lof {
                out.add_repaired(check, format!("{shown} may lack data: {why}"));
                continue;
            }
            let base = match &path {
                Some(p) => escape(p),
                None => [format!("[{parent}]-").as_bytes(), &name].concat(),
            };
            let new = resolve_free(c, lof, &base)?;
            move_entry(c, rowid, name_id, lof, &new)?;
            out.add_repaired(
                check,
                format!("{shown} may lack data: {why}; moved to /lost+found/{}", lossy(&new)),
            );
        }
    }
    Ok(())
}
