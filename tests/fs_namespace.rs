//! The filesystem core's metadata operations, driven directly (no FUSE, no store).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};
use s3fs::fs::{Attr, Ctx, FileKind, Filesystem, SetAttr, TimeSet};
use s3fs::meta::schema::create_filesystem;

const BS: u64 = 4096;
const ROOT: u64 = 1;
const ROOT_CTX: Ctx = Ctx { uid: 0, gid: 0, pid: 0 };
/// An unprivileged user whose supplementary groups cannot be read (no such pid).
const USER: Ctx = Ctx {
    uid: 1000,
    gid: 1000,
    pid: u32::MAX,
};

struct T {
    _dir: tempfile::TempDir,
    path: PathBuf,
    fs: Filesystem,
}

impl T {
    fn new() -> T {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let conn = Connection::open(&path).unwrap();
        create_filesystem(&conn, 1000, 1000, 1).unwrap();
        drop(conn);
        let fs = Filesystem::open(&path, BS).unwrap();
        T { _dir: dir, path, fs }
    }

    /// A second connection to the DB, for checks and for what the tests set up by SQL.
    fn db(&self) -> Connection {
        let c = Connection::open(&self.path).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        c
    }

    fn reopen(self) -> T {
        let T { _dir, path, fs } = self;
        drop(fs);
        let fs = Filesystem::open(&path, BS).unwrap();
        T { _dir, path, fs }
    }

    fn mkdir(&self, parent: u64, name: &str) -> u64 {
        self.fs.mkdir(&USER, parent, name.as_bytes(), 0o755).unwrap().ino
    }

    fn file(&self, parent: u64, name: &str) -> u64 {
        self.fs
            .create(&USER, parent, name.as_bytes(), 0o644, libc::O_EXCL)
            .unwrap()
            .ino
    }

    fn ls(&self, dir: u64) -> Vec<(Vec<u8>, u64, FileKind)> {
        let mut out = Vec::new();
        let mut off = 0;
        loop {
            let batch = self.fs.readdir(dir, off).unwrap();
            let Some(last) = batch.last() else { break };
            off = last.offset;
            out.extend(batch.into_iter().map(|e| (e.name, e.ino, e.kind)));
        }
        out
    }

    fn names(&self, dir: u64) -> Vec<String> {
        let mut v: Vec<String> = self
            .ls(dir)
            .into_iter()
            .map(|(n, _, _)| String::from_utf8(n).unwrap())
            .filter(|n| n != "." && n != "..")
            .collect();
        v.sort();
        v
    }

    fn set_times(&self, ino: u64, t: i64) {
        self.fs
            .setattr(
                &ROOT_CTX,
                ino,
                &SetAttr {
                    atime: TimeSet::Set(t),
                    mtime: TimeSet::Set(t),
                    ctime: Some(t),
                    ..Default::default()
                },
            )
            .unwrap();
    }

    fn attr(&self, ino: u64) -> Attr {
        self.fs.getattr(ino).unwrap()
    }

