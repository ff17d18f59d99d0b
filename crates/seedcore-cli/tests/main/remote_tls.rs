//! Distributed mode over TLS: a `redis-server` listening only on a TLS port
//! with a certificate of a throwaway CA (made here with the `openssl`
//! command), a real `seedcore worker` and a client on `rediss://`. Skips
//! with a printed reason where `redis-server` (built with TLS) or `openssl`
//! is missing.
#![cfg(target_os = "linux")]

use crate::redis_server::{free_port, RedisServer};
use seedcore::remote::{RemoteConfig, RemoteError};
use seedcore::{ConcurrentSystem, ProcessTask, TaskOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_seedcore");
const SECRET: &str = "test-secret-of-at-least-32-bytes!";
const PASSWORD: &str = "tls-test-password";
const LONG: Duration = Duration::from_secs(60);

const ADD: ProcessTask<(u64, u64), u64> = ProcessTask::external("seedcore::worker::remote_add");
const ECHO: ProcessTask<String, String> = ProcessTask::external("seedcore::worker::remote_echo");

/// The `openssl` settings of the throwaway certificates: a CA, a server
/// certificate for 127.0.0.1 and localhost, a client certificate.
const OPENSSL_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = seedcore test
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
[client]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
";

/// Runs `openssl` in `dir`; whether it succeeded.
fn openssl(dir: &Path, args: &[&str]) -> bool {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            eprintln!(
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            false
        }
        Err(_) => false,
    }
}

/// Makes `ca.pem`, `server.pem`/`server.key` and `client.pem`/`client.key`
/// (P-256 keys) in `dir`; false (with the reason printed) without openssl.
fn make_certs(dir: &Path) -> bool {
    if Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("skipped: the openssl command is not installed (apt-get install openssl)");
        return false;
    }
    std::fs::write(dir.join("openssl.cnf"), OPENSSL_CNF).unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ok = openssl(
        dir,
        &[
            &[
                "req",
                "-x509",
                "-config",
                "openssl.cnf",
                "-extensions",
                "ca",
            ][..],
            &ec,
            &[
                "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            ],
            &["-subj", "/CN=seedcore test CA"],
        ]
        .concat(),
    );
    for (name, serial) in [("server", "2"), ("client", "3")] {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let subj = format!("/CN=seedcore test {name}");
        ok =
            ok && openssl(
                dir,
                &[
                    &["req", "-new", "-config", "openssl.cnf"][..],
                    &ec,
                    &["-nodes", "-keyout", &key, "-out", &csr, "-subj", &subj],
                ]
                .concat(),
            ) && openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-set_serial",
                    serial,
                    "-days",
                    "2",
                    "-extfile",
                    "openssl.cnf",
                    "-extensions",
                    name,
                    "-out",
                    &pem,
                ],
            );
    }
    assert!(ok, "openssl failed to make the test certificates");
    true
}

/// A TLS-only `redis-server` of this test (password [`PASSWORD`]) with
/// its certificates (`client_certs`: it asks clients for theirs), or
/// `None` with the reason printed.
fn tls_redis(tag: &str, client_certs: bool) -> Option<RedisServer> {
    RedisServer::start_tls(
        &format!("tls-{tag}"),
        make_certs,
        &[
            "--tls-cert-file",
            "server.pem",
            "--tls-key-file",
            "server.key",
            "--tls-ca-cert-file",
            "ca.pem",
            "--tls-auth-clients",
            if client_certs { "yes" } else { "no" },
            "--requirepass",
            PASSWORD,
        ],
    )
}

/// The server's `rediss://` URL, with its password.
fn tls_url(redis: &RedisServer) -> String {
    format!("rediss://:{PASSWORD}@127.0.0.1:{}/", redis.port())
}

/// A `seedcore worker` process in its own process group, killed on drop;
/// its standard error goes to a file, shown when a test fails.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn start(redis: &RedisServer, tls_args: &[&str]) -> Worker {
        let log = redis.dir().join(format!("worker-{}.log", free_port()));
        let child = Command::new(BIN)
            .args(["worker", "--redis", &tls_url(redis), "--processes", "2"])
            .args(tls_args)
            .env("SEEDCORE_REMOTE_SECRET", SECRET)
            .current_dir(redis.dir())
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("seedcore worker starts");
        Worker { child, log }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // SAFETY: signals the process group this test started.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Submits tasks through `client` and checks every answer.
fn round_trip(client: &ConcurrentSystem, worker: &Worker) {
    let adds: Vec<_> = (0..20u64)
        .map(|i| {
            client
                .submit_remote(TaskOptions::new(), ADD, (i, 1))
                .unwrap()
        })
        .collect();
    let echo = client
        .submit_remote(TaskOptions::new(), ECHO, "over TLS".to_string())
        .unwrap();
    for (i, f) in adds.into_iter().enumerate() {
        let v = f
            .wait_timeout(LONG)
            .unwrap_or_else(|_| panic!("no answer; worker said:\n{}", worker.stderr()))
            .unwrap();
        assert_eq!(v, i as u64 + 1);
    }
    assert_eq!(echo.wait_timeout(LONG).unwrap().unwrap(), "over TLS");
}

