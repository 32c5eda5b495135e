//! s3fsadm: manage an s3fs filesystem that is not mounted.
use clap::Parser;

fn main() {
    // The cache, the metadata and temporary copies of it are for the owner only.
    s3fs::localdisk::keep_files_private();
    let args = s3fs::cli::AdmArgs::parse();
    args.log.init();
    s3fs::exit::exit_with(s3fs::adm::run(&args, &mut s3fs::config::Stdin, &mut std::io::stdout()))
}
