//! The inputs of `seedcore exec`: `:::` groups (several make a cartesian
//! product, the last group varying fastest), `:::+` groups linked to the
//! group before them (taken pairwise, cut to the shorter), `::::` files
//! of lines (`::::+` linked likewise; `-` is stdin), or, with none of
//! these, the lines of stdin, read as they come.
//!
//! As in GNU parallel, a line ends at `\n` alone (a `\r` before it stays
//! in the input), a `:::` value holding newlines is that many values, and
//! a `:::` with no values is one empty value.

use std::io::{self, BufRead};

/// The lines of `r`, each without its `\n` and nothing else.
fn lines(r: impl BufRead) -> impl Iterator<Item = io::Result<String>> {
    r.split(b'\n').map(|l| {
        String::from_utf8(l?)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a line is not valid UTF-8"))
    })
}

/// One input source after linking: rows of one or more values.
#[derive(Debug, Clone, Default)]
struct Source {
    rows: Vec<Vec<String>>,
}

/// The command words and the input sources of a command line.
#[derive(Debug)]
pub(crate) struct Parsed {
    /// The command template's words (before the first separator).
    pub(crate) command: Vec<String>,
    sources: Vec<Source>,
    /// No separator at all: the inputs are stdin's lines.
    stdin: bool,
}

/// What the command line asks for that cannot be done.
#[derive(Debug)]
pub(crate) struct InputError(pub(crate) String);

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

fn read_lines(path: &str) -> Result<Vec<String>, InputError> {
    let got = if path == "-" {
        lines(io::stdin().lock()).collect()
    } else {
        std::fs::File::open(path).and_then(|f| lines(io::BufReader::new(f)).collect())
    };
    got.map_err(|e| InputError(format!("cannot read input file {path}: {e}")))
}

impl Parsed {
    /// Splits `rest` (everything after the options) into the command and
    /// its input sources.
    pub(crate) fn parse(rest: &[String]) -> Result<Parsed, InputError> {
        let is_sep = |s: &str| matches!(s, ":::" | ":::+" | "::::" | "::::+");
        let cut = rest.iter().position(|s| is_sep(s)).unwrap_or(rest.len());
        let command = rest[..cut].to_vec();
        let mut sources: Vec<Source> = Vec::new();
        let mut i = cut;
        while i < rest.len() {
            let sep = rest[i].as_str();
            let end = rest[i + 1..]
                .iter()
                .position(|s| is_sep(s))
                .map(|k| i + 1 + k)
                .unwrap_or(rest.len());
            let values = &rest[i + 1..end];
            let mut groups: Vec<Vec<String>> = Vec::new();
            if sep.starts_with("::::") {
                if values.is_empty() {
                    return Err(InputError(format!("{sep} needs a file name")));
                }
                for f in values {
                    groups.push(read_lines(f)?);
                }
            } else if values.is_empty() {
                // GNU parallel: a `:::` with no values gives one empty value.
                groups.push(vec![String::new()]);
            } else {
                groups.push(
                    values
                        .iter()
                        .flat_map(|v| v.split('\n').map(str::to_string))
                        .collect(),
                );
            }
            let linked = sep.ends_with('+');
            for (k, g) in groups.into_iter().enumerate() {
                let rows: Vec<Vec<String>> = g.into_iter().map(|v| vec![v]).collect();
                match sources.last_mut() {
                    Some(prev) if linked && k == 0 => {
                        prev.rows.truncate(rows.len());
                        for (r, v) in prev.rows.iter_mut().zip(rows) {
                            r.extend(v);
                        }
                    }
                    _ if linked && k == 0 => {
                        return Err(InputError(format!(
                            "{sep} has no input source before it to link to"
                        )))
                    }
                    _ => sources.push(Source { rows }),
                }
            }
            i = end;
        }
        Ok(Parsed {
            command,
            stdin: cut == rest.len(),
            sources,
        })
    }

    /// How many values each job has (`{N}` goes up to it).
    pub(crate) fn width(&self) -> usize {
        if self.stdin {
            1
        } else {
            self.sources
                .iter()
                .map(|s| s.rows.first().map_or(1, Vec::len))
                .sum()
        }
    }

    /// How many jobs there will be, when known in advance.
    pub(crate) fn count(&self) -> Option<u64> {
        if self.stdin {
            None
        } else {
            Some(self.sources.iter().map(|s| s.rows.len() as u64).product())
        }
    }

    /// The jobs' inputs, in order.
    pub(crate) fn into_jobs(self) -> Box<dyn Iterator<Item = Result<Vec<String>, InputError>>> {
        if self.stdin {
            let lines = lines(io::BufReader::new(io::stdin()));
            return Box::new(lines.map(|l| {
                l.map(|v| vec![v])
                    .map_err(|e| InputError(format!("cannot read stdin: {e}")))
            }));
        }
        let sources = self.sources;
        if sources.iter().any(|s| s.rows.is_empty()) {
            return Box::new(std::iter::empty());
        }
        // An odometer over the sources, the last one turning fastest.
        let mut at = vec![0usize; sources.len()];
        let mut done = false;
        Box::new(std::iter::from_fn(move || {
            if done {
                return None;
            }
            let job: Vec<String> = sources
                .iter()
                .zip(&at)
                .flat_map(|(s, &k)| s.rows[k].iter().cloned())
                .collect();
            done = true;
            for d in (0..sources.len()).rev() {
                at[d] += 1;
                if at[d] < sources[d].rows.len() {
                    done = false;
                    break;
                }
                at[d] = 0;
            }
            Some(Ok(job))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(args: &[&str]) -> Vec<Vec<String>> {
        let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Parsed::parse(&a)
            .unwrap()
            .into_jobs()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn groups_make_a_cartesian_product_and_linked_groups_pair_up() {
        assert_eq!(
            jobs(&["echo", ":::", "a", "b", ":::", "1", "2"]),
            [["a", "1"], ["a", "2"], ["b", "1"], ["b", "2"]]
        );
        assert_eq!(
            jobs(&["echo", ":::", "a", "b", "c", ":::+", "1", "2"]),
            [["a", "1"], ["b", "2"]]
        );
        assert_eq!(
            jobs(&[":::", "x", ":::", "a", "b", ":::+", "1", "2"]),
            [["x", "a", "1"], ["x", "b", "2"]]
        );
    }

    #[test]
    fn lines_end_at_newline_alone_and_values_split_at_newlines() {
        // printf 'a\r\nb\n\nc' | parallel echo: a\r, b, an empty line, c.
        let got: Vec<String> = lines(&b"a\r\nb\n\nc"[..]).map(Result::unwrap).collect();
        assert_eq!(got, ["a\r", "b", "", "c"]);
        assert_eq!(lines(&b"x\n"[..]).count(), 1);
        assert!(lines(&b"\xff\n"[..]).next().unwrap().is_err());
        // parallel echo ::: a b ::: : the empty group is one empty value.
        assert_eq!(
            jobs(&["echo", ":::", "a", "b", ":::"]),
            [["a", ""], ["b", ""]]
        );
        assert_eq!(
            jobs(&["echo", ":::", "a", ":::", ":::", "b"]),
            [["a", "", "b"]]
        );
        // parallel echo ::: $'a\n' b: three jobs, a, an empty one, b.
        assert_eq!(jobs(&["echo", ":::", "a\n", "b"]), [["a"], [""], ["b"]]);
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let a = vec![
            "echo".to_string(),
            "::::".into(),
            "/nonexistent/seedcore".into(),
        ];
        assert!(Parsed::parse(&a)
            .unwrap_err()
            .0
            .contains("/nonexistent/seedcore"));
    }
}
