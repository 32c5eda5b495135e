//! Check 14 (`loops`): every entry is reachable from the root. Directories forming a
//! cycle of their own (possible in a damaged DB, never through rename) would be lost
//! with everything below them.

use std::collections::HashSet;

use rusqlite::{Connection, OptionalExtension};

use super::lost_found::lost_found;
use super::{
    Findings, State, begin_reach, check_id, end_reach, forget_reached, forget_unreached, mark_reachable, name_of,
    note_unreached,
};
use crate::fsck::paths::{lossy, resolve_free};
use crate::meta;
use crate::meta::names::{insert_entry, move_entry};
use crate::meta::schema::ROOT_INODE;

/// Check 14: every entry is reachable from the root. Entries under an unreachable
/// directory lead (by first entries) up to a cycle; one entry of each cycle is moved to
/// `/lost+found` under its own name (made free), which makes the whole cycle and
/// everything below it reachable.
pub(super) fn check_loops(c: &Connection, st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::LOOPS;
    begin_reach(c)?;
    mark_reachable(c, ROOT_INODE)?;
    note_unreached(c)?;
    loop {
        forget_reached(c)?;
        let Some(start): Option<i64> = c
            .query_row("SELECT id FROM temp.fsck_unreached LIMIT 1", [], |r| r.get(0))
            .optional()?
        else {
            break;
        };
        // Walk up by first entries until an inode repeats (it is on a cycle) or one has
        // no entry.
        let mut seen = HashSet::new();
        let mut cur = start;
        let anchor: (i64, Option<(i64, i64)>) = loop {
            let entry: Option<(i64, i64, i64)> = c
                .prepare_cached(
                    "SELECT rowid, name_id, parent_inode FROM contents WHERE inode = ?1 ORDER BY rowid LIMIT 1",
                )?
                .query_row([cur], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            match entry {
                None => break (cur, None),
                Some((rowid, name_id, parent)) => {
                    if !seen.insert(cur) {
                        break (cur, Some((rowid, name_id)));
                    }
                    cur = parent;
                }
            }
        };
        let lof = lost_found(c, st, out)?;
        match anchor {
            (ino, Some((rowid, name_id))) => {
                let name = name_of(c, name_id)?.unwrap_or_else(|| format!("inode-{ino}").into_bytes());
                let new = resolve_free(c, lof, &name)?;
                move_entry(c, rowid, name_id, lof, &new)?;
                out.add_repaired(
                    CHECK,
                    format!(
                        "\"{}\" (inode {ino}) and the directories around it formed a cycle unreachable from /; moved it to /lost+found/{}",
                        lossy(&name),
                        lossy(&new)
                    ),
                );
            }
            (ino, None) if ino != ROOT_INODE => {
                let name = resolve_free(c, lof, format!("inode-{ino}").as_bytes())?;
                insert_entry(c, lof, &name, ino)?;
                meta::inodes::inc_refcount(c, ino)?;
                out.add_repaired(
                    CHECK,
                    format!(
                        "inode {ino} has entries but none itself; linked as /lost+found/{}",
                        lossy(&name)
                    ),
                );
            }
            (ino, None) => {
                // Cannot happen (the root is reachable); make progress regardless.
                mark_reachable(c, ino)?;
                forget_unreached(c, start)?;
                continue;
            }
        }
        mark_reachable(c, anchor.0)?;
    }
    end_reach(c)
}
