//! Credentials and settings: the authinfo2 file and secret prompts.
//!
//! authinfo2 follows S3QL: an INI file (default `~/.s3fs/authinfo2`) whose sections apply
//! when the canonical storage URL starts with the section's `storage-url`; all matching
//! sections are merged in file order and later sections win. Unknown keys are an error
//! (exit 2) and a file readable or writable by group or others, or owned by another user
//! than the one running the tool (or root), is refused (exit 12), because it holds secrets.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use crate::exit::{Error, ExitCode};
use crate::store::StorageUrl;

pub const AUTHINFO_HELP: &str = "\
AUTHINFO2
  Credentials and settings are read from ~/.s3fs/authinfo2 (or --authfile), an INI file
  that must belong to you (or root) and not be readable or writable by group or others
  (chmod 600; exit 12 otherwise). Each section applies when the storage URL starts
  with its storage-url (one that ends inside a host name applies to that host only);
  later sections override earlier ones:
      [backup]
      storage-url: s3c://s3.example.com/bucket/
      backend-login: ACCESS_KEY_ID
      backend-password: SECRET_ACCESS_KEY
      fs-passphrase: PASSPHRASE
  Keys: storage-url, backend-login, backend-password, fs-passphrase, backend-options,
  cachedir, compress, max-connections, max-threads. Options given on the command line
  take precedence. Missing secrets are asked for on a terminal, or read as one line
  each from standard input otherwise.";

const KNOWN_KEYS: &[&str] = &[
    "storage-url",
    "backend-login",
    "backend-password",
    "fs-passphrase",
    "backend-options",
    "cachedir",
    "compress",
    "max-connections",
    "max-threads",
];

/// Settings found for one storage URL. `None` means "not given".
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AuthInfo {
    pub backend_login: Option<String>,
    pub backend_password: Option<String>,
    pub fs_passphrase: Option<String>,
    pub backend_options: Option<String>,
    pub cachedir: Option<PathBuf>,
    pub compress: Option<String>,
    pub max_connections: Option<usize>,
    pub max_threads: Option<usize>,
}

impl std::fmt::Display for AuthInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "authinfo(login: {:?})", self.backend_login)
    }
}

/// `~/.s3fs`, the default home of authinfo2 and the cache.
pub fn default_dir() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".s3fs")
}

pub fn default_authfile() -> PathBuf {
    default_dir().join("authinfo2")
}

/// Read the settings that apply to `url` from `path`. A missing file yields defaults.
pub fn read_authinfo(path: &Path, url: &StorageUrl) -> Result<AuthInfo, Error> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(AuthInfo::default()),
        Err(e) => {
            return Err(Error::new(
                ExitCode::BadArgument,
                format!("cannot read {}: {e}", path.display()),
            ));
        }
    };
    check_authfile_owner(path, &meta)?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::new(ExitCode::BadArgument, format!("cannot read {}: {e}", path.display())))?;
    parse_authinfo(&text, &url.to_string()).map_err(|e| e.context(path.display()))
}

/// authinfo2 holds secrets and says which passphrase and store to use: it must be
/// neither readable nor writable by group or others, and belong to the user running
/// the tool (or to root), since whoever can change it can point the tool elsewhere.
fn check_authfile_owner(path: &Path, meta: &std::fs::Metadata) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let insecure = |why: &str, fix: String| {
        Error::new(
            ExitCode::InsecureAuthfile,
            format!("{} {why}; run: {fix}", path.display()),
        )
    };
    if meta.mode() & 0o077 != 0 {
        return Err(insecure(
            "is readable or writable by group or others",
            format!("chmod 600 {}", path.display()),
        ));
    }
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(insecure(
            &format!(
                "belongs to user {}, not to the user running this tool ({me})",
                meta.uid()
            ),
            format!("chown {me} {}", path.display()),
        ));
    }
    Ok(())
}

/// Whether a section with `storage-url: prefix` applies to `url`: a prefix of it, as in
/// S3QL, except that a prefix that ends inside the host must end at the host's end. A
/// section for `s3c://s3.example.com` holds that host's credentials; it must not hand
/// them to `s3c://s3.example.com.evil.io/bucket`.
fn section_applies(prefix: &str, url: &str) -> bool {
    let Some(rest) = url.strip_prefix(prefix) else {
        return false;
    };
    let Some((_, authority)) = prefix.split_once("://") else {
        return true;
    };
    if authority.is_empty() || authority.contains('/') {
        return true;
    }
    rest.is_empty() || rest.starts_with('/') || (rest.starts_with(':') && !authority.contains(':'))
}

