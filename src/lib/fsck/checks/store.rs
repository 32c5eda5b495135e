//! The DB half of the comparison with the store (S3QL's checks 10 and 11): the driver
//! lists the store's `s3fs_data_<id>` objects into a TEMP table ([`begin_listing`],
//! [`record_listed`]), then [`compare_with_store`] finds the objects the store lacks
//! (their data is lost), those the DB does not know (to delete from the store) and the
//! stored sizes the DB never recorded.
//!
//! The listing and the objects found missing are kept in TEMP tables of fsck's own
//! (`fsck_listed`, `fsck_objs`), written here only: the scratch tables of the other
//! checks are in `mod.rs`; rows of the metadata change through `crate::meta`.

use std::collections::HashSet;

use rusqlite::{Connection, params};

use super::blocks::delete_blocks_in_ids;
use super::lost_found::quarantine;
use super::{Findings, State, check_id, drop_ids, fill_ids, in_transaction, query_vec, without_foreign_keys};
use crate::meta;

/// Start a listing of the store: (re)create the TEMP table of listed objects.
pub fn begin_listing(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "DROP TABLE IF EXISTS temp.fsck_listed;
         CREATE TEMP TABLE fsck_listed (id INTEGER PRIMARY KEY, size INTEGER NOT NULL);",
    )
}

/// Record one page of the listing: `(object id, stored size)` of `s3fs_data_<id>`
/// objects. Listing an id twice keeps the last size.
pub fn record_listed(conn: &rusqlite::Connection, objects: &[(i64, u64)]) -> rusqlite::Result<()> {
    let insert = |c: &Connection| -> rusqlite::Result<()> {
        let mut st = c.prepare("INSERT OR REPLACE INTO temp.fsck_listed (id, size) VALUES (?1, ?2)")?;
        for &(id, size) in objects {
            st.execute(params![id, i64::try_from(size).unwrap_or(i64::MAX)])?;
        }
        Ok(())
    };
    if conn.is_autocommit() {
        let tx = conn.unchecked_transaction()?;
        insert(&tx)?;
        tx.commit()
    } else {
        insert(conn)
    }
}

/// Compare the `objects` table with the listing recorded since [`begin_listing`]:
///
/// (a) objects missing from the store are reported and deleted, with the blocks stored
/// in them and their mappings; every entry of each affected file is reported by its
/// path ("may lack data") and moved into `/lost+found` (check id `store-missing`);
/// (b) listed ids the DB does not know ("spurious": neither in use nor released) are
/// returned for the driver to delete and reported (`store-spurious`), except ids
/// already in `out.objects_to_delete`; new objects get ids above every listed one;
/// (c) `objects.phys_size` of -1 is set from the listed size (`store-phys-size`).
///
/// Runs in one transaction; `conn` must not be inside one. Drops the listing table.
pub fn compare_with_store(conn: &rusqlite::Connection, out: &mut Findings) -> rusqlite::Result<Vec<i64>> {
    let queued: HashSet<i64> = out.objects_to_delete.iter().copied().collect();
    without_foreign_keys(conn, || {
        in_transaction(conn, out, |c, found| {
            let mut st = State::new(0);
            let missing: Vec<(i64, i64)> = query_vec(
                c,
                // Missing, or stored with another size than was uploaded (truncated or
                // replaced: it cannot decode to the block it should hold).
                "SELECT o.id, o.refcount FROM objects o
             WHERE NOT EXISTS (SELECT 1 FROM temp.fsck_listed l WHERE l.id = o.id)
                OR EXISTS (SELECT 1 FROM temp.fsck_listed l
                           WHERE l.id = o.id AND o.phys_size >= 0 AND l.size != o.phys_size)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if !missing.is_empty() {
                fill_ids(c, missing.iter().map(|&(id, _)| id))?;
                c.execute_batch(
                    "DROP TABLE IF EXISTS temp.fsck_objs;
                 CREATE TEMP TABLE fsck_objs (id INTEGER PRIMARY KEY);
                 INSERT INTO temp.fsck_objs (id) SELECT id FROM temp.fsck_ids;
                 DELETE FROM temp.fsck_ids;
                 INSERT INTO temp.fsck_ids (id)
                     SELECT id FROM blocks WHERE obj_id IN (SELECT id FROM temp.fsck_objs);",
                )?;
                let inodes = delete_blocks_in_ids(c)?;
                meta::blocks::delete_objects_in(c, "temp.fsck_objs")?;
                c.execute_batch("DROP TABLE temp.fsck_objs")?;
                drop_ids(c)?;
                for (id, refcount) in missing {
                    found.add_repaired(
                    check_id::STORE_MISSING,
                    format!("object {id} (holding {refcount} blocks) is missing from the store or damaged; deleted it from the metadata"),
                );
                }
                quarantine(
                    c,
                    &mut st,
                    found,
                    check_id::STORE_MISSING,
                    &inodes,
                    "some of its data objects are missing from the store",
                )?;
            }

            // Released objects are kept for retained metadata versions: not garbage.
            let spurious: Vec<i64> = query_vec(
                c,
                "SELECT l.id FROM temp.fsck_listed l
                 WHERE NOT EXISTS (SELECT 1 FROM objects o WHERE o.id = l.id)
                   AND NOT EXISTS (SELECT 1 FROM released_objects r WHERE r.id = l.id)",
                [],
                |r| r.get(0),
            )?;
            let spurious: Vec<i64> = spurious.into_iter().filter(|id| !queued.contains(id)).collect();
            for id in &spurious {
                found.add_repaired(
                    check_id::STORE_SPURIOUS,
                    format!("object {id} is in the store but not in the metadata; deleting it from the store"),
                );
            }

            let sizes: Vec<(i64, i64)> = query_vec(
                c,
                "SELECT o.id, l.size FROM objects o JOIN temp.fsck_listed l ON l.id = o.id WHERE o.phys_size = -1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            for (id, size) in sizes {
                meta::blocks::set_phys_size(c, id, size)?;
                found.add_repaired(
                    check_id::STORE_PHYS_SIZE,
                    format!("object {id} had no stored size; set to {size} from the store"),
                );
            }
            // Ids of objects in the store, kept for some version, are never handed out
            // again (a restored older version's counter would).
            let highest: Option<i64> = c.query_row("SELECT max(id) FROM temp.fsck_listed", [], |r| r.get(0))?;
            if let Some(id) = highest {
                meta::blocks::reserve_object_ids(c, id)?;
            }
            let live_again = meta::blocks::forget_live_released(c)?;
            if live_again > 0 {
                found.add_repaired(
                    check_id::STORE_SPURIOUS,
                    format!("{live_again} objects were both in use and released; kept them in use"),
                );
            }
            c.execute_batch("DROP TABLE temp.fsck_listed")?;
            Ok(spurious)
        })
    })
}
