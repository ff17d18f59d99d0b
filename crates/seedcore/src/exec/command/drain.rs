//! Pipes that outlive their command: a descendant it left running
//! (`daemon &`) still holds its stdout or stderr. One thread for the whole
//! process reads and discards what such pipes carry until their last
//! writer closes them, so the descendant neither blocks on a full pipe nor
//! dies of SIGPIPE, and no command waits for it.

use parking_lot::Mutex;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, OnceLock};

/// The pipes being drained.
type Pipes = Arc<Mutex<Vec<File>>>;

struct Drainer {
    pipes: Pipes,
    /// Written to when a pipe is added, to wake the thread's poll.
    wake: File,
}

static DRAINER: OnceLock<Option<Drainer>> = OnceLock::new();

/// Takes `pipe` (our end, non-blocking) to be drained and closed when its
/// writers are gone. Without a drain thread (none could be started) the
/// pipe is closed at once.
pub(crate) fn adopt(pipe: OwnedFd) {
    let Some(d) = DRAINER.get_or_init(start) else {
        return;
    };
    d.pipes.lock().push(File::from(pipe));
    let _ = (&d.wake).write(&[1]);
}

fn start() -> Option<Drainer> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills a live array of two descriptors, which we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        log::warn!(
            "seedcore: no pipe for the command drain thread: {}",
            io::Error::last_os_error()
        );
        return None;
    }
    // SAFETY: fresh descriptors that nothing else owns.
    let (wake_rx, wake) = unsafe {
        (
            File::from(OwnedFd::from_raw_fd(fds[0])),
            File::from(OwnedFd::from_raw_fd(fds[1])),
        )
    };
    let pipes = Pipes::default();
    let theirs = pipes.clone();
    let spawned = std::thread::Builder::new()
        .name("seedcore-cmd-drain".into())
        .stack_size(64 * 1024)
        .spawn(move || run(wake_rx, theirs));
    if let Err(e) = spawned {
        log::warn!("seedcore: cannot start the command drain thread: {e}");
        return None;
    }
    Some(Drainer { pipes, wake })
}

fn run(mut wake_rx: File, pipes: Pipes) {
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // Others only append: the pipes polled stay where they are until
        // this thread removes them.
        let mut fds: Vec<libc::pollfd> = std::iter::once(wake_rx.as_raw_fd())
            .chain(pipes.lock().iter().map(|f| f.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a live array of `fds.len()` pollfd.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if rc < 0 {
            continue; // EINTR
        }
        if fds[0].revents != 0 {
            while matches!(wake_rx.read(&mut chunk), Ok(n) if n > 0) {}
        }
        let mut closed = Vec::new();
        {
            let pipes = pipes.lock();
            for (k, p) in fds[1..].iter().enumerate() {
                if p.revents == 0 {
                    continue;
                }
                match (&pipes[k]).read(&mut chunk) {
                    Ok(0) => closed.push(k),
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) => {}
                    Err(_) => closed.push(k),
                }
            }
        }
        if !closed.is_empty() {
            let mut pipes = pipes.lock();
            for k in closed.into_iter().rev() {
                pipes.remove(k);
            }
        }
    }
}
