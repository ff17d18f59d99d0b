//! The shell that runs the jobs, chosen as GNU parallel chooses it:
//! `$PARALLEL_SHELL`; else the shell that started `seedcore exec` (the
//! nearest ancestor process whose name is a shell's, looked up in `PATH`
//! by that name); else `$SHELL`; else `/bin/sh`. So a job behaves as it
//! would typed at the prompt it was started from (dash's `echo` expands
//! backslashes, bash's does not).

use std::path::{Path, PathBuf};

/// How inputs are quoted for the shell: GNU parallel quotes for (t)csh
/// and rc in their own ways, and for every other shell as for `sh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quoting {
    /// Bourne shells (sh, bash, dash, ksh, zsh, ...), and any other.
    Sh,
    /// csh and tcsh.
    Csh,
    /// Plan 9's rc.
    Rc,
}

/// The shell of the jobs.
#[derive(Debug, Clone)]
pub(crate) struct JobShell {
    /// As given or found (a name is looked up in `PATH` when a job starts).
    pub(crate) path: PathBuf,
    /// How inputs are quoted for it.
    pub(crate) quoting: Quoting,
    /// Whether a job without shell syntax may be started without the
    /// shell: a Bourne shell (whose syntax [`super::template`] knows) that
    /// reads no startup file for `-c` (zsh reads `.zshenv`, bash
    /// `$BASH_ENV`), so that skipping it changes nothing.
    pub(crate) direct: bool,
}

/// Every shell name GNU parallel recognizes in an ancestor.
const SHELLS: &[&str] = &[
    "ash",
    "bash",
    "bsd-csh",
    "csh",
    "dash",
    "fdsh",
    "fish",
    "fizsh",
    "ksh",
    "ksh93",
    "lksh",
    "mksh",
    "pdksh",
    "posh",
    "rbash",
    "rc",
    "rush",
    "rzsh",
    "sash",
    "sh",
    "static-sh",
    "tcsh",
    "yash",
    "zsh",
];

/// The Bourne-family shells among them that read no startup file for
/// `-c` (bash only without `$BASH_ENV`).
const BOURNE: &[&str] = &[
    "ash",
    "bash",
    "dash",
    "ksh",
    "ksh93",
    "lksh",
    "mksh",
    "pdksh",
    "posh",
    "rbash",
    "sh",
    "static-sh",
    "yash",
];

