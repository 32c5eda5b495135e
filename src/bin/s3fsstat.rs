//! s3fsstat: see `s3fs::cli::StatArgs`.
use clap::Parser;

fn main() {
    let args = s3fs::cli::StatArgs::parse();
    args.logging.init();
    s3fs::exit::exit_with(s3fs::tools::stat(&args, &mut std::io::stdout()))
}
