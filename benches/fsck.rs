//! Wall time of `fsck.s3fs` on big filesystems, through the real binaries.
//!
//! For each size N (`S3FS_BENCH_FSCK_FILES`, comma-separated, default `100000,1000000`):
//!
//! 1. `mkfs.s3fs --plain` on a local store in a fresh directory under /var/tmp; mount it,
//!    write a few files, unmount.
//! 2. Grow the local metadata DB directly with SQL to N regular files in N/1000
//!    directories under the root, sharing N/100 deduplicated blocks (one object each,
//!    written to the store through the filesystem's codec). The local superblock is left
//!    as it is (same seq as the store's, not mounted), so fsck checks this local DB.
//! 3. Time `fsck.s3fs --batch --force` on it: it must exit 0.
//! 4. Mount again with `--dirty-block-upload-delay 3600`, write and fsync
//!    `S3FS_BENCH_FSCK_DIRTY_MB` MiB (default 1024) of incompressible data, kill -9 the
//!    mount, `fusermount3 -uz`, then time `fsck.s3fs --batch` (it uploads the dirty
//!    blocks; exit 128 expected), and once more `fsck.s3fs --batch --force` (exit 0
//!    expected).
//!
//! Prints progress (and fsck's own phase timings) to stderr and a table at the end.
//! `cargo bench --bench fsck` builds the binaries it runs (`CARGO_BIN_EXE_*`).
//! `S3FS_BENCH_FSCK_KEEP=1` keeps the work directories for inspection. Needs FUSE
//! (`/dev/fuse`, `fusermount3`) and ~1.5 × the dirty size of free space in /var/tmp.
//!
//! Target: a clean 1,000,000-file filesystem with a local DB is checked in under a minute
//! on a 2-core machine.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use s3fs::config::Stdin;
use s3fs::fs_store::{ConnectOptions, FsStore, connect, names, open_filesystem};
use s3fs::meta::versions::state::LocalFiles;
use s3fs::runtime::block_on;
use s3fs::store::{PutMode, StorageUrl};
use sha2::{Digest, Sha256};

const MKFS: &str = env!("CARGO_BIN_EXE_mkfs-s3fs");
const MOUNT: &str = env!("CARGO_BIN_EXE_mount-s3fs");
const UMOUNT: &str = env!("CARGO_BIN_EXE_umount-s3fs");
const FSCK: &str = env!("CARGO_BIN_EXE_fsck-s3fs");

const FILES_PER_DIR: u64 = 1000;
const FILES_PER_BLOCK: u64 = 100;
/// Parallel PUTs while creating the data objects.
const PUT_PARALLEL: usize = 32;

macro_rules! progress {
    ($($arg:tt)*) => {{
        eprintln!("[fsck bench] {}", format!($($arg)*));
    }};
}

// ---------------------------------------------------------------------------------------
// A work directory with a store, a cache directory and a mountpoint

/// Everything of one filesystem; unmounts (killing the mount process this bench started
/// if it is still alive) and deletes the directory when dropped, also on a panic.
struct Work {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    url: String,
    cache: PathBuf,
    mnt: PathBuf,
    authfile: PathBuf,
    /// The mount process of our current mount, once known.
    daemon: Option<i32>,
}

