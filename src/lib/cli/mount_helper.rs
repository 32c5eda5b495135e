//! mount(8) helper form: `mount.s3fs SPEC DIR [-sfnv] [-o opt,opt=val,...]`, as called by
//! `mount -t s3fs` and for `/etc/fstab` lines. `-o` options become long options
//! (`cachedir=/x` → `--cachedir /x`, `allow_other` → `--allow-other`); the generic words
//! fstab and mount(8) use are ignored; `ro` is refused (read-only mounts are not
//! supported, exit 35, as in S3QL).

use std::ffi::OsString;

use crate::exit::{Error, ExitCode};

/// fstab/mount(8) words that are not s3fs options.
const IGNORED: &[&str] = &[
    "rw",
    "defaults",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "relatime",
    "norelatime",
    "strictatime",
    "lazytime",
    "mand",
    "nomand",
    "_netdev",
    "nofail",
    "nobootwait",
    "sync",
    "async",
    "silent",
    "loud",
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
        for opt in opts.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            if key == "ro" {
                return Err(Error::new(
                    ExitCode::ReadOnly,
                    "read-only mounts are not supported (option ro)",
                ));
            }
            if IGNORED.contains(&key) || key.starts_with("x-") || key == "comment" {
                continue;
            }
            out.push(OsString::from(format!("--{}", key.replace('_', "-"))));
            if let Some(v) = value {
                out.push(OsString::from(v));
            }
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
            "rw,_netdev,noauto,x-systemd.automount,allow_other,cachedir=/var/cache/s3fs,compress=zstd-9",
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
                "zstd-9"
            ]
        );
    }

    #[test]
    fn mount8_flags_are_ignored_and_plain_form_passes_through() {
        let out = t(&["mount.s3fs", "-s", "-n", "spec", "/mnt", "-odefaults,fg"]).unwrap();
        assert_eq!(out, ["mount.s3fs", "spec", "/mnt", "--fg"]);
        let plain = t(&["mount.s3fs", "--fg", "--cachedir", "/c", "spec", "/mnt"]).unwrap();
        assert_eq!(plain, ["mount.s3fs", "--fg", "--cachedir", "/c", "spec", "/mnt"]);
    }

    #[test]
    fn read_only_is_exit_35_and_dangling_o_is_exit_2() {
        assert_eq!(
            t(&["mount.s3fs", "s", "/m", "-o", "ro"]).unwrap_err().code,
            ExitCode::ReadOnly
        );
        assert_eq!(
            t(&["mount.s3fs", "s", "/m", "-o"]).unwrap_err().code,
            ExitCode::BadArgument
        );
    }
}
