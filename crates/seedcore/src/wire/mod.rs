//! Encoding and transport: the compact codec, length-prefixed frames with
//! passed descriptors, and shared memory.

pub(crate) mod codec;
pub(crate) mod frame;
pub(crate) mod shm;
pub(crate) mod why;
