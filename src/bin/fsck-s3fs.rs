//! fsck.s3fs: check and repair an s3fs filesystem.
use clap::Parser;

fn main() {
    // The cache, the metadata and temporary copies of it are for the owner only.
    s3fs::localdisk::keep_files_private();
    let args = s3fs::cli::FsckArgs::parse();
    s3fs::exit::exit_with(s3fs::fsck::main(&args, &mut s3fs::config::Stdin))
}
