//! The command template: GNU parallel's replacement strings and quoting.
//!
//! `{}` the input (all inputs, space-separated, when there are several),
//! `{.}` without its extension, `{/}` its basename, `{//}` its dirname,
//! `{/.}` its basename without extension, `{#}` the job's sequence
//! number, `{%}` its slot, `{N}` (and `{N.}`, `{N/}`, `{N//}`, `{N/.}`)
//! input source N. With `--plus`, also `{+/}` `{+.}` `{+..}` `{+...}`
//! `{..}` `{...}` `{/..}` `{/...}` (and their `{N...}` forms), `{##}`
//! (the number of jobs), `{0#}` and `{0%}` (zero-padded); GNU parallel's
//! other `--plus` strings (`{:-x}`, `{#re}`, `{%re}`, `{/re/x}`, `{^x}`,
//! `{,x}`, `{choose_k}`, `{uniq}`, `{slot}`, `{host}`, ...) and `{= perl =}`
//! are refused. Each string edits the input with GNU parallel's own
//! definition (a Perl substitution, reproduced here), so dotfiles and
//! trailing slashes come out as they do there: `{.}` of `.bashrc` is empty,
//! `{/}` of `a/b/` is empty. A template without replacement strings gets
//! ` {}` appended, as in GNU parallel. Anything else in braces is left as
//! it is.
//!
//! Substituted inputs are quoted for the job shell as GNU parallel quotes
//! them (for `sh`: a word of `[-_.+a-zA-Z0-9/]` stays as it is, anything
//! else is put in single quotes), and the line is run by that shell. When
//! the shell is a Bourne shell that reads no startup file for `-c` and the
//! template has no shell syntax at all (no quotes, `$`, pipes,
//! redirections, globs, `~`, `#`, assignments), and its command is a
//! program in `PATH` (not a shell keyword, builtin or exported function),
//! the same words are started directly, without a shell: the result is
//! the same and the job starts faster. `echo`, `true` and `false` are
//! builtins whose programs in `/bin` or `/usr/bin` do what every Bourne
//! shell's builtin does as long as no argument starts with `-` (an
//! option to some of them) or holds a `\` (an escape to dash's `echo`):
//! a job of theirs whose arguments are so is started directly too.

use super::shell::{which, JobShell, Quoting};
use std::fmt;

/// What a replacement string takes of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// `{}`
    Whole,
    /// `{.}` (1), `{..}` (2), `{...}` (3): without that many extensions.
    NoExt(usize),
    /// `{/}`
    Base,
    /// `{//}`
    Dir,
    /// `{/.}`, `{/..}`, `{/...}`
    BaseNoExt(usize),
    /// `{+/}`: what `{/}` leaves out.
    DirPlus,
    /// `{+.}`, `{+..}`, `{+...}`: what `{.}` (and so on) leaves out.
    Ext(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// An input: `None` for all of them (`{}`), `Some(i)` for source `i`
    /// (0-based).
    Input(Option<usize>, Part),
    /// `{#}`, or `{0#}` zero-padded to the width of the number of jobs.
    Seq {
        padded: bool,
    },
    /// `{%}`, or `{0%}` zero-padded to the width of the number of slots.
    Slot {
        padded: bool,
    },
    /// `{##}`: the number of jobs.
    Total,
    /// Whitespace between words, as the template has it (the shell gets
    /// the line as written: newlines, runs of spaces, tabs).
    Break(String),
}

/// How a template's jobs start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// In the shell.
    Shell,
    /// Directly: the line needs no shell.
    Direct,
    /// Directly when the job's arguments are plain (see [`PLAIN_BUILTINS`]),
    /// else in the shell.
    PlainArgs,
}

/// A parsed template.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    pieces: Vec<Piece>,
    /// Whether the line needs the shell.
    start: Start,
    /// How inputs are quoted.
    quoting: Quoting,
    /// No command: each input line is itself the command.
    raw: bool,
    /// A replacement string in the command word: as GNU parallel, no
    /// input is quoted (the inputs are commands, or parts of one).
    unquoted: bool,
}

/// A template that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateError(pub(crate) String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

/// What a job is: where it runs in the template's sequence.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JobPlace {
    /// Its sequence number, from 1.
    pub(crate) seq: u64,
    /// Its slot, from 1.
    pub(crate) slot: usize,
    /// The number of jobs (0 when not known: only `{##}` and `{0#}` need it).
    pub(crate) total: u64,
    /// The number of slots.
    pub(crate) slots: usize,
}

