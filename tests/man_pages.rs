//! The man pages in `man/` are generated from the clap definitions and must be current.
//! Regenerate with `S3FS_UPDATE_MAN=1 cargo test --test man_pages`.

#[test]
fn man_pages_are_current() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let update = std::env::var_os("S3FS_UPDATE_MAN").is_some();
    let mut stale = Vec::new();
    for cmd in s3fs::cli::commands() {
        let name = cmd.get_name().to_owned();
        let section = "8";
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd).section(section).render(&mut page).unwrap();
        let path = dir.join(format!("{name}.{section}"));
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &page).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(page.as_slice()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "man pages out of date (run S3FS_UPDATE_MAN=1 cargo test --test man_pages): {stale:?}"
    );
}

/// Every page documents the storage URL grammar, authinfo2 and the exit codes.
#[test]
fn man_pages_document_urls_authinfo_and_exit_codes() {
    for cmd in s3fs::cli::commands() {
        let mut page = Vec::new();
        let name = cmd.get_name().to_owned();
        if MOUNTPOINT_TOOLS.contains(&name.as_str()) {
            continue; // take a mountpoint, not a storage URL: checked below
        }
        clap_mangen::Man::new(cmd).render(&mut page).unwrap();
        let text = String::from_utf8(page).unwrap();
        for needle in [
            "STORAGE URLS",
            "s3c://HOST",
            "AUTHINFO2",
            "EXIT CODES",
            "wrong passphrase",
            "BACKEND OPTIONS",
        ] {
            assert!(text.contains(needle), "{name} man page lacks {needle:?}");
        }
    }
}

/// Tools that work on a mounted filesystem.
const MOUNTPOINT_TOOLS: &[&str] = &["umount.s3fs", "s3fsstat", "s3fsctrl", "s3fscp", "s3fslock", "s3fsrm"];

#[test]
fn mountpoint_tool_pages_document_exit_codes() {
    for name in MOUNTPOINT_TOOLS {
        let cmd = s3fs::cli::commands()
            .into_iter()
            .find(|c| c.get_name() == *name)
            .unwrap();
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut page).unwrap();
        let text = String::from_utf8(page).unwrap();
        assert!(text.contains("EXIT CODES"), "{name} man page lacks exit codes");
    }
}

#[test]
fn umount_page_documents_exit_codes() {
    let cmd = s3fs::cli::commands()
        .into_iter()
        .find(|c| c.get_name() == "umount.s3fs")
        .unwrap();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut page).unwrap();
    let text = String::from_utf8(page).unwrap();
    assert!(text.contains("EXIT CODES") && text.contains("unmount failed"));
}