/// Parse authinfo2 text and merge the sections that apply to `canonical_url`.
pub fn parse_authinfo(text: &str, canonical_url: &str) -> Result<AuthInfo, Error> {
    let ini = ini::Ini::load_from_str_noescape(text)
        .map_err(|e| Error::new(ExitCode::BadArgument, format!("not a valid INI file: {e}")))?;
    let mut info = AuthInfo::default();
    let mut seen_sections = std::collections::HashSet::new();
    for (section, props) in ini.iter() {
        let Some(section) = section else {
            if props.iter().next().is_some() {
                return Err(Error::new(ExitCode::BadArgument, "settings must be inside a [section]"));
            }
            continue;
        };
        if !seen_sections.insert(section.to_owned()) {
            return Err(Error::new(
                ExitCode::BadArgument,
                format!("section [{section}] appears twice"),
            ));
        }
        for (key, _) in props.iter() {
            if !KNOWN_KEYS.contains(&key) {
                return Err(Error::new(
                    ExitCode::BadArgument,
                    format!(
                        "unknown key {key:?} in section [{section}] (known: {})",
                        KNOWN_KEYS.join(", ")
                    ),
                ));
            }
        }
        let Some(prefix) = props.get("storage-url") else {
            continue;
        };
        if !section_applies(prefix, canonical_url) {
            continue;
        }
        let number = |key: &str| -> Result<Option<usize>, Error> {
            props
                .get(key)
                .map(|v| {
                    v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        Error::new(
                            ExitCode::BadArgument,
                            format!("{key} in section [{section}] must be a positive number, not {v:?}"),
                        )
                    })
                })
                .transpose()
        };
        let s = |key: &str| props.get(key).map(str::to_owned);
        info.backend_login = s("backend-login").or(info.backend_login);
        info.backend_password = s("backend-password").or(info.backend_password);
        info.fs_passphrase = s("fs-passphrase").or(info.fs_passphrase);
        info.backend_options = s("backend-options").or(info.backend_options);
        info.cachedir = s("cachedir").map(PathBuf::from).or(info.cachedir);
        info.compress = s("compress").or(info.compress);
        info.max_connections = number("max-connections")?.or(info.max_connections);
        info.max_threads = number("max-threads")?.or(info.max_threads);
    }
    Ok(info)
}

/// Where secrets come from when the authinfo2 file lacks them: a terminal prompt, or one
/// line of standard input when it is not a terminal (scripts and tests).
pub trait SecretSource {
    /// Ask once.
    fn ask(&mut self, prompt: &str) -> Result<String, Error>;
    /// Whether the answer can be asked twice to catch typos (a human at a terminal).
    fn is_interactive(&self) -> bool;
    /// Ask once for something that is not secret (echoed as typed on a terminal).
    fn ask_visible(&mut self, prompt: &str) -> Result<String, Error> {
        self.ask(prompt)
    }
}

/// The process's terminal or standard input.
#[derive(Debug, Default)]
pub struct Stdin;

impl SecretSource for Stdin {
    fn ask(&mut self, prompt: &str) -> Result<String, Error> {
        if self.is_interactive() {
            return rpassword::prompt_password(prompt)
                .map_err(|e| Error::new(ExitCode::Failure, format!("cannot read from the terminal: {e}")));
        }
        read_stdin_line(prompt)
    }

    fn is_interactive(&self) -> bool {
        std::io::stdin().is_terminal()
    }

    fn ask_visible(&mut self, prompt: &str) -> Result<String, Error> {
        if self.is_interactive() {
            use std::io::Write;
            let mut err = std::io::stderr();
            let _ = write!(err, "{prompt}");
            let _ = err.flush();
        }
        read_stdin_line(prompt)
    }
}