/// The command of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rendered {
    /// The command line as GNU parallel builds it: what the shell runs, and
    /// what the job log and `--dry-run` show.
    pub(crate) line: String,
    /// The same words to start directly (program and arguments), when the
    /// line needs no shell.
    pub(crate) argv: Option<Vec<String>>,
}

/// Shell keywords and builtins: a line starting with one needs the shell.
/// Those that are programs too (`echo`, `printf`, `test`, `kill`, `pwd`,
/// ...) are here as well, since the shell runs its own, which may differ
/// (dash's and zsh's `echo` expand backslashes).
const SHELL_WORDS: &[&str] = &[
    "!",
    "case",
    "do",
    "done",
    "elif",
    "else",
    "esac",
    "fi",
    "for",
    "function",
    "if",
    "in",
    "select",
    "then",
    "until",
    "while",
    "time",
    "alias",
    "bg",
    "cd",
    "command",
    "eval",
    "exec",
    "exit",
    "export",
    "fg",
    "getopts",
    "hash",
    "jobs",
    "read",
    "readonly",
    "return",
    "set",
    "shift",
    "source",
    ".",
    ":",
    "times",
    "trap",
    "type",
    "ulimit",
    "umask",
    "unalias",
    "unset",
    "wait",
    "break",
    "continue",
    "local",
    "declare",
    "typeset",
    "let",
    "builtin",
    "echo",
    "printf",
    "test",
    "[",
    "true",
    "false",
    "kill",
    "pwd",
    "which",
    "print",
    "whence",
    "enable",
    "help",
    "logout",
    "mapfile",
    "readarray",
    "shopt",
    "disown",
    "dirs",
    "pushd",
    "popd",
    "suspend",
    "compgen",
    "complete",
    "caller",
    "history",
    "fc",
    "bind",
    "noglob",
    "nocorrect",
];

/// Builtins whose programs (coreutils', busybox's) print and exit as
/// every Bourne shell's builtin does for arguments that neither start with
/// `-` (`--help`, `-n`, `-e`) nor hold a `\` (dash's and ksh's `echo`
/// expand escapes): with such arguments the program may run instead.
const PLAIN_BUILTINS: &[&str] = &["echo", "true", "false"];

/// Whether `name` in `PATH` is a program of the system's own directories
/// (`/bin`, `/usr/bin`), not a user's program of the same name.
fn system_program(name: &str) -> bool {
    which(name)
        .and_then(|p| std::fs::canonicalize(p.parent()?).ok())
        .is_some_and(|d| d == std::path::Path::new("/bin") || d == std::path::Path::new("/usr/bin"))
}

/// Whether the kernel can start the program at `path` itself: a binary
/// or a `#!` script. A script without that line is run by the shell (as
/// `execvp` and GNU parallel do), so it must not be started directly.
fn starts_itself(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 4];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    head[..n].starts_with(b"\x7fELF") || head[..n].starts_with(b"#!")
}

/// Whether a job's argument is plain for [`PLAIN_BUILTINS`].
fn plain_arg(a: &str) -> bool {
    !a.starts_with('-') && !a.contains('\\')
}

/// Characters with a meaning to some Bourne shell.
fn is_meta(c: char) -> bool {
    matches!(
        c,
        '|' | '&'
            | ';'
            | '<'
            | '>'
            | '('
            | ')'
            | '$'
            | '`'
            | '\\'
            | '"'
            | '\''
            | '*'
            | '?'
            | '['
            | ']'
            | '#'
            | '~'
            | '{'
            | '}'
            | '\n'
            | '!'
            | '^'
    )
}

/// Quotes `s` for a shell as GNU parallel does.
pub(crate) fn quote(s: &str, quoting: Quoting) -> String {
    match quoting {
        Quoting::Sh => quote_sh(s),
        Quoting::Csh => quote_csh(s),
        Quoting::Rc => quote_rc(s),
    }
}

fn quote_sh(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '/');
    if s.is_empty() {
        return "''".into();
    }
    if s.chars().all(safe) {
        return s.to_string();
    }
    let q = format!("'{}'", s.replace('\'', "'\"'\"'"));
    // An input that starts or ends with a quote leaves an empty '' there.
    let q = q.strip_prefix("''").unwrap_or(&q);
    q.strip_suffix("''").unwrap_or(q).to_string()
}

/// Characters (t)csh and rc give a meaning to, in GNU parallel's list
/// (bytes 2-9 and 11-26, then the printable ones; every non-ASCII
/// character, where GNU parallel takes each byte past 0x81).
fn special_csh_rc(c: char) -> bool {
    matches!(c, '\u{2}'..='\u{9}' | '\u{b}'..='\u{1a}')
        || "\\#?`(){}[]^*<=>~|; \"!$&'".contains(c)
        || !c.is_ascii()
}

