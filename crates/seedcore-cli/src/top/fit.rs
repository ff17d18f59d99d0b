//! Fitting text into the room there is: a name shortened with an ellipsis
//! at its end, the longest of a title's wordings that fits, figures flowed
//! into lines between items, and table columns kept by rank. Nothing here
//! cuts a word without marking it, which ratatui does to text that
//! overflows its area.

use ratatui::layout::Constraint;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row, Table};

/// The mark of shortened text.
pub(crate) const ELLIPSIS: char = '…';

/// Width of `s` in terminal columns.
pub(crate) fn width(s: &str) -> usize {
    Span::raw(s).width()
}

/// `s` in at most `w` columns: whole when it fits, else its beginning and
/// an ellipsis.
pub(crate) fn ellipsize(s: &str, w: usize) -> String {
    if width(s) <= w {
        return s.to_owned();
    }
    if w == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    let mut buf = [0; 4];
    for ch in s.chars() {
        let cw = width(ch.encode_utf8(&mut buf));
        if used + cw + 1 > w {
            break;
        }
        out.push(ch);
        used += cw;
    }
    // An ellipsis after a space or a separator would read as a gap.
    while out.ends_with([' ', ',', '·', '-']) {
        out.pop();
    }
    out.push(ELLIPSIS);
    out
}

/// The first of `variants` (most complete first) that fits in `w` columns.
pub(crate) fn first_fitting<S: AsRef<str>>(variants: &[S], w: usize) -> Option<String> {
    variants
        .iter()
        .map(AsRef::as_ref)
        .find(|v| width(v) <= w)
        .map(str::to_owned)
}

/// A block title from the first of `variants` that fits a block `w` wide
/// (two columns go to the corners), padded by a space each side where there
/// is room; `None` when none fits.
pub(crate) fn title(variants: &[String], w: usize) -> Option<String> {
    let room = w.saturating_sub(2);
    if let Some(t) = first_fitting(variants, room.saturating_sub(2)) {
        return Some(format!(" {t} "));
    }
    first_fitting(variants, room)
}

/// `items` flowed into lines at most `w` wide, `sep` between two on a line,
/// breaking only between items: the first line starts with `label` (padded
/// to `indent` columns), the others with as many spaces. An item wider than
/// a line by itself is ellipsized.
pub(crate) fn flow(
    label: &str,
    items: &[String],
    sep: &'static str,
    indent: usize,
    w: usize,
    label_style: Style,
) -> Vec<Line<'static>> {
    let sep_w = width(sep);
    let room = w.saturating_sub(indent);
    let mut lines = Vec::new();
    let mut spans = vec![Span::styled(format!("{label:<indent$}"), label_style)];
    let mut used = 0;
    for item in items {
        let item = ellipsize(item, room);
        let iw = width(&item);
        if used > 0 && used + sep_w + iw > room {
            lines.push(Line::from(std::mem::take(&mut spans)));
            spans.push(Span::raw(" ".repeat(indent)));
            used = 0;
        }
        if used > 0 {
            spans.push(Span::styled(
                sep,
                Style::default().add_modifier(Modifier::DIM),
            ));
            used += sep_w;
        }
        used += iw;
        spans.push(Span::raw(item));
    }
    lines.push(Line::from(spans));
    lines
}

/// A table column before it is fitted.
#[derive(Debug, Clone)]
pub(crate) struct Column {
    /// Its header.
    pub(crate) header: &'static str,
    /// One cell per row.
    pub(crate) cells: Vec<String>,
    /// Each cell's style (none: the table's).
    pub(crate) styles: Vec<Style>,
    /// Columns are kept in rank order, 0 first, while the width lasts.
    pub(crate) rank: u8,
    /// `Some(n)`: text (a name) that may be shortened with an ellipsis, to
    /// `n` columns at the least; `None`: figures, shown whole or not at all.
    pub(crate) shrink_to: Option<usize>,
    /// Right-aligned, as figures are.
    pub(crate) right: bool,
}

impl Column {
    /// A column of figures: right-aligned, never shortened.
    pub(crate) fn figures(header: &'static str, rank: u8, cells: Vec<String>) -> Column {
        Column {
            header,
            cells,
            styles: Vec::new(),
            rank,
            shrink_to: None,
            right: true,
        }
    }

    /// A column of words shown whole (states, kinds).
    pub(crate) fn words(header: &'static str, rank: u8, cells: Vec<String>) -> Column {
        Column {
            right: false,
            ..Column::figures(header, rank, cells)
        }
    }

    /// A column of names, shortened with an ellipsis down to `shrink_to`
    /// columns when room is short.
    pub(crate) fn names(
        header: &'static str,
        rank: u8,
        shrink_to: usize,
        cells: Vec<String>,
    ) -> Column {
        Column {
            shrink_to: Some(shrink_to),
            ..Column::words(header, rank, cells)
        }
    }

    /// The same column with a style per cell.
    pub(crate) fn styled(self, styles: Vec<Style>) -> Column {
        Column { styles, ..self }
    }

    /// Width with every cell whole.
    fn natural(&self) -> usize {
        self.cells
            .iter()
            .map(|c| width(c))
            .chain([width(self.header)])
            .max()
            .unwrap_or(0)
    }

