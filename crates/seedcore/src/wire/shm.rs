//! Byte buffers that cross process boundaries through shared memory.
//!
//! Invariants. On Linux a shared [`SharedBytes`] is an anonymous `memfd`
//! (created `MFD_CLOEXEC | MFD_ALLOW_SEALING`) mapped `MAP_SHARED`; the
//! mapping owns that descriptor and closes it, and unmaps, when the last
//! clone is dropped. A memfd has no name in any file system — the name
//! given to `memfd_create` is only a label in `/proc/<pid>/fd` and
//! `/proc/<pid>/maps` — so nothing ever appears in `/dev/shm` and no other
//! process or user can open the memory: the only way in is a descriptor
//! passed over the IPC socket with `SCM_RIGHTS`. Serializing inside
//! [`collect_fds`] pushes a *duplicate* descriptor into the frame's fd list,
//! which the caller owns and closes once it has been sent; deserializing
//! inside [`with_fds`] takes one descriptor out of the frame's list, and the
//! resulting mapping owns it from then on; descriptors that no payload
//! took are closed when the scope ends. Before a memfd leaves the process it
//! is sealed against shrinking and growing (and against new writes where
//! the kernel has `F_SEAL_FUTURE_WRITE`, Linux 5.1+); the receiver refuses a
//! descriptor without the shrink seal and one smaller than the length the
//! frame claims, so a peer can never make a mapping fault. Bytes that have
//! left (or came from) another process are never written again: writing
//! to such a buffer copies it first.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::io;
use std::ops::Deref;
use std::sync::Arc;

#[cfg(unix)]
use std::cell::RefCell;
#[cfg(unix)]
use std::os::fd::OwnedFd;
#[cfg(unix)]
use std::thread::LocalKey;

/// Byte length from which a plain (`Vec`-backed) [`SharedBytes`] is copied
/// into a memfd when it is serialized inside an fd sink scope.
// Used by the process pool; kept alive here until it calls it.
#[allow(dead_code)]
pub(crate) const SHM_THRESHOLD: usize = 64 * 1024;

/// Error text for an `Fd` payload decoded without an fd source scope.
const OUTSIDE_FRAME: &str = "shared-memory payload outside an IPC frame";

/// A byte buffer that crosses process boundaries through shared memory.
///
/// A `SharedBytes` is either a plain vector or, on Linux, a memfd mapped
/// into this process. Cloning is cheap either way (the storage sits behind
/// an `Arc`) and clones share one read-only view; [`make_mut`] copies when
/// the storage is shared.
///
/// When the process pool serializes a task's arguments or result, a
/// memfd-backed buffer travels as its file descriptor (passed with
/// `SCM_RIGHTS`), not as bytes through the socket; the receiver maps the
/// same memory. A plain buffer built with [`from_vec`] travels through
/// shared memory too when it is at least 64 KiB long (it is copied into a
/// memfd once, at that moment); a shorter one travels inline in the frame.
/// Outside an IPC frame (for example with any ordinary serde format)
/// every buffer serializes as its bytes.
///
/// ```
/// use seedcore::SharedBytes;
///
/// // One MiB of zeroed shared memory.
/// let mut buf = SharedBytes::new(1 << 20)?;
/// buf.make_mut()[..5].copy_from_slice(b"hello");
/// assert_eq!(&buf[..5], b"hello");
/// assert_eq!(buf.len(), 1 << 20);
///
/// // Clones share the bytes; writing to one copies it first.
/// let view = buf.clone();
/// buf.make_mut()[0] = b'j';
/// assert_eq!(&buf[..5], b"jello");
/// assert_eq!(&view[..5], b"hello");
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// [`make_mut`]: SharedBytes::make_mut
/// [`from_vec`]: SharedBytes::from_vec
#[derive(Clone)]
pub struct SharedBytes {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    /// A plain heap buffer.
    Inline(Arc<Vec<u8>>),
    /// A memfd mapping; never zero bytes long.
    #[cfg(target_os = "linux")]
    Shared(Arc<memfd::Mapping>),
}

impl SharedBytes {
    /// A zero-filled, writable buffer of `len` bytes.
    ///
    /// On Linux it is a memfd sized with `ftruncate` and mapped shared, so
    /// it crosses to a worker process without a copy. A zero-length buffer
    /// needs no memory and is plain; elsewhere the buffer is a plain vector.
    ///
    /// # Errors
    ///
    /// The error of `memfd_create`, `ftruncate` or `mmap` (for example too
    /// many open files, or no memory).
    pub fn new(len: usize) -> io::Result<SharedBytes> {
        #[cfg(target_os = "linux")]
        if len > 0 {
            let mapping = memfd::Mapping::create(len)?;
            return Ok(SharedBytes {
                repr: Repr::Shared(Arc::new(mapping)),
            });
        }
        Ok(SharedBytes::from_vec(vec![0; len]))
    }

