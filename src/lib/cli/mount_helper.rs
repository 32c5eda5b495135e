//! mount(8) helper form: `mount.s3fs SPEC DIR [-sfnv] [-o opt,opt=val,...]`, as called by
//! `mount -t s3fs` and for `/etc/fstab` lines. `-o` options become long options
//! (`cachedir=/x` → `--cachedir /x`, `allow_other` → `--allow-other`); the kernel's mount
//! flags (`noexec`, `nosuid`, …) are collected into `--kernel-flags`, so that they are
//! applied, not dropped; the words that only mount(8), fstab or systemd read are
//! ignored; flags s3fs cannot honour (`sync`, `dirsync`, `mand`) are refused (exit 2).
//! `ro` is `--ro`, and `version=SEQ` its `--version SEQ`.

use std::ffi::OsString;

use crate::exit::{Error, ExitCode};

/// Words that only mount(8), fstab or systemd read: nothing for the mount to do.
const IGNORED: &[&str] = &[
    "defaults",
    "auto",
    "noauto",
    "nouser",
    "_netdev",
    "nofail",
    "nobootwait",
    "silent",
    "loud",
];

/// Words that let users mount: as mount(8) documents, they imply noexec, nosuid and
/// nodev unless a later word says otherwise.
const USER_MOUNT: &[&str] = &["user", "users", "owner", "group"];

/// Mount flags of the kernel that `--kernel-flags` takes (see
/// [`crate::mount::run`]'s `kernel_mount_options`: those it has no FUSE option for are
/// accepted without effect).
pub const KERNEL_FLAGS: &[&str] = &[
    "rw",
    "async",
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "diratime",
    "nodiratime",
    "lazytime",
    "nolazytime",
];

/// Flags s3fs cannot honour: refused rather than silently dropped.
const REFUSED: &[(&str, &str)] = &[
    (
        "sync",
        "every write would have to reach the store before returning; use fsync",
    ),
    (
        "dirsync",
        "directory changes would have to reach the store before returning",
    ),
    ("mand", "mandatory locks are not supported"),
];

/// Rewrite a helper-style command line into the long-option form clap parses. Arguments
/// without `-o` pass through unchanged, so the ordinary form keeps working.
pub fn translate(args: Vec<OsString>) -> Result<Vec<OsString>, Error> {
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    if let Some(prog) = iter.next() {
        out.push(prog);
    }
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy().into_owned();
        let opts = if text == "-o" {
            let value = iter
                .next()
                .ok_or_else(|| Error::new(ExitCode::BadArgument, "-o needs a comma-separated list of options"))?;
            value.to_string_lossy().into_owned()
        } else if let Some(rest) = text
            .strip_prefix("-o")
            .filter(|r| !r.is_empty() && !text.starts_with("--"))
        {
            rest.to_owned()
        } else if matches!(text.as_str(), "-s" | "-f" | "-n" | "-v" | "-sn" | "-nv") {
            // mount(8)'s sloppy, fake, no-mtab and verbose flags: nothing to do here.
            continue;
        } else {
            out.push(arg);
            continue;
        };
        let mut kernel_flags: Vec<&str> = Vec::new();
        for opt in opts.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            if key == "ro" && value.is_none() {
                out.push(OsString::from("--ro"));
                continue;
            }
            if let Some((_, why)) = REFUSED.iter().find(|(w, _)| *w == key) {
                return Err(Error::new(
                    ExitCode::BadArgument,
                    format!("mount option {key} is not supported: {why}"),
                ));
            }
            if USER_MOUNT.contains(&key) {
                kernel_flags.extend(["noexec", "nosuid", "nodev"]);
                continue;
            }
            if KERNEL_FLAGS.contains(&key) && value.is_none() {
                kernel_flags.push(key);
                continue;
            }
            if IGNORED.contains(&key) || key.starts_with("x-") || key == "comment" {
                continue;
            }
            out.push(OsString::from(format!("--{}", key.replace('_', "-"))));
            if let Some(v) = value {
                out.push(OsString::from(v));
            }
        }
        if !kernel_flags.is_empty() {
            out.push(OsString::from("--kernel-flags"));
            out.push(OsString::from(kernel_flags.join(",")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(args: &[&str]) -> Result<Vec<String>, Error> {
        translate(args.iter().map(OsString::from).collect())
            .map(|v| v.into_iter().map(|s| s.into_string().unwrap()).collect())
    }

    #[test]
    fn fstab_options_become_long_options() {
        let out = t(&[
            "mount.s3fs",
            "local:///srv/fs",
            "/mnt",
            "-o",
            "rw,_netdev,noauto,x-systemd.automount,allow_other,noexec,cachedir=/var/cache/s3fs,compress=zstd-9",
        ])
        .unwrap();
        assert_eq!(
            out,
            [
                "mount.s3fs",
                "local:///srv/fs",
                "/mnt",
                "--allow-other",
                "--cachedir",
                "/var/cache/s3fs",
                "--compress",
                "zstd-9",
                "--kernel-flags",
                "rw,noexec"
            ]
        );
    }

    #[test]
    fn user_mounts_imply_noexec_nosuid_nodev_unless_overridden() {
        let out = t(&["mount.s3fs", "s", "/m", "-o", "users,exec"]).unwrap();
        assert_eq!(
            out,
            ["mount.s3fs", "s", "/m", "--kernel-flags", "noexec,nosuid,nodev,exec"]
        );
    }

    #[test]
    fn flags_that_cannot_be_honoured_are_exit_2() {
        for word in ["sync", "dirsync", "mand"] {
            let e = t(&["mount.s3fs", "s", "/m", "-o", word]).unwrap_err();
            assert_eq!(e.code, ExitCode::BadArgument, "{word}");
            assert!(e.message.contains(word), "{}", e.message);
        }
    }

    #[test]
    fn mount8_flags_are_ignored_and_plain_form_passes_through() {
        let out = t(&["mount.s3fs", "-s", "-n", "spec", "/mnt", "-odefaults,fg"]).unwrap();
        assert_eq!(out, ["mount.s3fs", "spec", "/mnt", "--fg"]);
        let plain = t(&["mount.s3fs", "--fg", "--cachedir", "/c", "spec", "/mnt"]).unwrap();
        assert_eq!(plain, ["mount.s3fs", "--fg", "--cachedir", "/c", "spec", "/mnt"]);
    }

    #[test]
    fn ro_is_a_read_only_mount_and_dangling_o_is_exit_2() {
        assert_eq!(
            t(&["mount.s3fs", "s", "/m", "-o", "ro,version=5"]).unwrap(),
            ["mount.s3fs", "s", "/m", "--ro", "--version", "5"]
        );
        assert_eq!(
            t(&["mount.s3fs", "s", "/m", "-o"]).unwrap_err().code,
            ExitCode::BadArgument
        );
    }
}
