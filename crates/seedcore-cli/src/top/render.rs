//! Drawing one frame of `seedcore top` from a [`Snapshot`] and a [`View`].
//!
//! Room is handed out in a fixed order, so that what matters most is never
//! squeezed out by what matters less: the footer's line, the executors
//! table (one row per executor, always; without room for it the frame says
//! how many rows it needs), the summary, the first workers, the charts in a
//! compact form, more workers, the charts boxed, the balancer's latest
//! events, the queue per priority, then the rest of each. A panel without
//! its least room is hidden and named in the footer, never cut.
//!
//! Across, tables keep their columns by rank (see [`fit`]); titles take the
//! longest of their wordings that fits, each keeping its figure and unit.

use super::fit::{self, Column};
use super::snapshot::{ExecutorRow, History, Reading, Snapshot, WorkerRow};
use ratatui::backend::TestBackend;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    BarChart, Block, Borders, Clear, Paragraph, RenderDirection, Sparkline, Wrap,
};
use ratatui::{Frame, Terminal};
use std::cmp::Reverse;
use std::collections::VecDeque;

/// Balancer events shown at most.
const EVENTS_SHOWN: usize = 8;
/// Width of the summary's labels (`balancer` and a space).
const LABEL: usize = 9;
/// Rows of the charts in their compact form (a title line and a one-line
/// sparkline, no border).
const CHARTS_COMPACT: u16 = 2;
/// Rows of boxed charts: at least two lines of bars, at most six.
const CHARTS_BOXED: (u16, u16) = (4, 8);
/// Rows of the queue-per-priority chart: borders, level labels, bars.
const QUEUE_ROWS: (u16, u16) = (6, 10);
/// Width of the queue-per-priority chart beside the workers: eleven levels
/// of two-column bars one column apart, and borders.
const QUEUE_WIDTH: u16 = 2 + 11 * 2 + 10;

/// What the user chose to see, by key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct View {
    /// The workers' order.
    pub(crate) sort: SortBy,
    /// Readings stopped (`p`): the frame stays as it was.
    pub(crate) paused: bool,
    /// The help is shown over the dashboard (`?`).
    pub(crate) help: bool,
}

/// The workers' order (`s` goes to the next).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum SortBy {
    /// As the system lists them: executor by executor.
    #[default]
    Listed,
    /// Most CPU first.
    Cpu,
    /// Most resident memory first.
    Rss,
    /// Most tasks done first.
    Done,
}

impl SortBy {
    /// The order after this one.
    pub(crate) fn next(self) -> SortBy {
        match self {
            SortBy::Listed => SortBy::Cpu,
            SortBy::Cpu => SortBy::Rss,
            SortBy::Rss => SortBy::Done,
            SortBy::Done => SortBy::Listed,
        }
    }

    /// How the footer and titles name it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            SortBy::Listed => "executor",
            SortBy::Cpu => "cpu",
            SortBy::Rss => "rss",
            SortBy::Done => "done",
        }
    }

    /// `workers` in this order (a stable sort: ties keep the listed order).
    pub(crate) fn sort(self, workers: &mut [WorkerRow]) {
        match self {
            SortBy::Listed => {}
            SortBy::Cpu => workers.sort_by(|a, b| b.cpu_percent.total_cmp(&a.cpu_percent)),
            SortBy::Rss => workers.sort_by_key(|w| Reverse(w.rss)),
            SortBy::Done => workers.sort_by_key(|w| Reverse(w.done)),
        }
    }
}