    /// Every refcount the schema documents matches what it counts.
    fn check_invariants(&self) {
        let c = self.db();
        let bad_names: i64 = c
            .query_row(
                "SELECT count(*) FROM names WHERE refcount !=
                   (SELECT count(*) FROM contents WHERE name_id = names.id)
                 + (SELECT count(*) FROM ext_attributes WHERE name_id = names.id)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(bad_names, 0, "names.refcount");
        let unused_names: i64 = c
            .query_row("SELECT count(*) FROM names WHERE refcount <= 0", [], |r| r.get(0))
            .unwrap();
        assert_eq!(unused_names, 0, "unused names kept");
        let bad_inodes: i64 = c
            .query_row(
                "SELECT count(*) FROM inodes WHERE id != 1 AND refcount != (SELECT count(*) FROM contents WHERE inode = inodes.id)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(bad_inodes, 0, "inodes.refcount");
        let dangling: i64 = c
            .query_row(
                "SELECT count(*) FROM contents WHERE inode NOT IN (SELECT id FROM inodes)
                   OR parent_inode NOT IN (SELECT id FROM inodes)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(dangling, 0, "dangling entries");
        let bad_blocks: i64 = c
            .query_row(
                "SELECT count(*) FROM blocks WHERE refcount != (SELECT count(*) FROM inode_blocks WHERE block_id = blocks.id)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(bad_blocks, 0, "blocks.refcount");
        let bad_objects: i64 = c
            .query_row(
                "SELECT count(*) FROM objects WHERE refcount != (SELECT count(*) FROM blocks WHERE obj_id = objects.id)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(bad_objects, 0, "objects.refcount");
    }
}

fn errno<T: std::fmt::Debug>(r: Result<T, s3fs::fs::FsError>) -> i32 {
    r.unwrap_err().errno()
}

fn lost_found(t: &T) -> u64 {
    t.fs.lookup(ROOT, b"lost+found").unwrap().ino
}

/// Give `ino` the blocks `blocks[i]` (block id, object id) at blockno i, creating the
/// block and object rows as needed with the right refcounts.
fn add_blocks(c: &Connection, ino: u64, blocks: &[(i64, i64)]) {
    for (blockno, &ids) in blocks.iter().enumerate() {
        common::map_block(c, ino as i64, blockno as i64, ids, 10, 4096);
    }
}

fn count(c: &Connection, sql: &str) -> i64 {
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn filesystem_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Filesystem>();
}

#[test]
fn root_lost_found_and_lookup_counts() {
    let t = T::new();
    let root = t.attr(ROOT);
    assert_eq!(root.kind(), FileKind::Directory);
    assert_eq!(root.nlink, 3, "2 + lost+found");
    assert_eq!(root.blksize, 128 << 10);
    let lf = t.fs.lookup(ROOT, b"lost+found").unwrap();
    assert_eq!(lf.mode, libc::S_IFDIR | 0o700);
    assert_eq!(lf.nlink, 2);
    assert_eq!(t.fs.lookup_count(lf.ino), 1);
    t.fs.lookup(ROOT, b"lost+found").unwrap();
    assert_eq!(t.fs.lookup_count(lf.ino), 2);
    assert_eq!(t.fs.lookup(lf.ino, b"..").unwrap().ino, ROOT);
    assert_eq!(t.fs.lookup(lf.ino, b".").unwrap().ino, lf.ino);
    assert_eq!(t.fs.lookup(ROOT, b"..").unwrap().ino, ROOT);
    t.fs.forget(lf.ino, 2);
    assert_eq!(t.fs.lookup_count(lf.ino), 1, ". counted one more");
    assert_eq!(errno(t.fs.lookup(ROOT, b"nope")), libc::ENOENT);
    assert_eq!(errno(t.fs.getattr(9999)), libc::ENOENT);
    assert_eq!(errno(t.fs.getattr(u64::MAX)), libc::ENOENT);
    t.fs.access(ROOT, libc::W_OK).unwrap();
    assert_eq!(errno(t.fs.access(9999, libc::F_OK)), libc::ENOENT);
}

#[test]
fn names_longer_than_255_bytes() {
    let t = T::new();
    let ok = "x".repeat(255);
    let long = "x".repeat(256);
    let f = t.file(ROOT, &ok);
    assert_eq!(t.fs.lookup(ROOT, ok.as_bytes()).unwrap().ino, f);
    let l = long.as_bytes();
    assert_eq!(errno(t.fs.lookup(ROOT, l)), libc::ENAMETOOLONG);
    assert_eq!(errno(t.fs.mkdir(&USER, ROOT, l, 0o755)), libc::ENAMETOOLONG);
    assert_eq!(errno(t.fs.create(&USER, ROOT, l, 0o644, 0)), libc::ENAMETOOLONG);
    assert_eq!(
        errno(t.fs.mknod(&USER, ROOT, l, libc::S_IFIFO | 0o644, 0)),
        libc::ENAMETOOLONG
    );
    assert_eq!(errno(t.fs.symlink(&USER, ROOT, l, b"t")), libc::ENAMETOOLONG);
    assert_eq!(errno(t.fs.link(f, ROOT, l)), libc::ENAMETOOLONG);
    assert_eq!(errno(t.fs.rename(ROOT, ok.as_bytes(), ROOT, l, 0)), libc::ENAMETOOLONG);
    assert_eq!(errno(t.fs.unlink(ROOT, l)), libc::ENAMETOOLONG);
    assert_eq!(errno(t.fs.rmdir(ROOT, l)), libc::ENAMETOOLONG);
}

#[test]
fn names_empty_or_with_slash_or_nul() {
    let t = T::new();
    let f = t.file(ROOT, "f");
    for bad in [&b""[..], b"a/b", b"/", b"a\0b"] {
        assert_eq!(errno(t.fs.lookup(ROOT, bad)), libc::EINVAL, "{bad:?}");
        assert_eq!(errno(t.fs.mkdir(&USER, ROOT, bad, 0o755)), libc::EINVAL);
        assert_eq!(errno(t.fs.create(&USER, ROOT, bad, 0o644, 0)), libc::EINVAL);
        assert_eq!(errno(t.fs.symlink(&USER, ROOT, bad, b"x")), libc::EINVAL);
        assert_eq!(errno(t.fs.link(f, ROOT, bad)), libc::EINVAL);
        assert_eq!(errno(t.fs.rename(ROOT, b"f", ROOT, bad, 0)), libc::EINVAL);
        assert_eq!(errno(t.fs.unlink(ROOT, bad)), libc::EINVAL);
    }
    t.check_invariants();
}

#[test]
fn dot_and_dotdot_as_names() {
    let t = T::new();
    let d = t.mkdir(ROOT, "d");
    t.file(d, "f");
    for n in [&b"."[..], b".."] {
        assert_eq!(errno(t.fs.mkdir(&USER, d, n, 0o755)), libc::EEXIST);
        assert_eq!(errno(t.fs.mknod(&USER, d, n, libc::S_IFIFO | 0o644, 0)), libc::EEXIST);
        assert_eq!(errno(t.fs.symlink(&USER, d, n, b"x")), libc::EEXIST);
        assert_eq!(errno(t.fs.create(&USER, d, n, 0o644, libc::O_EXCL)), libc::EEXIST);
        assert_eq!(errno(t.fs.create(&USER, d, n, 0o644, 0)), libc::EISDIR);
        assert_eq!(errno(t.fs.unlink(d, n)), libc::EISDIR);
        assert_eq!(errno(t.fs.rename(d, n, ROOT, b"x", 0)), libc::EBUSY);
        assert_eq!(errno(t.fs.rename(d, b"f", d, n, 0)), libc::EBUSY);
        assert_eq!(errno(t.fs.rename(d, b"f", d, n, libc::RENAME_NOREPLACE)), libc::EEXIST);
    }
    let f = t.fs.lookup(d, b"f").unwrap().ino;
    assert_eq!(errno(t.fs.link(f, d, b".")), libc::EEXIST);
    assert_eq!(errno(t.fs.rmdir(d, b".")), libc::EINVAL);
    assert_eq!(errno(t.fs.rmdir(d, b"..")), libc::ENOTEMPTY);
    assert_eq!(t.names(d), ["f"]);
    t.check_invariants();
}

#[test]
fn operations_in_a_non_directory() {
    let t = T::new();
    let f = t.file(ROOT, "f");
    assert_eq!(errno(t.fs.lookup(f, b"x")), libc::ENOTDIR);
    assert_eq!(errno(t.fs.mkdir(&USER, f, b"x", 0o755)), libc::ENOTDIR);
    assert_eq!(errno(t.fs.create(&USER, f, b"x", 0o644, 0)), libc::ENOTDIR);
    assert_eq!(errno(t.fs.unlink(f, b"x")), libc::ENOTDIR);
    assert_eq!(errno(t.fs.rmdir(f, b"x")), libc::ENOTDIR);
    assert_eq!(errno(t.fs.readdir(f, 0)), libc::ENOTDIR);
    assert_eq!(errno(t.fs.opendir(f)), libc::ENOTDIR);
    assert_eq!(errno(t.fs.rename(ROOT, b"f", f, b"x", 0)), libc::ENOTDIR);
    t.fs.opendir(ROOT).unwrap();
}

#[test]
fn parent_mtime_and_ctime_change_with_every_entry_change() {
    let t = T::new();
    let d = t.mkdir(ROOT, "d");
    let e = t.mkdir(ROOT, "e");
    let check = |what: &str, dirs: &[u64], f: &dyn Fn()| {
        for &dir in dirs {
            t.set_times(dir, 5);
        }
        f();
        for &dir in dirs {
            let a = t.attr(dir);
            assert!(a.mtime > 5 && a.ctime > 5, "{what}: dir {dir} times {a:?}");
            assert_eq!(a.atime, 5, "{what}: atime unchanged");
        }
    };
    check("create", &[d], &|| {
        t.file(d, "f");
    });
    check("mkdir", &[d], &|| {
        t.mkdir(d, "sub");
    });
    check("mknod", &[d], &|| {
        t.fs.mknod(&USER, d, b"p", libc::S_IFIFO | 0o644, 0).unwrap();
    });
    check("symlink", &[d], &|| {
        t.fs.symlink(&USER, d, b"s", b"target").unwrap();
    });
    let f = t.fs.lookup(d, b"f").unwrap().ino;
    check("link", &[e], &|| {
        t.fs.link(f, e, b"f2").unwrap();
    });
    check("unlink", &[e], &|| t.fs.unlink(e, b"f2").unwrap());
    check("rmdir", &[d], &|| t.fs.rmdir(d, b"sub").unwrap());
    check("rename within", &[d], &|| t.fs.rename(d, b"f", d, b"g", 0).unwrap());
    check("rename across", &[d, e], &|| t.fs.rename(d, b"g", e, b"g", 0).unwrap());
    check("exchange", &[d, e], &|| {
        t.fs.rename(d, b"p", e, b"g", libc::RENAME_EXCHANGE).unwrap()
    });
    // Failed operations change nothing.
    t.set_times(d, 5);
    t.fs.mkdir(&USER, d, b"s", 0o755).unwrap_err();
    assert_eq!(t.attr(d).mtime, 5);
}

#[test]
fn ctime_changes_with_every_inode_change() {
    let t = T::new();
    let d = t.mkdir(ROOT, "d");
    let f = t.file(ROOT, "f");
    let check = |what: &str, ino: u64, op: &dyn Fn()| {
        t.set_times(ino, 5);
        op();
        let a = t.attr(ino);
        assert!(a.ctime > 5, "{what}: {a:?}");
        assert_eq!(a.mtime, 5, "{what}: mtime unchanged");
    };
    check("link", f, &|| {
        t.fs.link(f, ROOT, b"f2").unwrap();
    });
    check("unlink", f, &|| t.fs.unlink(ROOT, b"f2").unwrap());
    let chmod = SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    check("chmod", f, &|| {
        t.fs.setattr(&USER, f, &chmod).unwrap();
    });
    let chown = SetAttr {
        uid: Some(7),
        gid: Some(8),
        ..Default::default()
    };
    check("chown", f, &|| {
        t.fs.setattr(&ROOT_CTX, f, &chown).unwrap();
    });
    check("setxattr", f, &|| t.fs.setxattr(f, b"user.a", b"v", 0).unwrap());
    check("removexattr", f, &|| t.fs.removexattr(f, b"user.a").unwrap());
    check("rename file", f, &|| t.fs.rename(ROOT, b"f", d, b"f", 0).unwrap());
    check("rename dir", d, &|| t.fs.rename(ROOT, b"d", ROOT, b"d2", 0).unwrap());
    let g = t.file(ROOT, "g");
    check("replaced by rename", g, &|| {
        t.fs.link(g, ROOT, b"g2").unwrap();
        t.set_times(g, 5);
        t.fs.rename(d, b"f", ROOT, b"g", 0).unwrap();
    });
    assert_eq!(t.attr(g).nlink, 1);
}

#[test]
fn directory_nlink_is_two_plus_subdirectories() {
    let t = T::new();
    let a = t.mkdir(ROOT, "a");
    let b = t.mkdir(ROOT, "b");
    assert_eq!(t.attr(ROOT).nlink, 5);
    assert_eq!(t.attr(a).nlink, 2);
    let s = t.mkdir(a, "s");
    t.file(a, "f");
    t.fs.mknod(&USER, a, b"p", libc::S_IFIFO | 0o600, 0).unwrap();
    assert_eq!(t.attr(a).nlink, 3, "files do not count");
    t.fs.rename(a, b"s", b, b"s", 0).unwrap();
    assert_eq!((t.attr(a).nlink, t.attr(b).nlink), (2, 3));
    t.mkdir(a, "t");
    t.fs.forget(s, 1);
    t.fs.rename(a, b"t", b, b"s", 0).unwrap();
    assert_eq!((t.attr(a).nlink, t.attr(b).nlink), (2, 3), "replaced an empty dir");
    assert_eq!(errno(t.fs.getattr(s)), libc::ENOENT, "replaced dir purged");
    t.fs.rename(b, b"s", a, b"f", libc::RENAME_EXCHANGE).unwrap();
    assert_eq!((t.attr(a).nlink, t.attr(b).nlink), (3, 2), "exchange moves the subdir");
    let s2 = t.fs.lookup(a, b"f").unwrap().ino;
    t.fs.rmdir(a, b"f").unwrap();
    assert_eq!(t.attr(a).nlink, 2);
    assert_eq!(t.attr(s2).nlink, 0, "a removed directory still looked up has nlink 0");
    assert_eq!(
        errno(t.fs.mkdir(&USER, s2, b"x", 0o755)),
        libc::ENOENT,
        "no entries in a removed dir"
    );
    assert_eq!(errno(t.fs.create(&USER, s2, b"x", 0o644, 0)), libc::ENOENT);
    assert_eq!(t.names(s2), Vec::<String>::new());
    t.check_invariants();
}

#[test]
fn setgid_directory_propagates_group_and_bit() {
    let t = T::new();
    let d = t.mkdir(ROOT, "d");
    t.fs.setattr(
        &ROOT_CTX,
        d,
        &SetAttr {
            gid: Some(4242),
            mode: Some(0o2775),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(t.attr(d).mode, libc::S_IFDIR | 0o2775);
    let f = t.fs.create(&USER, d, b"f", 0o644, 0).unwrap();
    assert_eq!((f.gid, f.mode), (4242, libc::S_IFREG | 0o644));
    let s = t.fs.mkdir(&USER, d, b"s", 0o755).unwrap();
    assert_eq!((s.gid, s.mode), (4242, libc::S_IFDIR | 0o2755));
    let n = t.fs.mknod(&USER, d, b"n", libc::S_IFREG | 0o2755, 0).unwrap();
    assert_eq!(n.mode, libc::S_IFREG | 0o755, "not in the group: S_ISGID dropped");
    let n = t.fs.mknod(&ROOT_CTX, d, b"r", libc::S_IFREG | 0o2755, 0).unwrap();
    assert_eq!(n.mode, libc::S_IFREG | 0o2755);
    let l = t.fs.symlink(&USER, d, b"l", b"x").unwrap();
    assert_eq!(l.gid, 4242);
    // Outside a setgid directory: the creator's group; mkdir drops S_ISUID/S_ISGID.
    let o = t.fs.mkdir(&USER, ROOT, b"o", 0o7777).unwrap();
    assert_eq!((o.gid, o.mode), (1000, libc::S_IFDIR | 0o1777));
}

#[test]
fn chown_by_non_root_clears_setid_bits() {
    let t = T::new();
    let f = t.file(ROOT, "f");
    let setid = |mode| {
        t.fs.setattr(
            &ROOT_CTX,
            f,
            &SetAttr {
                mode: Some(mode),
                ..Default::default()
            },
        )
        .unwrap();
    };
    let chown = |ctx: &Ctx| {
        t.fs.setattr(
            ctx,
            f,
            &SetAttr {
                gid: Some(1000),
                ..Default::default()
            },
        )
        .unwrap()
        .mode
            & 0o7777
    };
    setid(0o6755);
    assert_eq!(chown(&USER), 0o755);
    setid(0o6745);
    assert_eq!(
        chown(&USER),
        0o2745,
        "S_ISGID without group exec is mandatory locking: kept"
    );
    setid(0o6755);
    assert_eq!(chown(&ROOT_CTX), 0o6755, "root keeps them");
    let d = t.mkdir(ROOT, "d");
    t.fs.setattr(
        &ROOT_CTX,
        d,
        &SetAttr {
            mode: Some(0o2775),
            ..Default::default()
        },
    )
    .unwrap();
    let a =
        t.fs.setattr(
            &USER,
            d,
            &SetAttr {
                uid: Some(1000),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(a.mode, libc::S_IFDIR | 0o2775, "directories keep S_ISGID");
}

#[test]
fn chmod_by_non_member_clears_setgid() {
    let t = T::new();
    let f = t.file(ROOT, "f");
    let chmod = |ctx: &Ctx, mode| {
        t.fs.setattr(
            ctx,
            f,
            &SetAttr {
                mode: Some(mode),
                ..Default::default()
            },
        )
        .unwrap()
        .mode
    };
    assert_eq!(chmod(&USER, 0o2755), libc::S_IFREG | 0o2755, "owner's group");
    t.fs.setattr(
        &ROOT_CTX,
        f,
        &SetAttr {
            gid: Some(77),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(chmod(&USER, 0o2755), libc::S_IFREG | 0o755, "not in group 77");
    assert_eq!(chmod(&USER, 0o4755), libc::S_IFREG | 0o4755, "S_ISUID is kept");
    assert_eq!(chmod(&ROOT_CTX, 0o2755), libc::S_IFREG | 0o2755, "root");
    // The file type bits of the request are ignored.
    assert_eq!(chmod(&ROOT_CTX, libc::S_IFDIR | 0o644), libc::S_IFREG | 0o644);
}

#[test]
fn symlinks() {
    let t = T::new();
    let target = b"../some/where\xff";
    let l = t.fs.symlink(&USER, ROOT, b"l", target).unwrap();
    assert_eq!(l.mode, libc::S_IFLNK | 0o777);
    assert_eq!(l.size, target.len() as u64);
    assert_eq!(t.fs.readlink(l.ino).unwrap(), target);
    assert_eq!(errno(t.fs.readlink(ROOT)), libc::EINVAL);
    assert_eq!(errno(t.fs.symlink(&USER, ROOT, b"e", b"")), libc::ENOENT);
    assert_eq!(
        errno(t.fs.symlink(&USER, ROOT, b"e", &[b'a'; 4096])),
        libc::ENAMETOOLONG
    );
    t.fs.symlink(&USER, ROOT, b"m", &[b'a'; 4095]).unwrap();
    let a =
        t.fs.setattr(
            &ROOT_CTX,
            l.ino,
            &SetAttr {
                mode: Some(0o600),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        a.mode & 0o7777,
        0o600,
        "the core does as asked; the kernel refuses lchmod"
    );
    assert_eq!(
        errno(t.fs.setattr(
            &ROOT_CTX,
            l.ino,
            &SetAttr {
                size: Some(0),
                ..Default::default()
            }
        )),
        libc::EINVAL
    );
    t.fs.unlink(ROOT, b"l").unwrap();
    t.fs.forget(l.ino, 1);
    assert_eq!(count(&t.db(), "SELECT count(*) FROM symlink_targets"), 1);
    t.check_invariants();
}

#[test]
fn root_cannot_be_removed_or_renamed_and_lost_found_is_ordinary() {
    let t = T::new();
    assert_eq!(errno(t.fs.rmdir(ROOT, b"..")), libc::ENOTEMPTY);
    assert_eq!(errno(t.fs.rmdir(ROOT, b".")), libc::EINVAL);
    assert_eq!(errno(t.fs.unlink(ROOT, b".")), libc::EISDIR);
    assert_eq!(errno(t.fs.rename(ROOT, b".", ROOT, b"x", 0)), libc::EBUSY);
    assert_eq!(errno(t.fs.rename(ROOT, b"..", ROOT, b"x", 0)), libc::EBUSY);
    let lf = lost_found(&t);
    assert_eq!(errno(t.fs.rename(lf, b"..", ROOT, b"x", 0)), libc::EBUSY);
    t.fs.rename(ROOT, b"lost+found", ROOT, b"lf", 0).unwrap();
    t.fs.rmdir(ROOT, b"lf").unwrap();
    t.mkdir(ROOT, "lost+found");
    assert_eq!(t.attr(ROOT).kind(), FileKind::Directory);
    t.check_invariants();
}

#[test]
fn rename_replaces_and_checks_types() {
    let t = T::new();
    let d = t.mkdir(ROOT, "d");
    let e = t.mkdir(ROOT, "e");
    let f = t.file(ROOT, "f");
    let g = t.file(ROOT, "g");
    t.file(e, "inside");
    assert_eq!(errno(t.fs.rename(ROOT, b"d", ROOT, b"f", 0)), libc::ENOTDIR);
    assert_eq!(errno(t.fs.rename(ROOT, b"f", ROOT, b"d", 0)), libc::EISDIR);
    assert_eq!(errno(t.fs.rename(ROOT, b"d", ROOT, b"e", 0)), libc::ENOTEMPTY);
    assert_eq!(errno(t.fs.rename(ROOT, b"nope", ROOT, b"x", 0)), libc::ENOENT);
    assert_eq!(errno(t.fs.rename(ROOT, b"f", 999, b"x", 0)), libc::ENOENT);
    assert_eq!(
        errno(t.fs.rename(ROOT, b"f", ROOT, b"g", libc::RENAME_NOREPLACE)),
        libc::EEXIST
    );
    assert_eq!(
        errno(t.fs.rename(ROOT, b"f", ROOT, b"x", libc::RENAME_EXCHANGE)),
        libc::ENOENT
    );
    assert_eq!(
        errno(t.fs.rename(ROOT, b"f", ROOT, b"g", libc::RENAME_EXCHANGE | libc::RENAME_NOREPLACE)),
        libc::EINVAL
    );
    assert_eq!(
        errno(t.fs.rename(ROOT, b"f", ROOT, b"g", libc::RENAME_WHITEOUT)),
        libc::EINVAL
    );
    // File over file: the replaced inode goes.
    t.fs.forget(g, 1);
    t.fs.rename(ROOT, b"f", ROOT, b"g", 0).unwrap();
    assert_eq!(t.fs.lookup(ROOT, b"g").unwrap().ino, f);
    assert_eq!(errno(t.fs.lookup(ROOT, b"f")), libc::ENOENT);
    assert_eq!(errno(t.fs.getattr(g)), libc::ENOENT);
    // Directory over an empty directory, across directories, keeping its contents.
    t.file(d, "x");
    let empty = t.mkdir(e, "empty");
    t.fs.rename(ROOT, b"d", e, b"empty", 0).unwrap();
    assert_eq!(t.names(e), ["empty", "inside"]);
    assert_eq!(t.fs.lookup(e, b"empty").unwrap().ino, d);
    assert_eq!(t.names(d), ["x"]);
    assert_eq!(t.fs.lookup(d, b"..").unwrap().ino, e);
    assert_eq!(t.attr(empty).nlink, 0, "still looked up");
    t.fs.forget(empty, 1);
    assert_eq!(errno(t.fs.getattr(empty)), libc::ENOENT);
    // NOREPLACE into a free name works.
    t.fs.rename(ROOT, b"g", d, b"g", libc::RENAME_NOREPLACE).unwrap();
    assert_eq!(t.names(d), ["g", "x"]);
    t.check_invariants();
}

#[test]
fn rename_into_own_subtree_is_einval() {
    let t = T::new();
    let a = t.mkdir(ROOT, "a");
    let b = t.mkdir(a, "b");
    let c = t.mkdir(b, "c");
    assert_eq!(errno(t.fs.rename(ROOT, b"a", a, b"x", 0)), libc::EINVAL);
    assert_eq!(errno(t.fs.rename(ROOT, b"a", c, b"x", 0)), libc::EINVAL);
    assert_eq!(
        errno(t.fs.rename(a, b"b", c, b"x", libc::RENAME_NOREPLACE)),
        libc::EINVAL
    );
    // The target an ancestor of the source: not empty.
    assert_eq!(errno(t.fs.rename(b, b"c", ROOT, b"a", 0)), libc::ENOTEMPTY);
    // Exchange either way round.
    assert_eq!(
        errno(t.fs.rename(ROOT, b"a", c, b"..", libc::RENAME_EXCHANGE)),
        libc::EBUSY
    );
    t.file(c, "f");
    assert_eq!(
        errno(t.fs.rename(ROOT, b"a", c, b"f", libc::RENAME_EXCHANGE)),
        libc::EINVAL
    );
    assert_eq!(
        errno(t.fs.rename(c, b"f", ROOT, b"a", libc::RENAME_EXCHANGE)),
        libc::EINVAL
    );
    // Moving up is fine.
    t.fs.rename(b, b"c", ROOT, b"c", 0).unwrap();
    assert_eq!(t.fs.lookup(c, b"..").unwrap().ino, ROOT);
    t.check_invariants();
}

#[test]
fn rename_onto_itself_or_a_hard_link_is_a_noop() {
    let t = T::new();
    let f = t.file(ROOT, "f");
    t.fs.link(f, ROOT, b"h").unwrap();
    t.set_times(ROOT, 5);
    t.fs.rename(ROOT, b"f", ROOT, b"f", 0).unwrap();
    t.fs.rename(ROOT, b"f", ROOT, b"h", 0).unwrap();
    t.fs.rename(ROOT, b"f", ROOT, b"h", libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(t.names(ROOT), ["f", "h", "lost+found"]);
    assert_eq!(t.attr(f).nlink, 2);
    assert_eq!(t.attr(ROOT).mtime, 5);
    let d = t.mkdir(ROOT, "d");
    t.fs.rename(ROOT, b"d", ROOT, b"d", 0).unwrap();
    assert_eq!(t.attr(d).nlink, 2);
    t.check_invariants();
}

#[test]
fn rename_exchange_swaps_entries() {
    let t = T::new();
    let a = t.mkdir(ROOT, "a");
    let b = t.mkdir(ROOT, "b");
    let f = t.file(a, "f");
    let s = t.mkdir(b, "s");
    t.file(s, "deep");
    t.fs.rename(a, b"f", b, b"s", libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(t.fs.lookup(a, b"f").unwrap().ino, s);
    assert_eq!(t.fs.lookup(b, b"s").unwrap().ino, f);
    assert_eq!(t.fs.lookup(s, b"..").unwrap().ino, a);
    assert_eq!(t.names(s), ["deep"]);
    assert_eq!((t.attr(a).nlink, t.attr(b).nlink), (3, 2));
    t.check_invariants();
}

#[test]
fn hard_links_and_link_counts() {
    let t = T::new();
    let d = t.mkdir(ROOT, "d");
    let f = t.file(ROOT, "f");
    assert_eq!(t.fs.link(f, d, b"g").unwrap().nlink, 2);
    assert_eq!(t.fs.link(f, ROOT, b"h").unwrap().nlink, 3);
    assert_eq!(errno(t.fs.link(f, ROOT, b"h")), libc::EEXIST);
    assert_eq!(errno(t.fs.link(d, ROOT, b"dl")), libc::EPERM);
    assert_eq!(errno(t.fs.link(f, f, b"x")), libc::ENOTDIR);
    assert_eq!(errno(t.fs.link(999, ROOT, b"x")), libc::ENOENT);
    t.fs.unlink(ROOT, b"f").unwrap();
    assert_eq!(t.attr(f).nlink, 2);
    t.fs.rename(d, b"g", ROOT, b"h", 0).unwrap();
    assert_eq!(
        t.attr(f).nlink,
        2,
        "renaming a link onto another of the same inode is a no-op"
    );
    t.fs.unlink(d, b"g").unwrap();
    assert_eq!(t.names(d), Vec::<String>::new());
    t.fs.unlink(ROOT, b"h").unwrap();
    assert_eq!(t.attr(f).nlink, 0);
    assert_eq!(errno(t.fs.link(f, ROOT, b"again")), libc::ENOENT, "unlinked inode");
    assert_eq!(errno(t.fs.unlink(ROOT, b"d")), libc::EISDIR);
    assert_eq!(errno(t.fs.rmdir(ROOT, b"nope")), libc::ENOENT);
    assert_eq!(errno(t.fs.unlink(ROOT, b"nope")), libc::ENOENT);
    t.file(d, "x");
    assert_eq!(errno(t.fs.rmdir(ROOT, b"d")), libc::ENOTEMPTY);
    assert_eq!(errno(t.fs.rmdir(d, b"x")), libc::ENOTDIR);
    t.check_invariants();
}

#[test]
fn mknod_kinds_and_create() {
    let t = T::new();
    let kinds = [
        (libc::S_IFIFO, FileKind::NamedPipe, 0),
        (libc::S_IFSOCK, FileKind::Socket, 0),
        (libc::S_IFCHR, FileKind::CharDevice, 0x0501),
        (libc::S_IFBLK, FileKind::BlockDevice, 0x0802),
        (libc::S_IFREG, FileKind::RegularFile, 0),
        (0, FileKind::RegularFile, 0),
    ];
    for (i, (fmt, kind, rdev)) in kinds.into_iter().enumerate() {
        let name = format!("n{i}");
        let a = t.fs.mknod(&USER, ROOT, name.as_bytes(), fmt | 0o640, rdev).unwrap();
        assert_eq!((a.kind(), a.rdev, a.mode & 0o7777), (kind, rdev, 0o640));
        assert_eq!((a.uid, a.gid, a.nlink, a.size), (1000, 1000, 1, 0));
        let listed = t.ls(ROOT).into_iter().find(|(n, _, _)| n == name.as_bytes()).unwrap();
        assert_eq!(listed.2, kind);
    }
    assert_eq!(
        errno(t.fs.mknod(&USER, ROOT, b"d", libc::S_IFDIR | 0o755, 0)),
        libc::EPERM
    );
    assert_eq!(
        errno(t.fs.mknod(&USER, ROOT, b"n0", libc::S_IFIFO | 0o755, 0)),
        libc::EEXIST
    );
    let c = t.fs.create(&USER, ROOT, b"c", 0o600, libc::O_CREAT).unwrap();
    assert_eq!(c.mode, libc::S_IFREG | 0o600);
    assert_eq!(t.fs.create(&USER, ROOT, b"c", 0o644, libc::O_CREAT).unwrap().ino, c.ino);
    assert_eq!(t.fs.lookup_count(c.ino), 2);
    assert_eq!(
        errno(t.fs.create(&USER, ROOT, b"c", 0o644, libc::O_CREAT | libc::O_EXCL)),
        libc::EEXIST
    );
    assert_eq!(errno(t.fs.create(&USER, ROOT, b"lost+found", 0o644, 0)), libc::EISDIR);
}

#[test]
fn forget_purges_an_unlinked_inode_with_its_data() {
    let t = T::new();
    let f = t.file(ROOT, "f");
    let other = t.file(ROOT, "other");
    t.fs.setxattr(f, b"user.only_here", b"v", 0).unwrap();
    t.fs.setxattr(f, b"user.shared", b"v", 0).unwrap();
    t.fs.setxattr(other, b"user.shared", b"w", 0).unwrap();
    let c = t.db();
    // Blocks 10 and 11 are f's alone (in objects 1 and 2), block 12 (object 3) is shared.
    add_blocks(&c, f, &[(10, 1), (11, 2), (12, 3), (10, 1)]);
    add_blocks(&c, other, &[(12, 3)]);
    t.fs.unlink(ROOT, b"f").unwrap();
    let a = t.attr(f);
    assert_eq!(a.nlink, 0, "open after unlink");
    t.fs.setattr(
        &USER,
        f,
        &SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(t.fs.getxattr(f, b"user.only_here").unwrap(), b"v");
    t.fs.lookup(ROOT, b"other").unwrap();
    t.fs.forget(f, 0);
    assert!(t.fs.getattr(f).is_ok(), "forget 0 keeps it");
    t.fs.forget(f, 1);
    assert_eq!(errno(t.fs.getattr(f)), libc::ENOENT);
    assert_eq!(count(&c, "SELECT count(*) FROM blocks"), 1);
    assert_eq!(count(&c, "SELECT refcount FROM blocks WHERE id = 12"), 1);
    assert_eq!(count(&c, "SELECT count(*) FROM objects"), 1);
    let mut gone = t.fs.take_deleted_objects();
    gone.sort();
    assert_eq!(gone, [1, 2]);
    assert!(t.fs.take_deleted_objects().is_empty());
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM names WHERE name = CAST('user.only_here' AS BLOB)"
        ),
        0
    );
    assert_eq!(t.fs.getxattr(other, b"user.shared").unwrap(), b"w");
    // Forgetting a live inode purges nothing.
    t.fs.forget(other, 2);
    assert!(t.fs.getattr(other).is_ok());
    t.check_invariants();
}

#[test]
fn open_purges_inodes_left_without_entries() {
    let t = T::new();
    let f = t.file(ROOT, "f");
    t.fs.setxattr(f, b"user.x", b"1", 0).unwrap();
    add_blocks(&t.db(), f, &[(1, 1)]);
    t.fs.unlink(ROOT, b"f").unwrap();
    assert!(t.fs.getattr(f).is_ok(), "looked up: kept");
    // Crash: the kernel's lookups are gone with the process.
    let t = t.reopen();
    assert_eq!(errno(t.fs.getattr(f)), libc::ENOENT);
    assert_eq!(t.fs.take_deleted_objects(), [1]);
    let c = t.db();
    assert_eq!(count(&c, "SELECT count(*) FROM ext_attributes"), 0);
    assert_eq!(count(&c, "SELECT count(*) FROM inode_blocks"), 0);
    t.check_invariants();
    // A new inode never reuses the number.
    assert!(t.file(ROOT, "g") > f);
}

#[test]
fn truncate_releases_blocks_beyond_the_end() {
    let t = T::new();
    let f = t.file(ROOT, "f");
    let other = t.file(ROOT, "other");
    let c = t.db();
    add_blocks(&c, f, &[(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]);
    add_blocks(&c, other, &[(1, 1), (2, 2), (3, 3), (4, 4)]);
    c.execute(
        "UPDATE inodes SET size = ?1 WHERE id = ?2",
        params![5 * BS as i64, f as i64],
    )
    .unwrap();
    let truncate = |size: u64| {
        t.fs.setattr(
            &USER,
            f,
            &SetAttr {
                size: Some(size),
                ..Default::default()
            },
        )
        .unwrap()
    };
    t.set_times(f, 5);
    // Into block 2: blocks 3.. go; block 4 (object 4) is shared, block 5 is not.
    let a = truncate(2 * BS + 1);
    assert_eq!((a.size, a.blocks), (2 * BS + 1, (2 * BS + 1).div_ceil(512)));
    assert!(a.mtime > 5 && a.ctime > 5);
    assert_eq!(
        count(&c, "SELECT max(blockno) FROM inode_blocks WHERE inode = 2 + 1"),
        2
    );
    assert_eq!(t.fs.take_deleted_objects(), [5]);
    assert_eq!(count(&c, "SELECT refcount FROM blocks WHERE id = 4"), 1);
    // Exactly at a block boundary: block 2 goes too.
    truncate(2 * BS);
    assert_eq!(count(&c, "SELECT count(*) FROM inode_blocks WHERE inode = 3"), 2);
    // Growing releases nothing.
    truncate(100 * BS);
    assert_eq!(count(&c, "SELECT count(*) FROM inode_blocks WHERE inode = 3"), 2);
    truncate(0);
    assert_eq!(count(&c, "SELECT count(*) FROM inode_blocks WHERE inode = 3"), 0);
    assert!(t.fs.take_deleted_objects().is_empty(), "the rest is shared with other");
    t.set_times(f, 5);
    let a = truncate(0);
    assert_eq!(a.mtime, 5, "unchanged size: mtime kept");
    assert_eq!(
        errno(t.fs.setattr(
            &USER,
            ROOT,
            &SetAttr {
                size: Some(0),
                ..Default::default()
            }
        )),
        libc::EISDIR
    );
    t.check_invariants();
}

#[test]
fn setattr_times_and_owner() {
    let t = T::new();
    let f = t.file(ROOT, "f");
    let a =
        t.fs.setattr(
            &ROOT_CTX,
            f,
            &SetAttr {
                uid: Some(5),
                gid: Some(6),
                atime: TimeSet::Set(-1_500_000_000),
                mtime: TimeSet::Set(1_234_567_890_123_456_789),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        (a.uid, a.gid, a.atime, a.mtime),
        (5, 6, -1_500_000_000, 1_234_567_890_123_456_789)
    );
    assert_eq!(t.attr(f), a);
    let a =
        t.fs.setattr(
            &ROOT_CTX,
            f,
            &SetAttr {
                atime: TimeSet::Now,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(a.atime > 1_600_000_000_000_000_000);
    assert_eq!(a.mtime, 1_234_567_890_123_456_789);
}

#[test]
fn readdir_lists_dot_entries_first_in_stable_batches() {
    let t = T::new();
    let d = t.mkdir(ROOT, "d");
    let first = t.fs.readdir(d, 0).unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!((first[0].name.as_slice(), first[0].ino), (&b"."[..], d));
    assert_eq!((first[1].name.as_slice(), first[1].ino), (&b".."[..], ROOT));
    assert!(t.fs.readdir(d, first[1].offset).unwrap().is_empty());
    // Resuming after '.' gives '..'.
    assert_eq!(t.fs.readdir(d, first[0].offset).unwrap()[0].name, b"..");
    let n = 2 * s3fs::fs::READDIR_BATCH + 7;
    for i in 0..n {
        t.file(d, &format!("f{i:04}"));
    }
    let batch = t.fs.readdir(d, 0).unwrap();
    assert_eq!(batch.len(), s3fs::fs::READDIR_BATCH);
    let all = t.ls(d);
    assert_eq!(all.len(), n + 2);
    let names: HashSet<_> = all.iter().map(|e| e.0.clone()).collect();
    assert_eq!(names.len(), n + 2);
}

#[test]
fn readdir_with_concurrent_changes_returns_survivors_exactly_once() {
    let t = T::new();
    let d = t.mkdir(ROOT, "d");
    let n = 1000;
    for i in 0..n {
        t.file(d, &format!("f{i}"));
    }
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut removed = HashSet::new();
    let mut off = 0;
    let mut round = 0;
    loop {
        let batch = t.fs.readdir(d, off).unwrap();
        let Some(last) = batch.last() else { break };
        off = last.offset;
        for e in batch {
            *seen.entry(e.name).or_default() += 1;
        }
        // Between batches: remove some entries (seen and not yet seen), add new ones,
        // rename one within the directory, and move one out and back in.
        for k in [round * 7 % n, (round * 13 + 500) % n, (round * 31 + 900) % n] {
            let name = format!("f{k}");
            if removed.insert(name.clone()) {
                t.fs.unlink(d, name.as_bytes()).unwrap();
            }
        }
        if round < 3 {
            t.file(d, &format!("new{round}"));
        }
        round += 1;
    }
    for i in 0..n {
        let name = format!("f{i}");
        if !removed.contains(&name) {
            assert_eq!(seen.get(name.as_bytes()), Some(&1), "{name}");
        }
    }
    assert!(seen.values().all(|&c| c == 1), "no duplicates");
    assert_eq!(seen.get(&b"."[..]), Some(&1));
}

#[test]
fn readdir_keeps_a_renamed_entry_once() {
    let t = T::new();
    let d = t.mkdir(ROOT, "d");
    for i in 0..10 {
        t.file(d, &format!("f{i}"));
    }
    let batch = t.fs.readdir(d, 0).unwrap();
    let off = batch[5].offset; // ., .., f0..f3 seen
    t.fs.rename(d, b"f1", d, b"z1", 0).unwrap();
    t.fs.rename(d, b"f7", d, b"z7", 0).unwrap();
    let rest: Vec<_> = t.fs.readdir(d, off).unwrap().into_iter().map(|e| e.name).collect();
    assert!(!rest.contains(&b"z1".to_vec()), "already listed as f1");
    assert!(rest.contains(&b"z7".to_vec()));
    assert!(!rest.contains(&b"f7".to_vec()));
}

#[test]
fn readdirplus_counts_lookups_of_accepted_entries() {
    let t = T::new();
    let d = t.mkdir(ROOT, "d");
    let a = t.file(d, "a");
    let b = t.mkdir(d, "b");
    let c = t.file(d, "c");
    t.fs.forget(a, 1);
    t.fs.forget(b, 1);
    t.fs.forget(c, 1);
    let before_d = t.fs.lookup_count(d);
    let mut got = Vec::new();
    t.fs.readdirplus(d, 0, |e, attr| {
        if got.len() == 4 {
            return false;
        }
        assert_eq!(e.ino, attr.ino);
        got.push((e.name.clone(), attr.nlink));
        true
    })
    .unwrap();
    assert_eq!(
        got,
        [
            (b".".to_vec(), 3),
            (b"..".to_vec(), 4),
            (b"a".to_vec(), 1),
            (b"b".to_vec(), 2)
        ]
    );
    assert_eq!(t.fs.lookup_count(d), before_d, ". and .. are not counted");
    assert_eq!(
        (t.fs.lookup_count(a), t.fs.lookup_count(b), t.fs.lookup_count(c)),
        (1, 1, 0)
    );
    // An entry counted by readdirplus keeps an unlinked inode alive until forgotten.
    t.fs.unlink(d, b"a").unwrap();
    assert!(t.fs.getattr(a).is_ok());
    t.fs.forget(a, 1);
    assert!(t.fs.getattr(a).is_err());
    t.fs.unlink(d, b"c").unwrap();
    assert!(t.fs.getattr(c).is_err(), "never looked up: purged at once");
}

/// Whatever sizes the DB holds (an older s3fs let a truncate to 2^63 - 1 through), the
/// statistics of a mount and statfs neither overflow nor fail: one such size made every
/// later mount exit with "Input/output error".
#[test]
fn statistics_and_statfs_survive_sizes_that_sum_past_i64() {
    let t = T::new();
    let a = t.file(ROOT, "a");
    let b = t.file(ROOT, "b");
    let c = t.db();
    c.execute(
        "UPDATE inodes SET size = ?1 WHERE id IN (?2, ?3)",
        params![i64::MAX, a as i64, b as i64],
    )
    .unwrap();
    common::map_block(&c, a as i64, 0, (1, 1), i64::MAX, i64::MAX);
    common::map_block(&c, b as i64, 0, (2, 2), i64::MAX, i64::MAX);
    drop(c);
    let t = t.reopen();
    t.fs.enable_stats().unwrap();
    let stats = t.fs.db_stats().unwrap().unwrap();
    assert!(stats.total_bytes >= i64::MAX as u64, "{stats:?}");
    assert!(stats.dedup_bytes >= i64::MAX as u64, "{stats:?}");
    t.fs.statfs().unwrap();
    // The totals kept by triggers cope as well.
    let d = t.file(ROOT, "d");
    t.fs.setattr(
        &ROOT_CTX,
        d,
        &SetAttr {
            size: Some(4096),
            ..Default::default()
        },
    )
    .unwrap();
    t.fs.db_stats().unwrap().unwrap();
}

/// The control file's name is reserved in every directory: an entry of that name
/// would be hidden behind the control file (rename was the way to make one).
#[test]
fn the_control_file_name_is_reserved() {
    let t = T::new();
    let name = s3fs::fs::CONTROL_NAME.as_bytes();
    let a = t.file(ROOT, "a");
    assert_eq!(t.fs.rename(ROOT, b"a", ROOT, name, 0).unwrap_err().errno(), libc::EPERM);
    assert_eq!(
        t.fs.rename(ROOT, b"a", ROOT, name, libc::RENAME_EXCHANGE)
            .unwrap_err()
            .errno(),
        libc::EPERM
    );
    assert_eq!(
        t.fs.create(&USER, ROOT, name, 0o644, 0).unwrap_err().errno(),
        libc::EEXIST
    );
    assert_eq!(t.fs.mkdir(&USER, ROOT, name, 0o755).unwrap_err().errno(), libc::EEXIST);
    assert_eq!(t.fs.symlink(&USER, ROOT, name, b"x").unwrap_err().errno(), libc::EEXIST);
    assert_eq!(t.fs.link(a, ROOT, name).unwrap_err().errno(), libc::EEXIST);
    assert_eq!(t.names(ROOT), ["a", "lost+found"]);
}

#[test]
fn statfs_reports_plenty_of_space() {
    let t = T::new();
    let s = t.fs.statfs().unwrap();
    assert!(s.bavail * u64::from(s.frsize) >= 1 << 50);
    assert_eq!(s.bfree, s.bavail);
    assert_eq!(s.files - s.ffree, 2, "root and lost+found");
    assert_eq!(s.namelen, 255);
    t.file(ROOT, "f");
    let s2 = t.fs.statfs().unwrap();
    assert_eq!(s2.files - s2.ffree, 3);
    add_blocks(&t.db(), 3, &[(1, 1)]);
    let s3 = t.fs.statfs().unwrap();
    assert_eq!(s3.blocks - s3.bfree, 1);
}

/// `ls -l` asks for `security.selinux` on every file; on a filesystem where no file has
/// one the answer is EOPNOTSUPP, which `ls` remembers for the whole filesystem. Setting
/// one still works, and from then on the attribute reads like any other, also after a
/// reopen.
#[test]
fn selinux_label_reads_as_unsupported_until_one_is_set() {
    let t = T::new();
    let f = t.file(ROOT, "f");
    let g = t.file(ROOT, "g");
    assert_eq!(errno(t.fs.getxattr(f, b"security.selinux")), libc::EOPNOTSUPP);
    assert_eq!(errno(t.fs.getxattr(f, b"security.other")), libc::ENODATA);
    t.fs.setxattr(f, b"security.selinux", b"system_u:object_r:etc_t:s0\0", 0)
        .unwrap();
    assert_eq!(
        t.fs.getxattr(f, b"security.selinux").unwrap(),
        b"system_u:object_r:etc_t:s0\0"
    );
    assert_eq!(errno(t.fs.getxattr(g, b"security.selinux")), libc::ENODATA);
    let t = t.reopen();
    assert_eq!(errno(t.fs.getxattr(g, b"security.selinux")), libc::ENODATA);
    t.fs.removexattr(f, b"security.selinux").unwrap();
    let t = t.reopen();
    assert_eq!(errno(t.fs.getxattr(f, b"security.selinux")), libc::EOPNOTSUPP);
}

/// The kernel reads `security.capability` before every chown, and the filesystem
/// answers from a flag while no file has one: the answer must stay right when one is
/// set, after a reopen, and after a chown removes it.
#[test]
fn capability_reads_as_absent_until_one_is_set_and_chown_removes_it() {
    let t = T::new();
    let f = t.file(ROOT, "f");
    let g = t.file(ROOT, "g");
    assert_eq!(errno(t.fs.getxattr(f, b"security.capability")), libc::ENODATA);
    let cap = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    t.fs.setxattr(f, b"security.capability", cap, 0).unwrap();
    assert_eq!(t.fs.getxattr(f, b"security.capability").unwrap(), cap);
    assert_eq!(errno(t.fs.getxattr(g, b"security.capability")), libc::ENODATA);
    let t = t.reopen();
    assert_eq!(t.fs.getxattr(f, b"security.capability").unwrap(), cap);
    let chown = SetAttr {
        uid: Some(1000),
        ..SetAttr::default()
    };
    t.fs.setattr(&ROOT_CTX, f, &chown).unwrap();
    assert_eq!(errno(t.fs.getxattr(f, b"security.capability")), libc::ENODATA);
}

#[test]
fn xattrs_round_trip_and_errors() {
    let t = T::new();
    let f = t.file(ROOT, "f");
    let d = t.mkdir(ROOT, "d");
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).skip(5000).collect();
    assert_eq!(binary.len(), 65_000);
    t.fs.setxattr(f, b"user.bin", &binary, 0).unwrap();
    t.fs.setxattr(f, b"user.empty", b"", 0).unwrap();
    t.fs.setxattr(f, b"trusted.t", b"\0\x01", 0).unwrap();
    t.fs.setxattr(f, b"security.s", b"x", 0).unwrap();
    t.fs.setxattr(d, b"user.bin", b"dir", 0).unwrap();
    assert_eq!(t.fs.getxattr(f, b"user.bin").unwrap(), binary);
    assert_eq!(t.fs.getxattr(f, b"user.empty").unwrap(), b"");
    assert_eq!(t.fs.getxattr(d, b"user.bin").unwrap(), b"dir");
    let mut names = t.fs.listxattr(f).unwrap();
    names.sort();
    assert_eq!(names, [&b"security.s"[..], b"trusted.t", b"user.bin", b"user.empty"]);
    assert!(t.fs.listxattr(t.file(ROOT, "g")).unwrap().is_empty());
    // Flags.
    assert_eq!(
        errno(t.fs.setxattr(f, b"user.bin", b"v", libc::XATTR_CREATE)),
        libc::EEXIST
    );
    assert_eq!(
        errno(t.fs.setxattr(f, b"user.new", b"v", libc::XATTR_REPLACE)),
        libc::ENODATA
    );
    t.fs.setxattr(f, b"user.bin", b"short", libc::XATTR_REPLACE).unwrap();
    assert_eq!(t.fs.getxattr(f, b"user.bin").unwrap(), b"short");
    t.fs.setxattr(f, b"user.new", b"v", libc::XATTR_CREATE).unwrap();
    assert_eq!(errno(t.fs.setxattr(f, b"user.x", b"v", 0x10)), libc::EINVAL);
    // Missing.
    assert_eq!(errno(t.fs.getxattr(f, b"user.missing")), libc::ENODATA);
    assert_eq!(errno(t.fs.removexattr(f, b"user.missing")), libc::ENODATA);
    t.fs.removexattr(f, b"user.new").unwrap();
    assert_eq!(errno(t.fs.getxattr(f, b"user.new")), libc::ENODATA);
    // Limits.
    assert_eq!(errno(t.fs.setxattr(f, b"user.big", &[0; 65_537], 0)), libc::E2BIG);
    t.fs.setxattr(f, b"user.big", &[0; 65_536], 0).unwrap();
    let long = [b"user.".as_slice(), &[b'n'; 251]].concat();
    assert_eq!(errno(t.fs.setxattr(f, &long, b"v", 0)), libc::ERANGE);
    assert_eq!(errno(t.fs.getxattr(f, &long)), libc::ERANGE);
    t.fs.setxattr(f, &long[..255], b"v", 0).unwrap();
    // Namespaces.
    for n in [
        &b"system.posix_acl_access"[..],
        b"system.posix_acl_default",
        b"system.other",
        b"other.x",
    ] {
        assert_eq!(errno(t.fs.setxattr(f, n, b"v", 0)), libc::EOPNOTSUPP);
        assert_eq!(errno(t.fs.getxattr(f, n)), libc::EOPNOTSUPP);
        assert_eq!(errno(t.fs.removexattr(f, n)), libc::EOPNOTSUPP);
    }
    // user.* only on regular files and directories.
    let l = t.fs.symlink(&USER, ROOT, b"l", b"f").unwrap().ino;
    let p = t.fs.mknod(&USER, ROOT, b"p", libc::S_IFIFO | 0o644, 0).unwrap().ino;
    for ino in [l, p] {
        assert_eq!(errno(t.fs.setxattr(ino, b"user.a", b"v", 0)), libc::EPERM);
        assert_eq!(errno(t.fs.getxattr(ino, b"user.a")), libc::ENODATA);
        assert_eq!(errno(t.fs.removexattr(ino, b"user.a")), libc::EPERM);
        t.fs.setxattr(ino, b"trusted.a", b"v", 0).unwrap();
        assert_eq!(t.fs.getxattr(ino, b"trusted.a").unwrap(), b"v");
    }
    assert_eq!(errno(t.fs.setxattr(999, b"user.a", b"v", 0)), libc::ENOENT);
    assert_eq!(errno(t.fs.listxattr(999)), libc::ENOENT);
    // Names are interned once whatever their uses.
    let c = t.db();
    assert_eq!(
        count(&c, "SELECT refcount FROM names WHERE name = CAST('user.bin' AS BLOB)"),
        2
    );
    t.fs.removexattr(d, b"user.bin").unwrap();
    assert_eq!(
        count(&c, "SELECT refcount FROM names WHERE name = CAST('user.bin' AS BLOB)"),
        1
    );
    t.check_invariants();
}

#[test]
fn names_shared_by_entries_and_xattrs_are_counted() {
    let t = T::new();
    let a = t.mkdir(ROOT, "a");
    let b = t.mkdir(ROOT, "b");
    let f = t.file(a, "user.same");
    t.file(b, "user.same");
    t.fs.setxattr(f, b"user.same", b"v", 0).unwrap();
    let c = t.db();
    let refs = || {
        c.query_row(
            "SELECT coalesce((SELECT refcount FROM names WHERE name = CAST('user.same' AS BLOB)), 0)",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
    };
    assert_eq!(refs(), 3);
    t.fs.rename(a, b"user.same", a, b"other", 0).unwrap();
    assert_eq!(refs(), 2);
    t.fs.rename(a, b"other", b, b"user.same", 0).unwrap();
    assert_eq!(refs(), 2, "replaced entry's name use gone, moved entry's added");
    t.fs.unlink(b, b"user.same").unwrap();
    assert_eq!(refs(), 1, "xattr of the still looked-up inode");
    t.fs.forget(f, 1);
    assert_eq!(refs(), 0);
    t.check_invariants();
}

#[test]
fn locked_inodes_refuse_every_change() {
    let t = T::new();
    let d = t.mkdir(ROOT, "d");
    let f = t.file(d, "f");
    let sub = t.mkdir(d, "sub");
    let free = t.mkdir(ROOT, "free");
    let g = t.file(free, "g");
    t.fs.setxattr(f, b"user.x", b"1", 0).unwrap();
    let c = t.db();
    c.execute(
        "UPDATE inodes SET locked = 1 WHERE id IN (?1, ?2, ?3)",
        params![d as i64, f as i64, sub as i64],
    )
    .unwrap();
    let eperm = |what: &str, r: Result<(), s3fs::fs::FsError>| assert_eq!(errno(r), libc::EPERM, "{what}");
    eperm("create", t.fs.create(&USER, d, b"n", 0o644, 0).map(drop));
    eperm("mkdir", t.fs.mkdir(&USER, d, b"n", 0o755).map(drop));
    eperm("mknod", t.fs.mknod(&USER, d, b"n", libc::S_IFIFO, 0).map(drop));
    eperm("symlink", t.fs.symlink(&USER, d, b"n", b"t").map(drop));
    eperm("link into", t.fs.link(g, d, b"n").map(drop));
    eperm("link of", t.fs.link(f, free, b"n").map(drop));
    eperm("unlink", t.fs.unlink(d, b"f"));
    eperm("rmdir", t.fs.rmdir(d, b"sub"));
    eperm("rmdir locked", t.fs.rmdir(ROOT, b"d"));
    eperm("rename out", t.fs.rename(d, b"f", free, b"f", 0));
    eperm("rename in", t.fs.rename(free, b"g", d, b"g", 0));
    eperm("rename locked dir", t.fs.rename(ROOT, b"d", free, b"d", 0));
    eperm("rename over locked", t.fs.rename(free, b"g", ROOT, b"d", 0));
    eperm("setattr", t.fs.setattr(&ROOT_CTX, f, &SetAttr::default()).map(drop));
    eperm("setxattr", t.fs.setxattr(f, b"user.x", b"2", 0));
    eperm("removexattr", t.fs.removexattr(f, b"user.x"));
    // Reading works.
    assert_eq!(t.fs.lookup(d, b"f").unwrap().ino, f);
    assert_eq!(t.fs.getxattr(f, b"user.x").unwrap(), b"1");
    assert_eq!(t.names(d), ["f", "sub"]);
    assert!(t.fs.getattr(sub).is_ok());
    // Unrelated changes still work.
    t.fs.rename(free, b"g", free, b"h", 0).unwrap();
}

#[test]
fn sync_metadata_then_reopen_sees_everything() {
    let t = T::new();
    let d = t.mkdir(ROOT, "d");
    let f = t.file(d, "f");
    t.fs.setxattr(f, b"user.k", b"v", 0).unwrap();
    t.fs.symlink(&USER, d, b"l", b"f").unwrap();
    t.fs.sync_metadata().unwrap();
    let t = t.reopen();
    assert_eq!(t.names(d), ["f", "l"]);
    assert_eq!(t.fs.getxattr(f, b"user.k").unwrap(), b"v");
    // Also with no WAL file at all.
    let T { _dir, path, fs } = t;
    drop(fs);
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    assert!(!Path::new(&wal).exists(), "the last connection removes the WAL");
    let t = T {
        fs: Filesystem::open(&path, BS).unwrap(),
        _dir,
        path,
    };
    t.fs.sync_metadata().unwrap();
    t.check_invariants();
}

#[test]
fn open_refuses_a_foreign_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    assert!(Filesystem::open(&path, BS).is_err());
}

#[test]
fn directory_rename_is_one_row_whatever_the_subtree() {
    let t = T::new();
    let top = t.mkdir(ROOT, "top");
    let mut dir = top;
    for i in 0..50 {
        dir = t.mkdir(dir, &format!("l{i}"));
        t.file(dir, "f");
    }
    let c = t.db();
    let max_rowid = count(&c, "SELECT max(rowid) FROM contents");
    t.fs.rename(ROOT, b"top", ROOT, b"moved", 0).unwrap();
    assert_eq!(
        count(&c, "SELECT max(rowid) FROM contents"),
        max_rowid,
        "no row re-inserted"
    );
    assert_eq!(t.fs.lookup(ROOT, b"moved").unwrap().ino, top);
    assert_eq!(t.fs.lookup(dir, b"..").unwrap().kind(), FileKind::Directory);
    t.check_invariants();
}

#[test]
fn concurrent_threads_share_one_filesystem() {
    let t = T::new();
    std::thread::scope(|s| {
        for th in 0..4 {
            let fs = &t.fs;
            s.spawn(move || {
                let d = fs.mkdir(&USER, ROOT, format!("t{th}").as_bytes(), 0o755).unwrap().ino;
                for i in 0..100 {
                    let name = format!("f{i}");
                    fs.create(&USER, d, name.as_bytes(), 0o644, libc::O_EXCL).unwrap();
                    if i % 3 == 0 {
                        fs.rename(d, name.as_bytes(), ROOT, format!("{th}-{i}").as_bytes(), 0)
                            .unwrap();
                    }
                }
            });
        }
    });
    assert_eq!(t.names(ROOT).len(), 1 + 4 + 4 * 34);
    t.check_invariants();
}

// ---------------------------------------------------------------------------------------
// Randomized model test.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Default)]
struct Model {
    /// Entries of every live directory.
    dirs: HashMap<u64, BTreeMap<Vec<u8>, u64>>,
    /// Link counts of live non-directories.
    files: HashMap<u64, u32>,
}

impl Model {
    fn is_dir(&self, ino: u64) -> bool {
        self.dirs.contains_key(&ino)
    }

    fn parent(&self, dir: u64) -> Option<u64> {
        self.dirs
            .iter()
            .find(|(_, e)| e.values().any(|&i| i == dir))
            .map(|(&p, _)| p)
    }

    fn in_subtree(&self, top: u64, mut dir: u64) -> bool {
        loop {
            if dir == top {
                return true;
            }
            match self.parent(dir) {
                Some(p) => dir = p,
                None => return false,
            }
        }
    }

    fn drop_link(&mut self, ino: u64) {
        if self.is_dir(ino) {
            self.dirs.remove(&ino);
        } else {
            let n = self.files.get_mut(&ino).unwrap();
            *n -= 1;
            if *n == 0 {
                self.files.remove(&ino);
            }
        }
    }

    /// Expected result of rename, applied to the model if it succeeds.
    fn rename(&mut self, p: u64, n: &[u8], np: u64, nn: &[u8], flags: u32) -> Result<(), i32> {
        let Some(&src) = self.dirs[&p].get(n) else {
            return Err(libc::ENOENT);
        };
        let dst = self.dirs[&np].get(nn).copied();
        if flags == libc::RENAME_NOREPLACE && dst.is_some() {
            return Err(libc::EEXIST);
        }
        if flags == libc::RENAME_EXCHANGE && dst.is_none() {
            return Err(libc::ENOENT);
        }
        if dst == Some(src) {
            return Ok(());
        }
        if self.is_dir(src) && self.in_subtree(src, np) {
            return Err(libc::EINVAL);
        }
        if flags == libc::RENAME_EXCHANGE {
            let dst = dst.unwrap();
            if self.is_dir(dst) && self.in_subtree(dst, p) {
                return Err(libc::EINVAL);
            }
            self.dirs.get_mut(&p).unwrap().insert(n.to_vec(), dst);
            self.dirs.get_mut(&np).unwrap().insert(nn.to_vec(), src);
            return Ok(());
        }
        if let Some(dst) = dst {
            match (self.is_dir(src), self.is_dir(dst)) {
                (true, false) => return Err(libc::ENOTDIR),
                (false, true) => return Err(libc::EISDIR),
                (true, true) if !self.dirs[&dst].is_empty() => return Err(libc::ENOTEMPTY),
                _ => {}
            }
            self.drop_link(dst);
        }
        self.dirs.get_mut(&p).unwrap().remove(n);
        self.dirs.get_mut(&np).unwrap().insert(nn.to_vec(), src);
        Ok(())
    }
}

fn compare(t: &T, m: &Model, step: usize) {
    let mut seen_dirs = 0;
    let mut stack = vec![ROOT];
    while let Some(dir) = stack.pop() {
        seen_dirs += 1;
        let want = &m.dirs[&dir];
        let got: BTreeMap<Vec<u8>, (u64, FileKind)> = t
            .ls(dir)
            .into_iter()
            .filter(|(n, _, _)| n != b"." && n != b"..")
            .map(|(n, i, k)| (n, (i, k)))
            .collect();
        let got_inos: BTreeMap<Vec<u8>, u64> = got.iter().map(|(n, (i, _))| (n.clone(), *i)).collect();
        assert_eq!(&got_inos, want, "step {step}: entries of {dir}");
        let subdirs = want.values().filter(|i| m.is_dir(**i)).count() as u32;
        assert_eq!(t.attr(dir).nlink, 2 + subdirs, "step {step}: nlink of dir {dir}");
        for (i, k) in got.values() {
            if m.is_dir(*i) {
                assert_eq!(*k, FileKind::Directory, "step {step}");
                stack.push(*i);
            } else {
                assert_eq!(*k, FileKind::RegularFile, "step {step}");
                assert_eq!(t.attr(*i).nlink, m.files[i], "step {step}: nlink of {i}");
            }
        }
    }
    assert_eq!(seen_dirs, m.dirs.len(), "step {step}: reachable directories");
}

#[test]
fn randomized_against_a_model() {
    let t = T::new();
    let mut m = Model::default();
    m.dirs.insert(ROOT, BTreeMap::new());
    m.dirs.insert(lost_found(&t), BTreeMap::new());
    t.fs.forget(lost_found(&t), 2);
    m.dirs
        .get_mut(&ROOT)
        .unwrap()
        .insert(b"lost+found".to_vec(), t.fs.lookup(ROOT, b"lost+found").unwrap().ino);
    t.fs.forget(m.dirs[&ROOT][&b"lost+found"[..]], 1);
    let names: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for step in 0..2000 {
        let mut dirs: Vec<u64> = m.dirs.keys().copied().collect();
        dirs.sort();
        let d = dirs[rng.below(dirs.len())];
        let n = names[rng.below(names.len())];
        let exists = m.dirs[&d].get(n).copied();
        let what = rng.below(10);
        let (desc, got, want): (String, Result<(), i32>, Result<(), i32>) = match what {
            0 => {
                let got = t.fs.mkdir(&USER, d, n, 0o755).map_err(|e| e.errno());
                let want = if exists.is_some() { Err(libc::EEXIST) } else { Ok(()) };
                if let Ok(a) = &got {
                    m.dirs.get_mut(&d).unwrap().insert(n.to_vec(), a.ino);
                    m.dirs.insert(a.ino, BTreeMap::new());
                    t.fs.forget(a.ino, 1);
                }
                ("mkdir".into(), got.map(drop), want)
            }
            2 => {
                let got = t.fs.create(&USER, d, n, 0o644, libc::O_EXCL).map_err(|e| e.errno());
                let want = if exists.is_some() { Err(libc::EEXIST) } else { Ok(()) };
                if let Ok(a) = &got {
                    m.dirs.get_mut(&d).unwrap().insert(n.to_vec(), a.ino);
                    m.files.insert(a.ino, 1);
                    t.fs.forget(a.ino, 1);
                }
                ("create".into(), got.map(drop), want)
            }
            4 | 1 => {
                let got = t.fs.unlink(d, n).map_err(|e| e.errno());
                let want = match exists {
                    None => Err(libc::ENOENT),
                    Some(i) if m.is_dir(i) => Err(libc::EISDIR),
                    Some(i) => {
                        m.dirs.get_mut(&d).unwrap().remove(n);
                        m.drop_link(i);
                        Ok(())
                    }
                };
                ("unlink".into(), got, want)
            }
            3 | 5 => {
                let got = t.fs.rmdir(d, n).map_err(|e| e.errno());
                let want = match exists {
                    None => Err(libc::ENOENT),
                    Some(i) if !m.is_dir(i) => Err(libc::ENOTDIR),
                    Some(i) if !m.dirs[&i].is_empty() => Err(libc::ENOTEMPTY),
                    Some(i) => {
                        m.dirs.get_mut(&d).unwrap().remove(n);
                        m.drop_link(i);
                        Ok(())
                    }
                };
                ("rmdir".into(), got, want)
            }
            6 => {
                let mut files: Vec<u64> = m.files.keys().copied().collect();
                if files.is_empty() {
                    continue;
                }
                files.sort();
                let f = files[rng.below(files.len())];
                let got = t.fs.link(f, d, n).map_err(|e| e.errno());
                let want = if exists.is_some() { Err(libc::EEXIST) } else { Ok(()) };
                if got.is_ok() {
                    m.dirs.get_mut(&d).unwrap().insert(n.to_vec(), f);
                    *m.files.get_mut(&f).unwrap() += 1;
                    t.fs.forget(f, 1);
                }
                (format!("link {f}"), got.map(drop), want)
            }
            _ => {
                let d2 = dirs[rng.below(dirs.len())];
                let n2 = names[rng.below(names.len())];
                let flags = [0, 0, libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE][rng.below(4)];
                let got = t.fs.rename(d, n, d2, n2, flags).map_err(|e| e.errno());
                let want = m.rename(d, n, d2, n2, flags);
                (
                    format!(
                        "rename {d}/{} -> {d2}/{} flags {flags}",
                        String::from_utf8_lossy(n),
                        String::from_utf8_lossy(n2)
                    ),
                    got,
                    want,
                )
            }
        };
        assert_eq!(
            got,
            want,
            "step {step}: {desc} in {d} name {}",
            String::from_utf8_lossy(n)
        );
        // The full tree after every step early on and after every successful rename;
        // later every 4th step, to stay fast as the tree grows.
        if step < 400 || step % 4 == 0 || (what >= 7 && got.is_ok()) {
            compare(&t, &m, step);
        }
        if step % 250 == 0 {
            t.check_invariants();
        }
    }
    compare(&t, &m, 2000);
    eprintln!("model test: {} directories, {} files", m.dirs.len(), m.files.len());
    t.check_invariants();
    // Nothing leaked: every inode in the DB is in the model.
    let c = t.db();
    assert_eq!(
        count(&c, "SELECT count(*) FROM inodes") as usize,
        m.dirs.len() + m.files.len()
    );
}
