//! Mounting: the FUSE session, its signals and main loop ([`run`]), the unmount tool
//! ([`umount`]) and the kernel's mount table ([`mounts`]). Which metadata a mount starts
//! from, and who may write, is the metadata lifecycle's ([`crate::meta::versions`]).

pub mod mounts;
pub mod read_only;
pub mod run;
mod serve;
mod signals;
pub mod umount;