fn quote_csh(s: &str) -> String {
    if s.is_empty() {
        return "''".into();
    }
    let mut q = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c == '\n' {
            q.push_str("\"\\\n\"");
        } else {
            if special_csh_rc(c) {
                q.push('\\');
            }
            q.push(c);
        }
    }
    q
}

fn quote_rc(s: &str) -> String {
    if s.is_empty() {
        return "''".into();
    }
    let s = s.replace('\'', "''");
    let mut q = String::with_capacity(s.len() + 8);
    let mut run = false;
    for c in s.chars() {
        let special = c == '\n' || special_csh_rc(c);
        if special != run {
            q.push('\'');
            run = special;
        }
        q.push(c);
    }
    if run {
        q.push('\'');
    }
    q
}

impl Template {
    /// Parses the command words (joined by spaces, as GNU parallel does).
    /// `sources` is the number of input sources, for `{N}` checks; `plus`
    /// enables `--plus`'s strings; `shell` runs the jobs.
    pub(crate) fn parse(
        words: &[String],
        sources: usize,
        plus: bool,
        shell: &JobShell,
    ) -> Result<Template, TemplateError> {
        let line = words.join(" ");
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut any_repl = false;
        let mut meta = false;
        // Still in the command word: before the first whitespace or `=`.
        let mut in_first = true;
        let mut unquoted = false;
        let mut rest = line.as_str();
        let flush = |text: &mut String, pieces: &mut Vec<Piece>| {
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(text)));
            }
        };
        while let Some(c) = rest.chars().next() {
            if c == '{' {
                if let Some(end) = rest.find('}') {
                    let inner = &rest[1..end];
                    if inner.starts_with('=') {
                        return Err(TemplateError(format!(
                            "bad template: perl expressions ({{{inner}}}) are not supported"
                        )));
                    }
                    if let Some(p) = parse_repl(inner, sources, plus)? {
                        flush(&mut text, &mut pieces);
                        pieces.push(p);
                        any_repl = true;
                        unquoted |= in_first;
                        rest = &rest[end + 1..];
                        continue;
                    }
                }
            }
            in_first &= !c.is_whitespace() && c != '=';
            if c.is_whitespace() {
                // A newline ends a command: only the shell can run the line.
                meta |= c == '\n';
                flush(&mut text, &mut pieces);
                if let Some(Piece::Break(b)) = pieces.last_mut() {
                    b.push(c);
                } else {
                    pieces.push(Piece::Break(c.to_string()));
                }
            } else {
                // `=word` is a path lookup to zsh.
                meta |= is_meta(c) || c == '=' && text.is_empty();
                text.push(c);
            }
            rest = &rest[c.len_utf8()..];
        }
        flush(&mut text, &mut pieces);
        if !any_repl {
            match pieces.last_mut() {
                Some(Piece::Break(b)) => b.push(' '),
                Some(_) => pieces.push(Piece::Break(" ".into())),
                None => {}
            }
            pieces.push(Piece::Input(None, Part::Whole));
        }
        // The command word, when it is plain text.
        let first: Option<&str> = match pieces.as_slice() {
            [Piece::Text(t), Piece::Break(_), ..] | [Piece::Text(t)] => Some(t),
            _ => None,
        };
        let function = |w: &str| std::env::var_os(format!("BASH_FUNC_{w}%%")).is_some();
        let start = match first {
            _ if meta || unquoted || words.is_empty() || !shell.direct => Start::Shell,
            Some(w) if function(w) || w.contains('=') => Start::Shell,
            Some(w) if PLAIN_BUILTINS.contains(&w) && system_program(w) => Start::PlainArgs,
            Some(w) if !SHELL_WORDS.contains(&w) && which(w).is_some_and(|p| starts_itself(&p)) => {
                Start::Direct
            }
            _ => Start::Shell,
        };
        Ok(Template {
            pieces,
            start,
            quoting: shell.quoting,
            raw: words.is_empty(),
            unquoted,
        })
    }

    /// Whether `{%}` or `{0%}` appears.
    pub(crate) fn uses_slot(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Slot { .. }))
    }

    /// Whether the number of jobs is needed (`{##}`, `{0#}`).
    pub(crate) fn uses_total(&self) -> bool {
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::Total | Piece::Seq { padded: true }))
    }

    /// Whether jobs are run by the shell (whatever their arguments).
    #[cfg(test)]
    pub(crate) fn uses_shell(&self) -> bool {
        self.start == Start::Shell
    }

    /// The command of the job with `inputs` at `at`.
    pub(crate) fn render(&self, inputs: &[String], at: JobPlace) -> Rendered {
        if self.raw {
            return Rendered {
                line: inputs.join(" "),
                argv: None,
            };
        }
        let number = |p: &Piece| -> Option<String> {
            let padded = |n: u64, of: u64| format!("{n:0w$}", w = of.max(1).to_string().len());
            Some(match *p {
                Piece::Seq { padded: false } => at.seq.to_string(),
                Piece::Seq { padded: true } => padded(at.seq, at.total),
                Piece::Slot { padded: false } => at.slot.to_string(),
                Piece::Slot { padded: true } => padded(at.slot as u64, at.slots as u64),
                Piece::Total => at.total.to_string(),
                _ => return None,
            })
        };
        let quoted = |s: String| {
            if self.unquoted {
                s
            } else {
                quote(&s, self.quoting)
            }
        };
        let mut line = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => line.push_str(t),
                Piece::Break(b) => line.push_str(b),
                Piece::Input(None, part) => {
                    let all: Vec<String> = inputs.iter().map(|i| quoted(apply(i, *part))).collect();
                    line.push_str(&all.join(" "));
                }
                Piece::Input(Some(i), part) => {
                    line.push_str(&quoted(apply(input(inputs, *i), *part)))
                }
                other => line.push_str(&number(other).unwrap_or_default()),
            }
        }
        if self.start == Start::Shell {
            return Rendered { line, argv: None };
        }
        let mut words = Vec::new();
        let mut word: Option<String> = None;
        for p in &self.pieces {
            match p {
                Piece::Break(_) => words.extend(word.take()),
                Piece::Text(t) => word.get_or_insert_with(String::new).push_str(t),
                Piece::Input(Some(i), part) => word
                    .get_or_insert_with(String::new)
                    .push_str(&apply(input(inputs, *i), *part)),
                Piece::Input(None, part) => {
                    // Several inputs are several words, as the shell would
                    // split the quoted list.
                    for (k, i) in inputs.iter().enumerate() {
                        if k > 0 {
                            words.extend(word.take());
                        }
                        word.get_or_insert_with(String::new)
                            .push_str(&apply(i, *part));
                    }
                    if inputs.is_empty() {
                        word.get_or_insert_with(String::new);
                    }
                }
                other => word
                    .get_or_insert_with(String::new)
                    .push_str(&number(other).unwrap_or_default()),
            }
        }
        words.extend(word);
        if self.start == Start::PlainArgs && !words[1..].iter().all(|a| plain_arg(a)) {
            return Rendered { line, argv: None };
        }
        Rendered {
            line,
            argv: Some(words),
        }
    }
}