    /// A buffer holding a copy of `data`, in shared memory (see
    /// [`new`](SharedBytes::new)); `data` is copied once.
    ///
    /// # Errors
    ///
    /// As for [`new`](SharedBytes::new).
    pub fn from_slice(data: &[u8]) -> io::Result<SharedBytes> {
        #[cfg(target_os = "linux")]
        if !data.is_empty() {
            let mapping = memfd::Mapping::with_data(data)?;
            return Ok(SharedBytes {
                repr: Repr::Shared(Arc::new(mapping)),
            });
        }
        let mut bytes = SharedBytes::new(data.len())?;
        // A fresh buffer is unique and writable: no copy-on-write here.
        bytes.make_mut().copy_from_slice(data);
        Ok(bytes)
    }

    /// A plain buffer that takes over `v` without copying.
    ///
    /// It stays a vector in this process. Serialized inside an IPC frame it
    /// goes through shared memory only if it is at least 64 KiB long (then
    /// its bytes are copied into a new memfd once, for that frame);
    /// shorter, it travels inline in the frame. Use
    /// [`from_slice`](SharedBytes::from_slice) or
    /// [`new`](SharedBytes::new) to build large payloads in shared memory
    /// directly.
    pub fn from_vec(v: Vec<u8>) -> SharedBytes {
        SharedBytes {
            repr: Repr::Inline(Arc::new(v)),
        }
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.repr {
            Repr::Inline(v) => v,
            #[cfg(target_os = "linux")]
            Repr::Shared(m) => m.as_slice(),
        }
    }

    /// Write access to the bytes.
    ///
    /// Copy-on-write: the bytes are written in place only when this value
    /// is the sole owner of its storage and that storage has never been
    /// seen by another process. Otherwise — a clone shares it, it has been
    /// serialized into an IPC frame, or it was received from one — they are
    /// first copied into fresh storage of the same kind (a new memfd, or a
    /// vector if a memfd cannot be had), so clones and other processes
    /// never see the write.
    pub fn make_mut(&mut self) -> &mut [u8] {
        #[cfg(target_os = "linux")]
        if let Repr::Shared(m) = &mut self.repr {
            if Arc::get_mut(m)
                .and_then(memfd::Mapping::as_mut_slice)
                .is_none()
            {
                let copy = match memfd::Mapping::create(m.len()) {
                    Ok(mut fresh) => {
                        if let Some(dst) = fresh.as_mut_slice() {
                            dst.copy_from_slice(m.as_slice());
                        }
                        Repr::Shared(Arc::new(fresh))
                    }
                    Err(_) => Repr::Inline(Arc::new(m.as_slice().to_vec())),
                };
                self.repr = copy;
            }
        }
        match &mut self.repr {
            Repr::Inline(v) => Arc::make_mut(v).as_mut_slice(),
            #[cfg(target_os = "linux")]
            Repr::Shared(m) => Arc::get_mut(m)
                .and_then(memfd::Mapping::as_mut_slice)
                .expect("a mapping just checked or created is unique and writable"),
        }
    }

    /// A copy of the bytes in a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        self.as_slice().to_vec()
    }

    /// Whether the bytes live in shared memory (a memfd mapping).
    pub fn is_shared_memory(&self) -> bool {
        match &self.repr {
            Repr::Inline(_) => false,
            #[cfg(target_os = "linux")]
            Repr::Shared(_) => true,
        }
    }

    /// Takes over `fd`, a memfd made elsewhere (with `MFD_ALLOW_SEALING`)
    /// that holds at least `len` bytes: it is sealed against resizing and
    /// future writes, then mapped. For code that fills shared memory
    /// itself (a language binding writing a buffer with `write`) and hands
    /// it over without another copy. A `len` of zero gives an empty plain
    /// buffer.
    ///
    /// # Errors
    ///
    /// `fd` is no memfd that can be sealed, or holds fewer than `len`
    /// bytes; or `mmap` fails.
    #[cfg(target_os = "linux")]
    pub fn from_memfd(fd: std::os::fd::OwnedFd, len: usize) -> io::Result<SharedBytes> {
        memfd::seal(&fd)?;
        Ok(match memfd::Mapping::import(fd, len as u64)? {
            Some(m) => SharedBytes {
                repr: Repr::Shared(Arc::new(m)),
            },
            None => SharedBytes::from_vec(Vec::new()),
        })
    }

    /// A new descriptor of the sealed memfd behind these bytes, for code
    /// that maps it itself (`None` for a plain buffer). The bytes are never
    /// written through this value again (as when they leave the process).
    ///
    /// # Errors
    ///
    /// Sealing or duplicating the descriptor failed.
    #[cfg(target_os = "linux")]
    pub fn memfd(&self) -> Option<io::Result<std::os::fd::OwnedFd>> {
        match &self.repr {
            Repr::Inline(_) => None,
            Repr::Shared(m) => Some(m.export()),
        }
    }

    /// Pushes a descriptor for these bytes into the active fd sink, if one
    /// is active and the bytes should travel through shared memory;
    /// returns the `(index, len)` to write in the frame.
    #[cfg(target_os = "linux")]
    fn export_to_sink(&self) -> io::Result<Option<(u32, u64)>> {
        if !sink_active() {
            return Ok(None);
        }
        let fd = match &self.repr {
            Repr::Shared(m) => m.export()?,
            Repr::Inline(v) if v.len() >= SHM_THRESHOLD => memfd::sealed_copy(v)?,
            Repr::Inline(_) => return Ok(None),
        };
        let index = sink_push(fd)?;
        Ok(Some((index, self.len() as u64)))
    }
}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBytes")
            .field("len", &self.len())
            .field("shared_memory", &self.is_shared_memory())
            .finish()
    }
}

