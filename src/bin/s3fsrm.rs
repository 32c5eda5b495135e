//! s3fsrm: see `s3fs::cli::RmArgs`.
use clap::Parser;

fn main() {
    let args = s3fs::cli::RmArgs::parse();
    args.logging.init();
    s3fs::exit::exit_with(s3fs::tools::rm(&args))
}
