//! s3fslock: see `s3fs::cli::LockArgs`.
use clap::Parser;

fn main() {
    let args = s3fs::cli::LockArgs::parse();
    args.logging.init();
    s3fs::exit::exit_with(s3fs::tools::lock(&args))
}
