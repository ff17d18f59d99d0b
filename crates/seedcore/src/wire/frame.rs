//! Length-prefixed frames over a Unix stream socket, with file
//! descriptors (shared-memory payloads) passed alongside as `SCM_RIGHTS`.
//!
//! A frame is an 8-byte header — payload length (u32, little endian), the
//! number of descriptors that belong to it (u8), three zero bytes — and
//! the payload. Descriptors travel with the first byte of the `sendmsg`
//! that carries their frame, so the reader always holds them before it
//! parses that frame; it hands them out in order, `nfds` per frame.
//!
//! Frames are checked: a length above the limit, non-zero padding, or a
//! frame claiming descriptors that did not arrive is a [`FrameError`], and
//! the peer is treated as broken, never trusted further.

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

const HEADER: usize = 8;
/// The most descriptors one `sendmsg` may carry (Linux's SCM_MAX_FD).
pub(crate) const MAX_FDS: usize = 253;
const READ_CHUNK: usize = 64 * 1024;

/// Why the stream cannot be read further.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The peer closed the connection (between frames).
    Closed,
    Io(io::Error),
    /// The peer broke the protocol.
    Malformed(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Closed => f.write_str("connection closed"),
            FrameError::Io(e) => write!(f, "i/o error: {e}"),
            FrameError::Malformed(m) => write!(f, "malformed frame: {m}"),
        }
    }
}

/// One frame to send: its encoded payload and the descriptors it refers to.
pub(crate) struct OutFrame<'a> {
    pub(crate) payload: &'a [u8],
    pub(crate) fds: Vec<BorrowedFd<'a>>,
}

/// Writes `frames` with as few `sendmsg` calls as the descriptor limit
/// allows. The caller serialises writers of one socket.
pub(crate) fn write_frames(sock: &UnixStream, frames: &[OutFrame<'_>]) -> io::Result<()> {
    let mut buf = Vec::new();
    let mut fds: Vec<BorrowedFd<'_>> = Vec::new();
    for f in frames {
        if f.fds.len() > MAX_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a frame may carry at most {MAX_FDS} shared buffers"),
            ));
        }
        if fds.len() + f.fds.len() > MAX_FDS {
            send(sock, &buf, &fds)?;
            buf.clear();
            fds.clear();
        }
        let len = u32::try_from(f.payload.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&[f.fds.len() as u8, 0, 0, 0]);
        buf.extend_from_slice(f.payload);
        fds.extend(f.fds.iter().copied());
    }
    if !buf.is_empty() {
        send(sock, &buf, &fds)?;
    }
    Ok(())
}