/// The frame as text, one line per row with trailing blanks trimmed (what
/// `seedcore top --once` prints).
pub(crate) fn text(snap: &Snapshot, view: &View, w: u16, h: u16) -> String {
    let mut term = Terminal::new(TestBackend::new(w, h)).expect("a test backend never fails");
    term.draw(|f| draw(f, snap, view))
        .expect("a test backend never fails");
    let buf = term.backend().buffer();
    let mut out = String::new();
    for y in 0..h {
        let line: String = (0..w).map(|x| buf[(x, y)].symbol()).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Draws the frame.
pub(crate) fn draw(f: &mut Frame<'_>, snap: &Snapshot, view: &View) {
    let area = f.area();
    if area.width == 0 || area.height == 0 {
        return;
    }
    let body = Rect {
        height: area.height - 1,
        ..area
    };
    let footer = Rect {
        y: area.bottom() - 1,
        height: 1,
        ..area
    };
    let hidden = match &snap.reading {
        Some(r) => draw_reading(f, body, snap, r, view),
        None => {
            draw_waiting(f, body, snap);
            Vec::new()
        }
    };
    draw_footer(f, footer, snap, view, &hidden);
    if view.help {
        draw_help(f, area, view, &hidden);
    }
}

/// Room, handed out a request at a time.
struct Budget(u16);

impl Budget {
    /// `want` rows, or none if there are fewer left.
    fn all(&mut self, want: u16) -> u16 {
        if want <= self.0 {
            self.0 -= want;
            want
        } else {
            0
        }
    }

    /// Up to `want` rows.
    fn some(&mut self, want: u16) -> u16 {
        let got = want.min(self.0);
        self.0 -= got;
        got
    }
}

/// The rows each panel gets (0: hidden).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    summary: u16,
    executors: u16,
    charts: u16,
    workers: u16,
    /// The queue per priority beside the workers.
    queue_beside: bool,
    /// Rows of the queue per priority as a panel of its own.
    queue_below: u16,
    events: u16,
}

impl Plan {
    /// Hands out `h` rows (the footer's already taken); `None` when the
    /// executors do not fit.
    fn new(
        h: u16,
        summary: u16,
        executors: usize,
        workers: usize,
        events: usize,
        beside: bool,
    ) -> Option<Plan> {
        // Borders and header, then one row per executor.
        let executors = u16::try_from(executors).ok()?.checked_add(3)?;
        if executors > h {
            return None;
        }
        let mut b = Budget(h - executors);
        let summary = b.all(summary);
        let worker_rows = u16::try_from(workers).unwrap_or(u16::MAX).saturating_add(3);
        // One worker row at least, four if there is room, before any chart.
        let mut workers = b.all(worker_rows.min(3 + 1));
        if workers > 0 {
            workers += b.some(worker_rows.min(3 + 4) - workers);
        }
        let mut charts = b.all(CHARTS_COMPACT);
        if workers > 0 {
            workers += b.some(worker_rows.min(3 + 8) - workers);
        }
        if charts > 0 {
            charts += b.all(CHARTS_BOXED.0 - CHARTS_COMPACT);
        }
        let event_rows = events.min(EVENTS_SHOWN) as u16 + 3;
        let mut events = b.all(event_rows.min(3 + 3));
        let mut queue_below = if beside { 0 } else { b.all(QUEUE_ROWS.0) };
        if workers > 0 {
            workers += b.some(worker_rows - workers);
        }
        if events > 0 {
            events += b.some(event_rows - events);
        }
        if charts >= CHARTS_BOXED.0 {
            charts += b.some(CHARTS_BOXED.1 - charts);
        }
        if queue_below > 0 {
            queue_below += b.some(QUEUE_ROWS.1 - queue_below);
        }
        // What is left stays blank at the end of the workers' panel.
        if workers > 0 {
            workers += b.some(u16::MAX);
        }
        Some(Plan {
            summary,
            executors,
            charts,
            workers,
            queue_beside: beside && workers >= QUEUE_ROWS.0,
            queue_below,
            events,
        })
    }

    /// The panels without room, as the footer names them.
    fn hidden(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (rows, name) in [
            (self.summary, "summary"),
            (self.workers, "workers"),
            (self.charts, "charts"),
            (self.events, "balancer"),
        ] {
            if rows == 0 {
                out.push(name);
            }
        }
        if !self.queue_beside && self.queue_below == 0 {
            out.push("queue");
        }
        out
    }
}

/// Takes rows off the top of an area.
struct Rows(Rect);

impl Rows {
    fn take(&mut self, h: u16) -> Rect {
        let h = h.min(self.0.height);
        let top = Rect {
            height: h,
            ..self.0
        };
        self.0.y += h;
        self.0.height -= h;
        top
    }
}

/// Draws a reading; returns the panels hidden for lack of room.
fn draw_reading(
    f: &mut Frame<'_>,
    body: Rect,
    snap: &Snapshot,
    r: &Reading,
    view: &View,
) -> Vec<&'static str> {
    let w = body.width as usize;
    let summary = summary_lines(snap, r, view, w);
    let mut workers = r.workers.clone();
    view.sort.sort(&mut workers);
    let worker_cols = worker_columns(&workers);
    let beside = w >= fit::natural_width(&worker_cols) + 2 + QUEUE_WIDTH as usize;
    let Some(plan) = Plan::new(
        body.height,
        summary.len() as u16,
        r.executors.len(),
        workers.len(),
        r.events.len(),
        beside,
    ) else {
        let need = r.executors.len() + 4;
        let msg = format!(
            "{} executors need {need} rows and this terminal has {}: enlarge it to see them (q quits)",
            r.executors.len(),
            body.height + 1
        );
        f.render_widget(Paragraph::new(msg).wrap(Wrap { trim: true }), body);
        return vec!["executors"];
    };
    let mut hidden = plan.hidden();
    let mut rows = Rows(body);
    f.render_widget(Paragraph::new(summary), rows.take(plan.summary));
    draw_executors(f, rows.take(plan.executors), &r.executors);
    hidden.extend(draw_charts(
        f,
        rows.take(plan.charts),
        &snap.history,
        plan.charts > CHARTS_COMPACT,
    ));
    let workers_area = rows.take(plan.workers);
    if plan.queue_beside {
        let (left, right) = split_right(workers_area, QUEUE_WIDTH);
        draw_workers(f, left, worker_cols, workers.len(), view.sort);
        draw_queue(f, right, &r.executors);
    } else if plan.workers > 0 {
        draw_workers(f, workers_area, worker_cols, workers.len(), view.sort);
    }
    if plan.queue_below > 0 {
        draw_queue(f, rows.take(plan.queue_below), &r.executors);
    }
    if plan.events > 0 {
        draw_events(f, rows.take(plan.events), r);
    }
    hidden
}

