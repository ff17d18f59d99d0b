//! The throwaway `redis-server` of the distributed-mode tests: one per
//! test, on a free loopback port, in a folder of its own, nothing saved to
//! disk, killed (and its folder removed) on drop. Plain TCP
//! ([`RedisServer::start`]) or TLS only ([`RedisServer::start_tls`]).
//! Where `redis-server` is not installed a test skips with the reason
//! printed, as the remote tests always have.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::TestDir;

/// How long a server may take to answer.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// A free loopback port (free when asked: the tests take it at once).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh folder `seedcore-remote-{tag}-…` in the temporary folder,
/// removed when dropped.
pub(crate) fn temp_dir(tag: &str) -> TestDir {
    TestDir::new(&format!("remote-{tag}-{}", free_port()))
}

/// Whether `redis-server` can be started at all.
pub(crate) fn installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok()
}

/// A `redis-server` of this test, killed on drop.
#[derive(Debug)]
pub(crate) struct RedisServer {
    child: Child,
    port: u16,
    dir: TestDir,
    /// The arguments after the port and folder, kept for a restart.
    args: Vec<String>,
    /// Listening on a TLS port only: ready once it accepts a connection
    /// (a plain PING would not be understood).
    tls: bool,
}

impl RedisServer {
    /// Starts one on plain TCP with the arguments `extra` added, or `None`
    /// (with the reason printed) without redis-server.
    pub(crate) fn start(tag: &str, extra: &[&str]) -> Option<RedisServer> {
        if !skip_unless_installed() {
            return None;
        }
        let mut r = RedisServer::spawn(temp_dir(tag), extra, false);
        assert!(
            r.wait_ready(),
            "redis-server on port {} exited at start",
            r.port
        );
        Some(r)
    }

    /// Starts one listening only on a TLS port, with the arguments `extra`
    /// (certificates, password) added, in a folder that `prepare` fills
    /// first (the certificates; false when it cannot). `None` with the
    /// reason printed without redis-server, without what `prepare` needs,
    /// or where redis-server was built without TLS.
    pub(crate) fn start_tls(
        tag: &str,
        prepare: impl FnOnce(&Path) -> bool,
        extra: &[&str],
    ) -> Option<RedisServer> {
        if !skip_unless_installed() {
            return None;
        }
        let dir = temp_dir(tag);
        if !prepare(&dir) {
            let _ = std::fs::remove_dir_all(&dir);
            return None;
        }
        let mut r = RedisServer::spawn(dir, extra, true);
        if !r.wait_ready() {
            eprintln!("skipped: redis-server has no TLS support (it refused --tls-port)");
            return None;
        }
        Some(r)
    }

    fn spawn(dir: TestDir, extra: &[&str], tls: bool) -> RedisServer {
        let mut args: Vec<String> = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect();
        if tls {
            // No plain port: the tests show that plain clients are refused.
            args.splice(0..0, ["--port".to_string(), "0".to_string()]);
        }
        let port = free_port();
        let child = RedisServer::launch(port, &dir, &args, tls);
        RedisServer {
            child,
            port,
            dir,
            args,
            tls,
        }
    }

    fn launch(port: u16, dir: &Path, args: &[String], tls: bool) -> Child {
        let port_flag = if tls { "--tls-port" } else { "--port" };
        Command::new("redis-server")
            .arg(port_flag)
            .arg(port.to_string())
            .arg("--dir")
            .arg(dir)
            .args(args)
            // Relative certificate paths are in `dir`.
            .current_dir(dir)
            .stdout(Stdio::null())
            // A redis-server without TLS says so on stderr; start_tls
            // prints the reason itself.
            .stderr(if tls { Stdio::null() } else { Stdio::inherit() })
            .spawn()
            .expect("redis-server starts")
    }

    /// Waits until the server answers (`+PONG`, or `-NOAUTH` from one with
    /// a password) or, on TLS, accepts a connection; false if it exited
    /// first.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                if self.tls {
                    return true;
                }
                let _ = s.write_all(b"PING\r\n");
                let mut buf = [0u8; 64];
                if matches!(s.read(&mut buf), Ok(n) if n > 0 && (buf[0] == b'+' || buf[0] == b'-') && !buf.starts_with(b"-LOADING"))
                {
                    return true;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} never answered",
                self.port
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The port it listens on (its TLS port for a TLS server).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Its folder.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// `redis://` on its port (plain servers).
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A connection for looking at the server directly (plain servers).
    pub(crate) fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// Kills the server (SIGKILL: nothing is flushed but what the append
    /// log already has) and starts it again on the same port and folder.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.start_again();
    }

    /// Kills the server, keeping its port and folder for
    /// [`start_again`](Self::start_again).
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the killed server again, as it was started.
    pub(crate) fn start_again(&mut self) {
        self.child = RedisServer::launch(self.port, &self.dir, &self.args, self.tls);
        assert!(
            self.wait_ready(),
            "redis-server on port {} exited at start",
            self.port
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // The folder goes with `dir`, once the server is gone.
        self.kill();
    }
}

/// Whether redis-server is installed; prints why the test skips if not.
fn skip_unless_installed() -> bool {
    let ok = installed();
    if !ok {
        eprintln!("skipped: redis-server is not installed (apt-get install redis-server)");
    }
    ok
}
