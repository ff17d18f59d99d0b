//! Helpers shared by the tests that run the real `seedcore` binary.

#![allow(dead_code, unreachable_pub)]

use std::process::Command;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_seedcore");

/// Runs `seedcore bench SUITE --quick --json` with the extra environment
/// `env` and returns its stdout (for messages) and each line parsed as a
/// JSON object. Fails the test if the run fails, a panic leaks to stderr,
/// a line is not a JSON object, or a line names another suite.
pub fn bench_json(suite: &str, env: &[(&str, &str)]) -> (String, Vec<serde_json::Value>) {
    let out = Command::new(BIN)
        .args(["bench", suite, "--quick", "--json"])
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .output()
        .expect("the seedcore binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        !stderr.contains("panicked at"),
        "a panic leaked to stderr:\n{stderr}"
    );
    let lines = stdout
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}"));
            assert!(v.is_object(), "each line is a JSON object: {line}");
            assert_eq!(v["suite"], suite, "{line}");
            v
        })
        .collect();
    (stdout, lines)
}

/// A fresh folder `seedcore-{name}-{pid}` in the temporary folder, removed
/// with what it holds when dropped, so that a test run leaves nothing
/// behind. It reads as the `Path` it is.
#[derive(Debug)]
pub struct TestDir(std::path::PathBuf);

impl TestDir {
    /// Creates the folder (emptied first, if a run with the same pid left
    /// one).
    pub fn new(name: &str) -> TestDir {
        let d = std::env::temp_dir().join(format!("seedcore-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TestDir(d)
    }
}

impl std::ops::Deref for TestDir {
    type Target = std::path::PathBuf;
    fn deref(&self) -> &std::path::PathBuf {
        &self.0
    }
}

impl AsRef<std::path::Path> for TestDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TestDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