/// `area` split into what is left of a right part `w` wide, and that part.
fn split_right(area: Rect, w: u16) -> (Rect, Rect) {
    let w = w.min(area.width);
    let left = Rect {
        width: area.width - w,
        ..area
    };
    let right = Rect {
        x: area.x + area.width - w,
        width: w,
        ..area
    };
    (left, right)
}

fn draw_waiting(f: &mut Frame<'_>, body: Rect, snap: &Snapshot) {
    let w = body.width as usize;
    let mut lines = vec![title_bar(
        &[
            format!("seedcore top · waiting for {}", snap.source),
            "seedcore top · waiting".to_owned(),
            "waiting".to_owned(),
        ],
        w,
    )];
    let msg = snap.error.as_deref().unwrap_or("no reading yet");
    lines.push(Line::styled(
        msg.to_owned(),
        Style::default().fg(if snap.error.is_some() {
            Color::Red
        } else {
            Color::Reset
        }),
    ));
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), body);
}

/// The reversed line at the top: the first wording that fits, padded to
/// the full width.
fn title_bar(variants: &[String], w: usize) -> Line<'static> {
    let text = fit::first_fitting(variants, w.saturating_sub(1))
        .unwrap_or_else(|| fit::ellipsize(&variants[variants.len() - 1], w));
    Line::styled(
        format!(" {text:<w$}"),
        Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD),
    )
}