impl Deref for SharedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for SharedBytes {
    fn eq(&self, other: &SharedBytes) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for SharedBytes {}

impl From<Vec<u8>> for SharedBytes {
    fn from(v: Vec<u8>) -> SharedBytes {
        SharedBytes::from_vec(v)
    }
}

/// The encoding both sides agree on, as written.
#[derive(Serialize)]
#[serde(rename = "SharedBytes")]
enum WireOut<'a> {
    Inline(#[serde(with = "serde_bytes")] &'a [u8]),
    // Written only on Linux, but kept everywhere so the variant indices
    // are the same on every platform.
    #[allow(dead_code)]
    Fd {
        index: u32,
        len: u64,
    },
}

/// The encoding both sides agree on, as read.
#[derive(Deserialize)]
#[serde(rename = "SharedBytes")]
enum WireIn {
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
    Fd { index: u32, len: u64 },
}

impl Serialize for SharedBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[cfg(target_os = "linux")]
        if let Some((index, len)) = self
            .export_to_sink()
            .map_err(<S::Error as serde::ser::Error>::custom)?
        {
            return WireOut::Fd { index, len }.serialize(serializer);
        }
        WireOut::Inline(self.as_slice()).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SharedBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match WireIn::deserialize(deserializer)? {
            WireIn::Inline(bytes) => Ok(SharedBytes::from_vec(bytes)),
            WireIn::Fd { index, len } => {
                import_from_source(index, len).map_err(<D::Error as serde::de::Error>::custom)
            }
        }
    }
}

/// A sealed memfd holding a copy of `data`: how a frame's payload that is
/// over the frame limit crosses to another process (the frame then carries
/// its length and this descriptor).
#[cfg(target_os = "linux")]
pub(crate) fn export_bytes(data: &[u8]) -> io::Result<OwnedFd> {
    memfd::sealed_copy(data)
}

/// Maps a payload that [`export_bytes`] sent, refusing a descriptor that
/// is no sealed memfd of at least `len` bytes.
#[cfg(target_os = "linux")]
pub(crate) fn import_bytes(fd: OwnedFd, len: u64) -> Result<SharedBytes, String> {
    match memfd::Mapping::import(fd, len) {
        Ok(Some(m)) => Ok(SharedBytes {
            repr: Repr::Shared(Arc::new(m)),
        }),
        Ok(None) => Ok(SharedBytes::from_vec(Vec::new())),
        Err(e) => Err(format!("a payload in shared memory was rejected: {e}")),
    }
}

/// Maps descriptor `index` of the active fd source as a `len`-byte buffer.
#[cfg(target_os = "linux")]
fn import_from_source(index: u32, len: u64) -> Result<SharedBytes, String> {
    let fd = source_take(index)?;
    let mapping = memfd::Mapping::import(fd, len)
        .map_err(|e| format!("shared-memory payload {index} rejected: {e}"))?;
    Ok(match mapping {
        Some(m) => SharedBytes {
            repr: Repr::Shared(Arc::new(m)),
        },
        None => SharedBytes::from_vec(Vec::new()),
    })
}

/// Without memfds no frame can carry a shared-memory payload.
#[cfg(not(target_os = "linux"))]
fn import_from_source(_index: u32, _len: u64) -> Result<SharedBytes, String> {
    Err(format!(
        "{OUTSIDE_FRAME}: shared-memory payloads are supported on Linux only"
    ))
}

#[cfg(unix)]
thread_local! {
    /// Descriptors pushed by serialization inside [`collect_fds`].
    static FD_SINK: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    /// Descriptors of a received frame, inside [`with_fds`]; `None` once taken.
    static FD_SOURCE: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
}

/// Installs a value in a scope thread-local and puts the previous one back
/// when finished or dropped (also on unwind), so scopes nest.
#[cfg(unix)]
struct ScopeGuard<T: 'static> {
    key: &'static LocalKey<RefCell<Option<T>>>,
    /// The value to restore; `None` once restored.
    prev: Option<Option<T>>,
}

#[cfg(unix)]
impl<T: 'static> ScopeGuard<T> {
    fn enter(key: &'static LocalKey<RefCell<Option<T>>>, value: T) -> ScopeGuard<T> {
        let prev = key.with(|cell| cell.replace(Some(value)));
        ScopeGuard {
            key,
            prev: Some(prev),
        }
    }

    /// Restores the previous value and returns this scope's.
    fn exit(&mut self) -> Option<T> {
        let prev = self.prev.take()?;
        self.key.try_with(|cell| cell.replace(prev)).ok().flatten()
    }
}

#[cfg(unix)]
impl<T: 'static> Drop for ScopeGuard<T> {
    fn drop(&mut self) {
        // Whatever this scope still holds (descriptors) is closed here.
        drop(self.exit());
    }
}

