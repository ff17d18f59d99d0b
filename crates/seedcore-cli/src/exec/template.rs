//! The command template: GNU parallel's replacement strings and quoting.
//!
//! `{}` the input (all inputs, space-separated, when there are several),
//! `{.}` without its extension, `{/}` its basename, `{//}` its dirname
//! (`.` when it has none), `{/.}` its basename without extension, `{#}`
//! the job's sequence number, `{%}` its slot, `{N}` (and `{N.}`, `{N/}`,
//! `{N//}`, `{N/.}`) input source N. A template without replacement
//! strings gets ` {}` appended, as in GNU parallel. Anything else in
//! braces is left as it is.
//!
//! Substituted inputs are shell-quoted as GNU parallel quotes them (a
//! word of `[-_.+a-zA-Z0-9/]` stays as it is, anything else is put in
//! single quotes), and the line is run by `sh -c`. When the template has
//! no shell syntax at all (no quotes, `$`, pipes, redirections, globs,
//! `~`, `#`, assignments or shell keywords and builtins), the same words
//! are started directly, without a shell: the result is the same and the
//! job starts faster.

use std::fmt;

/// What a replacement string takes of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Whole,
    NoExt,
    Base,
    Dir,
    BaseNoExt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// An input: `None` for all of them (`{}`), `Some(i)` for source `i`
    /// (0-based).
    Input(Option<usize>, Part),
    Seq,
    Slot,
    /// Whitespace between words.
    Break,
}

/// A parsed template.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    pieces: Vec<Piece>,
    /// Whether the line needs `sh -c`.
    shell: bool,
    /// Whether `{%}` appears.
    uses_slot: bool,
    /// No command: each input line is itself the command.
    raw: bool,
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

/// The command of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rendered {
    /// Run directly: program and arguments.
    Direct(Vec<String>),
    /// Run with `sh -c`.
    Shell(String),
}

impl Rendered {
    /// The command as a shell line (the joblog's and `--dry-run`'s form).
    pub(crate) fn line(&self) -> String {
        match self {
            Rendered::Shell(s) => s.clone(),
            Rendered::Direct(words) => words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" "),
        }
    }
}

/// Shell keywords and builtins without a program of their own: a line
/// starting with one needs the shell.
const SHELL_WORDS: &[&str] = &[
    "!", "case", "do", "done", "elif", "else", "esac", "fi", "for", "function", "if", "in",
    "select", "then", "until", "while", "time", "alias", "bg", "cd", "command", "eval", "exec",
    "exit", "export", "fg", "getopts", "hash", "jobs", "read", "readonly", "return", "set",
    "shift", "source", ".", ":", "times", "trap", "type", "ulimit", "umask", "unalias", "unset",
    "wait", "break", "continue", "local", "declare", "typeset", "let", "builtin",
];

/// Characters with a meaning to the shell.
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
    )
}

/// Quotes `s` for `sh` as GNU parallel does.
pub(crate) fn quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '/');
    if !s.is_empty() && s.chars().all(safe) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\"'\"'"))
}