/// The title bar and the summary's rows, flowed to `w` columns.
fn summary_lines(snap: &Snapshot, r: &Reading, view: &View, w: usize) -> Vec<Line<'static>> {
    let up = humantime::format_duration(std::time::Duration::from_secs(r.uptime_s as u64));
    let mut flags = String::new();
    if r.closed {
        flags.push_str(" · closed");
    }
    if view.paused {
        flags.push_str(" · paused");
    }
    let mut lines = vec![title_bar(
        &[
            format!("seedcore top · {} · up {up}{flags}", r.name),
            format!("{} · up {up}{flags}", r.name),
            format!("up {up}{flags}"),
        ],
        w,
    )];
    let t = &r.tasks;
    let m = &r.machine;
    let label = Style::default().add_modifier(Modifier::BOLD);
    let rows: [(&str, Vec<String>); 4] = [
        (
            "tasks",
            vec![
                format!("{} submitted", t.submitted),
                format!("{} done", t.completed),
                format!("{} failed", t.failed),
                format!("{} queued", t.queued),
                format!("{} running", t.running),
                format!("{} pending", t.pending),
            ],
        ),
        (
            "machine",
            vec![
                match m.cpu_load {
                    Some(l) => format!("CPU {:.0}%", l * 100.0),
                    None => "CPU –".to_owned(),
                },
                format!(
                    "memory {} free of {}",
                    bytes(m.memory_available),
                    bytes(m.memory_total)
                ),
                match m.physical_cores {
                    Some(p) => format!("{} cores ({p} physical)", m.logical_cores),
                    None => format!("{} cores", m.logical_cores),
                },
            ],
        ),
        (
            "process",
            vec![
                format!("pid {}", m.pid),
                format!("CPU {:.0}%", m.cpu_percent),
                format!("RSS {}", bytes(m.rss)),
            ],
        ),
        (
            "balancer",
            vec![
                format!("expand {}", r.expand_policy),
                format!("shrink {}", r.shrink_policy),
                format!("{} expansions", r.expansions),
                format!("{} shrinks", r.shrinks),
            ],
        ),
    ];
    for (name, items) in rows {
        lines.extend(fit::flow(name, &items, " · ", LABEL, w, label));
    }
    if let Some(e) = &snap.error {
        lines.push(Line::styled(
            fit::ellipsize(&format!("last poll failed: {e}"), w),
            Style::default().fg(Color::Red),
        ));
    }
    lines
}

/// The colour an executor is shown in: the built-in ones their own, added
/// ones one for all.
fn executor_color(name: &str) -> Style {
    Style::default().fg(match name {
        "threads" => Color::Cyan,
        "processes" => Color::Magenta,
        "async" => Color::Green,
        "services" => Color::Blue,
        _ => Color::Yellow,
    })
}

/// A bordered block with a bold title, if one fits.
fn boxed(title: Option<String>) -> Block<'static> {
    let b = Block::default().borders(Borders::ALL);
    match title {
        Some(t) => b.title(Span::styled(
            t,
            Style::default().add_modifier(Modifier::BOLD),
        )),
        None => b,
    }
}

fn draw_executors(f: &mut Frame<'_>, area: Rect, list: &[ExecutorRow]) {
    let col = |header, rank, get: fn(&ExecutorRow) -> u64| {
        Column::figures(
            header,
            rank,
            list.iter().map(|e| get(e).to_string()).collect(),
        )
    };
    let cols = [
        Column::names(
            "executor",
            0,
            6,
            list.iter().map(|e| e.name.clone()).collect(),
        )
        .styled(list.iter().map(|e| executor_color(&e.name)).collect()),
        col("queued", 0, |e| e.queued),
        col("running", 0, |e| e.running),
        col("alive", 0, |e| e.alive),
        col("busy", 0, |e| e.busy),
        col("stuck", 1, |e| e.stuck),
        col("target", 2, |e| e.target),
        Column::figures(
            "bounds",
            3,
            list.iter()
                .map(|e| format!("{}..{}", e.core, e.max))
                .collect(),
        ),
        Column::words(
            "sizing",
            4,
            list.iter()
                .map(|e| if e.core < e.max { "balanced" } else { "fixed" }.to_owned())
                .collect(),
        ),
    ];
    let inner = area.width.saturating_sub(2) as usize;
    let table = fit::table(&cols, inner);
    let title = fit::title(
        &[
            format!("executors ({})", list.len()),
            format!("executors {}", list.len()),
        ],
        area.width as usize,
    );
    f.render_widget(table.block(boxed(title)), area);
}

