//! `seedcore top`: a live terminal dashboard of a running system, read from
//! its metrics endpoint (`/stats.json`, served by
//! `ConcurrentSystem::serve_metrics` or `seedcore demo --serve`).
//!
//! It polls every `--interval` and shows: the tasks and the machine (CPU
//! load, memory, cores); one row per executor (queued, running, workers
//! alive, busy and stuck, target, bounds), whatever executors the system
//! has; throughput, queue-wait p99 and the number of workers over time as
//! sparklines; the queue depth per priority, all executors together; each
//! worker thread and worker process with its executor, state, CPU and
//! memory; and the balancer's last expand, shrink and hold events. Rates and
//! latencies are computed between two polls (latency from the difference of
//! the HdrHistograms' buckets, so a number covers only that interval, within
//! 0.1%). The document is fetched with ureq.
//!
//! Keys: `q`, `Esc` or `Ctrl-C` quit. `--once` prints one frame as text
//! (after two polls) and exits, for scripts and tests; without `--once`
//! stdout must be a terminal.

use crate::cli::TopArgs;
use anyhow::{bail, Context};
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{BarChart, Block, Borders, Cell, Paragraph, Row, Sparkline, Table};
use ratatui::{Frame, Terminal};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Points kept for each chart.
const HISTORY: usize = 240;
/// Events shown.
const EVENTS_SHOWN: usize = 8;

/// Runs `seedcore top`.
pub(crate) fn run(args: &TopArgs) -> anyhow::Result<ExitCode> {
    let endpoint = Endpoint::parse(&args.url)?;
    let interval = humantime::parse_duration(&args.interval).with_context(|| {
        format!(
            "--interval: expected a duration like 1s, got {}",
            args.interval
        )
    })?;
    if interval < Duration::from_millis(100) {
        bail!("--interval: at least 100ms, got {}", args.interval);
    }
    let mut app = App::new(endpoint, interval);
    if args.once {
        app.poll();
        std::thread::sleep(interval);
        app.poll();
        if let Some(e) = &app.error {
            bail!("{e}");
        }
        let (w, h) = (args.width, args.height);
        let mut term = Terminal::new(TestBackend::new(w, h))?;
        term.draw(|f| draw(f, &app))?;
        let buf = term.backend().buffer();
        let mut out = String::new();
        for y in 0..h {
            let line: String = (0..w).map(|x| buf[(x, y)].symbol()).collect();
            out.push_str(line.trim_end());
            out.push('\n');
        }
        print!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    if !std::io::stdout().is_terminal() {
        bail!(
            "the live dashboard needs a terminal and stdout is not one; \
             use `seedcore top --once` to print one frame as text"
        );
    }
    let mut terminal = ratatui::try_init().context(
        "could not set up the terminal; use `seedcore top --once` to print one frame as text",
    )?;
    let result = interactive(&mut terminal, &mut app);
    ratatui::restore();
    result.map(|()| ExitCode::SUCCESS)
}

fn interactive(terminal: &mut ratatui::DefaultTerminal, app: &mut App) -> anyhow::Result<()> {
    let mut next = Instant::now();
    loop {
        if Instant::now() >= next {
            app.poll();
            next = Instant::now() + app.interval;
            terminal.draw(|f| draw(f, app))?;
        }
        let wait = next.saturating_duration_since(Instant::now());
        if event::poll(wait)? {
            match event::read()? {
                Event::Key(k) if k.kind == KeyEventKind::Press => {
                    let ctrl_c =
                        k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if ctrl_c || matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) {
                        return Ok(());
                    }
                }
                Event::Resize(..) => {
                    terminal.draw(|f| draw(f, app))?;
                }
                _ => {}
            }
        }
    }
}

/// Where the metrics are: the URL of the JSON document.
#[derive(Debug, Clone)]
struct Endpoint {
    shown: String,
}

/// How long one fetch may take, connecting included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

