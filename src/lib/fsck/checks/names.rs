//! Check 2 (`names-refcount`): the interned names are stored as BLOBs (the filesystem
//! looks names up as bytes) and each counts its uses by entries and xattrs, so that a
//! name is deleted exactly when its last use goes.

use rusqlite::{Connection, OptionalExtension};

use super::{Findings, State, check_id, drop_uses, fill_uses, query_vec};
use crate::fsck::paths::{column_bytes, lossy};
use crate::meta::names::{delete_name, set_name_bytes, set_name_refcount};

/// Check 2: `names.refcount` = uses by entries and xattrs; unused names deleted.
pub(super) fn check_names_refcount(c: &Connection, _st: &mut State, out: &mut Findings) -> rusqlite::Result<()> {
    const CHECK: &str = check_id::NAMES_REFCOUNT;
    // The filesystem stores and looks names up as BLOBs: one stored as TEXT (or a
    // number) would never be found by name.
    let not_blobs: Vec<(i64, Vec<u8>)> =
        query_vec(c, "SELECT id, name FROM names WHERE typeof(name) != 'blob'", [], |r| {
            Ok((r.get(0)?, column_bytes(r, 1)?.unwrap_or_default()))
        })?;
    for (id, name) in not_blobs {
        let twin: Option<i64> = c
            .query_row("SELECT id FROM names WHERE name = ?1", [&name], |r| r.get(0))
            .optional()?;
        match twin {
            None => {
                set_name_bytes(c, id, &name)?;
                out.add_repaired(
                    CHECK,
                    format!("name \"{}\" (id {id}) was not stored as bytes; converted", lossy(&name)),
                );
            }
            Some(twin) => out.add_reported(
                CHECK,
                format!(
                    "name \"{}\" (id {id}) is not stored as bytes and duplicates name id {twin}; left as it is",
                    lossy(&name)
                ),
            ),
        }
    }
    fill_uses(
        c,
        "SELECT name_id, count(*) FROM
             (SELECT name_id FROM contents UNION ALL SELECT name_id FROM ext_attributes)
         GROUP BY name_id",
    )?;
    let wrong: Vec<(i64, Vec<u8>, i64, i64)> = query_vec(
        c,
        "SELECT n.id, n.name, n.refcount, coalesce(u.n, 0) FROM names n
         LEFT JOIN temp.fsck_uses u ON u.id = n.id WHERE n.refcount IS NOT coalesce(u.n, 0) OR u.n IS NULL",
        [],
        |r| Ok((r.get(0)?, column_bytes(r, 1)?.unwrap_or_default(), r.get(2)?, r.get(3)?)),
    )?;
    for (id, name, old, uses) in wrong {
        if uses == 0 {
            delete_name(c, id)?;
            out.add_repaired(
                CHECK,
                format!(
                    "name \"{}\" (id {id}) is not used (refcount {old}); deleted",
                    lossy(&name)
                ),
            );
        } else {
            set_name_refcount(c, id, uses)?;
            out.add_repaired(
                CHECK,
                format!(
                    "name \"{}\" (id {id}) has refcount {old} but {uses} uses; fixed",
                    lossy(&name)
                ),
            );
        }
    }
    drop_uses(c)
}