impl Template {
    /// Parses the command words (joined by spaces, as GNU parallel does).
    /// `sources` is the number of input sources, for `{N}` checks.
    pub(crate) fn parse(words: &[String], sources: usize) -> Result<Template, TemplateError> {
        let line = words.join(" ");
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut any_repl = false;
        let mut uses_slot = false;
        let mut meta = false;
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
                    if let Some(p) = parse_repl(inner, sources)? {
                        flush(&mut text, &mut pieces);
                        uses_slot |= p == Piece::Slot;
                        pieces.push(p);
                        any_repl = true;
                        rest = &rest[end + 1..];
                        continue;
                    }
                }
            }
            if c.is_whitespace() {
                flush(&mut text, &mut pieces);
                if !matches!(pieces.last(), Some(Piece::Break) | None) {
                    pieces.push(Piece::Break);
                }
            } else {
                meta |= is_meta(c);
                text.push(c);
            }
            rest = &rest[c.len_utf8()..];
        }
        flush(&mut text, &mut pieces);
        if !any_repl {
            if !matches!(pieces.last(), Some(Piece::Break) | None) {
                pieces.push(Piece::Break);
            }
            pieces.push(Piece::Input(None, Part::Whole));
        }
        while matches!(pieces.last(), Some(Piece::Break)) {
            pieces.pop();
        }
        // A first word that the shell itself runs, or an assignment.
        let first: String = pieces
            .iter()
            .take_while(|p| !matches!(p, Piece::Break))
            .map(|p| match p {
                Piece::Text(t) => t.as_str(),
                _ => "\u{0}",
            })
            .collect();
        let shell = meta
            || words.is_empty()
            || SHELL_WORDS.contains(&first.as_str())
            || first.contains('=');
        Ok(Template {
            pieces,
            shell,
            uses_slot,
            raw: words.is_empty(),
        })
    }

    /// Whether `{%}` appears.
    pub(crate) fn uses_slot(&self) -> bool {
        self.uses_slot
    }

    /// Whether jobs are run by `sh -c`.
    #[cfg(test)]
    pub(crate) fn uses_shell(&self) -> bool {
        self.shell
    }

    /// The command of job `seq` with `inputs` on slot `slot`.
    pub(crate) fn render(&self, inputs: &[String], seq: u64, slot: usize) -> Rendered {
        if self.raw {
            return Rendered::Shell(inputs.join(" "));
        }
        if self.shell {
            let mut s = String::new();
            for p in &self.pieces {
                match p {
                    Piece::Text(t) => s.push_str(t),
                    Piece::Break => s.push(' '),
                    Piece::Seq => s.push_str(&seq.to_string()),
                    Piece::Slot => s.push_str(&slot.to_string()),
                    Piece::Input(None, part) => {
                        let all: Vec<String> =
                            inputs.iter().map(|i| quote(&apply(i, *part))).collect();
                        s.push_str(&all.join(" "));
                    }
                    Piece::Input(Some(i), part) => {
                        s.push_str(&quote(&apply(input(inputs, *i), *part)))
                    }
                }
            }
            return Rendered::Shell(s);
        }
        let mut words = Vec::new();
        let mut word: Option<String> = None;
        for p in &self.pieces {
            match p {
                Piece::Break => words.extend(word.take()),
                Piece::Text(t) => word.get_or_insert_with(String::new).push_str(t),
                Piece::Seq => word
                    .get_or_insert_with(String::new)
                    .push_str(&seq.to_string()),
                Piece::Slot => word
                    .get_or_insert_with(String::new)
                    .push_str(&slot.to_string()),
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
            }
        }
        words.extend(word);
        Rendered::Direct(words)
    }
}

fn input(inputs: &[String], i: usize) -> &str {
    inputs.get(i).map(String::as_str).unwrap_or("")
}