fn worker_columns(workers: &[WorkerRow]) -> Vec<Column> {
    let map = |get: &dyn Fn(&WorkerRow) -> String| workers.iter().map(get).collect::<Vec<_>>();
    let dash = |v: Option<u64>| v.map_or("-".to_owned(), |n| n.to_string());
    vec![
        Column::names("executor", 1, 5, map(&|w| w.executor.clone())).styled(
            workers
                .iter()
                .map(|w| executor_color(&w.executor))
                .collect(),
        ),
        Column::figures(
            "pid",
            0,
            map(&|w| {
                if w.id == 0 {
                    "-".into()
                } else {
                    w.id.to_string()
                }
            }),
        ),
        Column::names("name", 2, 8, map(&|w| w.name.clone())),
        Column::words(
            "state",
            0,
            map(&|w| {
                if w.state.is_empty() {
                    "-".into()
                } else {
                    w.state.clone()
                }
            }),
        ),
        Column::figures("cpu%", 0, map(&|w| format!("{:.1}", w.cpu_percent))),
        Column::figures("rss", 0, map(&|w| w.rss.map_or("-".into(), bytes))),
        Column::figures("done", 3, map(&|w| dash(w.done))),
        Column::figures(
            "task",
            4,
            map(&|w| w.task.map_or("-".into(), |t| format!("#{t}"))),
        ),
    ]
}

fn draw_workers(f: &mut Frame<'_>, area: Rect, cols: Vec<Column>, total: usize, sort: SortBy) {
    let shown = (area.height.saturating_sub(3) as usize).min(total);
    let by = match sort {
        SortBy::Listed => String::new(),
        s => format!(", by {}", s.name()),
    };
    let title = fit::title(
        &if shown < total {
            [
                format!("workers ({shown} of {total}{by})"),
                format!("workers ({shown} of {total})"),
                format!("workers {shown}/{total}"),
            ]
        } else {
            [
                format!("workers ({total}{by})"),
                format!("workers ({total})"),
                format!("workers {total}"),
            ]
        },
        area.width as usize,
    );
    let block = boxed(title);
    if total == 0 {
        f.render_widget(Paragraph::new("no workers").block(block), area);
        return;
    }
    let inner = area.width.saturating_sub(2) as usize;
    let table = fit::table(&cols, inner);
    f.render_widget(table.block(block), area);
}

/// One chart: its titles, most complete first, its points newest first, and
/// its colour.
struct Chart {
    titles: Vec<String>,
    points: Vec<Option<u64>>,
    color: Color,
    /// How the footer names it when it has no room.
    name: &'static str,
}

/// The newest `n` points of `q`, newest first.
fn newest<T: Copy>(q: &VecDeque<T>, n: usize) -> Vec<T> {
    q.iter().rev().take(n).copied().collect()
}

/// The charts, in the order they give up room, each showing its latest `n`
/// points.
fn charts(h: &History, n: usize) -> Vec<Chart> {
    let throughput = newest(&h.throughput, n);
    let now = throughput
        .first()
        .map_or("–".to_owned(), |v| format!("{v}/s"));
    let peak = throughput.iter().copied().max().unwrap_or(0);
    let mut titles = vec![format!("throughput {now}"), format!("done {now}")];
    if throughput.first().is_some_and(|&v| v < peak) {
        titles.insert(0, format!("throughput {now} · peak {peak}/s"));
    }
    let alive = newest(&h.workers, n);
    let now_alive = alive.first().map_or("–".to_owned(), u64::to_string);
    vec![
        Chart {
            titles,
            points: throughput.into_iter().map(Some).collect(),
            color: Color::Green,
            name: "throughput",
        },
        latency(
            "queue wait p99",
            "wait p99",
            newest(&h.wait_p99_us, n),
            &h.wait_p99_us,
            Color::Yellow,
        ),
        latency(
            "run time p99",
            "run p99",
            newest(&h.run_p99_us, n),
            &h.run_p99_us,
            Color::Blue,
        ),
        Chart {
            titles: vec![
                format!("workers alive {now_alive}"),
                format!("workers {now_alive}"),
            ],
            points: alive.into_iter().map(Some).collect(),
            color: Color::Cyan,
            name: "workers alive",
        },
    ]
}