/// One line of standard input; at its end, exit 41 naming what was asked for.
fn read_stdin_line(prompt: &str) -> Result<String, Error> {
    let mut line = String::new();
    let n = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Error::new(ExitCode::Failure, format!("cannot read standard input: {e}")))?;
    if n == 0 {
        let what = prompt.trim().trim_end_matches(':').trim_start_matches("Enter ");
        // authinfo2 holds the passphrase of an existing filesystem, never a new one.
        let hint = if what.starts_with("new ") {
            "pipe it in"
        } else {
            "put it in authinfo2 or pipe it in"
        };
        return Err(Error::new(
            ExitCode::BatchNeedsInput,
            format!("{what} needed, but standard input is not a terminal and gave none ({hint})"),
        ));
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Ask for a new passphrase: twice on a terminal (they must match), once otherwise.
/// An empty passphrase is refused: `--plain` is the way to have no encryption.
pub fn ask_new_passphrase(source: &mut dyn SecretSource) -> Result<String, Error> {
    let first = source.ask("Enter new passphrase: ")?;
    if first.is_empty() {
        return Err(Error::new(
            ExitCode::BadArgument,
            "the passphrase must not be empty (use --plain for an unencrypted filesystem)",
        ));
    }
    if source.is_interactive() && source.ask("Confirm new passphrase: ")? != first {
        return Err(Error::new(ExitCode::BadArgument, "the passphrases do not match"));
    }
    Ok(first)
}

/// Pick the compression: command line, else authinfo2, else the default. Bad → exit 2.
pub fn compression(cli: Option<&str>, auth: Option<&str>) -> Result<crate::codec::Compression, Error> {
    match cli.or(auth) {
        None => Ok(crate::codec::Compression::default()),
        Some(text) => text
            .parse()
            .map_err(|e| Error::new(ExitCode::BadArgument, format!("invalid compression {text:?}: {e}"))),
    }
}

/// Concurrent store requests: `--max-connections`, else authinfo2's `max-connections`,
/// else 32.
pub fn max_connections(cli: Option<u16>, auth: &AuthInfo) -> usize {
    cli.map(usize::from).or(auth.max_connections).unwrap_or(32)
}

/// Where the cache directory is (command line, else authinfo2, else `~/.s3fs`), without
/// creating or checking it: for tools that only read it.
pub fn cache_dir_path(cli: Option<&Path>, auth: &AuthInfo) -> PathBuf {
    cli.map(Path::to_path_buf)
        .or_else(|| auth.cachedir.clone())
        .unwrap_or_else(default_dir)
}

/// The cache directory: command line, else authinfo2, else `~/.s3fs`. Created with
/// mode 0700 if missing, made 0700 (with a warning) if others could enter it; exit 45 if
/// unusable or another user's.
pub fn cache_dir(cli: Option<&Path>, auth: &AuthInfo) -> Result<PathBuf, Error> {
    let dir = cache_dir_path(cli, auth);
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                Error::new(
                    ExitCode::CacheDirInaccessible,
                    format!("cannot create cache directory {}: {e}", dir.display()),
                )
            })?;
    }
    crate::localdisk::make_private_dir(&dir).map_err(|e| Error::new(ExitCode::CacheDirInaccessible, e))?;
    // SAFETY: access(2) on a NUL-terminated path.
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::new(ExitCode::BadArgument, "cache directory path contains NUL"))?;
    if unsafe { libc::access(c.as_ptr(), libc::R_OK | libc::W_OK | libc::X_OK) } != 0 {
        return Err(Error::new(
            ExitCode::CacheDirInaccessible,
            format!(
                "cache directory {} is not readable, writable and searchable",
                dir.display()
            ),
        ));
    }
    Ok(dir)
}

use std::os::unix::fs::DirBuilderExt;

