//! `seedcore top`: a live terminal dashboard of a running system, read from
//! its metrics endpoint (`/stats.json`, served by
//! `ConcurrentSystem::serve_metrics` or `seedcore demo --serve`).
//!
//! It polls every `--interval` and shows: the tasks, the machine and the
//! serving process; one row per executor (queued, running, workers alive,
//! busy and stuck, target, bounds), whatever executors the system has;
//! throughput, queue-wait and run-time p99 and the number of workers over
//! time as sparklines; each worker thread and worker process with its
//! executor, state, CPU and memory; the balancer's latest events; and the
//! queue depth per priority, all executors together. Rates and latencies
//! are computed between two polls (latency from the difference of the
//! HdrHistograms' buckets, so a figure covers only that interval, within
//! 0.1%). The document is fetched with ureq.
//!
//! The frame is drawn from a plain [`Snapshot`] (see [`render`]), fitted
//! to the terminal's size: the executors first, panels without room hidden
//! and named in the footer, columns kept by width.
//!
//! Keys: `q`, `Esc` or `Ctrl-C` quit; `s` sorts the workers (cpu, rss,
//! done, executor); `p` pauses and resumes the readings; `?` shows the
//! help. `--once` prints one frame as text (after two polls) and exits, for
//! scripts and tests; without `--once` stdout must be a terminal.

mod fit;
#[cfg(test)]
mod frames;
mod render;
mod snapshot;

use crate::cli::TopArgs;
use anyhow::{bail, Context};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use render::View;
use serde_json::Value;
use snapshot::{push, Reading, Snapshot};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

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
        if let Some(e) = &app.snap.error {
            bail!("{e}");
        }
        let view = View::default();
        print!(
            "{}",
            render::text(&app.snap, &view, args.width, args.height)
        );
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

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Quit,
    /// The view changed: draw again.
    Redraw,
    /// The readings resume: poll now.
    Resume,
    Nothing,
}

/// Applies key `code` (with `ctrl` held or not) to `view`.
fn on_key(view: &mut View, code: KeyCode, ctrl: bool) -> Action {
    match code {
        KeyCode::Char('c') if ctrl => Action::Quit,
        KeyCode::Char('q') => Action::Quit,
        // Esc closes the help first, as in most dashboards.
        KeyCode::Esc if view.help => {
            view.help = false;
            Action::Redraw
        }
        KeyCode::Esc => Action::Quit,
        KeyCode::Char('?') | KeyCode::Char('h') => {
            view.help = !view.help;
            Action::Redraw
        }
        KeyCode::Char('s') => {
            view.sort = view.sort.next();
            Action::Redraw
        }
        KeyCode::Char('p') | KeyCode::Char(' ') => {
            view.paused = !view.paused;
            if view.paused {
                Action::Redraw
            } else {
                Action::Resume
            }
        }
        _ => Action::Nothing,
    }
}