fn input(inputs: &[String], i: usize) -> &str {
    inputs.get(i).map(String::as_str).unwrap_or("")
}

/// `--plus`'s strings that take a Perl regular expression or a feature
/// this runner lacks: `Some(why)` when `inner` is one.
fn unsupported_plus(inner: &str) -> Option<&'static str> {
    let named = [
        "choose_k", "uniq", "slot", "host", "sshlogin", "agrp", "hgrp",
    ];
    if named.contains(&inner) {
        return Some("not supported");
    }
    let dynamic = match inner.chars().next() {
        Some(':') | Some('^') | Some(',') => inner.len() > 1,
        Some('#') => inner.len() > 1 && inner != "##",
        Some('%') => inner.len() > 1,
        Some('/') => inner.len() > 2 && inner[1..].contains('/'),
        _ => false,
    };
    dynamic.then_some(
        "a dynamic replacement string (a Perl regular expression or substring), not supported",
    )
}

/// `{N...}` or `{...}`: `Ok(None)` when `inner` is no replacement string.
fn parse_repl(inner: &str, sources: usize, plus: bool) -> Result<Option<Piece>, TemplateError> {
    let part = |s: &str| match s {
        "" => Some(Part::Whole),
        "." => Some(Part::NoExt(1)),
        "/" => Some(Part::Base),
        "//" => Some(Part::Dir),
        "/." => Some(Part::BaseNoExt(1)),
        ".." if plus => Some(Part::NoExt(2)),
        "..." if plus => Some(Part::NoExt(3)),
        "/.." if plus => Some(Part::BaseNoExt(2)),
        "/..." if plus => Some(Part::BaseNoExt(3)),
        "+/" if plus => Some(Part::DirPlus),
        "+." if plus => Some(Part::Ext(1)),
        "+.." if plus => Some(Part::Ext(2)),
        "+..." if plus => Some(Part::Ext(3)),
        _ => None,
    };
    match inner {
        "#" => return Ok(Some(Piece::Seq { padded: false })),
        "%" => return Ok(Some(Piece::Slot { padded: false })),
        "##" if plus => return Ok(Some(Piece::Total)),
        "0#" if plus => return Ok(Some(Piece::Seq { padded: true })),
        "0%" if plus => return Ok(Some(Piece::Slot { padded: true })),
        _ => {}
    }
    if let Some(p) = part(inner) {
        return Ok(Some(Piece::Input(None, p)));
    }
    let digits = inner.chars().take_while(char::is_ascii_digit).count();
    if plus {
        if let Some(why) = unsupported_plus(&inner[digits..]) {
            return Err(TemplateError(format!(
                "bad template: {{{inner}}}: {why} (see `seedcore exec --help`)"
            )));
        }
    }
    if digits == 0 {
        return Ok(None);
    }
    let Some(p) = part(&inner[digits..]) else {
        return Ok(None);
    };
    let n: usize = inner[..digits]
        .parse()
        .map_err(|_| TemplateError(format!("bad template: {{{inner}}}")))?;
    if n == 0 {
        return Err(TemplateError(
            "bad template: {0}: input sources are numbered from 1".into(),
        ));
    }
    if n > sources.max(1) {
        return Err(TemplateError(format!(
            "bad template: {{{inner}}} names input source {n}, but there {} {}",
            if sources == 1 { "is" } else { "are" },
            sources.max(1)
        )));
    }
    Ok(Some(Piece::Input(Some(n - 1), p)))
}

