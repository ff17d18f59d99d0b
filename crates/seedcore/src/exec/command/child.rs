//! One child process in its own process group: spawned, its output
//! collected through `poll(2)` on the worker's own thread (no thread per
//! child), waited for without reaping first so that a kill of its group
//! can never reach a recycled process id, and its whole group killed.

use super::output::Sink;
use super::{CommandSpec, Program, Stdin};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
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

/// Reads the child's stdout and stderr to their ends into the sinks.
pub(crate) fn collect(child: &mut Child, out: &mut Sink<'_>, err: &mut Sink<'_>) -> io::Result<()> {
    use std::io::Read;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut chunk = vec![0u8; 64 * 1024];
    while stdout.is_some() || stderr.is_some() {
        let mut fds = [
            pollfd(stdout.as_ref().map(|s| s.as_raw_fd())),
            pollfd(stderr.as_ref().map(|s| s.as_raw_fd())),
        ];
        // SAFETY: `fds` is a live array of two pollfd; a negative fd is
        // ignored by poll.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if fds[0].revents != 0 {
            if let Some(s) = &mut stdout {
                match s.read(&mut chunk) {
                    Ok(0) => stdout = None,
                    Ok(n) => out.push(&chunk[..n])?,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if fds[1].revents != 0 {
            if let Some(s) = &mut stderr {
                match s.read(&mut chunk) {
                    Ok(0) => stderr = None,
                    Ok(n) => err.push(&chunk[..n])?,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
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
