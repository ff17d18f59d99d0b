//! One child process in its own process group: spawned, its output
//! collected through `poll(2)` on the worker's own thread (no thread per
//! child) until it exits, waited for without reaping first so that a kill
//! of its group can never reach a recycled process id, and its whole
//! group killed.

use super::output::Sink;
use super::{CommandSpec, Program, Stdin};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// Starts `spec` as the leader of a new process group, its stdout and
/// stderr on pipes.
pub(crate) fn spawn(spec: &CommandSpec) -> io::Result<Child> {
    let mut cmd = match &spec.program {
        Program::Exec { program, args } => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
        Program::Shell(line) => {
            let mut c = Command::new(&spec.shell);
            c.arg("-c").arg(line);
            c
        }
    };
    if spec.env_clear {
        cmd.env_clear();
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    cmd.stdin(match &spec.stdin {
        Stdin::Null => Stdio::null(),
        Stdin::Inherit => Stdio::inherit(),
        Stdin::Bytes(_) => Stdio::piped(),
    });
    // process_group keeps std on its posix_spawn path (no pre_exec hook),
    // the cheapest way to start a child.
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn()?;
    if let (Stdin::Bytes(bytes), Some(mut pipe)) = (&spec.stdin, child.stdin.take()) {
        let bytes = bytes.clone();
        // A writer of its own: a child that reads its input slowly while
        // writing a lot must not dead-lock against the output loop.
        std::thread::Builder::new()
            .name("seedcore-stdin".into())
            .spawn(move || {
                let _ = pipe.write_all(&bytes);
            })?;
    }
    if let Some(n) = spec.nice {
        // SAFETY: setpriority takes plain integers; a refusal (raising
        // the priority without the right) leaves the child as it is.
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, child.id(), n);
        }
    }
    Ok(child)
}

/// Reads the child's stdout and stderr into the sinks until the child
/// itself exits, then what the pipes hold at that moment.
///
/// The command is over when its own process is (GNU parallel's rule): a
/// descendant it left running (`daemon &`) may hold the pipes open for
/// long after, and is not waited for. Such pipes go to the [`drain`]
/// thread, which discards what they carry until their last writer closes
/// them, so the descendant is neither blocked on a full pipe nor killed by
/// SIGPIPE.
///
/// [`drain`]: super::drain
pub(crate) fn collect<'a>(
    child: &mut Child,
    out: &mut Sink<'a>,
    err: &mut Sink<'a>,
) -> io::Result<()> {
    let exit = ExitWatch::new(child.id());
    let mut streams = [
        child.stdout.take().map(|s| File::from(OwnedFd::from(s))),
        child.stderr.take().map(|s| File::from(OwnedFd::from(s))),
    ];
    let sinks = [out, err];
    CHUNK.with_borrow_mut(|chunk| read_until_exit(&exit, &mut streams, sinks, chunk))
}

thread_local! {
    /// The read buffer of a command worker, kept for its next child (not
    /// one allocated and zeroed per command).
    static CHUNK: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`collect`]'s loop: `streams` into `sinks` until the child exits.
fn read_until_exit(
    exit: &ExitWatch,
    streams: &mut [Option<File>; 2],
    sinks: [&mut Sink<'_>; 2],
    chunk: &mut Vec<u8>,
) -> io::Result<()> {
    if chunk.is_empty() {
        chunk.resize(64 * 1024, 0);
    }
    while streams.iter().any(Option::is_some) {
        let mut fds = [
            pollfd(streams[0].as_ref().map(|s| s.as_raw_fd())),
            pollfd(streams[1].as_ref().map(|s| s.as_raw_fd())),
            pollfd(exit.fd()),
        ];
        // SAFETY: `fds` is a live array of three pollfd; a negative fd is
        // ignored by poll.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 3, exit.poll_timeout()) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for (k, stream) in streams.iter_mut().enumerate() {
            if fds[k].revents == 0 {
                continue;
            }
            if let Some(s) = stream {
                match s.read(chunk) {
                    Ok(0) => *stream = None,
                    Ok(n) => sinks[k].push(&chunk[..n])?,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if streams.iter().any(Option::is_some) && exit.exited(fds[2].revents != 0) {
            for (k, stream) in streams.iter_mut().enumerate() {
                if let Some(s) = stream.take() {
                    drain_now(s, sinks[k], chunk)?;
                }
            }
        }
    }
    Ok(())
}

/// Reads what a pipe holds now (at most its capacity: everything the
/// exited child wrote, since it was read all along), then hands the pipe,
/// if a descendant still holds it, to the drain thread.
fn drain_now(s: File, sink: &mut Sink<'_>, chunk: &mut [u8]) -> io::Result<()> {
    set_nonblocking(s.as_raw_fd())?;
    let mut left = pipe_capacity(s.as_raw_fd());
    loop {
        match (&s).read(chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                sink.push(&chunk[..n])?;
                left = left.saturating_sub(n);
                if left == 0 {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    super::drain::adopt(OwnedFd::from(s));
    Ok(())
}

/// Sets `O_NONBLOCK` on our end of a pipe (its own open file description:
/// the writers' end is untouched).
pub(crate) fn set_nonblocking(fd: i32) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with plain integer flags.
    let rc = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            flags
        } else {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK)
        }
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How many bytes the pipe `fd` can hold.
fn pipe_capacity(fd: i32) -> usize {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: fcntl on a descriptor we own.
        let n = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
        if n > 0 {
            return n as usize;
        }
    }
    let _ = fd;
    1 << 20
}

/// Tells when the child has exited, without reaping it: a pidfd that
/// becomes readable (Linux 5.3 and later), or else a look every 50 ms.
struct ExitWatch {
    pid: u32,
    pidfd: Option<OwnedFd>,
}

impl ExitWatch {
    fn new(pid: u32) -> Self {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: pidfd_open takes a pid and flags; it returns a new
            // descriptor, which we own, or -1.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
            if fd >= 0 {
                // SAFETY: a fresh descriptor that nothing else owns.
                let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
                return ExitWatch {
                    pid,
                    pidfd: Some(pidfd),
                };
            }
        }
        ExitWatch { pid, pidfd: None }
    }

    fn fd(&self) -> Option<i32> {
        self.pidfd.as_ref().map(|f| f.as_raw_fd())
    }

    /// poll's timeout: none with a pidfd, 50 ms for the look otherwise.
    fn poll_timeout(&self) -> i32 {
        if self.pidfd.is_some() {
            -1
        } else {
            50
        }
    }

    /// Whether the child has exited; `signalled`: its pidfd is readable.
    fn exited(&self, signalled: bool) -> bool {
        if self.pidfd.is_some() {
            return signalled;
        }
        // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a live siginfo_t; the flags neither block nor reap.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                self.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT | libc::WNOHANG,
            )
        };
        // SAFETY: waitid filled `info`; si_pid is 0 when nothing has exited.
        rc == 0 && unsafe { info.si_pid() } != 0
    }
}

fn pollfd(fd: Option<i32>) -> libc::pollfd {
    libc::pollfd {
        fd: fd.unwrap_or(-1),
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Blocks until the child `pid` has exited, leaving it a zombie: its pid,
/// and so its process group's id, stays reserved until it is reaped.
pub(crate) fn wait_exited(pid: u32) -> io::Result<()> {
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a live siginfo_t; the flags ask for no reaping.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Sends `signal` to the process group led by `pid`.
pub(crate) fn kill_group(pid: u32, signal: i32) {
    // SAFETY: kill takes plain integers; a group already gone gives ESRCH.
    unsafe {
        libc::kill(-(pid as libc::pid_t), signal);
    }
}