/// The first connection of a client with `cfg`: its error, and how long
/// it took to come.
fn connect_error(cfg: RemoteConfig) -> (RemoteError, Duration) {
    let sys = ConcurrentSystem::builder().build().unwrap();
    let t = Instant::now();
    let e = sys.add_remote(cfg).unwrap_err();
    (e, t.elapsed())
}

#[test]
fn tasks_round_trip_over_tls_with_a_ca_file() {
    let Some(redis) = tls_redis("ca", false) else {
        return;
    };
    let ca = redis.dir().join("ca.pem");
    let worker = Worker::start(&redis, &["--tls-ca-file", ca.to_str().unwrap()]);
    let client = ConcurrentSystem::builder()
        .remote_config(
            RemoteConfig::new(tls_url(&redis))
                .secret(SECRET)
                .tls_ca_file(&ca),
        )
        .build()
        .expect("the client connects over TLS");
    round_trip(&client, &worker);
}

#[test]
fn an_untrusted_server_certificate_is_a_typed_error_not_a_hang() {
    let Some(redis) = tls_redis("untrusted", false) else {
        return;
    };
    // Without the CA file the system's roots do not know the test CA.
    let (e, took) = connect_error(RemoteConfig::new(tls_url(&redis)).secret(SECRET));
    let RemoteError::Connect { url, reason } = &e else {
        panic!("expected a connect error, got {e:?}");
    };
    assert!(reason.contains("certificate"), "{e}");
    assert!(!url.contains(PASSWORD) && !e.to_string().contains(PASSWORD));
    assert!(took < Duration::from_secs(15), "took {took:?}");

    // A worker without the CA file stops at once with that error.
    let mut worker = Worker::start(&redis, &[]);
    let deadline = Instant::now() + LONG;
    let status = loop {
        if let Some(s) = worker.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the worker kept running");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let said = worker.stderr();
    assert!(said.contains("certificate"), "{said}");
    assert!(!said.contains(PASSWORD), "{said}");

    // A CA file that is not there is a setting error naming it.
    let missing = redis.dir().join("no-such-ca.pem");
    let (e, _) = connect_error(
        RemoteConfig::new(tls_url(&redis))
            .secret(SECRET)
            .tls_ca_file(&missing),
    );
    assert!(
        matches!(&e, RemoteError::BadSetting(m) if m.contains("no-such-ca.pem")),
        "{e:?}"
    );
    // TLS files with a plain redis:// URL are refused, not ignored.
    let plain = format!("redis://127.0.0.1:{}/", redis.port());
    let (e, _) = connect_error(
        RemoteConfig::new(plain)
            .secret(SECRET)
            .tls_ca_file(redis.dir().join("ca.pem")),
    );
    assert!(
        matches!(&e, RemoteError::BadSetting(m) if m.contains("rediss://")),
        "{e:?}"
    );
}

#[test]
fn mutual_tls_needs_the_client_certificate() {
    let Some(redis) = tls_redis("mutual", true) else {
        return;
    };
    let (ca, cert, key) = (
        redis.dir().join("ca.pem"),
        redis.dir().join("client.pem"),
        redis.dir().join("client.key"),
    );
    let path = |p: &PathBuf| p.to_str().unwrap().to_owned();
    let worker = Worker::start(
        &redis,
        &[
            "--tls-ca-file",
            &path(&ca),
            "--tls-cert-file",
            &path(&cert),
            "--tls-key-file",
            &path(&key),
        ],
    );
    let client = ConcurrentSystem::builder()
        .remote_config(
            RemoteConfig::new(tls_url(&redis))
                .secret(SECRET)
                .tls_ca_file(&ca)
                .tls_client_cert(&cert, &key),
        )
        .build()
        .expect("the client connects with its certificate");
    round_trip(&client, &worker);

    // Without a client certificate the server ends the handshake.
    let (e, took) = connect_error(
        RemoteConfig::new(tls_url(&redis))
            .secret(SECRET)
            .tls_ca_file(&ca),
    );
    assert!(matches!(e, RemoteError::Connect { .. }), "{e:?}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    // A key that is not the certificate's is a setting error.
    let (e, _) = connect_error(
        RemoteConfig::new(tls_url(&redis))
            .secret(SECRET)
            .tls_ca_file(&ca)
            .tls_client_cert(&cert, redis.dir().join("server.key")),
    );
    assert!(
        matches!(&e, RemoteError::BadSetting(m) if m.contains("client.pem")),
        "{e:?}"
    );
}
