//! Mounting: who may mount ([`guard`]) and which metadata a mount starts from
//! ([`state`]).

pub mod guard;
pub mod mounts;
pub mod run;
pub mod state;
pub mod umount;