impl JobShell {
    /// Finds the shell, or says why there is none to use.
    pub(crate) fn find() -> Result<JobShell, String> {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let path = env("PARALLEL_SHELL")
            .map(PathBuf::from)
            .or_else(|| parent_shell(std::process::id()))
            .or_else(|| env("SHELL").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/bin/sh"));
        if !is_executable(&path) && which(&path.to_string_lossy()).is_none() {
            return Err(format!("shell '{}' not found", path.display()));
        }
        Ok(JobShell::new(path))
    }

    /// The shell at `path`.
    pub(crate) fn new(path: PathBuf) -> JobShell {
        let text = path.to_string_lossy();
        let name = text.rsplit('/').next().unwrap_or_default();
        // GNU parallel's tests: any path with `csh` in it, a name `rc`.
        let quoting = if text.contains("csh") {
            Quoting::Csh
        } else if name == "rc" {
            Quoting::Rc
        } else {
            Quoting::Sh
        };
        let bash_env = std::env::var_os("BASH_ENV").is_some_and(|v| !v.is_empty());
        let direct = BOURNE.contains(&name) && !(bash_env && name.contains("bash"));
        JobShell {
            path,
            quoting,
            direct,
        }
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.to_string_lossy().contains('/')
        && std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first executable `name` in `PATH` (or `name` itself when it is a
/// path).
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// A shell's name in an `argv[0]` as GNU parallel reads it (`bash`,
/// `-bash` for a login shell, `/usr/bin/zsh`, `[sh]`, `busybox sh`):
/// the name and whether it had the login dash.
fn shell_in(argv0: &str) -> Option<(&str, bool)> {
    // The name must end the word: end of text, or a space and not `(`.
    let ends = |rest: &str| {
        rest.trim_end_matches(' ').is_empty()
            || rest.starts_with(' ') && !rest[1..].starts_with('(')
    };
    let name = |s: &str| -> Option<(usize, bool)> {
        let (dash, s) = match s.strip_prefix('-') {
            Some(t) => (true, t),
            None => (false, s),
        };
        SHELLS
            .iter()
            .filter(|sh| s.starts_with(**sh))
            .map(|sh| (sh.len() + usize::from(dash), dash))
            .max_by_key(|(n, _)| *n)
    };
    if let Some(inner) = argv0.strip_prefix('[') {
        let (n, dash) = name(inner)?;
        let rest = inner[n..].strip_prefix(']')?;
        return ends(rest).then(|| (&inner[usize::from(dash)..n], dash));
    }
    // An optional directory (`\S+/`) or `busybox `.
    let word_end = argv0.find(' ').unwrap_or(argv0.len());
    let start = if let Some(s) = argv0.strip_prefix("busybox ") {
        argv0.len() - s.len()
    } else {
        argv0[..word_end].rfind('/').map_or(0, |i| i + 1)
    };
    let s = &argv0[start..];
    let (n, dash) = name(s)?;
    ends(&s[n..]).then(|| (&s[usize::from(dash)..n], dash))
}

/// The shell of the nearest ancestor of `pid` (itself first) that is
/// one, by its `argv[0]`, found in `PATH` by that name (a login `-sh` by
/// its executable, which may be another shell).
fn parent_shell(pid: u32) -> Option<PathBuf> {
    let mut pid = pid;
    while pid != 0 {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
        let argv0 = String::from_utf8_lossy(argv0);
        if let Some((name, dash)) = shell_in(&argv0) {
            if name == "sh" && dash {
                if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
                    let base = exe.file_name().map(|n| n.to_string_lossy().into_owned());
                    if base.is_some_and(|b| SHELLS.contains(&b.as_str())) {
                        return Some(exe);
                    }
                }
            }
            // Login shells hide under other names (`-csh` may be tcsh).
            let also: &[&str] = match (name, dash) {
                ("csh", true) => &["tcsh", "csh"],
                _ => &[],
            };
            return std::iter::once(name)
                .chain(also.iter().copied())
                .find_map(which);
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The name in parentheses may hold spaces: fields count after it.
        pid = stat
            .rsplit(')')
            .next()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_names_are_read_as_gnu_parallel_reads_them() {
        assert_eq!(shell_in("bash"), Some(("bash", false)));
        assert_eq!(shell_in("-bash"), Some(("bash", true)));
        assert_eq!(shell_in("/usr/bin/zsh"), Some(("zsh", false)));
        assert_eq!(shell_in("-sh"), Some(("sh", true)));
        assert_eq!(shell_in("[dash]"), Some(("dash", false)));
        assert_eq!(shell_in("busybox sh"), Some(("sh", false)));
        assert_eq!(shell_in("bash -c echo"), Some(("bash", false)));
        assert_eq!(shell_in("ksh93"), Some(("ksh93", false)));
        for not in [
            "sshd",
            "/usr/sbin/sshd",
            "crash",
            "flush",
            "foo.sh",
            "bash5",
            "cargo",
            "",
        ] {
            assert_eq!(shell_in(not), None, "{not}");
        }
    }

    #[test]
    fn quoting_and_syntax_follow_the_shells_name() {
        let q = |p: &str| JobShell::new(p.into());
        assert_eq!(q("/bin/tcsh").quoting, Quoting::Csh);
        assert_eq!(q("/usr/bin/rc").quoting, Quoting::Rc);
        assert_eq!(q("/bin/bash").quoting, Quoting::Sh);
        assert!(q("/bin/dash").direct && q("ksh").direct);
        assert!(!q("/usr/bin/fish").direct && !q("/bin/csh").direct && !q("zsh").direct);
    }
}
