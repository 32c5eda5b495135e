//! Paths and names for fsck: the full path of an inode (for messages) and free names in
//! `/lost+found` (S3QL's `resolve_free` and `escape`).
//!
//! Everything here reads only; the checks in [`super::checks`] repair through the row
//! operations of [`crate::meta`].

use std::collections::HashSet;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::meta::schema::ROOT_INODE;

/// Names longer than this are shortened before a numeric suffix is appended (S3QL's
/// `255 - 4`), so that `name-NNN` still fits in `NAME_MAX`.
pub const MAX_FREE_NAME: usize = 251;

/// Bytes kept from each end of a shortened name.
const KEEP: usize = 120;

/// Full path of the first entry of `inode` (entries in rowid order), following the first
/// entry of each ancestor up to the root: `/a/b/file`, `/` for the root. `None` if a
/// step has no (named) entry, or the walk meets an inode twice (a cycle), so the inode
/// cannot be reached that way.
pub fn path_of(conn: &Connection, inode: i64) -> rusqlite::Result<Option<Vec<u8>>> {
    if inode == ROOT_INODE {
        return Ok(Some(b"/".to_vec()));
    }
    let mut st = conn.prepare_cached(
        "SELECT c.parent_inode, n.name FROM contents c JOIN names n ON n.id = c.name_id
         WHERE c.inode = ?1 ORDER BY c.rowid LIMIT 1",
    )?;
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut seen = HashSet::new();
    let mut cur = inode;
    while cur != ROOT_INODE {
        if !seen.insert(cur) {
            return Ok(None);
        }
        let Some((parent, name)): Option<(i64, Vec<u8>)> = st
            .query_row([cur], |r| Ok((r.get(0)?, column_bytes(r, 1)?.unwrap_or_default())))
            .optional()?
        else {
            return Ok(None);
        };
        parts.push(name);
        cur = parent;
    }
    let mut path = Vec::new();
    for part in parts.iter().rev() {
        path.push(b'/');
        path.extend_from_slice(part);
    }
    Ok(Some(path))
}

/// Column `i` of a row as bytes, whatever its storage class: a damaged DB may hold a
/// name as TEXT (or even a number) where the filesystem stores BLOBs. NULL is `None`.
pub fn column_bytes(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<Vec<u8>>> {
    Ok(match r.get_ref(i)? {
        ValueRef::Null => None,
        ValueRef::Blob(b) | ValueRef::Text(b) => Some(b.to_vec()),
        ValueRef::Integer(n) => Some(n.to_string().into_bytes()),
        ValueRef::Real(f) => Some(f.to_string().into_bytes()),
    })
}

/// Path of the entry `name` in directory `parent`, if the parent has a path.
pub fn entry_path(conn: &Connection, parent: i64, name: &[u8]) -> rusqlite::Result<Option<Vec<u8>>> {
    Ok(path_of(conn, parent)?.map(|mut p| {
        if p != b"/" {
            p.push(b'/');
        }
        p.extend_from_slice(name);
        p
    }))
}

/// An inode for messages: its path, or `inode <id> (no path)`.
pub fn describe(conn: &Connection, inode: i64) -> rusqlite::Result<String> {
    Ok(match path_of(conn, inode)? {
        Some(p) => lossy(&p),
        None => format!("inode {inode} (no path)"),
    })
}

/// An entry for messages: its path, or `[inode <parent>]/<name>` if the parent has none.
pub fn describe_entry(conn: &Connection, parent: i64, name: &[u8]) -> rusqlite::Result<String> {
    Ok(match entry_path(conn, parent, name)? {
        Some(p) => lossy(&p),
        None => format!("[inode {parent}]/{}", lossy(name)),
    })
}

/// Bytes as text for messages (invalid UTF-8 replaced).
pub fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A path turned into one file name, as S3QL's `escape`: the leading `/` dropped, `_`
/// doubled, `/` replaced by `_` (`/a/b_c` → `a_b__c`).
pub fn escape(path: &[u8]) -> Vec<u8> {
    let path = path.strip_prefix(b"/").unwrap_or(path);
    let mut out = Vec::with_capacity(path.len() + 8);
    for &b in path {
        match b {
            b'_' => out.extend_from_slice(b"__"),
            b'/' => out.push(b'_'),
            b => out.push(b),
        }
    }
    out
}

/// A name longer than [`MAX_FREE_NAME`] bytes shortened to its first 120 bytes, ` ... `
/// and its last 120 bytes; shorter names unchanged.
pub fn shorten(name: &[u8]) -> Vec<u8> {
    if name.len() <= MAX_FREE_NAME {
        return name.to_vec();
    }
    let mut out = Vec::with_capacity(2 * KEEP + 5);
    out.extend_from_slice(&name[..KEEP]);
    out.extend_from_slice(b" ... ");
    out.extend_from_slice(&name[name.len() - KEEP..]);
    out
}

/// Whether directory `dir` has an entry `name`.
pub fn entry_exists(conn: &Connection, dir: i64, name: &[u8]) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM contents c JOIN names n ON n.id = c.name_id
                        WHERE c.parent_inode = ?1 AND n.name = ?2)",
    )?
    .query_row(params![dir, name], |r| r.get(0))
}

/// A name not yet used in directory `dir`, derived from `name` as S3QL's
/// `resolve_free`: [`shorten`]ed, then `name`, `name-1`, `name-2`, … until free.
pub fn resolve_free(conn: &Connection, dir: i64, name: &[u8]) -> rusqlite::Result<Vec<u8>> {
    let base = shorten(name);
    if !entry_exists(conn, dir, &base)? {
        return Ok(base);
    }
    for i in 1u64.. {
        let mut candidate = base.clone();
        candidate.extend_from_slice(format!("-{i}").as_bytes());
        if !entry_exists(conn, dir, &candidate)? {
            return Ok(candidate);
        }
    }
    unreachable!("u64 suffixes exhausted")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_like_s3ql() {
        assert_eq!(escape(b"/a/b_c"), b"a_b__c");
        assert_eq!(escape(b"/"), b"");
        assert_eq!(escape(b"x/y"), b"x_y");
    }

    #[test]
    fn shorten_long_names() {
        let short = vec![b'a'; 251];
        assert_eq!(shorten(&short), short);
        let mut long = vec![b'a'; 120];
        long.extend(vec![b'm'; 100]);
        long.extend(vec![b'z'; 120]);
        let s = shorten(&long);
        assert_eq!(s.len(), 245);
        assert_eq!(&s[..120], &[b'a'; 120][..]);
        assert_eq!(&s[120..125], b" ... ");
        assert_eq!(&s[125..], &[b'z'; 120][..]);
    }
}
