//! Plain-text tables with aligned columns, for the bench report and the demo
//! summary. No colours, no box drawing: the output reads the same in a terminal,
//! a log file and a test's captured stdout.

/// Renders `header` and `rows` as aligned columns separated by two spaces, with
/// a rule under the header. Columns whose index is in `right` are right-aligned
/// (numbers); the others are left-aligned.
pub(crate) fn render(header: &[&str], rows: &[Vec<String>], right: &[usize]) -> String {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        assert_eq!(row.len(), cols, "table row has the wrong number of cells");
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
        let parts: Vec<String> = cells
            .zip(&widths)
            .enumerate()
            .map(|(col, (cell, &w))| {
                if right.contains(&col) {
                    format!("{cell:>w$}")
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        let mut s = parts.join("  ").trim_end().to_string();
        s.push('\n');
        s
    };
    let mut out = line(&mut header.iter().copied());
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&rule.join("  "));
    out.push('\n');
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// Like [`render`] (every column left-aligned), with the cells of each
/// column that has a width wrapped at word boundaries onto as many lines as
/// they need, so that the table keeps to a known width.
pub(crate) fn render_wrapped(
    header: &[&str],
    rows: &[Vec<String>],
    widths: &[Option<usize>],
) -> String {
    let mut lines: Vec<Vec<String>> = Vec::new();
    for row in rows {
        let wrapped: Vec<Vec<String>> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| match w {
                Some(w) => wrap(cell, *w),
                None => vec![cell.clone()],
            })
            .collect();
        let height = wrapped.iter().map(Vec::len).max().unwrap_or(1);
        for i in 0..height {
            lines.push(
                wrapped
                    .iter()
                    .map(|c| c.get(i).cloned().unwrap_or_default())
                    .collect(),
            );
        }
    }
    render(header, &lines, &[])
}

/// Splits `text` into lines of at most `width` characters at spaces (a
/// longer word is cut).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word = word.to_string();
        while word.chars().count() > width {
            if !line.is_empty() {
                out.push(std::mem::take(&mut line));
            }
            let head: String = word.chars().take(width).collect();
            word = word.chars().skip(width).collect();
            out.push(head);
        }
        let needed = line.chars().count() + usize::from(!line.is_empty()) + word.chars().count();
        if needed > width && !line.is_empty() {
            out.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() || out.is_empty() {
        out.push(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{render, render_wrapped};

    #[test]
    fn wrapped_cells_keep_their_column_width() {
        let t = render_wrapped(
            &["a", "b"],
            &[vec!["x".into(), "one two three four".into()]],
            &[None, Some(9)],
        );
        assert_eq!(t, "a  b\n-  -------\nx  one two\n   three\n   four\n");
    }

    #[test]
    fn aligns_columns() {
        let t = render(
            &["name", "n"],
            &[
                vec!["a".into(), "1".into()],
                vec!["long".into(), "100".into()],
            ],
            &[1],
        );
        assert_eq!(t, "name    n\n----  ---\na       1\nlong  100\n");
    }
}