fn interactive(terminal: &mut ratatui::DefaultTerminal, app: &mut App) -> anyhow::Result<()> {
    let mut view = View::default();
    let mut next = Instant::now();
    loop {
        if !view.paused && Instant::now() >= next {
            app.poll();
            next = Instant::now() + app.snap.interval;
            terminal.draw(|f| render::draw(f, &app.snap, &view))?;
        }
        // Paused, only keys and resizes wake the loop.
        let wait = if view.paused {
            Duration::from_secs(3600)
        } else {
            next.saturating_duration_since(Instant::now())
        };
        if !event::poll(wait)? {
            continue;
        }
        match event::read()? {
            Event::Key(k) if k.kind == KeyEventKind::Press => {
                let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
                match on_key(&mut view, k.code, ctrl) {
                    Action::Quit => return Ok(()),
                    Action::Redraw => {
                        terminal.draw(|f| render::draw(f, &app.snap, &view))?;
                    }
                    Action::Resume => {
                        // The paused time is no interval of the charts.
                        app.rebase();
                        next = Instant::now();
                    }
                    Action::Nothing => {}
                }
            }
            // `draw` takes the terminal's new size.
            Event::Resize(..) => {
                terminal.draw(|f| render::draw(f, &app.snap, &view))?;
            }
            _ => {}
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

/// The poller: the previous document (rates and latencies are differences
/// from it) and the snapshot drawn.
struct App {
    endpoint: Endpoint,
    agent: ureq::Agent,
    last: Option<(Instant, Value)>,
    snap: Snapshot,
}

impl App {
    fn new(endpoint: Endpoint, interval: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(FETCH_TIMEOUT))
            .build()
            .into();
        App {
            snap: Snapshot {
                source: endpoint.shown.clone(),
                interval,
                ..Snapshot::default()
            },
            endpoint,
            agent,
            last: None,
        }
    }

    /// Forgets the previous document, so that the next poll starts a new
    /// interval instead of one spanning a pause.
    fn rebase(&mut self) {
        self.last = None;
    }

    fn poll(&mut self) {
        let doc = match self.endpoint.fetch(&self.agent) {
            Ok(d) => d,
            Err(e) => {
                self.snap.error = Some(format!("{e:#}"));
                return;
            }
        };
        self.snap.error = None;
        let now = Instant::now();
        let s = &doc["stats"];
        let h = &mut self.snap.history;
        if let Some((then, prev)) = &self.last {
            let p = &prev["stats"];
            let dt = now.duration_since(*then).as_secs_f64().max(1e-3);
            let done = s["resolved"]
                .as_u64()
                .unwrap_or(0)
                .saturating_sub(p["resolved"].as_u64().unwrap_or(0));
            push(&mut h.throughput, (done as f64 / dt).round() as u64);
            push(
                &mut h.wait_p99_us,
                delta_percentile(&p["queue_wait"], &s["queue_wait"], 0.99).map(ns_to_us),
            );
            push(
                &mut h.run_p99_us,
                delta_percentile(&p["run_time"], &s["run_time"], 0.99).map(ns_to_us),
            );
        }
        let reading = Reading::from_json(&doc);
        push(
            &mut h.workers,
            reading.executors.iter().map(|e| e.alive).sum(),
        );
        self.snap.reading = Some(reading);
        self.last = Some((now, doc));
    }
}

/// Nanoseconds as whole microseconds, a nonzero duration at least 1.
fn ns_to_us(ns: u64) -> u64 {
    ns.div_ceil(1000)
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

    #[test]
    fn keys_change_the_view() {
        let mut v = View::default();
        assert_eq!(on_key(&mut v, KeyCode::Char('s'), false), Action::Redraw);
        assert_eq!(v.sort, render::SortBy::Cpu);
        on_key(&mut v, KeyCode::Char('s'), false);
        on_key(&mut v, KeyCode::Char('s'), false);
        assert_eq!(v.sort, render::SortBy::Done);
        on_key(&mut v, KeyCode::Char('s'), false);
        assert_eq!(v.sort, render::SortBy::Listed, "the order comes round");

        assert_eq!(on_key(&mut v, KeyCode::Char('p'), false), Action::Redraw);
        assert!(v.paused);
        assert_eq!(on_key(&mut v, KeyCode::Char('p'), false), Action::Resume);
        assert!(!v.paused);

        on_key(&mut v, KeyCode::Char('?'), false);
        assert!(v.help);
        assert_eq!(on_key(&mut v, KeyCode::Esc, false), Action::Redraw);
        assert!(!v.help, "Esc closes the help before it quits");
        assert_eq!(on_key(&mut v, KeyCode::Esc, false), Action::Quit);
        assert_eq!(on_key(&mut v, KeyCode::Char('q'), false), Action::Quit);
        assert_eq!(on_key(&mut v, KeyCode::Char('c'), true), Action::Quit);
        assert_eq!(on_key(&mut v, KeyCode::Char('c'), false), Action::Nothing);
    }
}