fn send(sock: &UnixStream, buf: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.is_empty() {
        return (&*sock).write_all(buf);
    }
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    if !cmsg.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("descriptor buffer too small"));
    }
    let sent = loop {
        match sendmsg(
            sock.as_fd(),
            &[IoSlice::new(buf)],
            &mut cmsg,
            SendFlags::NOSIGNAL,
        ) {
            Ok(n) => break n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    // The descriptors went with the first bytes; the rest is plain data.
    (&*sock).write_all(&buf[sent..])
}

/// Reads frames from one socket, buffering bytes and descriptors.
pub(crate) struct FrameReader {
    sock: UnixStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    fds: VecDeque<OwnedFd>,
    max_frame: usize,
    /// Room for the descriptors of one read, reused by every read.
    cmsg: Vec<MaybeUninit<u8>>,
    /// How long to poll (yielding the CPU between polls) before a read
    /// blocks. A blocked reader on an idle core can take tens of
    /// microseconds to wake; a reply that comes within this window costs
    /// none of that.
    spin: std::time::Duration,
}

impl FrameReader {
    pub(crate) fn new(sock: UnixStream, max_frame: usize) -> Self {
        FrameReader {
            sock,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            fds: VecDeque::new(),
            max_frame,
            cmsg: vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))],
            spin: std::time::Duration::from_micros(50),
        }
    }

    /// Whether a whole frame is already buffered (no read needed).
    pub(crate) fn has_frame(&self) -> bool {
        let avail = self.end - self.start;
        avail >= HEADER && avail >= HEADER + self.frame_len()
    }

    /// Whether the socket has bytes waiting (without blocking).
    pub(crate) fn poll_readable(&self) -> bool {
        use rustix::event::{poll, PollFd, PollFlags};
        let mut fds = [PollFd::new(&self.sock, PollFlags::IN)];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
    }

    fn frame_len(&self) -> usize {
        let h = &self.buf[self.start..self.start + 4];
        u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize
    }

    /// Reads the next frame: its payload and its descriptors.
    pub(crate) fn next(&mut self) -> Result<(Vec<u8>, Vec<OwnedFd>), FrameError> {
        self.fill(HEADER)?;
        let h = &self.buf[self.start..self.start + HEADER];
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let nfds = h[4] as usize;
        if h[5..8] != [0, 0, 0] {
            return Err(FrameError::Malformed("bad header padding".into()));
        }
        if len > self.max_frame {
            return Err(FrameError::Malformed(format!(
                "frame of {len} bytes is over the {} byte limit",
                self.max_frame
            )));
        }
        self.fill(HEADER + len)?;
        if self.fds.len() < nfds {
            return Err(FrameError::Malformed(format!(
                "frame refers to {nfds} descriptors, {} arrived",
                self.fds.len()
            )));
        }
        let payload = self.buf[self.start + HEADER..self.start + HEADER + len].to_vec();
        self.start += HEADER + len;
        let fds = self.fds.drain(..nfds).collect();
        Ok((payload, fds))
    }

    /// Reads until `need` bytes are buffered.
    fn fill(&mut self, need: usize) -> Result<(), FrameError> {
        if self.end - self.start >= need {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < need {
            self.buf.resize(need.max(READ_CHUNK), 0);
        }
        let spin_until = std::time::Instant::now() + self.spin;
        while self.end < need {
            let mut cmsg = RecvAncillaryBuffer::new(&mut self.cmsg);
            let spinning = std::time::Instant::now() < spin_until;
            let flags = if spinning {
                RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT
            } else {
                RecvFlags::CMSG_CLOEXEC
            };
            let res = recvmsg(
                self.sock.as_fd(),
                &mut [IoSliceMut::new(&mut self.buf[self.end..])],
                &mut cmsg,
                flags,
            );
            let n = match res {
                Ok(r) => r.bytes,
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) if spinning => {
                    std::thread::yield_now();
                    continue;
                }
                Err(e) => return Err(FrameError::Io(e.into())),
            };
            for msg in cmsg.drain() {
                if let RecvAncillaryMessage::ScmRights(fds) = msg {
                    self.fds.extend(fds);
                }
            }
            if n == 0 {
                return Err(if self.end == self.start {
                    FrameError::Closed
                } else {
                    FrameError::Malformed("connection closed inside a frame".into())
                });
            }
            self.end += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn frames_and_descriptors_arrive_in_order() {
        let (a, b) = UnixStream::pair().unwrap();
        let f1 = std::fs::File::open("/dev/null").unwrap();
        let f2 = std::fs::File::open("/dev/zero").unwrap();
        write_frames(
            &a,
            &[
                OutFrame {
                    payload: b"one",
                    fds: vec![f1.as_fd()],
                },
                OutFrame {
                    payload: b"",
                    fds: vec![],
                },
                OutFrame {
                    payload: &[7u8; 100_000],
                    fds: vec![f2.as_fd()],
                },
            ],
        )
        .unwrap();
        let mut r = FrameReader::new(b, 1 << 20);
        let (p, fds) = r.next().unwrap();
        assert_eq!((p.as_slice(), fds.len()), (&b"one"[..], 1));
        let (p, fds) = r.next().unwrap();
        assert_eq!((p.len(), fds.len()), (0, 0));
        let (p, fds) = r.next().unwrap();
        assert_eq!((p.len(), fds.len()), (100_000, 1));
        drop(a);
        assert!(matches!(r.next(), Err(FrameError::Closed)));
    }

    #[test]
    fn oversized_and_malformed_frames_are_rejected() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut r = FrameReader::new(b, 16);
        a.write_all(&100u32.to_le_bytes()).unwrap();
        a.write_all(&[0, 0, 0, 0]).unwrap();
        assert!(matches!(r.next(), Err(FrameError::Malformed(m)) if m.contains("limit")));

        let (mut a, b) = UnixStream::pair().unwrap();
        let mut r = FrameReader::new(b, 16);
        a.write_all(&[1, 0, 0, 0, 0, 9, 9, 9, 1]).unwrap();
        assert!(matches!(r.next(), Err(FrameError::Malformed(m)) if m.contains("padding")));

        let (mut a, b) = UnixStream::pair().unwrap();
        let mut r = FrameReader::new(b, 16);
        a.write_all(&[1, 0, 0, 0, 2, 0, 0, 0, 1]).unwrap();
        assert!(matches!(r.next(), Err(FrameError::Malformed(m)) if m.contains("descriptors")));

        let (mut a, b) = UnixStream::pair().unwrap();
        let mut r = FrameReader::new(b, 16);
        a.write_all(&[5, 0, 0, 0, 0, 0, 0, 0, 1]).unwrap();
        drop(a);
        assert!(matches!(r.next(), Err(FrameError::Malformed(m)) if m.contains("inside")));
    }
}