/// File-name stem for this URL's files in the cache directory (`<stem>.db`, ...), with
/// `=`, `/` and NUL escaped like S3QL so that every URL gets its own files.
pub fn cache_stem(url: &StorageUrl) -> String {
    let mut out = String::new();
    for ch in url.to_string().chars() {
        match ch {
            '=' => out.push_str("=3D"),
            '/' => out.push_str("=2F"),
            '\0' => out.push_str("=00"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const SAMPLE: &str = "
[general]
storage-url: s3c://
backend-login: general-login
backend-password: general-pw

[specific]
storage-url = s3c://host:9000/bucket/fs1
backend-password: specific-pw
fs-passphrase: secret phrase
max-connections: 8

[other]
storage-url: s3c://host:9000/bucket/fs2
backend-login: other-login

[no-url]
backend-login: ignored
";

    #[test]
    fn later_matching_sections_win() {
        let info = parse_authinfo(SAMPLE, "s3c://host:9000/bucket/fs1").unwrap();
        assert_eq!(info.backend_login.as_deref(), Some("general-login"));
        assert_eq!(info.backend_password.as_deref(), Some("specific-pw"));
        assert_eq!(info.fs_passphrase.as_deref(), Some("secret phrase"));
        assert_eq!(info.max_connections, Some(8));
        let other = parse_authinfo(SAMPLE, "s3c://host:9000/bucket/fs2").unwrap();
        assert_eq!(other.backend_login.as_deref(), Some("other-login"));
        assert_eq!(other.backend_password.as_deref(), Some("general-pw"));
        assert_eq!(parse_authinfo(SAMPLE, "local:///x/").unwrap(), AuthInfo::default());
    }

    #[test]
    fn a_section_for_a_host_applies_to_that_host_only() {
        let text = "[a]\nstorage-url: s3c://s3.example.com\nbackend-password: secret\n";
        for url in ["s3c://s3.example.com/b/", "s3c://s3.example.com:9000/b/p"] {
            assert_eq!(
                parse_authinfo(text, url).unwrap().backend_password.as_deref(),
                Some("secret"),
                "{url}"
            );
        }
        for url in ["s3c://s3.example.com.evil.io/b/", "s3c://s3.example.community/b/"] {
            assert_eq!(parse_authinfo(text, url).unwrap().backend_password, None, "{url}");
        }
        // Prefixes with a path, or of the scheme only, keep S3QL's meaning.
        let text =
            "[a]\nstorage-url: s3c://h/bucket/p\nbackend-password: x\n[b]\nstorage-url: s3c://\nbackend-login: l\n";
        let info = parse_authinfo(text, "s3c://h/bucket/p-2/").unwrap();
        assert_eq!(
            (info.backend_password.as_deref(), info.backend_login.as_deref()),
            (Some("x"), Some("l"))
        );
    }

    #[test]
    fn unknown_keys_and_bad_numbers_are_exit_2() {
        let e = parse_authinfo("[a]\nstorage-url: x\nbackend-pasword: y\n", "x").unwrap_err();
        assert_eq!(e.code, ExitCode::BadArgument);
        assert!(e.message.contains("backend-pasword"), "{}", e.message);
        let e = parse_authinfo("[a]\nstorage-url: x\nmax-threads: many\n", "x").unwrap_err();
        assert_eq!(e.code, ExitCode::BadArgument);
        let e = parse_authinfo("[a]\nstorage-url: x\n[a]\nstorage-url: y\n", "x").unwrap_err();
        assert_eq!(e.code, ExitCode::BadArgument);
    }

    #[test]
    fn insecure_file_is_exit_12_and_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authinfo2");
        let url = StorageUrl::parse("local:///x").unwrap();
        assert_eq!(read_authinfo(&path, &url).unwrap(), AuthInfo::default());
        std::fs::write(&path, "[a]\nstorage-url: local://\nfs-passphrase: p\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_authinfo(&path, &url).unwrap_err().code, ExitCode::InsecureAuthfile);
        for mode in [0o620, 0o602, 0o640, 0o660, 0o606] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(
                read_authinfo(&path, &url).unwrap_err().code,
                ExitCode::InsecureAuthfile,
                "mode {mode:o}"
            );
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_authinfo(&path, &url).unwrap().fs_passphrase.as_deref(), Some("p"));
        // Another user's file (tests run as root, so that user is not root).
        std::os::unix::fs::chown(&path, Some(4321), None).unwrap();
        let e = read_authinfo(&path, &url).unwrap_err();
        assert_eq!(e.code, ExitCode::InsecureAuthfile);
        assert!(e.message.contains("belongs to user 4321"), "{}", e.message);
    }

    struct Scripted(Vec<&'static str>, bool);
    impl SecretSource for Scripted {
        fn ask(&mut self, _: &str) -> Result<String, Error> {
            Ok(self.0.remove(0).to_owned())
        }
        fn is_interactive(&self) -> bool {
            self.1
        }
    }

    #[test]
    fn new_passphrase_is_confirmed_on_a_terminal() {
        assert_eq!(ask_new_passphrase(&mut Scripted(vec!["a", "a"], true)).unwrap(), "a");
        assert_eq!(
            ask_new_passphrase(&mut Scripted(vec!["a", "b"], true))
                .unwrap_err()
                .code,
            ExitCode::BadArgument
        );
        assert_eq!(ask_new_passphrase(&mut Scripted(vec!["a"], false)).unwrap(), "a");
        assert_eq!(
            ask_new_passphrase(&mut Scripted(vec![""], false)).unwrap_err().code,
            ExitCode::BadArgument
        );
    }

    #[test]
    fn cache_stems_are_distinct_per_url() {
        let a = cache_stem(&StorageUrl::parse("local:///a/b").unwrap());
        let b = cache_stem(&StorageUrl::parse("local:///a=2Fb").unwrap());
        assert_ne!(a, b);
        assert!(!a.contains('/'));
    }
}