/// Runs `f` with an fd sink on this thread; returns `f`'s result and the
/// fds that serialization pushed, in index order.
///
/// Every shared-memory payload serialized inside `f` pushes one duplicate
/// descriptor, so run exactly one serialization of a frame per scope (a
/// dry run that only measures the size would push descriptors too). The
/// caller owns the returned descriptors: send them with the frame
/// (`SCM_RIGHTS`), then drop them. If `f` panics they are closed.
#[cfg(unix)]
// Used by the process pool; kept alive here until it calls it.
#[allow(dead_code)]
pub(crate) fn collect_fds<R>(f: impl FnOnce() -> R) -> (R, Vec<OwnedFd>) {
    let mut scope = ScopeGuard::enter(&FD_SINK, Vec::new());
    let result = f();
    let fds = scope.exit().unwrap_or_default();
    (result, fds)
}

/// Runs `f` with `fds` (the descriptors received with a frame, in order) as
/// the fd source on this thread; each shared-memory payload deserialized
/// inside `f` takes its descriptor by index. Descriptors not taken are
/// closed when `f` returns or panics.
#[cfg(unix)]
// Used by the process pool; kept alive here until it calls it.
#[allow(dead_code)]
pub(crate) fn with_fds<R>(fds: Vec<OwnedFd>, f: impl FnOnce() -> R) -> R {
    let _scope = ScopeGuard::enter(&FD_SOURCE, fds.into_iter().map(Some).collect());
    f()
}

/// Whether an fd sink is active on this thread.
#[cfg(target_os = "linux")]
fn sink_active() -> bool {
    FD_SINK
        .try_with(|cell| cell.borrow().is_some())
        .unwrap_or(false)
}

/// Appends `fd` to the active sink and returns its index.
#[cfg(target_os = "linux")]
fn sink_push(fd: OwnedFd) -> io::Result<u32> {
    FD_SINK
        .try_with(|cell| {
            let mut sink = cell.borrow_mut();
            let fds = sink
                .as_mut()
                .ok_or_else(|| io::Error::other("no fd sink is active"))?;
            let index = u32::try_from(fds.len())
                .map_err(|_| io::Error::other("too many shared-memory payloads in one frame"))?;
            fds.push(fd);
            Ok(index)
        })
        .unwrap_or_else(|_| Err(io::Error::other("no fd sink is active")))
}

/// Takes descriptor `index` out of the active source; each index once.
#[cfg(target_os = "linux")]
fn source_take(index: u32) -> Result<OwnedFd, String> {
    FD_SOURCE
        .try_with(|cell| {
            let mut source = cell.borrow_mut();
            let fds = source.as_mut().ok_or_else(|| OUTSIDE_FRAME.to_owned())?;
            let count = fds.len();
            let slot = usize::try_from(index)
                .ok()
                .and_then(|i| fds.get_mut(i))
                .ok_or_else(|| {
                    format!(
                        "shared-memory payload names fd {index} but the frame carries {count} fds"
                    )
                })?;
            slot.take()
                .ok_or_else(|| format!("shared-memory fd {index} is used twice in one frame"))
        })
        .unwrap_or_else(|_| Err(OUTSIDE_FRAME.to_owned()))
}

#[cfg(target_os = "linux")]
mod memfd {
    //! memfd creation, sealing and mapping.

    use rustix::fs::{self, MemfdFlags, SealFlags};
    use rustix::mm::{self, MapFlags, ProtFlags};
    use std::fs::File;
    use std::io::{self, Write};
    use std::os::fd::OwnedFd;
    use std::ptr::NonNull;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// The label shown in `/proc/<pid>/fd` and `/proc/<pid>/maps`; it is not
    /// a path and names nothing that could be opened.
    pub(super) const LABEL: &str = "seedcore-shm";

    /// A memfd and its `MAP_SHARED` mapping in this process.
    pub(super) struct Mapping {
        ptr: NonNull<u8>,
        /// Never zero: a zero-length buffer is never mapped.
        len: usize,
        fd: OwnedFd,
        /// Mapped `PROT_WRITE` (created here, not received).
        writable: bool,
        /// A duplicate of `fd` has been handed out for another process;
        /// from then on the bytes are never written through this mapping.
        exported: AtomicBool,
    }

    // SAFETY: `Mapping` exclusively owns its mapping and descriptor, like a
    // `Vec<u8>` owns its heap block; the raw pointer is only a handle to that
    // memory. Shared (`&self`) access only reads the bytes; writing needs
    // `&mut self` (and a mapping no other process has seen), so moving it
    // to or sharing it with another thread cannot race.
    unsafe impl Send for Mapping {}
    // SAFETY: see `Send` above: `&Mapping` only reads, and the one interior
    // mutable field is an atomic.
    unsafe impl Sync for Mapping {}

    impl Mapping {
        /// A new, zero-filled, writable memfd mapping of `len` (> 0) bytes.
        pub(super) fn create(len: usize) -> io::Result<Mapping> {
            let fd = new_memfd()?;
            fs::ftruncate(&fd, len as u64)?;
            Mapping::map(fd, len, true)
        }

