//! A process task's arguments on their way to a worker, and its result on
//! the way back: postcard, with shared-memory buffers passed as
//! descriptors beside the bytes.

use crate::error::{SubmitError, TaskError};

/// A process task's arguments encoded for its frame.
pub(crate) struct EncodedArgs {
    pub(crate) bytes: Vec<u8>,
    /// The descriptors of the shared-memory buffers among them.
    pub(crate) fds: Vec<std::os::fd::OwnedFd>,
}

/// Encodes process-task arguments; shared-memory buffers among them are
/// collected as descriptors.
pub(crate) fn encode_args<A: serde::Serialize + ?Sized>(
    args: &A,
) -> Result<EncodedArgs, SubmitError> {
    let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::wire::shm::collect_fds(|| crate::wire::codec::to_vec(args, 64))
    }));
    let (bytes, fds) = encoded.map_err(|p| {
        SubmitError::Serialize(format!(
            "the Serialize impl panicked: {}",
            crate::error::panic_message(&*p)
        ))
    })?;
    let bytes = bytes.map_err(|e| SubmitError::Serialize(crate::wire::why::describe(args, &e)))?;
    Ok(EncodedArgs { bytes, fds })
}

/// Decodes a process task's result in the parent.
pub(crate) fn decode_result<R: serde::de::DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<std::os::fd::OwnedFd>,
) -> Result<R, TaskError> {
    // The result's `Deserialize` impl runs on the pool's reader thread: a
    // panic there is this task's failure, not the reader's end.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::wire::shm::with_fds(fds, || postcard::from_bytes::<R>(bytes))
    }));
    match decoded {
        Ok(r) => r.map_err(|e| TaskError::failed(format!("the result could not be decoded: {e}"))),
        Err(p) => Err(TaskError::failed(format!(
            "the result could not be decoded: its Deserialize impl panicked: {}",
            crate::error::panic_message(&*p)
        ))),
    }
}
