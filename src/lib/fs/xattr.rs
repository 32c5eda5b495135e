//! Extended attributes.
//!
//! Namespaces `user.`, `trusted.` and `security.` are stored; `system.*` (POSIX ACLs
//! included) is not supported (EOPNOTSUPP), nor is any other prefix. As on Linux,
//! `user.*` attributes exist only on regular files and directories: setting one on
//! anything else is EPERM, reading one ENODATA.
//!
//! `security.selinux` is stored like any other, but while no inode carries one, reading
//! it answers EOPNOTSUPP rather than ENODATA. `ls -l` asks for it on every file, and
//! FUSE cannot cache the answer, so each file cost a round trip; EOPNOTSUPP lets
//! `ls` (and libselinux callers) treat the whole filesystem as unlabelled, which it is.
//! Hosts that enforce SELinux never ask the filesystem: the kernel labels FUSE mounts
//! itself. JuiceFS goes further and refuses the attribute unless mounted with an
//! option; here setting one (e.g. `rsync -X` of a labelled tree) still works, and
//! from then on reads answer as for any other attribute.

use std::sync::atomic::Ordering;

use rusqlite::Connection;

use super::db::{InodeRow, ino_id, load_inode};
use super::{Filesystem, FsError, FsResult, NAME_MAX, XATTR_SIZE_MAX, err};
use crate::meta::inodes::touch_ctime;
use crate::meta::xattrs;

/// Check an xattr name; returns whether it is in the `user.` namespace.
fn check_xattr_name(name: &[u8]) -> FsResult<bool> {
    if name.is_empty() || name.len() > NAME_MAX {
        return err(libc::ERANGE);
    }
    if name.contains(&0) {
        return err(libc::EINVAL);
    }
    let suffix = if let Some(s) = name.strip_prefix(b"user.") {
        (s, true)
    } else if let Some(s) = name.strip_prefix(b"trusted.") {
        (s, false)
    } else if let Some(s) = name.strip_prefix(b"security.") {
        (s, false)
    } else {
        return err(libc::EOPNOTSUPP);
    };
    if suffix.0.is_empty() {
        return err(libc::EINVAL);
    }
    Ok(suffix.1)
}

fn user_xattrs_allowed(row: &InodeRow) -> bool {
    matches!(row.fmt(), libc::S_IFREG | libc::S_IFDIR)
}

fn find(c: &Connection, ino: i64, name: &[u8]) -> FsResult<Option<(i64, Vec<u8>)>> {
    Ok(xattrs::find(c, ino, name)?)
}

const SELINUX: &[u8] = b"security.selinux";
const CAPABILITY: &[u8] = b"security.capability";

impl Filesystem {
    /// Note whether any inode carries a `security.selinux` or a `security.capability`
    /// xattr (once, at open).
    pub(super) fn find_special_xattrs(&self) -> rusqlite::Result<()> {
        let any = |name: &[u8]| -> rusqlite::Result<bool> {
            self.read_conn().query_row(
                "SELECT EXISTS (SELECT 1 FROM ext_attributes_v WHERE name = ?1)",
                [name],
                |r| r.get(0),
            )
        };
        self.selinux_labels.store(any(SELINUX)?, Ordering::Relaxed);
        self.capabilities.store(any(CAPABILITY)?, Ordering::Relaxed);
        Ok(())
    }