        /// A writable memfd mapping holding a copy of `data` (non-empty).
        /// The bytes go in with `write`, which fills the page cache
        /// directly: much cheaper than faulting in a fresh mapping page by
        /// page and copying into it.
        pub(super) fn with_data(data: &[u8]) -> io::Result<Mapping> {
            let mut file = File::from(new_memfd()?);
            file.write_all(data)?;
            Mapping::map(OwnedFd::from(file), data.len(), true)
        }

        /// Maps a received descriptor after checking that it is a memfd
        /// sealed against shrinking that holds at least `len` bytes; `None`
        /// (and the descriptor closed) when `len` is zero.
        pub(super) fn import(fd: OwnedFd, len: u64) -> io::Result<Option<Mapping>> {
            let seals = fs::fcntl_get_seals(&fd)
                .map_err(|e| invalid(format!("the descriptor is not a memfd ({e})")))?;
            if !seals.contains(SealFlags::SHRINK) {
                return Err(invalid("the memfd is not sealed against shrinking".into()));
            }
            // Sealed: the size checked here can no longer drop.
            let size = u64::try_from(fs::fstat(&fd)?.st_size).unwrap_or(0);
            if size < len {
                return Err(invalid(format!(
                    "the frame claims {len} bytes but the memfd holds {size}"
                )));
            }
            let len = usize::try_from(len)
                .map_err(|_| invalid(format!("{len} bytes do not fit in memory")))?;
            if len == 0 {
                return Ok(None);
            }
            Mapping::map(fd, len, false).map(Some)
        }

        /// Maps `len` bytes of `fd`, which holds at least that many.
        fn map(fd: OwnedFd, len: usize, writable: bool) -> io::Result<Mapping> {
            debug_assert!(len > 0);
            let prot = if writable {
                ProtFlags::READ | ProtFlags::WRITE
            } else {
                ProtFlags::READ
            };
            // SAFETY: a null address lets the kernel choose a fresh range, so
            // no existing memory is affected; `fd` is an open memfd holding
            // at least `len` bytes (ftruncate'd by `create`, or sealed against
            // shrinking and checked by `import`), so every mapped page is
            // backed and no access can fault.
            let ptr =
                unsafe { mm::mmap(std::ptr::null_mut(), len, prot, MapFlags::SHARED, &fd, 0)? };
            let ptr = NonNull::new(ptr.cast::<u8>())
                .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
            Ok(Mapping {
                ptr,
                len,
                fd,
                writable,
                exported: AtomicBool::new(!writable),
            })
        }

        pub(super) fn len(&self) -> usize {
            self.len
        }

        pub(super) fn as_slice(&self) -> &[u8] {
            // SAFETY: `ptr` is a live, readable mapping of `len` bytes that
            // is only unmapped when `self` drops, which the borrow prevents.
            // Nothing writes to it while this shared borrow lives: this
            // process writes only through `as_mut_slice` (`&mut self`), and
            // no other process writes memory it received or was sent (it
            // copies first; `F_SEAL_FUTURE_WRITE` enforces it where the
            // kernel has it).
            unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
        }

