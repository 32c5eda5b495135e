//! mount.s3fs: mount an s3fs filesystem.
use clap::Parser;

fn main() {
    // No thread may exist before the fork, and every thread must inherit the blocked
    // exit signals (they are taken by the main thread to unmount cleanly).
    s3fs::mount::run::block_exit_signals();
    s3fs::localdisk::keep_files_private();
    s3fs::mount::run::limit_malloc_arenas();
    // --version takes a value with --ro (a metadata version); alone, it is the program's.
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if raw.len() == 2 && (raw[1] == "--version" || raw[1] == "-V") {
        println!("mount.s3fs {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    let argv = match s3fs::cli::mount_helper::translate(raw) {
        Ok(a) => a,
        Err(e) => s3fs::exit::exit_with(Err(e)),
    };
    let args = s3fs::cli::MountArgs::parse_from(argv);
    let mut reporter = if args.fg || args.systemd {
        s3fs::daemon::Reporter::foreground()
    } else {
        match s3fs::daemon::daemonize() {
            Ok(r) => r,
            Err(e) => s3fs::exit::exit_with(Err(e)),
        }
    };
    let log_target = s3fs::mount::run::log_target(&args);
    args.logging.init_to(log_target);
    let result = s3fs::mount::run::run(&args, &mut reporter, &mut s3fs::config::Stdin);
    if let Err(e) = &result {
        log::error!("{}", e.message);
        if reporter.failed(e) {
            std::process::exit(e.code.code());
        }
    }
    s3fs::exit::exit_with(result)
}