/// A latency chart: the latest interval's p99, or `–` when that interval
/// had no task (with the latest interval that had, where there is room).
fn latency(
    long: &str,
    short: &str,
    points: Vec<Option<u64>>,
    all: &VecDeque<Option<u64>>,
    color: Color,
) -> Chart {
    let titles = match points.first().copied().flatten() {
        Some(v) => vec![
            format!("{long} {}", micros(v)),
            format!("{short} {}", micros(v)),
        ],
        None => {
            let mut t = vec![format!("{long} –"), format!("{short} –")];
            if let Some(last) = all.iter().rev().find_map(|p| *p) {
                t.insert(0, format!("{long} – (last {})", micros(last)));
            }
            t
        }
    };
    Chart {
        titles,
        points,
        color,
        name: if long.starts_with("queue") {
            "queue wait"
        } else {
            "run time"
        },
    }
}

/// Draws as many charts as fit side by side (boxed or compact); returns the
/// names of those left out.
fn draw_charts(f: &mut Frame<'_>, area: Rect, h: &History, boxed_form: bool) -> Vec<&'static str> {
    if area.height == 0 {
        return Vec::new();
    }
    // Columns a chart loses to its frame: two borders, or one column of gap.
    let frame = if boxed_form { 2 } else { 1 };
    for n in (1..=4u16).rev() {
        let slot = area.width / n;
        let inner = slot.saturating_sub(frame) as usize;
        let all = charts(h, inner);
        let fits = all[..n as usize].iter().all(|c| {
            if boxed_form {
                fit::title(&c.titles, slot as usize).is_some()
            } else {
                fit::first_fitting(&c.titles, inner).is_some()
            }
        });
        if !fits {
            continue;
        }
        let mut x = area.x;
        for (i, c) in all.iter().take(n as usize).enumerate() {
            // The last one takes what division left over.
            let wide = if i + 1 == n as usize {
                area.right() - x
            } else {
                slot
            };
            let slot_area = Rect {
                x,
                width: wide,
                ..area
            };
            x += wide;
            draw_chart(f, slot_area, c, boxed_form);
        }
        return all[n as usize..].iter().map(|c| c.name).collect();
    }
    vec!["charts"]
}

fn draw_chart(f: &mut Frame<'_>, area: Rect, c: &Chart, boxed_form: bool) {
    // Newest on the right, as the title's figure is.
    let spark = Sparkline::default()
        .data(c.points.iter().copied())
        .direction(RenderDirection::RightToLeft)
        .style(Style::default().fg(c.color));
    if boxed_form {
        let title = fit::title(&c.titles, area.width as usize);
        f.render_widget(spark.block(boxed(title)), area);
        return;
    }
    let w = area.width.saturating_sub(1);
    let title = fit::first_fitting(&c.titles, w as usize).unwrap_or_default();
    let top = Rect {
        width: w,
        height: 1,
        ..area
    };
    f.render_widget(
        Paragraph::new(Span::styled(
            title,
            Style::default().fg(c.color).add_modifier(Modifier::BOLD),
        )),
        top,
    );
    let bars = Rect {
        y: area.y + 1,
        height: area.height - 1,
        ..top
    };
    f.render_widget(spark, bars);
}

fn draw_queue(f: &mut Frame<'_>, area: Rect, list: &[ExecutorRow]) {
    // Every executor's queue, level by level.
    let levels = list.iter().map(|e| e.queue_depth.len()).max().unwrap_or(0);
    let mut depths = vec![0u64; levels];
    for e in list {
        for (slot, d) in depths.iter_mut().zip(&e.queue_depth) {
            *slot += d;
        }
    }
    let total: u64 = depths.iter().sum();
    let labels: Vec<String> = (0..levels).map(|l| l.to_string()).collect();
    let data: Vec<(&str, u64)> = labels.iter().map(String::as_str).zip(depths).collect();
    // Bars as wide as the room allows (a bar shows its figure only where it
    // fits inside, so wider bars show more of them).
    let inner = area.width.saturating_sub(2);
    let n = levels.max(1) as u16;
    let bar = (inner.saturating_sub(n - 1) / n).clamp(1, 6);
    let title = fit::title(
        &[
            format!("queued per priority · {total}"),
            format!("queued by priority {total}"),
            format!("queued {total}"),
        ],
        area.width as usize,
    );
    let chart = BarChart::default()
        .block(boxed(title))
        .data(data.as_slice())
        .bar_width(bar)
        .bar_gap(1)
        .bar_style(Style::default().fg(Color::Yellow))
        .value_style(Style::default().fg(Color::Black).bg(Color::Yellow));
    f.render_widget(chart, area);
}

fn draw_events(f: &mut Frame<'_>, area: Rect, r: &Reading) {
    let title = fit::title(
        &[
            format!(
                "balancer: {} expansions, {} shrinks (latest first)",
                r.expansions, r.shrinks
            ),
            format!(
                "balancer: {} expansions, {} shrinks",
                r.expansions, r.shrinks
            ),
            format!("balancer {}+ {}-", r.expansions, r.shrinks),
        ],
        area.width as usize,
    );
    let block = boxed(title);
    let latest: Vec<_> = r.events.iter().rev().take(EVENTS_SHOWN).collect();
    if latest.is_empty() {
        f.render_widget(Paragraph::new("no balancer events yet").block(block), area);
        return;
    }
    let kind_color = |k: &str| {
        Style::default().fg(match k {
            "expand" => Color::Green,
            "shrink" => Color::Blue,
            _ => Color::Red,
        })
    };
    let cols = [
        Column::figures(
            "at",
            0,
            latest.iter().map(|e| format!("+{:.1}s", e.at_s)).collect(),
        ),
        Column::names(
            "executor",
            0,
            5,
            latest.iter().map(|e| e.executor.clone()).collect(),
        )
        .styled(latest.iter().map(|e| executor_color(&e.executor)).collect()),
        Column::words("event", 0, latest.iter().map(|e| e.kind.clone()).collect())
            .styled(latest.iter().map(|e| kind_color(&e.kind)).collect()),
        Column::figures(
            "size",
            0,
            latest
                .iter()
                .map(|e| format!("{} -> {}", e.from, e.to))
                .collect(),
        ),
        Column::names(
            "why",
            1,
            10,
            latest.iter().map(|e| e.reason.clone()).collect(),
        ),
    ];
    let table = fit::table(&cols, area.width.saturating_sub(2) as usize);
    f.render_widget(table.block(block), area);
}

fn draw_footer(
    f: &mut Frame<'_>,
    area: Rect,
    snap: &Snapshot,
    view: &View,
    hidden: &[&'static str],
) {
    let keys = Style::default().fg(Color::DarkGray);
    let some = |t: String| vec![t];
    let hint = if hidden.is_empty() {
        Vec::new()
    } else {
        let list = hidden.join(", ");
        vec![
            format!("hidden: {list} (enlarge)"),
            format!("hidden: {list}"),
        ]
    };
    // (priority, wordings most complete first, style), shown in this order
    // and kept by priority while they fit.
    let items: Vec<(u8, Vec<String>, Style)> = vec![
        (
            0,
            if view.paused {
                some("PAUSED".into())
            } else {
                Vec::new()
            },
            Style::default().fg(Color::Black).bg(Color::Yellow),
        ),
        (1, some("q quit".into()), keys),
        (
            5,
            vec![format!("s sort: {}", view.sort.name()), "s sort".into()],
            keys,
        ),
        // Paused, the way back matters more.
        (
            if view.paused { 2 } else { 6 },
            some(if view.paused { "p resume" } else { "p pause" }.into()),
            keys,
        ),
        (4, some("? help".into()), keys),
        (3, hint, Style::default().fg(Color::Yellow)),
        (
            7,
            some(format!(
                "every {}",
                humantime::format_duration(snap.interval)
            )),
            keys,
        ),
        (8, some(snap.source.clone()), keys),
    ];
    const SEP: &str = " · ";
    let w = area.width as usize;
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| items[i].0);
    // First every item in its shortest wording, by priority, while they
    // fit; then each, by priority, in its longest wording that still fits.
    let mut chosen: Vec<Option<String>> = vec![None; items.len()];
    let line_width = |chosen: &[Option<String>]| {
        let texts: Vec<&String> = chosen.iter().flatten().collect();
        1 + texts.iter().map(|t| fit::width(t)).sum::<usize>()
            + fit::width(SEP) * texts.len().saturating_sub(1)
    };
    for &i in &order {
        if let Some(shortest) = items[i].1.last() {
            chosen[i] = Some(shortest.clone());
            if line_width(&chosen) > w {
                chosen[i] = None;
            }
        }
    }
    for &i in &order {
        let Some(now) = chosen[i].clone() else {
            continue;
        };
        let room = w - line_width(&chosen) + fit::width(&now);
        chosen[i] = fit::first_fitting(&items[i].1, room).or(Some(now));
    }
    let mut spans = vec![Span::raw(" ")];
    for (text, (_, _, style)) in chosen.into_iter().zip(&items) {
        let Some(text) = text else { continue };
        if spans.len() > 1 {
            spans.push(Span::styled(SEP, keys));
        }
        spans.push(Span::styled(text, *style));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_help(f: &mut Frame<'_>, area: Rect, view: &View, hidden: &[&'static str]) {
    // Wrapped here rather than by the paragraph, so that the box is as tall
    // as its text.
    let w = area.width.saturating_sub(2).min(72);
    let inner = w.saturating_sub(2) as usize;
    let key = Style::default().add_modifier(Modifier::BOLD);
    let words = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
    let mut lines = Vec::new();
    for (k, what) in [
        (
            "q Esc Ctrl-C",
            "quit (Esc first closes this help)".to_owned(),
        ),
        (
            "s",
            format!(
                "sort the workers by cpu, rss, done or executor (now: {})",
                view.sort.name()
            ),
        ),
        (
            "p",
            "pause or resume the readings; the frame stays, resizing redraws it".to_owned(),
        ),
        ("?", "show or close this help".to_owned()),
    ] {
        lines.extend(fit::flow(k, &words(&what), " ", 14, inner, key));
    }
    let mut about = "Room goes first to the executors (a row each), then the summary, the \
                     workers, the charts, the balancer's events and the queue per priority; \
                     a panel without room is hidden and named in the footer. A name too long \
                     for its column ends in …; a latency reads – for an interval in which no \
                     task started or finished."
        .to_owned();
    if !hidden.is_empty() {
        about.push_str(&format!(" Hidden now: {}.", hidden.join(", ")));
    }
    lines.push(Line::raw(""));
    lines.extend(fit::flow("", &words(&about), " ", 0, inner, key));
    let h = (lines.len() as u16 + 2).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, popup);
    f.render_widget(
        Paragraph::new(lines).block(boxed(fit::title(&["help".to_owned()], w as usize))),
        popup,
    );
}

/// Bytes in binary units, whole below a GiB.
pub(crate) fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", n / (1u64 << 30) as f64)
    } else if n >= (1u64 << 20) as f64 {
        format!("{:.0} MiB", n / (1u64 << 20) as f64)
    } else {
        format!("{:.0} KiB", n / 1024.0)
    }
}