impl Endpoint {
    fn parse(url: &str) -> anyhow::Result<Endpoint> {
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some((scheme, _)) => bail!("--url: only http:// is served, got {scheme}://"),
            None => url,
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || !authority.contains(':') {
            bail!("--url: expected http://HOST:PORT, got {url}");
        }
        let path = match path {
            "" | "/" => "/stats.json".to_owned(),
            p => p.to_owned(),
        };
        Ok(Endpoint {
            shown: format!("http://{authority}{path}"),
        })
    }

    /// GETs the JSON document.
    fn fetch(&self, agent: &ureq::Agent) -> anyhow::Result<Value> {
        let mut answer = agent
            .get(&self.shown)
            .call()
            .with_context(|| format!("fetching {}", self.shown))?;
        answer
            .body_mut()
            .read_json()
            .with_context(|| format!("{} did not answer JSON", self.shown))
    }
}

/// The dashboard's state: the last document and the charts' history.
struct App {
    endpoint: Endpoint,
    agent: ureq::Agent,
    interval: Duration,
    last: Option<(Instant, Value)>,
    error: Option<String>,
    throughput: VecDeque<u64>,
    wait_p99_us: VecDeque<u64>,
    run_p99_us: VecDeque<u64>,
    /// Workers alive, every executor together.
    workers: VecDeque<u64>,
}

fn push(q: &mut VecDeque<u64>, v: u64) {
    if q.len() == HISTORY {
        q.pop_front();
    }
    q.push_back(v);
}

/// `[[upper_ns, count], ...]` as a map.
fn buckets(h: &Value) -> BTreeMap<u64, u64> {
    h["buckets_ns"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| Some((b[0].as_u64()?, b[1].as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// The `q` quantile (bucket upper bound, ns) of what `now` holds beyond
/// `before`; `None` when nothing was recorded in between.
fn delta_percentile(before: &Value, now: &Value, q: f64) -> Option<u64> {
    let (b, n) = (buckets(before), buckets(now));
    let delta: Vec<(u64, u64)> = n
        .iter()
        .map(|(&u, &c)| (u, c.saturating_sub(b.get(&u).copied().unwrap_or(0))))
        .filter(|&(_, c)| c > 0)
        .collect();
    let total: u64 = delta.iter().map(|d| d.1).sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (u, c) in delta {
        seen += c;
        if seen >= rank {
            return Some(u);
        }
    }
    None
}

impl App {
    fn new(endpoint: Endpoint, interval: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(FETCH_TIMEOUT))
            .build()
            .into();
        App {
            endpoint,
            agent,
            interval,
            last: None,
            error: None,
            throughput: VecDeque::new(),
            wait_p99_us: VecDeque::new(),
            run_p99_us: VecDeque::new(),
            workers: VecDeque::new(),
        }
    }

    fn poll(&mut self) {
        let doc = match self.endpoint.fetch(&self.agent) {
            Ok(d) => d,
            Err(e) => {
                self.error = Some(format!("{e:#}"));
                return;
            }
        };
        self.error = None;
        let now = Instant::now();
        let s = &doc["stats"];
        if let Some((then, prev)) = &self.last {
            let p = &prev["stats"];
            let dt = now.duration_since(*then).as_secs_f64().max(1e-3);
            let done = s["resolved"]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(p["resolved"].as_u64().unwrap_or(0));
            push(&mut self.throughput, (done as f64 / dt).round() as u64);
            push(
                &mut self.wait_p99_us,
                delta_percentile(&p["queue_wait"], &s["queue_wait"], 0.99).map_or(0, ns_to_us),
            );
            push(
                &mut self.run_p99_us,
                delta_percentile(&p["run_time"], &s["run_time"], 0.99).map_or(0, ns_to_us),
            );
        }
        let alive = executors(&doc).iter().map(|e| num(&e["workers"])).sum();
        push(&mut self.workers, alive);
        self.last = Some((now, doc));
    }
}

/// Nanoseconds as whole microseconds, a nonzero duration at least 1.
fn ns_to_us(ns: u64) -> u64 {
    ns.div_ceil(1000)
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The executors' rows of a document, in the order the system lists them.
fn executors(doc: &Value) -> Vec<Value> {
    doc["stats"]["executors"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The colour an executor is shown in: the built-in ones their own, added
/// ones one for all.
fn executor_color(name: &str) -> Color {
    match name {
        "threads" => Color::Cyan,
        "processes" => Color::Magenta,
        "async" => Color::Green,
        "services" => Color::Blue,
        _ => Color::Yellow,
    }
}

fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", n / (1u64 << 30) as f64)
    } else if n >= (1u64 << 20) as f64 {
        format!("{:.0} MiB", n / (1u64 << 20) as f64)
    } else {
        format!("{:.0} KiB", n / 1024.0)
    }
}

fn micros(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.1} s", us as f64 / 1e6)
    } else if us >= 1_000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else {
        format!("{us} us")
    }
}

fn titled(title: String) -> Block<'static> {
    Block::default().borders(Borders::ALL).title(Span::styled(
        title,
        Style::default().add_modifier(Modifier::BOLD),
    ))
}

/// The last `width` points of `q`.
fn tail(q: &VecDeque<u64>, width: u16) -> Vec<u64> {
    let skip = q.len().saturating_sub(width as usize);
    q.iter().skip(skip).copied().collect()
}

fn draw(f: &mut Frame<'_>, app: &App) {
    // One line per executor, plus the table's header and borders; four
    // executors until the first reading says how many.
    let shown = app.last.as_ref().map_or(4, |(_, d)| executors(d).len()) as u16;
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(5),
            Constraint::Length(shown + 3),
            Constraint::Length(6),
            Constraint::Min(8),
            Constraint::Length(EVENTS_SHOWN as u16 + 2),
            Constraint::Length(1),
        ])
        .split(f.area());
    draw_header(f, rows[0], app);
    draw_executors(f, rows[1], app);
    draw_charts(f, rows[2], app);
    let middle = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Min(60), Constraint::Length(40)])
        .split(rows[3]);
    draw_workers(f, middle[0], app);
    draw_queue(f, middle[1], app);
    draw_events(f, rows[4], app);
    let footer = format!(
        " q quit · every {} · {}",
        humantime::format_duration(app.interval),
        app.endpoint.shown
    );
    f.render_widget(
        Paragraph::new(footer).style(Style::default().fg(Color::DarkGray)),
        rows[5],
    );
}

