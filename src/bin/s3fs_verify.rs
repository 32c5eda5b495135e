//! s3fs_verify: verify that the data objects of an s3fs filesystem are in the store and intact.
use clap::Parser;

fn main() {
    // The cache, the metadata and temporary copies of it are for the owner only.
    s3fs::localdisk::keep_files_private();
    let args = s3fs::cli::VerifyArgs::parse();
    s3fs::exit::exit_with(s3fs::verify::main(&args, &mut s3fs::config::Stdin))
}