/// The `n`th last `.` of `s`.
fn nth_last_dot(s: &str, n: usize) -> Option<usize> {
    s.rmatch_indices('.').nth(n - 1).map(|(i, _)| i)
}

/// Applies a replacement string's part to an input, as GNU parallel's
/// Perl definition of it does (quoted beside each).
fn apply(s: &str, part: Part) -> String {
    // s:.*/::
    let base = |s: &str| s.rsplit('/').next().unwrap_or_default().to_string();
    // {.}: s:\.[^/.]*$::  {..}: s:\.[^/.]*\.[^/.]*$::  {...}: three.
    let no_ext = |s: &str, n: usize| match nth_last_dot(s, n) {
        Some(i) if !s[i..].contains('/') => s[..i].to_string(),
        _ => s.to_string(),
    };
    match part {
        Part::Whole => s.to_string(),
        Part::NoExt(n) => no_ext(s, n),
        Part::Base => base(s),
        Part::BaseNoExt(n) => no_ext(&base(s), n),
        Part::Dir => dirname(s),
        // s:/[^/]*$:: || s:.*$::
        Part::DirPlus => s.rfind('/').map_or(String::new(), |i| s[..i].to_string()),
        // {+.}: s:.*\.:: || s:.*$::
        // {+..}: s:.*\.([^/.]*\.[^/.]*)$:$1: || s:.*$::  {+...}: three.
        Part::Ext(n) => match nth_last_dot(s, n) {
            Some(i) if n == 1 || !s[i..].contains('/') => s[i + 1..].to_string(),
            _ => String::new(),
        },
    }
}