/// Microseconds in the unit that keeps them short.
pub(crate) fn micros(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.1} s", us as f64 / 1e6)
    } else if us >= 1_000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else {
        format!("{us} µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_goes_to_the_executors_then_the_summary_then_the_workers_then_the_charts() {
        // Four executors (7 rows), a summary of 6, 8 workers, 10 events.
        let plan = |h| Plan::new(h, 6, 4, 8, 10, false);
        assert_eq!(plan(6), None, "no room for a row per executor");
        let p = plan(7).unwrap();
        assert_eq!((p.executors, p.summary, p.workers, p.charts), (7, 0, 0, 0));
        assert_eq!(
            p.hidden(),
            ["summary", "workers", "charts", "balancer", "queue"]
        );
        let p = plan(13).unwrap();
        assert_eq!((p.summary, p.workers, p.charts), (6, 0, 0));
        // One worker row before any chart, then four.
        let p = plan(17).unwrap();
        assert_eq!((p.workers, p.charts), (4, 0));
        let p = plan(20).unwrap();
        assert_eq!((p.workers, p.charts), (7, 0));
        let p = plan(22).unwrap();
        assert_eq!((p.workers, p.charts), (7, CHARTS_COMPACT));
        // Every row is handed out, and a large terminal hides nothing.
        let p = plan(60).unwrap();
        assert!(p.hidden().is_empty(), "{p:?}");
        let sum = p.summary + p.executors + p.charts + p.workers + p.queue_below + p.events;
        assert_eq!(sum, 60);
    }
}