    /// setxattr(2); `flags` may hold `XATTR_CREATE` (EEXIST if present) or
    /// `XATTR_REPLACE` (ENODATA if absent).
    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
        let id = ino_id(ino)?;
        if flags & !(libc::XATTR_CREATE | libc::XATTR_REPLACE) != 0 {
            return err(libc::EINVAL);
        }
        let user = check_xattr_name(name)?;
        if value.len() > XATTR_SIZE_MAX {
            return err(libc::E2BIG);
        }
        self.transact(|op| {
            check_xattr_writable(&load_inode(&op.tx, id)?, user)?;
            match find(&op.tx, id, name)? {
                Some(_) if flags & libc::XATTR_CREATE != 0 => return err(libc::EEXIST),
                Some((name_id, _)) => xattrs::set_value(&op.tx, id, name_id, value)?,
                None if flags & libc::XATTR_REPLACE != 0 => return err(libc::ENODATA),
                None => {
                    if name == SELINUX {
                        self.selinux_labels.store(true, Ordering::Relaxed);
                    }
                    if name == CAPABILITY {
                        self.capabilities.store(true, Ordering::Relaxed);
                    }
                    xattrs::insert(&op.tx, id, name, value)?;
                }
            }
            Ok(touch_ctime(&op.tx, id, op.now)?)
        })
    }

    /// getxattr(2): the whole value (the caller handles size queries and ERANGE).
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        let id = ino_id(ino)?;
        let user = check_xattr_name(name)?;
        if name == SELINUX && !self.selinux_labels.load(Ordering::Relaxed) {
            return err(libc::EOPNOTSUPP);
        }
        // The kernel asks on every chown of a file (one request in ten of an untar as
        // root). It only asks about inodes it holds, which exist.
        if name == CAPABILITY && !self.capabilities.load(Ordering::Relaxed) {
            return err(libc::ENODATA);
        }
        self.query(|c| {
            let row = load_inode(c, id)?;
            if user && !user_xattrs_allowed(&row) {
                return err(libc::ENODATA);
            }
            match find(c, id, name)? {
                Some((_, value)) => Ok(value),
                None => err(libc::ENODATA),
            }
        })
    }

    /// listxattr(2): the names, in no particular order.
    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<Vec<u8>>> {
        let id = ino_id(ino)?;
        self.query(|c| {
            load_inode(c, id)?;
            let mut st = c.prepare_cached("SELECT name FROM ext_attributes_v WHERE inode = ?1")?;
            let names = st.query_map([id], |r| r.get(0))?.collect::<Result<_, _>>()?;
            Ok(names)
        })
    }

    /// removexattr(2); ENODATA if absent.
    pub fn removexattr(&self, ino: u64, name: &[u8]) -> FsResult<()> {
        let id = ino_id(ino)?;
        let user = check_xattr_name(name)?;
        self.transact(|op| {
            check_xattr_writable(&load_inode(&op.tx, id)?, user)?;
            let (name_id, _) = find(&op.tx, id, name)?.ok_or(FsError::new(libc::ENODATA))?;
            xattrs::remove(&op.tx, id, name_id)?;
            Ok(touch_ctime(&op.tx, id, op.now)?)
        })
    }
}

/// Remove the `security.capability` xattr of `ino`, if any, as the kernel does on a
/// write, truncate or chown. The mount asks for `FUSE_HANDLE_KILLPRIV_V2`, which leaves
/// this to the filesystem and in exchange spares a getxattr round trip per write.
pub(crate) fn kill_capability(op: &super::Op<'_>, ino: i64) -> FsResult<()> {
    if !op.capabilities {
        return Ok(());
    }
    let c = &op.tx;
    if let Some((name_id, _)) = find(c, ino, CAPABILITY)? {
        xattrs::remove(c, ino, name_id)?;
    }
    Ok(())
}

/// Changing xattrs: EPERM for user.* on anything but regular files and directories (as
/// Linux does) and for locked inodes.
fn check_xattr_writable(row: &super::db::InodeRow, user: bool) -> FsResult<()> {
    if (user && !user_xattrs_allowed(row)) || row.locked {
        return err(libc::EPERM);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattr_names() {
        assert_eq!(check_xattr_name(b"user.a"), Ok(true));
        assert_eq!(check_xattr_name(b"trusted.a"), Ok(false));
        assert_eq!(check_xattr_name(b"security.selinux"), Ok(false));
        assert_eq!(check_xattr_name(b"system.posix_acl_access"), err(libc::EOPNOTSUPP));
        assert_eq!(check_xattr_name(b"system.foo"), err(libc::EOPNOTSUPP));
        assert_eq!(check_xattr_name(b"foo.bar"), err(libc::EOPNOTSUPP));
        assert_eq!(check_xattr_name(b"user."), err(libc::EINVAL));
        assert_eq!(check_xattr_name(b""), err(libc::ERANGE));
        let long = [b"user.".as_slice(), &[b'x'; 251]].concat();
        assert_eq!(check_xattr_name(&long), err(libc::ERANGE));
        assert_eq!(check_xattr_name(&long[..255]), Ok(true));
    }
}