fn draw_header(f: &mut Frame<'_>, area: Rect, app: &App) {
    let Some((_, doc)) = &app.last else {
        let msg = app
            .error
            .clone()
            .unwrap_or_else(|| "waiting for the first reading".into());
        f.render_widget(
            Paragraph::new(msg).block(titled(" seedcore top ".into())),
            area,
        );
        return;
    };
    let (s, c, m) = (&doc["stats"], &doc["config"], &doc["monitor"]);
    let title = format!(
        " seedcore top · {} · up {:.0}s{} ",
        doc["name"].as_str().unwrap_or("?"),
        doc["uptime_s"].as_f64().unwrap_or(0.0),
        if doc["closed"] == true {
            " · closed"
        } else {
            ""
        }
    );
    let cpu = m["cpu_load"]
        .as_f64()
        .map_or("-".into(), |l| format!("{:.0}%", l * 100.0));
    let lines = vec![
        Line::from(format!(
            "tasks: {} submitted, {} done, {} failed/panicked/timed out, {} pending, {} queued, {} running   policies: expand {}, shrink {}",
            num(&s["submitted"]),
            num(&s["completed"]),
            num(&s["failed"]) + num(&s["panicked"]) + num(&s["timed_out"]),
            num(&s["pending"]),
            num(&s["queued"]),
            num(&s["running"]),
            c["expand_policy"].as_str().unwrap_or("?"),
            c["shrink_policy"].as_str().unwrap_or("?"),
        )),
        Line::from(format!(
            "machine: CPU {cpu}, memory {} free of {}, {} cores ({} physical)   this process: pid {}, CPU {:.0}%, RSS {}",
            bytes(num(&m["memory_available"])),
            bytes(num(&m["memory_total"])),
            num(&m["logical_cores"]),
            m["physical_cores"].as_u64().map_or("?".into(), |n| n.to_string()),
            num(&m["pid"]),
            m["cpu_percent"].as_f64().unwrap_or(0.0),
            bytes(num(&m["rss"])),
        )),
    ];
    let mut lines = lines;
    if let Some(e) = &app.error {
        lines.push(Line::styled(
            format!("last poll failed: {e}"),
            Style::default().fg(Color::Red),
        ));
    }
    f.render_widget(Paragraph::new(lines).block(titled(title)), area);
}