        /// The bytes for writing, if this mapping is writable and no other
        /// process has been given it.
        pub(super) fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
            if !self.writable || *self.exported.get_mut() {
                return None;
            }
            // SAFETY: `ptr` is a live mapping of `len` bytes mapped
            // `PROT_WRITE`; `&mut self` excludes every other borrow in this
            // process, and the descriptor has never been duplicated, so no
            // other mapping of this memory exists anywhere.
            Some(unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) })
        }

        /// Seals the memfd and returns a duplicate descriptor (close-on-exec)
        /// for another process; this mapping is read-only from now on.
        pub(super) fn export(&self) -> io::Result<OwnedFd> {
            self.exported.store(true, Ordering::Relaxed);
            seal(&self.fd)?;
            self.fd.try_clone()
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: `ptr` and `len` are exactly what `mmap` returned and the
            // range is unmapped only here, once; no slice borrowed from it
            // can outlive `self`. The descriptor closes after this.
            let _ = unsafe { mm::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }

    /// A new sealed memfd holding a copy of `data`, for another process.
    pub(super) fn sealed_copy(data: &[u8]) -> io::Result<OwnedFd> {
        let mut file = File::from(new_memfd()?);
        file.write_all(data)?;
        let fd = OwnedFd::from(file);
        seal(&fd)?;
        Ok(fd)
    }

    fn new_memfd() -> io::Result<OwnedFd> {
        Ok(fs::memfd_create(
            LABEL,
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?)
    }

    /// Seals the size, and future writes where the kernel knows that seal.
    pub(super) fn seal(fd: &OwnedFd) -> io::Result<()> {
        let size = SealFlags::SHRINK | SealFlags::GROW;
        match fs::fcntl_add_seals(fd, size | SealFlags::FUTURE_WRITE) {
            Ok(()) => Ok(()),
            // Before Linux 5.1 there is no F_SEAL_FUTURE_WRITE.
            Err(rustix::io::Errno::INVAL) => Ok(fs::fcntl_add_seals(fd, size)?),
            Err(e) => Err(e.into()),
        }
    }

    fn invalid(message: String) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, message)
    }

    #[cfg(test)]
    impl Mapping {
        /// The memfd's inode, to find it in `/proc/self`.
        pub(super) fn inode(&self) -> u64 {
            fs::fstat(&self.fd).map(|st| st.st_ino).unwrap_or(0)
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    #[cfg(target_os = "linux")]
    use std::fs::File;
    use std::sync::{Mutex, MutexGuard, PoisonError};

    /// Serializes the tests of this module that create descriptors, so the
    /// `/proc/self` checks see only their own.
    static FD_LOCK: Mutex<()> = Mutex::new(());

    fn lock() -> MutexGuard<'static, ()> {
        FD_LOCK.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// Serializes `value` as a frame: its bytes and its descriptors.
    fn encode<T: Serialize>(value: &T) -> (Vec<u8>, Vec<OwnedFd>) {
        let (bytes, fds) = collect_fds(|| postcard::to_allocvec(value));
        (bytes.expect("serialize"), fds)
    }

    fn decode<T: for<'de> Deserialize<'de>>(
        bytes: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<T, postcard::Error> {
        with_fds(fds, || postcard::from_bytes(bytes))
    }

    #[test]
    fn is_send_sync_debug_clone() {
        fn check<T: Send + Sync + fmt::Debug + Clone + 'static>() {}
        check::<SharedBytes>();
        let _guard = lock();
        let b = SharedBytes::from_slice(b"abc").unwrap();
        let shown = format!("{b:?}");
        assert!(shown.contains("len: 3"), "{shown}");
        assert!(
            shown.contains(&format!("shared_memory: {}", cfg!(target_os = "linux"))),
            "{shown}"
        );
        assert_eq!(
            format!("{:?}", SharedBytes::from_vec(vec![1])),
            "SharedBytes { len: 1, shared_memory: false }"
        );
    }

    #[test]
    fn new_is_zeroed_and_writable() {
        let _guard = lock();
        let mut b = SharedBytes::new(10_000).unwrap();
        assert_eq!(b.is_shared_memory(), cfg!(target_os = "linux"));
        assert!(b.iter().all(|&x| x == 0));
        b.make_mut()[9_999] = 7;
        assert_eq!(b[9_999], 7);
        assert_eq!(b.to_vec().len(), 10_000);
        assert_eq!(b.as_ref().len(), 10_000);
    }

    #[test]
    fn one_mib_round_trip_through_one_fd() {
        let _guard = lock();
        let data = pattern(1 << 20);
        let buf = SharedBytes::from_slice(&data).unwrap();
        let (bytes, fds) = encode(&buf);
        #[cfg(target_os = "linux")]
        {
            assert_eq!(fds.len(), 1);
            assert!(bytes.len() < 32, "frame is {} bytes", bytes.len());
        }
        let back: SharedBytes = decode(&bytes, fds).unwrap();
        assert_eq!(back, buf);
        assert_eq!(back.as_slice(), &data[..]);
        assert_eq!(back.is_shared_memory(), cfg!(target_os = "linux"));
    }

    #[test]
    fn small_vec_travels_inline() {
        let v = SharedBytes::from_vec(pattern(100));
        let (bytes, fds) = encode(&v);
        assert!(fds.is_empty());
        // No fd source needed to read it back.
        let back: SharedBytes = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, v);
        assert!(!back.is_shared_memory());
        let from: SharedBytes = pattern(100).into();
        assert_eq!(from, v);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn large_vec_in_a_sink_becomes_one_fd() {
        let _guard = lock();
        let v = SharedBytes::from_vec(pattern(SHM_THRESHOLD));
        assert!(!v.is_shared_memory());
        let (bytes, fds) = encode(&v);
        assert_eq!(fds.len(), 1);
        let back: SharedBytes = decode(&bytes, fds).unwrap();
        assert!(back.is_shared_memory());
        assert_eq!(back, v);
        // Just under the threshold stays inline.
        let (_, fds) = encode(&SharedBytes::from_vec(pattern(SHM_THRESHOLD - 1)));
        assert!(fds.is_empty());
    }

    #[test]
    fn outside_a_sink_everything_is_inline() {
        let _guard = lock();
        let b = SharedBytes::from_slice(&pattern(SHM_THRESHOLD * 2)).unwrap();
        let bytes = postcard::to_allocvec(&b).unwrap();
        assert!(bytes.len() > SHM_THRESHOLD * 2);
        let back: SharedBytes = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, b);
        assert!(!back.is_shared_memory());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn fd_payload_without_a_source_is_an_error() {
        let _guard = lock();
        let b = SharedBytes::new(4096).unwrap();
        let (bytes, fds) = encode(&b);
        assert_eq!(fds.len(), 1);
        assert!(postcard::from_bytes::<SharedBytes>(&bytes).is_err());
        assert_eq!(source_take(0).unwrap_err(), OUTSIDE_FRAME);
        // Inside a source scope it decodes; afterwards the scope is gone.
        let back: SharedBytes = decode(&bytes, fds).unwrap();
        assert_eq!(back, b);
        assert_eq!(source_take(0).unwrap_err(), OUTSIDE_FRAME);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn bad_indices_are_errors() {
        let _guard = lock();
        let b = SharedBytes::new(4096).unwrap();
        let (bytes, _fds) = encode(&b);
        // The frame names fd 0 but carries none.
        assert!(decode::<SharedBytes>(&bytes, Vec::new()).is_err());
        let message = with_fds(Vec::new(), || source_take(0).unwrap_err());
        assert!(message.contains("carries 0 fds"), "{message}");

        // Two payloads naming the same fd.
        let (_, fds) = encode(&b);
        let twice = postcard::to_allocvec(&(
            WireOut::Fd {
                index: 0,
                len: 4096,
            },
            WireOut::Fd {
                index: 0,
                len: 4096,
            },
        ))
        .unwrap();
        assert!(decode::<(SharedBytes, SharedBytes)>(&twice, fds).is_err());
        let (_, fds) = encode(&b);
        let message = with_fds(fds, || {
            source_take(0).unwrap();
            source_take(0).unwrap_err()
        });
        assert!(message.contains("used twice"), "{message}");
        assert!(with_fds(Vec::new(), || source_take(u32::MAX)).is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn claimed_length_beyond_the_memfd_is_an_error() {
        let _guard = lock();
        let b = SharedBytes::new(4096).unwrap();
        let (_, fds) = encode(&b);
        let lie = postcard::to_allocvec(&WireOut::Fd {
            index: 0,
            len: 4097,
        })
        .unwrap();
        assert!(decode::<SharedBytes>(&lie, fds).is_err());
        // A shorter claim is fine: the view covers what the frame says.
        let (_, fds) = encode(&b);
        let short = postcard::to_allocvec(&WireOut::Fd { index: 0, len: 10 }).unwrap();
        assert_eq!(decode::<SharedBytes>(&short, fds).unwrap().len(), 10);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn exported_memfds_are_sealed() {
        use rustix::fs::SealFlags;
        use std::io::Write;
        let _guard = lock();
        for b in [
            SharedBytes::new(4096).unwrap(),
            SharedBytes::from_vec(pattern(SHM_THRESHOLD)),
        ] {
            let (_, mut fds) = encode(&b);
            let fd = fds.pop().unwrap();
            let seals = rustix::fs::fcntl_get_seals(&fd).unwrap();
            assert!(seals.contains(SealFlags::SHRINK | SealFlags::GROW));
            assert!(rustix::fs::ftruncate(&fd, 0).is_err());
            assert!(rustix::fs::ftruncate(&fd, 1 << 30).is_err());
            if seals.contains(SealFlags::FUTURE_WRITE) {
                assert!(File::from(fd).write_all(b"x").is_err());
            }
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn unsealed_or_foreign_descriptors_are_refused() {
        let _guard = lock();
        let frame = postcard::to_allocvec(&WireOut::Fd { index: 0, len: 1 }).unwrap();
        // A memfd nobody sealed: it could shrink under the mapping.
        let raw = rustix::fs::memfd_create(memfd::LABEL, rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&raw, 4096).unwrap();
        assert!(decode::<SharedBytes>(&frame, vec![raw]).is_err());
        // Not a memfd at all.
        let file = OwnedFd::from(File::open("/proc/self/maps").unwrap());
        assert!(decode::<SharedBytes>(&frame, vec![file]).is_err());
    }

    #[test]
    fn zero_length_buffers() {
        let _guard = lock();
        for b in [
            SharedBytes::new(0).unwrap(),
            SharedBytes::from_slice(&[]).unwrap(),
            SharedBytes::from_vec(Vec::new()),
        ] {
            assert!(b.is_empty());
            assert!(!b.is_shared_memory());
            let mut c = b.clone();
            assert!(c.make_mut().is_empty());
            let (bytes, fds) = encode(&b);
            assert!(fds.is_empty());
            let back: SharedBytes = decode(&bytes, fds).unwrap();
            assert!(back.is_empty());
        }
        // A zero-length fd payload is accepted (and its fd closed).
        #[cfg(target_os = "linux")]
        {
            let (_, fds) = encode(&SharedBytes::new(1).unwrap());
            let frame = postcard::to_allocvec(&WireOut::Fd { index: 0, len: 0 }).unwrap();
            assert!(decode::<SharedBytes>(&frame, fds).unwrap().is_empty());
        }
    }

    #[test]
    fn clones_share_and_make_mut_copies() {
        let _guard = lock();
        let data = pattern(8192);
        let mut a = SharedBytes::from_slice(&data).unwrap();
        let mut b = a.clone();
        assert_eq!(a.as_slice().as_ptr(), b.as_slice().as_ptr());
        b.make_mut()[0] ^= 0xff;
        assert_ne!(a.as_slice().as_ptr(), b.as_slice().as_ptr());
        assert_eq!(a.as_slice(), &data[..]);
        assert_eq!(b[0], data[0] ^ 0xff);
        assert_eq!(b.is_shared_memory(), cfg!(target_os = "linux"));
        // `a` is unique again: writes in place.
        let before = a.as_slice().as_ptr();
        a.make_mut()[1] = 0;
        assert_eq!(a.as_slice().as_ptr(), before);

        // Same for plain buffers.
        let v = SharedBytes::from_vec(data.clone());
        let mut w = v.clone();
        assert_eq!(v.as_slice().as_ptr(), w.as_slice().as_ptr());
        w.make_mut()[0] ^= 0xff;
        assert_eq!(v.as_slice(), &data[..]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sent_and_received_bytes_are_never_written_in_place() {
        let _guard = lock();
        let data = pattern(SHM_THRESHOLD);
        let mut sent = SharedBytes::from_slice(&data).unwrap();
        let (bytes, fds) = encode(&sent);
        let mut received: SharedBytes = decode(&bytes, fds).unwrap();
        // Both map the same memfd.
        assert_eq!(received, sent);
        let before = sent.as_slice().as_ptr();
        sent.make_mut()[0] ^= 1;
        assert_ne!(sent.as_slice().as_ptr(), before);
        assert_eq!(received.as_slice(), &data[..]);
        received.make_mut()[1] ^= 1;
        assert!(received.is_shared_memory());
        assert_eq!(sent[1], data[1]);
        assert_eq!(received[0], data[0]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn many_payloads_keep_index_order() {
        let _guard = lock();
        let items: Vec<SharedBytes> = (1..=3)
            .map(|i| SharedBytes::from_slice(&vec![i as u8; 1000 * i]).unwrap())
            .chain([SharedBytes::from_vec(vec![9; 10])])
            .collect();
        let (bytes, fds) = encode(&items);
        assert_eq!(fds.len(), 3);
        let back: Vec<SharedBytes> = decode(&bytes, fds).unwrap();
        assert_eq!(back, items);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn scopes_nest_and_survive_panics() {
        let _guard = lock();
        let big = SharedBytes::new(100).unwrap();
        let ((inner, outer_bytes), outer) = collect_fds(|| {
            let (_, inner) = collect_fds(|| postcard::to_allocvec(&big).unwrap());
            (inner, postcard::to_allocvec(&(&big, &big)).unwrap())
        });
        assert_eq!((inner.len(), outer.len()), (1, 2));
        assert!(!sink_active());
        let (x, y): (SharedBytes, SharedBytes) = with_fds(outer, || {
            // An inner source hides the outer one, then gives it back.
            assert!(with_fds(Vec::new(), || source_take(0)).is_err());
            postcard::from_bytes(&outer_bytes).unwrap()
        });
        assert_eq!((&x, &y), (&big, &big));

        let panicked = std::panic::catch_unwind(|| {
            collect_fds(|| {
                let _ = postcard::to_allocvec(&big);
                panic!("boom");
            })
        });
        assert!(panicked.is_err());
        assert!(!sink_active());
        let panicked = std::panic::catch_unwind(|| with_fds(Vec::new(), || panic!("boom")));
        assert!(panicked.is_err());
        assert_eq!(source_take(0).unwrap_err(), OUTSIDE_FRAME);
    }

    /// Inodes of this process's open descriptors and of its memfd mappings.
    #[cfg(target_os = "linux")]
    fn proc_inodes() -> (Vec<u64>, Vec<u64>) {
        use std::os::unix::fs::MetadataExt;
        let open = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::metadata(e.ok()?.path()).ok())
            .map(|m| m.ino())
            .collect();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let mapped = maps
            .lines()
            .filter(|line| line.contains("memfd:"))
            .filter_map(|line| line.split_whitespace().nth(4)?.parse().ok())
            .collect();
        (open, mapped)
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn dropping_everything_closes_fds_and_unmaps() {
        let _guard = lock();
        let mut inodes = Vec::new();
        {
            let a = SharedBytes::from_slice(&pattern(1 << 20)).unwrap();
            let mut b = a.clone();
            b.make_mut()[0] ^= 1;
            let large = SharedBytes::from_vec(pattern(SHM_THRESHOLD));
            let (bytes, fds) = encode(&(&a, &b, &large));
            assert_eq!(fds.len(), 3);
            // An extra descriptor the frame never names: closed by with_fds.
            let (_, mut extra) = encode(&a);
            let mut all = fds;
            all.append(&mut extra);
            let (x, y, z): (SharedBytes, SharedBytes, SharedBytes) = decode(&bytes, all).unwrap();
            assert_eq!((&x, &y, &z), (&a, &b, &large));
            for s in [&a, &b, &x, &y, &z] {
                if let Repr::Shared(m) = &s.repr {
                    inodes.push(m.inode());
                }
            }
            assert_eq!(inodes.len(), 5);
            let (open, mapped) = proc_inodes();
            for ino in &inodes {
                assert!(open.contains(ino) && mapped.contains(ino), "{ino} not seen");
            }
        }
        let (open, mapped) = proc_inodes();
        for ino in &inodes {
            assert!(!open.contains(ino), "memfd {ino} still open");
            assert!(!mapped.contains(ino), "memfd {ino} still mapped");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn no_name_in_dev_shm() {
        let _guard = lock();
        let listing = || -> Vec<_> {
            std::fs::read_dir("/dev/shm")
                .map(|d| d.filter_map(|e| Some(e.ok()?.file_name())).collect())
                .unwrap_or_default()
        };
        let before = listing();
        let b = SharedBytes::new(1 << 16).unwrap();
        let (_, fds) = encode(&b);
        let label = memfd::LABEL;
        assert!(!listing()
            .iter()
            .any(|n| n.to_string_lossy().contains(label) && !before.contains(n)));
        drop(fds);
    }
}
