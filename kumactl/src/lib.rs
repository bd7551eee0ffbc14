//! kumactl's parts that are worth testing on their own.

#![forbid(unsafe_code)]

pub mod install;
pub mod olm;
pub mod transparent_proxy;