fn draw_executors(f: &mut Frame<'_>, area: Rect, app: &App) {
    let Some((_, doc)) = &app.last else {
        f.render_widget(titled(" executors ".into()), area);
        return;
    };
    let list = executors(doc);
    let rows: Vec<Row<'_>> = list
        .iter()
        .map(|e| {
            let name = e["executor"].as_str().unwrap_or("?").to_owned();
            let color = executor_color(&name);
            let sizing = if num(&e["core"]) < num(&e["max"]) {
                "balanced"
            } else {
                "fixed"
            };
            Row::new(vec![
                Cell::from(name).style(Style::default().fg(color)),
                Cell::from(num(&e["queued"]).to_string()),
                Cell::from(num(&e["running"]).to_string()),
                Cell::from(num(&e["workers"]).to_string()),
                Cell::from(num(&e["busy"]).to_string()),
                Cell::from(num(&e["stuck"]).to_string()),
                Cell::from(num(&e["target"]).to_string()),
                Cell::from(format!("{}..{}", num(&e["core"]), num(&e["max"]))),
                Cell::from(sizing),
            ])
        })
        .collect();
    let header = Row::new([
        "executor", "queued", "running", "alive", "busy", "stuck", "target", "bounds", "size",
    ])
    .style(Style::default().add_modifier(Modifier::BOLD));
    let widths = [
        Constraint::Length(12),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(9),
        Constraint::Length(9),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .block(titled(format!(" executors ({}) ", list.len())));
    f.render_widget(table, area);
}

fn draw_charts(f: &mut Frame<'_>, area: Rect, app: &App) {
    let cols = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Ratio(1, 4); 4])
        .split(area);
    let last = |q: &VecDeque<u64>| q.back().copied().unwrap_or(0);
    let charts = [
        (
            format!(" throughput {}/s ", last(&app.throughput)),
            &app.throughput,
            Color::Green,
        ),
        (
            format!(" queue wait p99 {} ", micros(last(&app.wait_p99_us))),
            &app.wait_p99_us,
            Color::Yellow,
        ),
        (
            format!(" run time p99 {} ", micros(last(&app.run_p99_us))),
            &app.run_p99_us,
            Color::Blue,
        ),
        (
            format!(" workers {} ", last(&app.workers)),
            &app.workers,
            Color::Cyan,
        ),
    ];
    for (i, (title, data, color)) in charts.into_iter().enumerate() {
        let width = cols[i].width.saturating_sub(2);
        let spark = Sparkline::default()
            .block(titled(title))
            .data(tail(data, width))
            .style(Style::default().fg(color));
        f.render_widget(spark, cols[i]);
    }
}

