//! fsck.s3fs: check and repair an s3fs filesystem.
use clap::Parser;

fn main() {
    let args = s3fs::cli::FsckArgs::parse();
    s3fs::exit::exit_with(s3fs::fsck::main(&args, &mut s3fs::config::Stdin))
}