/// `{N...}` or `{...}`: `Ok(None)` when `inner` is no replacement string.
fn parse_repl(inner: &str, sources: usize) -> Result<Option<Piece>, TemplateError> {
    let part = |s: &str| match s {
        "" => Some(Part::Whole),
        "." => Some(Part::NoExt),
        "/" => Some(Part::Base),
        "//" => Some(Part::Dir),
        "/." => Some(Part::BaseNoExt),
        _ => None,
    };
    match inner {
        "#" => return Ok(Some(Piece::Seq)),
        "%" => return Ok(Some(Piece::Slot)),
        _ => {}
    }
    if let Some(p) = part(inner) {
        return Ok(Some(Piece::Input(None, p)));
    }
    let digits = inner.chars().take_while(char::is_ascii_digit).count();
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

/// Applies a replacement string's part to an input.
fn apply(s: &str, part: Part) -> String {
    let base = |s: &str| -> String {
        let t = s.trim_end_matches('/');
        match t.rfind('/') {
            Some(i) => t[i + 1..].to_string(),
            None if t.is_empty() && !s.is_empty() => "/".into(),
            None => t.to_string(),
        }
    };
    let no_ext = |s: &str| -> String {
        // Only an extension of the last path component, and not a
        // leading dot (`.bashrc` has none).
        let start = s.rfind('/').map(|i| i + 1).unwrap_or(0);
        match s[start..].rfind('.') {
            Some(i) if i > 0 => s[..start + i].to_string(),
            _ => s.to_string(),
        }
    };
    match part {
        Part::Whole => s.to_string(),
        Part::NoExt => no_ext(s),
        Part::Base => base(s),
        Part::BaseNoExt => no_ext(&base(s)),
        Part::Dir => {
            let t = s.trim_end_matches('/');
            match t.rfind('/') {
                Some(0) => "/".into(),
                Some(i) => t[..i].to_string(),
                None if s.starts_with('/') => "/".into(),
                None => ".".into(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(words: &[&str], sources: usize) -> Template {
        let w: Vec<String> = words.iter().map(|s| s.to_string()).collect();
        Template::parse(&w, sources).unwrap()
    }

    fn line(words: &[&str], inputs: &[&str]) -> String {
        let i: Vec<String> = inputs.iter().map(|s| s.to_string()).collect();
        t(words, i.len()).render(&i, 1, 1).line()
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
        assert_eq!(
            line(&["echo", "{.}", "{/}", "{//}", "{/.}"], &["nodir"]),
            "echo nodir nodir . nodir"
        );
        assert_eq!(line(&["echo", "{2}-{1}"], &["a", "1"]), "echo 1-a");
        assert_eq!(line(&["echo", "{1/.}"], &["x/y.c", "z"]), "echo y");
    }

    #[test]
    fn quoting_matches_gnu_parallel() {
        assert_eq!(line(&["echo", "{}"], &["a b"]), "echo 'a b'");
        assert_eq!(line(&["echo", "{}"], &["it's"]), "echo 'it'\"'\"'s'");
        assert_eq!(line(&["echo", "{}"], &["$HOME"]), "echo '$HOME'");
        assert_eq!(line(&["echo", "{}"], &["x;y"]), "echo 'x;y'");
        assert_eq!(line(&["echo", "{}"], &[""]), "echo ''");
        assert_eq!(line(&["echo", "{}"], &["a=b"]), "echo 'a=b'");
    }

    #[test]
    fn no_replacement_string_appends_the_inputs() {
        assert_eq!(line(&["echo"], &["a", "1"]), "echo a 1");
        let i = vec!["a b".to_string()];
        assert_eq!(
            t(&["echo", "x"], 1).render(&i, 1, 1),
            Rendered::Direct(vec!["echo".into(), "x".into(), "a b".into()])
        );
    }

    #[test]
    fn plain_templates_run_directly_and_shell_syntax_goes_to_sh() {
        assert!(!t(&["echo", "{}"], 1).uses_shell());
        assert!(t(&["echo {} | wc"], 1).uses_shell());
        assert!(t(&["exit", "{}"], 1).uses_shell());
        assert!(t(&["FOO=1", "env"], 1).uses_shell());
        assert!(t(&[], 1).uses_shell());
        assert!(t(&["echo", "$HOME"], 1).uses_shell());
        // No command: the input is the command, unquoted.
        let i = vec!["echo a | tr a b".to_string()];
        assert_eq!(t(&[], 1).render(&i, 1, 1).line(), "echo a | tr a b");
    }

    #[test]
    fn bad_templates_are_errors() {
        let w = |s: &str| vec![s.to_string()];
        assert!(Template::parse(&w("echo {0}"), 1).is_err());
        assert!(Template::parse(&w("echo {3}"), 2).is_err());
        assert!(Template::parse(&w("echo {= s/a/b/ =}"), 1).is_err());
        assert!(Template::parse(&w("awk {print}"), 1).is_ok());
    }
}
