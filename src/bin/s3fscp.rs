//! s3fscp: see `s3fs::cli::CpArgs`.
use clap::Parser;

fn main() {
    let args = s3fs::cli::CpArgs::parse();
    args.logging.init();
    s3fs::exit::exit_with(s3fs::tools::cp(&args))
}