    /// Narrowest it may be.
    fn least(&self) -> usize {
        let natural = self.natural();
        match self.shrink_to {
            Some(n) => natural.min(n.max(width(self.header))),
            None => natural,
        }
    }
}

/// Space between two columns.
const SPACING: usize = 1;

/// Width of a table of `cols` with every cell whole.
pub(crate) fn natural_width(cols: &[Column]) -> usize {
    let cells: usize = cols.iter().map(Column::natural).sum();
    cells + SPACING * cols.len().saturating_sub(1)
}

/// The columns kept in `w` columns and the width of each, in display order:
/// columns are taken by rank at their narrowest while they fit, then the
/// shortened ones grow back towards their whole width, best rank first.
pub(crate) fn fit_columns(cols: &[Column], w: usize) -> Vec<(usize, usize)> {
    let mut order: Vec<usize> = (0..cols.len()).collect();
    order.sort_by_key(|&i| cols[i].rank);
    let mut kept: Vec<(usize, usize)> = Vec::new();
    let mut used = 0;
    for &i in &order {
        let need = cols[i].least() + if kept.is_empty() { 0 } else { SPACING };
        if used + need <= w {
            used += need;
            kept.push((i, cols[i].least()));
        }
    }
    for k in kept.iter_mut() {
        let grow = (cols[k.0].natural() - k.1).min(w - used);
        k.1 += grow;
        used += grow;
    }
    kept.sort_by_key(|k| k.0);
    kept
}

/// A table of `cols` fitted to `w` columns.
pub(crate) fn table(cols: &[Column], w: usize) -> Table<'static> {
    let kept = fit_columns(cols, w);
    let rows = cols.first().map_or(0, |c| c.cells.len());
    let align = |text: String, col: &Column, cw: usize| {
        let line = Line::from(ellipsize(&text, cw));
        if col.right {
            line.right_aligned()
        } else {
            line
        }
    };
    let body: Vec<Row<'static>> = (0..rows)
        .map(|r| {
            Row::new(kept.iter().map(|&(i, cw)| {
                let col = &cols[i];
                let cell = Cell::from(align(col.cells[r].clone(), col, cw));
                match col.styles.get(r) {
                    Some(&s) => cell.style(s),
                    None => cell,
                }
            }))
        })
        .collect();
    let header = Row::new(
        kept.iter()
            .map(|&(i, cw)| Cell::from(align(cols[i].header.to_owned(), &cols[i], cw))),
    )
    .style(Style::default().add_modifier(Modifier::BOLD));
    let widths: Vec<Constraint> = kept
        .iter()
        .map(|&(_, cw)| Constraint::Length(cw as u16))
        .collect();
    Table::new(body, widths)
        .header(header)
        .column_spacing(SPACING as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_shorten_at_their_end() {
        assert_eq!(ellipsize("seedcore-worker", 20), "seedcore-worker");
        assert_eq!(ellipsize("seedcore-worker", 10), "seedcore…");
        assert_eq!(ellipsize("this process", 7), "this p…");
        assert_eq!(ellipsize("this process", 6), "this…");
        assert_eq!(width(&ellipsize("seedcore-worker", 10)), 9);
        assert_eq!(ellipsize("abc", 1), "…");
    }

    #[test]
    fn a_title_keeps_its_figures_or_is_not_shown() {
        let v = vec![
            "queue wait p99 1.2 ms".to_owned(),
            "wait p99 1.2 ms".to_owned(),
        ];
        assert_eq!(title(&v, 40).unwrap(), " queue wait p99 1.2 ms ");
        assert_eq!(title(&v, 20).unwrap(), " wait p99 1.2 ms ");
        assert_eq!(title(&v, 17).unwrap(), "wait p99 1.2 ms");
        assert_eq!(title(&v, 10), None);
    }

    #[test]
    fn items_flow_between_items_only() {
        let items: Vec<String> = ["12 submitted", "38 queued", "4 running"]
            .map(String::from)
            .to_vec();
        let lines = flow("tasks", &items, " · ", 8, 32, Style::default());
        let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        assert_eq!(
            text,
            ["tasks   12 submitted · 38 queued", "        4 running"]
        );
        assert!(lines.iter().all(|l| l.width() <= 32));
        let lines = flow("tasks", &items, " · ", 8, 31, Style::default());
        let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        assert_eq!(
            text,
            ["tasks   12 submitted", "        38 queued · 4 running"]
        );
    }

    #[test]
    fn columns_are_kept_by_rank_and_names_shrink_first() {
        let cols = vec![
            Column::names("name", 1, 6, vec!["a-long-worker-name".into()]),
            Column::figures("pid", 0, vec!["12345".into()]),
            Column::figures("done", 2, vec!["7".into()]),
        ];
        // Everything whole.
        assert_eq!(fit_columns(&cols, 40), vec![(0, 18), (1, 5), (2, 4)]);
        // The name shrinks before a column is dropped.
        assert_eq!(fit_columns(&cols, 20), vec![(0, 9), (1, 5), (2, 4)]);
        // Then the lowest rank goes.
        assert_eq!(fit_columns(&cols, 12), vec![(0, 6), (1, 5)]);
        assert_eq!(fit_columns(&cols, 5), vec![(1, 5)]);
    }
}
