//! A job's captured output: held in memory up to a threshold, spooled to
//! a temporary file past it, so a chatty job costs disk, not memory.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What one stream (stdout or stderr) of a command wrote.
///
/// Small output lives in memory ([`as_bytes`](Self::as_bytes)); output
/// past the executor's spool threshold lives in a temporary file
/// ([`spool_path`](Self::spool_path)) that is removed when this value is
/// dropped.
#[derive(Debug, Default)]
pub struct Captured {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Memory(Vec<u8>),
    Spooled { path: PathBuf, len: u64 },
}

impl Default for Inner {
    fn default() -> Self {
        Inner::Memory(Vec::new())
    }
}

impl Captured {
    /// Output held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Captured {
            inner: Inner::Memory(bytes),
        }
    }

    /// How many bytes the stream wrote.
    pub fn len(&self) -> u64 {
        match &self.inner {
            Inner::Memory(b) => b.len() as u64,
            Inner::Spooled { len, .. } => *len,
        }
    }

    /// Whether the stream wrote nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, when they are held in memory (`None` once spooled).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.inner {
            Inner::Memory(b) => Some(b),
            Inner::Spooled { .. } => None,
        }
    }

    /// The spool file, when the output went past the threshold. It is
    /// removed when this value is dropped.
    pub fn spool_path(&self) -> Option<&Path> {
        match &self.inner {
            Inner::Memory(_) => None,
            Inner::Spooled { path, .. } => Some(path),
        }
    }

    /// Every byte, read back from the spool file if need be.
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        match &self.inner {
            Inner::Memory(b) => Ok(b.clone()),
            Inner::Spooled { path, .. } => std::fs::read(path),
        }
    }

    /// The output as text, invalid UTF-8 replaced.
    pub fn to_string_lossy(&self) -> io::Result<String> {
        Ok(String::from_utf8_lossy(&self.to_vec()?).into_owned())
    }

    /// Copies every byte to `w`, streaming a spool file.
    pub fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        match &self.inner {
            Inner::Memory(b) => w.write_all(b),
            Inner::Spooled { path, .. } => {
                io::copy(&mut File::open(path)?, w)?;
                Ok(())
            }
        }
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        if let Inner::Spooled { path, .. } = &self.inner {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Names spool files uniquely within this process.
static SPOOLS: AtomicU64 = AtomicU64::new(0);

/// Collects one stream while the command runs.
pub(crate) struct Sink<'a> {
    buf: Vec<u8>,
    file: Option<(File, PathBuf)>,
    len: u64,
    threshold: usize,
    dir: &'a Path,
    tag: &'static str,
}

impl<'a> Sink<'a> {
    pub(crate) fn new(threshold: usize, dir: &'a Path, tag: &'static str) -> Self {
        Sink {
            buf: Vec::new(),
            file: None,
            len: 0,
            threshold,
            dir,
            tag,
        }
    }

    /// Appends `data`, moving everything to a spool file once the
    /// threshold is passed.
    pub(crate) fn push(&mut self, data: &[u8]) -> io::Result<()> {
        self.len += data.len() as u64;
        if let Some((f, _)) = &mut self.file {
            return f.write_all(data);
        }
        if self.buf.len() + data.len() <= self.threshold {
            self.buf.extend_from_slice(data);
            return Ok(());
        }
        let n = SPOOLS.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!(
            "seedcore-spool-{}-{n}.{}",
            std::process::id(),
            self.tag
        ));
        let mut f = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .open(&path)?;
        f.write_all(&self.buf)?;
        f.write_all(data)?;
        self.buf = Vec::new();
        self.file = Some((f, path));
        Ok(())
    }

    pub(crate) fn finish(self) -> Captured {
        match self.file {
            None => Captured::from_bytes(self.buf),
            Some((_, path)) => Captured {
                inner: Inner::Spooled {
                    path,
                    len: self.len,
                },
            },
        }
    }
}