/// Perl's `File::Basename::dirname` on Unix: `a/b/` is `a`, `a` is `.`,
/// `/` is `/`.
fn dirname(s: &str) -> String {
    // fileparse: the directory (with its last `/`, `./` when none) and the rest.
    let fileparse = |s: &str| -> (String, String) {
        match s.rfind('/') {
            Some(i) => (s[..=i].to_string(), s[i + 1..].to_string()),
            None => ("./".into(), s.to_string()),
        }
    };
    // s{(.)/*\z}{$1}s: trailing slashes off, the first character kept.
    let strip = |d: &str| -> String {
        let t = d.trim_end_matches('/');
        if t.is_empty() {
            d[..d.len().min(1)].to_string()
        } else {
            t.to_string()
        }
    };
    let (mut dir, basename) = fileparse(s);
    dir = strip(&dir);
    if basename.is_empty() {
        dir = strip(&fileparse(&dir).0);
    }
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh() -> JobShell {
        JobShell::new("/bin/sh".into())
    }

    fn t(words: &[&str], sources: usize) -> Template {
        let w: Vec<String> = words.iter().map(|s| s.to_string()).collect();
        Template::parse(&w, sources, true, &sh()).unwrap()
    }

    fn at(seq: u64) -> JobPlace {
        JobPlace {
            seq,
            slot: 1,
            total: 1,
            slots: 1,
        }
    }

    fn line(words: &[&str], inputs: &[&str]) -> String {
        let i: Vec<String> = inputs.iter().map(|s| s.to_string()).collect();
        t(words, i.len()).render(&i, at(1)).line
    }

    #[test]
    fn replacement_strings_match_gnu_parallel() {
        // GNU parallel 20221122: parallel --dry-run echo {.} {/} {//} {/.} {#} {%} ::: dir.d/sub/file.tar.gz
        assert_eq!(
            line(
                &["echo", "{.}", "{/}", "{//}", "{/.}", "{#}", "{%}"],
                &["dir.d/sub/file.tar.gz"]
            ),
            "echo dir.d/sub/file.tar file.tar.gz dir.d/sub file.tar 1 1"
        );
        assert_eq!(line(&["echo", "{2}-{1}"], &["a", "1"]), "echo 1-a");
        assert_eq!(line(&["echo", "{1/.}"], &["x/y.c", "z"]), "echo y");
    }

    /// GNU parallel 20221122, `parallel -k --plus "printf '%s|' {} {.} {/}
    /// {//} {/.} {+/} {+.} {..} {...} {+..} {+...} {/..} {/...}; echo"`
    /// over these inputs, one per line.
    const GNU_PARTS: &[&str] = &[
        ".bashrc||.bashrc|.|||bashrc|.bashrc|.bashrc|||.bashrc|.bashrc|",
        "a/b/|a/b/||a||a/b||a/b/|a/b/|||||",
        "a/b/.c|a/b/|.c|a/b||a/b|c|a/b/.c|a/b/.c|||.c|.c|",
        "dir.d/sub/file.tar.gz|dir.d/sub/file.tar|file.tar.gz|dir.d/sub|file.tar|dir.d/sub|gz|dir.d/sub/file|dir.d/sub/file.tar.gz|tar.gz||file|file.tar.gz|",
        "nodir|nodir|nodir|.|nodir|||nodir|nodir|||nodir|nodir|",
        "/|/||/||||/|/|||||",
        "//|//||/||/||//|//|||||",
        "/a|/a|a|/|a|||/a|/a|||a|a|",
        "a//b|a//b|b|a|b|a/||a//b|a//b|||b|b|",
        "a b.c|a b|a b.c|.|a b||c|a b.c|a b.c|||a b.c|a b.c|",
        "|||.||||||||||",
        "x.|x|x.|.|x|||x.|x.|||x.|x.|",
        ".a.b|.a|.a.b|.|.a||b||.a.b|a.b|||.a.b|",
        "../x|../x|x|..|x|..|/x|../x|../x|||x|x|",
        "./y.tar.gz|./y.tar|y.tar.gz|.|y.tar|.|gz|./y|./y.tar.gz|tar.gz||y|y.tar.gz|",
        "a.b/c|a.b/c|c|a.b|c|a.b|b/c|a.b/c|a.b/c|||c|c|",
        "a.b.c.d/e.f.g.h|a.b.c.d/e.f.g|e.f.g.h|a.b.c.d|e.f.g|a.b.c.d|h|a.b.c.d/e.f|a.b.c.d/e|g.h|f.g.h|e.f|e|",
        "..|.|..|.|.||||..|.|||..|",
        ".||.|.||||.|.|||.|.|",
        "a..b|a.|a..b|.|a.||b|a|a..b|.b||a|a..b|",
        "/.x|/|.x|/|||x|/.x|/.x|||.x|.x|",
    ];

    #[test]
    fn every_part_edits_inputs_as_gnu_parallels_perl_does() {
        let parts = [
            Part::Whole,
            Part::NoExt(1),
            Part::Base,
            Part::Dir,
            Part::BaseNoExt(1),
            Part::DirPlus,
            Part::Ext(1),
            Part::NoExt(2),
            Part::NoExt(3),
            Part::Ext(2),
            Part::Ext(3),
            Part::BaseNoExt(2),
            Part::BaseNoExt(3),
        ];
        for row in GNU_PARTS {
            let want: Vec<&str> = row.split('|').collect();
            let input = want[0];
            for (k, part) in parts.iter().enumerate() {
                assert_eq!(apply(input, *part), want[k], "{part:?} of {input:?}");
            }
        }
    }

    #[test]
    fn plus_strings_need_plus_and_take_positions() {
        let w = |s: &str| vec![s.to_string()];
        // Without --plus they are text (and the input is appended).
        let plain = Template::parse(&w("echo {+/} {..}"), 1, false, &sh()).unwrap();
        assert_eq!(
            plain.render(&["a/b.c.d".into()], at(1)).line,
            "echo {+/} {..} a/b.c.d"
        );
        // parallel --plus echo {1+/} {2..} {2+.} {1/..} ::: a/b.c ::: x.y.z
        assert_eq!(
            line(
                &["echo", "{1+/}", "{2..}", "{2+.}", "{1/..}"],
                &["a/b.c", "x.y.z"]
            ),
            "echo a x z b.c"
        );
        // {##} the number of jobs, {0#} and {0%} padded to its width and
        // the slots'.
        let tpl = t(&["echo", "{##}", "{0#}", "{0%}"], 1);
        assert!(tpl.uses_total() && tpl.uses_slot());
        let place = JobPlace {
            seq: 7,
            slot: 3,
            total: 120,
            slots: 12,
        };
        assert_eq!(tpl.render(&["a".into()], place).line, "echo 120 007 03");
    }

    #[test]
    fn plus_strings_this_runner_lacks_are_refused_by_name() {
        let w = |s: &str| vec![s.to_string()];
        for bad in [
            "{:-x}",
            "{:2}",
            "{:1:2}",
            "{#a}",
            "{##a}",
            "{%a}",
            "{%%a}",
            "{/a/b}",
            "{//a/b}",
            "{^a}",
            "{,,a}",
            "{choose_k}",
            "{uniq}",
            "{slot}",
            "{host}",
            "{2:-x}",
        ] {
            let e = Template::parse(&w(&format!("echo {bad}")), 2, true, &sh()).unwrap_err();
            assert!(e.0.contains(bad), "{bad}: {e}");
            // Without --plus GNU parallel leaves them as text.
            assert!(Template::parse(&w(&format!("echo {bad}")), 2, false, &sh()).is_ok());
        }
    }

    #[test]
    fn quoting_matches_gnu_parallel() {
        assert_eq!(line(&["echo", "{}"], &["a b"]), "echo 'a b'");
        assert_eq!(line(&["echo", "{}"], &["it's"]), "echo 'it'\"'\"'s'");
        assert_eq!(line(&["echo", "{}"], &["$HOME"]), "echo '$HOME'");
        assert_eq!(line(&["echo", "{}"], &["x;y"]), "echo 'x;y'");
        assert_eq!(line(&["echo", "{}"], &[""]), "echo ''");
        assert_eq!(line(&["echo", "{}"], &["a=b"]), "echo 'a=b'");
        // parallel --dry-run echo ::: "'a'" "a'": no empty '' at the ends.
        assert_eq!(line(&["echo", "{}"], &["'a'"]), "echo \"'\"'a'\"'\"");
        assert_eq!(line(&["echo", "{}"], &["a'"]), "echo 'a'\"'\"");
        assert_eq!(line(&["echo", "{}"], &["a\r"]), "echo 'a\r'");
    }

    #[test]
    fn csh_and_rc_get_their_own_quoting() {
        // GNU parallel's shell_quote_scalar_csh and _rc.
        assert_eq!(quote("a b'c", Quoting::Csh), "a\\ b\\'c");
        assert_eq!(quote("x=$y!", Quoting::Csh), "x\\=\\$y\\!");
        assert_eq!(quote("a\nb", Quoting::Csh), "a\"\\\n\"b");
        assert_eq!(quote("", Quoting::Csh), "''");
        assert_eq!(quote("it's", Quoting::Rc), "it''''s");
        assert_eq!(quote("a b;c", Quoting::Rc), "a' 'b';'c");
        assert_eq!(quote("plain-1.2", Quoting::Rc), "plain-1.2");
    }

    #[test]
    fn the_line_keeps_the_templates_own_whitespace() {
        // GNU parallel 20221122: parallel --dry-run $'\n echo start {}\n echo end {}' ::: a
        assert_eq!(
            line(&["\n echo start {}\n echo end {}\n"], &["a"]),
            "\n echo start a\n echo end a\n"
        );
        assert_eq!(
            line(&["printf '%s  |\t%s\\n' {} x"], &["a b"]),
            "printf '%s  |\t%s\\n' 'a b' x"
        );
        // Separate words are joined by one space, as GNU parallel joins them.
        assert_eq!(line(&["echo", "{}", "x"], &["a"]), "echo a x");
        // parallel --dry-run 'echo a  ' ::: b
        assert_eq!(line(&["echo a  "], &["b"]), "echo a   b");
        // A comment line stays a line of its own.
        assert!(t(&["# say it\necho {}"], 1).uses_shell());
        // Two commands on two lines are two commands.
        assert!(t(&["echo {}\necho two"], 1).uses_shell());
        assert!(t(&["cat {}\ncat x"], 1).uses_shell());
    }

    #[test]
    fn a_program_without_a_shebang_line_goes_to_the_shell() {
        let dir = std::env::temp_dir().join(format!("seedcore-noshebang-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("ns");
        std::fs::write(&script, "echo hi $1\n").unwrap();
        let with_line = dir.join("sb");
        std::fs::write(&with_line, "#!/bin/sh\necho hi $1\n").unwrap();
        for p in [&script, &with_line] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let ns = script.to_str().unwrap();
        let sb = with_line.to_str().unwrap();
        assert!(t(&[ns, "{}"], 1).uses_shell());
        assert!(!t(&[sb, "{}"], 1).uses_shell());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_replacement_string_in_the_command_word_leaves_every_input_unquoted() {
        // GNU parallel 20221122: parallel --dry-run {} x ::: 'echo a'
        assert_eq!(line(&["{}", "x"], &["echo a"]), "echo a x");
        assert_eq!(line(&["{1}", "{2}"], &["echo", "a  b"]), "echo a  b");
        assert_eq!(line(&["./my_{}"], &["a  b"]), "./my_a  b");
        assert!(t(&["{}"], 1).uses_shell());
        // After `=` or a space the command word is over: inputs are quoted.
        assert_eq!(line(&["X={}", "env"], &["a b"]), "X='a b' env");
        assert_eq!(line(&["echo", "{}"], &["a b"]), "echo 'a b'");
    }

    #[test]
    fn no_replacement_string_appends_the_inputs() {
        assert_eq!(line(&["echo"], &["a", "1"]), "echo a 1");
        let i = vec!["a b".to_string()];
        assert_eq!(
            t(&["cat", "x"], 1).render(&i, at(1)).argv,
            Some(vec!["cat".into(), "x".into(), "a b".into()])
        );
    }

    #[test]
    fn plain_programs_run_directly_and_shell_syntax_and_builtins_go_to_the_shell() {
        assert!(!t(&["cat", "{}"], 1).uses_shell());
        assert!(!t(&["cut", "-d,", "-f1", "{}"], 1).uses_shell());
        assert!(t(&["cat {} | wc"], 1).uses_shell());
        assert!(t(&["exit", "{}"], 1).uses_shell());
        // Builtins that are programs too: the shell's own runs...
        assert!(t(&["printf", "%s", "{}"], 1).uses_shell());
        assert!(t(&["kill", "{}"], 1).uses_shell());
        // ...but for echo, true and false, the program where the
        // arguments give it nothing to do otherwise (no option, no escape).
        if system_program("echo") {
            let argv = |w: &[&str], i: &str| t(w, 1).render(&[i.into()], at(1)).argv;
            assert_eq!(
                argv(&["echo"], "a b"),
                Some(vec!["echo".into(), "a b".into()])
            );
            assert_eq!(argv(&["echo", "x", "{}"], "-n"), None);
            assert_eq!(argv(&["echo", "{}"], "a\\tb"), None);
            assert_eq!(argv(&["echo", "-e", "{}"], "a"), None);
            assert_eq!(argv(&["true"], "--help"), None);
        }
        assert!(t(&["FOO=1", "env"], 1).uses_shell());
        assert!(t(&["cat", "=x"], 1).uses_shell());
        assert!(t(&[], 1).uses_shell());
        assert!(t(&["cat", "$HOME"], 1).uses_shell());
        assert!(t(&["{}", "x"], 1).uses_shell());
        assert!(t(&["seedcore-no-such-program", "{}"], 1).uses_shell());
        // Not a Bourne shell: always the shell.
        let fish = JobShell::new("/usr/bin/fish".into());
        let w = vec!["cat".to_string(), "{}".into()];
        assert!(Template::parse(&w, 1, false, &fish).unwrap().uses_shell());
        // The logged line is GNU parallel's, run directly or not.
        let r = t(&["cut", "-d,", "-f1", "{}"], 1).render(&["a b".into()], at(1));
        assert_eq!(r.line, "cut -d, -f1 'a b'");
        assert_eq!(
            r.argv,
            Some(vec!["cut".into(), "-d,".into(), "-f1".into(), "a b".into()])
        );
        // No command: the input is the command, unquoted.
        let i = vec!["echo a | tr a b".to_string()];
        assert_eq!(t(&[], 1).render(&i, at(1)).line, "echo a | tr a b");
    }

    #[test]
    fn bad_templates_are_errors() {
        let w = |s: &str| vec![s.to_string()];
        let parse = |s: &str, n| Template::parse(&w(s), n, false, &sh());
        assert!(parse("echo {0}", 1).is_err());
        assert!(parse("echo {3}", 2).is_err());
        assert!(parse("echo {= s/a/b/ =}", 1).is_err());
        assert!(parse("awk {print}", 1).is_ok());
    }
}
