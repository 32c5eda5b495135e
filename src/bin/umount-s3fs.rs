//! umount.s3fs: unmount and wait until everything is in the store.
use clap::Parser;

fn main() {
    let args = s3fs::cli::UmountArgs::parse();
    args.logging.init();
    s3fs::exit::exit_with(s3fs::mount::umount::run(&args))
}