fn draw_workers(f: &mut Frame<'_>, area: Rect, app: &App) {
    let Some((_, doc)) = &app.last else {
        f.render_widget(titled(" workers ".into()), area);
        return;
    };
    let m = &doc["monitor"];
    let mut rows = Vec::new();
    for w in m["workers"].as_array().into_iter().flatten() {
        let opt = |v: &Value| v.as_u64().map_or("-".into(), |n| n.to_string());
        let executor = w["executor"].as_str().unwrap_or("?").to_owned();
        let color = executor_color(&executor);
        rows.push(Row::new(vec![
            Cell::from(executor).style(Style::default().fg(color)),
            Cell::from(num(&w["id"]).to_string()),
            Cell::from(w["name"].as_str().unwrap_or("").to_owned()),
            Cell::from(w["state"].as_str().unwrap_or("").to_owned()),
            Cell::from(format!("{:5.1}", w["cpu_percent"].as_f64().unwrap_or(0.0))),
            Cell::from(w["rss"].as_u64().map_or("-".into(), bytes)),
            Cell::from(opt(&w["tasks_done"])),
            Cell::from(
                w["current_task"]
                    .as_u64()
                    .map_or("-".into(), |t| format!("#{t}")),
            ),
        ]));
    }
    let shown = rows.len();
    let header = Row::new([
        "executor", "id", "name", "state", "cpu%", "rss", "done", "task",
    ])
    .style(Style::default().add_modifier(Modifier::BOLD));
    let widths = [
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Length(16),
        Constraint::Length(10),
        Constraint::Length(6),
        Constraint::Length(9),
        Constraint::Length(6),
        Constraint::Length(8),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .block(titled(format!(" workers ({shown}) ")));
    f.render_widget(table, area);
}

fn draw_queue(f: &mut Frame<'_>, area: Rect, app: &App) {
    const LABELS: [&str; 11] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"];
    // Every executor's queue, level by level.
    let mut depths = [0u64; LABELS.len()];
    let rows = app
        .last
        .as_ref()
        .map(|(_, d)| executors(d))
        .unwrap_or_default();
    for e in &rows {
        for (level, d) in e["queue_depth"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if let Some(slot) = depths.get_mut(level) {
                *slot += num(d);
            }
        }
    }
    let data: Vec<(&str, u64)> = LABELS.iter().copied().zip(depths).collect();
    let total: u64 = depths.iter().sum();
    let chart = BarChart::default()
        .block(titled(format!(" queued per priority · {total} ")))
        .data(data.as_slice())
        .bar_width(2)
        .bar_gap(1)
        .bar_style(Style::default().fg(Color::Yellow))
        .value_style(Style::default().fg(Color::Black).bg(Color::Yellow));
    f.render_widget(chart, area);
}

fn draw_events(f: &mut Frame<'_>, area: Rect, app: &App) {
    let events: Vec<Value> = app
        .last
        .as_ref()
        .and_then(|(_, d)| d["stats"]["balance_events"].as_array().cloned())
        .unwrap_or_default();
    let lines: Vec<Line<'_>> = events
        .iter()
        .rev()
        .take(EVENTS_SHOWN)
        .map(|e| {
            let kind = e["kind"].as_str().unwrap_or("?");
            let color = match kind {
                "expand" => Color::Green,
                "shrink" => Color::Blue,
                _ => Color::Red,
            };
            Line::from(vec![
                Span::raw(format!(
                    "{:>9} ",
                    format!("+{:.1}s", e["at_s"].as_f64().unwrap_or(0.0))
                )),
                Span::raw(format!("{:<10} ", e["executor"].as_str().unwrap_or("?"))),
                Span::styled(format!("{kind:<6} "), Style::default().fg(color)),
                Span::raw(format!(
                    "{:>2} -> {:<2}  {}",
                    num(&e["from"]),
                    num(&e["to"]),
                    e["reason"].as_str().unwrap_or("")
                )),
            ])
        })
        .collect();
    let title = match &app.last {
        Some((_, d)) => format!(
            " balancer: {} expansions, {} shrinks (latest first) ",
            num(&d["stats"]["expansions"]),
            num(&d["stats"]["shrinks"])
        ),
        None => " balancer ".into(),
    };
    f.render_widget(Paragraph::new(lines).block(titled(title)), area);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let e = Endpoint::parse("http://127.0.0.1:9400").unwrap();
        assert_eq!(e.shown, "http://127.0.0.1:9400/stats.json");
        let e = Endpoint::parse("localhost:1/x.json").unwrap();
        assert_eq!(e.shown, "http://localhost:1/x.json");
        assert!(Endpoint::parse("https://a:1").is_err());
        assert!(Endpoint::parse("http://nohost").is_err());
    }

    #[test]
    fn latency_comes_from_the_histogram_difference() {
        let before = serde_json::json!({"buckets_ns": [[8, 100], [1024, 1]]});
        let now = serde_json::json!({"buckets_ns": [[8, 100], [1024, 1], [65536, 10]]});
        assert_eq!(delta_percentile(&before, &now, 0.99), Some(65536));
        assert_eq!(delta_percentile(&now, &now, 0.99), None);
    }
}