impl Work {
    fn new(files: u64) -> Work {
        let dir = tempfile::Builder::new()
            .prefix(&format!("s3fs-bench-fsck-{files}-"))
            .tempdir_in("/var/tmp")
            .expect("cannot create a work directory in /var/tmp");
        let root = dir.path().to_path_buf();
        let authfile = root.join("authinfo2");
        std::fs::write(&authfile, "").unwrap();
        std::fs::set_permissions(&authfile, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mnt = root.join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        Work {
            url: format!("local://{}/store", root.display()),
            cache: root.join("cache"),
            mnt,
            authfile,
            root,
            dir: Some(dir),
            daemon: None,
        }
    }

    /// Run one of the tools with `--authfile` and `--cachedir` (HOME pointing into the
    /// work directory, so nothing of the user's ~/.s3fs is used).
    fn tool(&self, bin: &str, args: &[&str]) -> Output {
        Command::new(bin)
            .env("HOME", &self.root)
            .arg("--authfile")
            .arg(&self.authfile)
            .arg("--cachedir")
            .arg(&self.cache)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"))
    }

    fn mkfs(&self) {
        let o = self.tool(MKFS, &["--plain", &self.url]);
        assert!(o.status.success(), "mkfs.s3fs failed:\n{}", text(&o));
    }

    fn mount(&mut self, extra: &[&str]) {
        let log = self.root.join("mount.log").display().to_string();
        let mnt = self.mnt.display().to_string();
        let mut args = vec!["--log", log.as_str()];
        args.extend_from_slice(extra);
        args.push(&self.url);
        args.push(&mnt);
        let o = self.tool(MOUNT, &args);
        assert!(
            o.status.success(),
            "mount.s3fs failed:\n{}\nmount.log:\n{}",
            text(&o),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(is_mounted(&self.mnt), "mount.s3fs exited 0 but {} is not mounted", mnt);
        self.daemon = Some(mount_pid(&self.mnt).expect("no s3fs.pid xattr on the mount root"));
    }

    fn umount(&mut self) {
        let o = Command::new(UMOUNT)
            .env("HOME", &self.root)
            .arg(&self.mnt)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run umount.s3fs");
        assert!(o.status.success(), "umount.s3fs failed:\n{}", text(&o));
        assert!(!is_mounted(&self.mnt), "still mounted after umount.s3fs");
        self.daemon = None;
    }

    /// kill -9 the mount process, wait until it is gone, detach the mountpoint.
    fn crash(&mut self) {
        let pid = self.daemon.take().expect("not mounted");
        // SAFETY: plain syscall; `pid` is the mount process this bench started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill -9 {pid} failed");
        let t = Instant::now();
        assert!(
            wait_gone(pid, Duration::from_secs(60)),
            "mount process {pid} still alive 60 s after kill -9"
        );
        progress!(
            "mount process {pid} gone {:.2} s after kill -9",
            t.elapsed().as_secs_f64()
        );
        let st = Command::new("fusermount3")
            .arg("-uz")
            .arg(&self.mnt)
            .status()
            .expect("cannot run fusermount3");
        assert!(st.success(), "fusermount3 -uz {} failed", self.mnt.display());
        assert!(!is_mounted(&self.mnt), "still mounted after fusermount3 -uz");
    }

    fn fsck(&self, extra: &[&str]) -> Fsck {
        let mut args = vec!["--batch"];
        args.extend_from_slice(extra);
        args.push(&self.url);
        let start = Instant::now();
        let out = self.tool(FSCK, &args);
        let secs = start.elapsed().as_secs_f64();
        Fsck {
            secs,
            code: out.status.code().unwrap_or(-1),
            output: text(&out),
        }
    }

    fn local_files(&self) -> LocalFiles {
        LocalFiles::new(&self.cache, &StorageUrl::parse(&self.url).unwrap())
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let pid = self.daemon.take().or_else(|| mount_pid(&self.mnt));
            if let Some(pid) = pid {
                // SAFETY: plain syscall on the mount process this bench started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                wait_gone(pid, Duration::from_secs(30));
            }
            let _ = Command::new("fusermount3").arg("-uz").arg(&self.mnt).status();
        }
        if let Some(dir) = self.dir.take() {
            if std::env::var_os("S3FS_BENCH_FSCK_KEEP").is_some_and(|v| v != "0") {
                progress!("keeping {}", dir.keep().display());
            } else if let Err(e) = dir.close() {
                eprintln!("[fsck bench] cannot delete {}: {e}", self.root.display());
            }
        }
    }
}

struct Fsck {
    secs: f64,
    code: i32,
    output: String,
}

impl Fsck {
    /// Show fsck's output (its phase timings), shortened if it is long.
    fn show(&self, label: &str) {
        progress!("{label}: exit {} after {:.1} s", self.code, self.secs);
        let lines: Vec<&str> = self.output.lines().collect();
        let show = |l: &&str| eprintln!("    | {l}");
        if lines.len() <= 60 {
            lines.iter().for_each(show);
        } else {
            lines[..40].iter().for_each(show);
            eprintln!("    | ... {} more lines ...", lines.len() - 50);
            lines[lines.len() - 10..].iter().for_each(show);
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn is_mounted(mnt: &Path) -> bool {
    let want = mnt.display().to_string();
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(want.as_str()))
}

/// The mount process id, from the `s3fs.pid` xattr of the mount root.
fn mount_pid(mnt: &Path) -> Option<i32> {
    let path = CString::new(mnt.as_os_str().as_bytes()).ok()?;
    let name = CString::new("s3fs.pid").unwrap();
    let mut buf = [0u8; 32];
    // SAFETY: valid NUL-terminated strings and buffer.
    let n = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return None;
    }
    std::str::from_utf8(&buf[..n as usize]).ok()?.trim().parse().ok()
}

/// Wait until `/proc/<pid>` is gone: fsck.s3fs counts a process that still has a
/// `/proc` entry (even an unreaped zombie) as holding the filesystem.
fn wait_gone(pid: i32, limit: Duration) -> bool {
    let start = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

// ---------------------------------------------------------------------------------------
// Data

/// splitmix64: seeds and small random numbers.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Fill `buf` with incompressible bytes (xorshift64*).
fn fill_random(buf: &mut [u8], seed: u64) {
    let mut s = splitmix(seed) | 1;
    for chunk in buf.chunks_mut(8) {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        let v = s.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

// ---------------------------------------------------------------------------------------
// Growing the metadata DB

struct Block {
    id: i64,
    obj_id: i64,
    size: i64,
    phys_size: i64,
    hash: Vec<u8>,
    refcount: i64,
}

/// Next free id of an AUTOINCREMENT table (never reuse an id, as the filesystem never does).
fn next_id(c: &Connection, table: &str) -> i64 {
    let seq: i64 = c
        .query_row("SELECT seq FROM sqlite_sequence WHERE name = ?1", [table], |r| r.get(0))
        .optional()
        .unwrap()
        .unwrap_or(0);
    let max: i64 = c
        .query_row(&format!("SELECT coalesce(max(id), 0) FROM {table}"), [], |r| r.get(0))
        .unwrap();
    seq.max(max) + 1
}

/// Create `count` data objects in the store, ids from `obj_base`; returns the blocks
/// (one per object) with their stored sizes.
fn create_objects(fs: &FsStore, count: u64, block_base: i64, obj_base: i64, block_size: u64) -> Vec<Block> {
    let max_len = block_size.min(8192);
    let blocks: Vec<Block> = block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        let mut done = Vec::with_capacity(count as usize);
        for b in 0..count {
            while tasks.len() >= PUT_PARALLEL {
                done.push(tasks.join_next().await.unwrap().unwrap());
            }
            let fs = fs.clone();
            tasks.spawn(async move {
                let len = 1024.min(max_len) + splitmix(b ^ 0xb10c) % (max_len - 1024.min(max_len) + 1);
                let mut plain = vec![0u8; len as usize];
                fill_random(&mut plain, 0x5eed_0000_0000 + b);
                let obj_id = obj_base + b as i64;
                let name = names::data(obj_id as u64);
                let body = fs.codec().encode(&name, &plain);
                let phys_size = body.len() as i64;
                fs.store()
                    .put(&name, Bytes::from(body), PutMode::Overwrite)
                    .await
                    .unwrap_or_else(|e| panic!("storing {name}: {e}"));
                Block {
                    id: block_base + b as i64,
                    obj_id,
                    size: len as i64,
                    phys_size,
                    hash: Sha256::digest(&plain).to_vec(),
                    refcount: 0,
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            done.push(r.unwrap());
        }
        done
    });
    let mut blocks = blocks;
    blocks.sort_by_key(|b| b.id);
    // Cross-check with the listing: fsck compares phys_size with it.
    let listed = block_on(s3fs::store::list_all(fs.store().as_ref(), "s3fs_data_")).expect("listing the store");
    let sizes: std::collections::HashMap<&str, u64> = listed.iter().map(|o| (o.key.as_str(), o.size)).collect();
    for b in &blocks {
        let name = names::data(b.obj_id as u64);
        assert_eq!(
            sizes.get(name.as_str()).copied(),
            Some(b.phys_size as u64),
            "listed size of {name}"
        );
    }
    blocks
}

/// Grow the filesystem to `files` more regular files (see the module documentation).
fn grow(work: &Work, files: u64) {
    let lf = work.local_files();
    assert!(lf.db.exists(), "no local metadata DB at {}", lf.db.display());
    let local = lf.read_params().expect("no readable local params");

    let conn = connect(
        &work.url,
        &ConnectOptions {
            authfile: Some(&work.authfile),
            backend_options: None,
        },
        &mut Stdin,
    )
    .expect("connecting to the store");
    let opened = block_on(open_filesystem(&conn, s3fs::codec::Compression::default(), &mut Stdin))
        .expect("opening the filesystem");
    assert_eq!(
        (local.seq, local.is_mounted, local.needs_fsck),
        (opened.params.seq, false, false),
        "local params must be current and clean before growing the DB"
    );
    let block_size = opened.params.data_block_size;

    let mut db = Connection::open(&lf.db).expect("opening the metadata DB");
    let (uid, gid): (u32, u32) = db
        .query_row("SELECT uid, gid FROM inodes WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let ino_base = next_id(&db, "inodes");
    let block_base = next_id(&db, "blocks");
    let obj_base = next_id(&db, "objects");
    let name_base: i64 = db
        .query_row("SELECT coalesce(max(id), 0) + 1 FROM names", [], |r| r.get(0))
        .unwrap();

    let nblocks = (files / FILES_PER_BLOCK).max(1);
    let ndirs = files.div_ceil(FILES_PER_DIR).max(1);
    let t = Instant::now();
    let mut blocks = create_objects(&opened.fs, nblocks, block_base, obj_base, block_size);
    for i in 0..files {
        blocks[(i % nblocks) as usize].refcount += 1;
    }
    progress!(
        "  {nblocks} data objects written to the store in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    db.execute_batch("PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;")
        .unwrap();
    let tx = db.transaction().unwrap();
    {
        let mut obj = tx
            .prepare("INSERT INTO objects (id, refcount, phys_size, length) VALUES (?1, 1, ?2, ?3)")
            .unwrap();
        let mut blk = tx
            .prepare("INSERT INTO blocks (id, hash, refcount, size, obj_id, obj_offset) VALUES (?1, ?2, ?3, ?4, ?5, 0)")
            .unwrap();
        for b in &blocks {
            obj.execute(params![b.obj_id, b.phys_size, b.size]).unwrap();
            blk.execute(params![b.id, b.hash, b.refcount, b.size, b.obj_id])
                .unwrap();
        }
        let mut inode = tx
            .prepare(
                "INSERT INTO inodes (id, uid, gid, mode, mtime_ns, atime_ns, ctime_ns, refcount, size)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?5, 1, ?6)",
            )
            .unwrap();
        let mut name = tx
            .prepare("INSERT INTO names (id, name, refcount) VALUES (?1, ?2, 1)")
            .unwrap();
        let mut entry = tx
            .prepare("INSERT INTO contents (name_id, inode, parent_inode) VALUES (?1, ?2, ?3)")
            .unwrap();
        let mut map = tx
            .prepare("INSERT INTO inode_blocks (inode, blockno, block_id) VALUES (?1, 0, ?2)")
            .unwrap();
        let dir_mode = libc::S_IFDIR | 0o755;
        let file_mode = libc::S_IFREG | 0o644;
        for d in 0..ndirs as i64 {
            let (ino, name_id) = (ino_base + d, name_base + d);
            inode.execute(params![ino, uid, gid, dir_mode, now, 0]).unwrap();
            name.execute(params![name_id, format!("d{d}").as_bytes()]).unwrap();
            entry.execute(params![name_id, ino, 1]).unwrap();
        }
        let (file_ino_base, file_name_base) = (ino_base + ndirs as i64, name_base + ndirs as i64);
        for i in 0..files {
            let b = &blocks[(i % nblocks) as usize];
            let (ino, name_id) = (file_ino_base + i as i64, file_name_base + i as i64);
            let parent = ino_base + (i / FILES_PER_DIR) as i64;
            inode.execute(params![ino, uid, gid, file_mode, now, b.size]).unwrap();
            name.execute(params![name_id, format!("f{i}").as_bytes()]).unwrap();
            entry.execute(params![name_id, ino, parent]).unwrap();
            map.execute(params![ino, b.id]).unwrap();
        }
    }
    tx.commit().unwrap();
    // AUTOINCREMENT must know the explicit ids, or the filesystem would reissue them.
    for table in ["inodes", "blocks", "objects"] {
        let (seq, max): (i64, i64) = db
            .query_row(
                &format!("SELECT (SELECT seq FROM sqlite_sequence WHERE name = '{table}'), max(id) FROM {table}"),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert!(seq >= max, "sqlite_sequence of {table} is {seq}, below max(id) {max}");
    }
    let _ = db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
    drop(db);
    let size = std::fs::metadata(&lf.db).map(|m| m.len()).unwrap_or(0);
    progress!(
        "  {files} files in {ndirs} directories inserted in {:.1} s (DB {:.0} MiB)",
        t.elapsed().as_secs_f64(),
        size as f64 / (1 << 20) as f64
    );
    let after = lf.read_params().expect("local params");
    assert_eq!(after, local, "the local params must not change");
}

/// Write `mib` MiB of incompressible data into the mount and fsync it.
fn write_dirty(mnt: &Path, mib: u64) {
    const FILE_MIB: u64 = 64;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = mib;
    let mut k = 0u64;
    while left > 0 {
        let n = left.min(FILE_MIB);
        let path = mnt.join(format!("dirty{k}"));
        let mut f = std::fs::File::create(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        for m in 0..n {
            fill_random(&mut buf, (k << 32) | m);
            f.write_all(&buf)
                .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        }
        f.sync_all().unwrap_or_else(|e| panic!("fsync {}: {e}", path.display()));
        left -= n;
        k += 1;
    }
}

// ---------------------------------------------------------------------------------------

struct Row {
    files: u64,
    case: String,
    secs: f64,
    code: i32,
    expected: i32,
}

fn env_list(name: &str, default: &str) -> Vec<u64> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .replace('_', "")
                .parse()
                .unwrap_or_else(|e| panic!("{name}: {s:?}: {e}"))
        })
        .collect()
}

fn bench(files: u64, dirty_mib: u64, rows: &mut Vec<Row>) {
    progress!("=== {files} files ===");
    let mut work = Work::new(files);
    progress!("work directory {}", work.root.display());

    let t = Instant::now();
    work.mkfs();
    work.mount(&[]);
    for k in 0..3 {
        std::fs::write(
            work.mnt.join(format!("seed{k}")),
            format!("seed file {k}\n").repeat(100),
        )
        .unwrap();
    }
    work.umount();
    progress!("mkfs + seed mount in {:.1} s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    grow(&work, files);
    progress!("filesystem generated in {:.1} s", t.elapsed().as_secs_f64());

    progress!("fsck.s3fs --batch --force (clean) ...");
    let clean = work.fsck(&["--force"]);
    clean.show("clean fsck");
    if clean.code != 0 {
        progress!("WARNING: the clean check did not exit 0 (output above)");
    }
    rows.push(Row {
        files,
        case: "clean (--force)".into(),
        secs: clean.secs,
        code: clean.code,
        expected: 0,
    });

    let t = Instant::now();
    work.mount(&["--dirty-block-upload-delay", "3600"]);
    progress!("mounted in {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    write_dirty(&work.mnt, dirty_mib);
    let secs = t.elapsed().as_secs_f64();
    progress!(
        "{dirty_mib} MiB written and fsync'ed in {secs:.1} s ({:.0} MiB/s)",
        dirty_mib as f64 / secs
    );
    let dirty_files = std::fs::read_dir(work.local_files().cache)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".dirty"))
                .count()
        })
        .unwrap_or(0);
    work.crash();
    progress!("mount killed with {dirty_files} dirty blocks in the cache");

    progress!("fsck.s3fs --batch (after the crash) ...");
    let crash = work.fsck(&[]);
    crash.show("crash fsck");
    rows.push(Row {
        files,
        case: format!("crash, {dirty_mib} MiB dirty"),
        secs: crash.secs,
        code: crash.code,
        expected: 128,
    });

    progress!("fsck.s3fs --batch --force (after the repair) ...");
    let again = work.fsck(&["--force"]);
    again.show("second fsck");
    rows.push(Row {
        files,
        case: "after repair (--force)".into(),
        secs: again.secs,
        code: again.code,
        expected: 0,
    });
    drop(work);
}

fn main() {
    // `cargo bench` passes --bench; ignore arguments.
    let sizes = env_list("S3FS_BENCH_FSCK_FILES", "100000,1000000");
    let dirty_mib = env_list("S3FS_BENCH_FSCK_DIRTY_MB", "1024")
        .first()
        .copied()
        .unwrap_or(1024);
    let mut rows = Vec::new();
    for &files in &sizes {
        bench(files, dirty_mib, &mut rows);
    }
    println!();
    println!(
        "fsck.s3fs wall time (local store, local DB, {} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("{:>9}  {:<24} {:>9}  {:>4}", "files", "case", "seconds", "exit");
    for r in &rows {
        let note = if r.code == r.expected {
            String::new()
        } else {
            format!("  (expected {})", r.expected)
        };
        println!("{:>9}  {:<24} {:>9.1}  {:>4}{note}", r.files, r.case, r.secs, r.code);
    }
}
