//! s3fsctrl: see `s3fs::cli::CtrlArgs`.
use clap::Parser;

fn main() {
    let args = s3fs::cli::CtrlArgs::parse();
    args.logging.init();
    s3fs::exit::exit_with(s3fs::tools::ctrl(&args))
}
