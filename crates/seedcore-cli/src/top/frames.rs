//! Frames drawn from a known snapshot with ratatui's `TestBackend`, at the
//! sizes a terminal commonly has: every executor row, the summary's counts
//! and the column headers must show, and no word may be cut unmarked.

use super::render::{self, SortBy, View};
use super::snapshot::{
    EventRow, ExecutorRow, History, Machine, Reading, Snapshot, Tasks, WorkerRow,
};
use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

const MIB: u64 = 1 << 20;

fn executor(
    name: &str,
    q: [u64; 3],
    run: u64,
    alive: u64,
    busy: u64,
    core: u64,
    max: u64,
) -> ExecutorRow {
    let mut queue_depth = vec![0; 11];
    queue_depth[0] = q[0];
    queue_depth[5] = q[1];
    queue_depth[10] = q[2];
    ExecutorRow {
        name: name.into(),
        queued: q.iter().sum(),
        queue_depth,
        running: run,
        alive,
        busy,
        stuck: 0,
        target: alive,
        core,
        max,
    }
}

/// A worker; `figures` are its CPU, RSS, tasks done and current task.
fn worker(
    executor: &str,
    id: u64,
    name: &str,
    state: &str,
    figures: (f64, Option<u64>, u64, Option<u64>),
) -> WorkerRow {
    let (cpu, rss, done, task) = figures;
    WorkerRow {
        executor: executor.into(),
        id,
        name: name.into(),
        state: state.into(),
        cpu_percent: cpu,
        rss,
        done: Some(done),
        task,
    }
}

/// A busy system: 38 tasks queued over four executors, eight workers (two
/// with names longer than a narrow column), a run of balancer events, and
/// charts whose latest interval finished no task.
fn known() -> Snapshot {
    let executors = vec![
        executor("threads", [20, 6, 3], 4, 4, 4, 2, 4),
        executor("processes", [0, 9, 0], 2, 2, 2, 1, 2),
        executor("async", [0, 0, 0], 0, 2, 0, 2, 2),
        executor("services", [0, 0, 0], 0, 0, 0, 0, 0),
    ];
    let workers = vec![
        worker(
            "threads",
            17038,
            "seedcore-9",
            "running",
            (97.5, None, 1270, Some(12801)),
        ),
        worker(
            "threads",
            18133,
            "seedcore-11",
            "running",
            (96.0, None, 1122, Some(12802)),
        ),
        worker(
            "threads",
            18140,
            "seedcore-12",
            "sleeping",
            (12.0, None, 310, Some(12803)),
        ),
        worker("threads", 18141, "seedcore-13", "", (0.0, None, 0, None)),
        worker(
            "processes",
            19218,
            "seedcore-process-worker",
            "sleeping",
            (3.1, Some(14 * MIB), 550, Some(12790)),
        ),
        worker(
            "processes",
            19301,
            "seedcore-process-worker",
            "disk-sleep",
            (1.2, Some(15 * MIB), 240, Some(12791)),
        ),
        worker(
            "async",
            15771,
            "seedcore-async-0",
            "sleeping",
            (0.0, None, 1, None),
        ),
        worker(
            "async",
            15772,
            "seedcore-async-1",
            "sleeping",
            (0.0, None, 0, None),
        ),
    ];
    let events = (0..10)
        .map(|i| EventRow {
            at_s: 700.0 + f64::from(i) * 5.5,
            executor: if i % 3 == 0 { "processes" } else { "threads" }.into(),
            kind: if i % 2 == 0 { "expand" } else { "shrink" }.into(),
            from: if i % 2 == 0 { 2 } else { 4 },
            to: if i % 2 == 0 { 4 } else { 2 },
            reason: if i % 2 == 0 {
                "backlog: 142 queued, 2/2 busy, 1.1 blocked".into()
            } else {
                "4 idle for 1s".into()
            },
        })
        .collect();
    let throughput: VecDeque<u64> = (0..60u64)
        .map(|i| if i % 12 < 5 { 300 + i * 3 } else { 0 })
        .chain([480, 0])
        .collect();
    let wait: VecDeque<Option<u64>> = (0..62u64)
        .map(|i| (i % 12 < 6).then_some(900 + i * 10))
        .chain([Some(1_200)])
        .collect();
    let run: VecDeque<Option<u64>> = (0..62u64)
        .map(|i| (i % 12 < 6).then_some(25_000 + i))
        .chain([Some(26_000), None])
        .collect();
    Snapshot {
        source: "http://127.0.0.1:9411/stats.json".into(),
        interval: Duration::from_secs(1),
        error: None,
        reading: Some(Reading {
            name: "demo".into(),
            uptime_s: 754.2,
            closed: false,
            tasks: Tasks {
                submitted: 12_840,
                completed: 12_790,
                failed: 4,
                pending: 44,
                queued: 38,
                running: 6,
            },
            expand_policy: "auto".into(),
            shrink_policy: "timeout".into(),
            machine: Machine {
                cpu_load: Some(0.62),
                memory_available: 24_060_022_784,
                memory_total: 25_276_194_816,
                logical_cores: 8,
                physical_cores: Some(4),
                pid: 15759,
                cpu_percent: 148.0,
                rss: 65 * MIB,
            },
            executors,
            workers,
            events,
            expansions: 5,
            shrinks: 5,
        }),
        history: History {
            throughput,
            wait_p99_us: wait,
            run_p99_us: run,
            workers: (0..63).map(|i| 6 + i % 3).collect(),
        },
    }
}

fn frame(snap: &Snapshot, view: &View, w: u16, h: u16) -> String {
    let text = render::text(snap, view, w, h);
    assert_eq!(text.lines().count(), h as usize);
    for line in text.lines() {
        assert!(line.chars().count() <= w as usize, "wider than {w}: {line}");
    }
    text
}

/// The sizes the frames are checked at.
const SIZES: [(u16, u16); 3] = [(80, 24), (120, 40), (200, 60)];

/// Words of a frame: runs of text between blanks, borders, bars and `·`.
fn words(text: &str) -> Vec<String> {
    let split = |c: char| c.is_whitespace() || ('\u{2500}'..='\u{259f}').contains(&c) || c == '·';
    // Punctuation around a word is not part of it: `(4)`, `queue,`.
    let punctuation = |c: char| ",:;()".contains(c);
    text.split(split)
        .map(|w| w.trim_matches(punctuation))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The words of the workers table's header.
fn is_workers_header(words: &[String]) -> bool {
    ["pid", "state"]
        .iter()
        .all(|h| words.iter().any(|w| w == h))
}

/// The line holding `name` as a word, as words.
fn row_of(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .map(words)
        .find(|ws| ws.first().is_some_and(|w| w == name))
        .unwrap_or_else(|| panic!("no row starting with {name} in:\n{text}"))
}

#[test]
fn every_executor_row_and_the_summary_counts_show_at_every_size() {
    let snap = known();
    let r = snap.reading.as_ref().unwrap();
    for (w, h) in SIZES {
        let text = frame(&snap, &View::default(), w, h);
        for e in &r.executors {
            let row = row_of(&text, &e.name);
            let figures: Vec<String> = [e.queued, e.running, e.alive, e.busy]
                .iter()
                .map(u64::to_string)
                .collect();
            assert_eq!(row[1..5], figures[..], "{w}x{h}, {}:\n{text}", e.name);
        }
        for count in [
            "12840 submitted",
            "12790 done",
            "4 failed",
            "38 queued",
            "6 running",
            "44 pending",
        ] {
            assert!(text.contains(count), "{w}x{h}: no `{count}` in:\n{text}");
        }
        assert!(text.contains("executors (4)"), "{w}x{h}:\n{text}");
    }
}

#[test]
fn the_useful_columns_show_at_80_and_more_as_the_terminal_widens() {
    let snap = known();
    let headers = |w, h| -> (Vec<String>, Vec<String>) {
        let text = frame(&snap, &View::default(), w, h);
        let executors = row_of(&text, "executor");
        let workers = text
            .lines()
            .map(words)
            .find(|ws| is_workers_header(ws))
            .unwrap_or_else(|| panic!("no workers header at {w}x{h}:\n{text}"));
        (executors, workers)
    };
    let (e80, w80) = headers(80, 24);
    for h in ["executor", "queued", "running", "alive", "busy"] {
        assert!(e80.contains(&h.to_owned()), "{h} at 80: {e80:?}");
    }
    for h in ["pid", "state", "cpu%", "rss"] {
        assert!(w80.contains(&h.to_owned()), "{h} at 80: {w80:?}");
    }
    let (e200, w200) = headers(200, 60);
    assert_eq!(
        e200,
        ["executor", "queued", "running", "alive", "busy", "stuck", "target", "bounds", "sizing"]
    );
    assert_eq!(
        w200,
        ["executor", "pid", "name", "state", "cpu%", "rss", "done", "task"]
    );
    let (e120, w120) = headers(120, 40);
    assert!(e120.len() >= e80.len() && w120.len() >= w80.len());
}

#[test]
fn no_word_is_cut_unmarked() {
    let snap = known();
    let view = View::default();
    // The words the screen uses when no width is short: every size's
    // rows at a width where nothing needs shortening.
    let mut known_words = BTreeSet::new();
    for h in 8..=64 {
        known_words.extend(words(&frame(&snap, &view, 400, h)));
    }
    for (w, h) in SIZES.into_iter().chain([(100, 30), (90, 50), (60, 20)]) {
        let text = frame(&snap, &view, w, h);
        for word in words(&text) {
            if known_words.contains(&word) {
                continue;
            }
            let stem = word
                .strip_suffix('…')
                .unwrap_or_else(|| panic!("{w}x{h}: `{word}` is cut or unknown in:\n{text}"));
            assert!(
                known_words.iter().any(|k| k.starts_with(stem)),
                "{w}x{h}: `{word}` shortens no word in:\n{text}"
            );
        }
    }
}

#[test]
fn a_long_name_ends_in_an_ellipsis_when_the_room_is_short() {
    let snap = known();
    let text = frame(&snap, &View::default(), 64, 40);
    assert!(text.contains('…'), "{text}");
    let wide = frame(&snap, &View::default(), 200, 60);
    assert!(wide.contains("seedcore-process-worker"), "{wide}");
}

#[test]
fn titles_keep_their_figures_and_an_empty_interval_reads_as_a_dash() {
    let snap = known();
    for (w, h) in SIZES {
        let text = frame(&snap, &View::default(), w, h);
        assert!(!text.contains(" 0 µs") && !text.contains(" 0 us"), "{text}");
        // The run-time chart's latest interval finished no task.
        assert!(
            text.contains("run time p99 –") || text.contains("run p99 –"),
            "{w}x{h}:\n{text}"
        );
        assert!(
            text.contains("p99 1.2 ms"),
            "{w}x{h}: the wait chart's figure:\n{text}"
        );
        assert!(text.contains("0/s"), "{w}x{h}:\n{text}");
    }
    let wide = frame(&snap, &View::default(), 200, 60);
    assert!(wide.contains("run time p99 – (last 26.0 ms)"), "{wide}");
    assert!(wide.contains("throughput 0/s · peak 480/s"), "{wide}");
}

#[test]
fn panels_without_room_are_named_in_the_footer() {
    let snap = known();
    let small = frame(&snap, &View::default(), 80, 24);
    let footer = small.lines().last().unwrap();
    assert!(footer.contains("hidden: "), "{small}");
    assert!(footer.contains("balancer"), "{small}");
    // The keys come before the hint's advice.
    for key in ["q quit", "s sort", "p pause", "? help"] {
        assert!(footer.contains(key), "no `{key}` in the footer:\n{small}");
    }
    assert!(
        !small.contains("latest first"),
        "the events are hidden, not cut:\n{small}"
    );
    let large = frame(&snap, &View::default(), 200, 60);
    assert!(!large.contains("hidden"), "{large}");
    assert!(large.contains("queued per priority · 38"), "{large}");
    assert!(
        large.contains("balancer: 5 expansions, 5 shrinks"),
        "{large}"
    );
    assert!(
        large.contains("+749.5s"),
        "the latest event first:\n{large}"
    );
}

#[test]
fn more_executors_each_get_a_row_before_anything_else() {
    let mut snap = known();
    let r = snap.reading.as_mut().unwrap();
    for i in 0..5 {
        r.executors
            .push(executor(&format!("gpu-{i}"), [i, 0, 0], 1, 1, 1, 1, 1));
    }
    let text = frame(&snap, &View::default(), 80, 24);
    for e in &snap.reading.as_ref().unwrap().executors {
        row_of(&text, &e.name);
    }
    assert!(text.contains("executors (9)"), "{text}");
}

#[test]
fn a_terminal_too_small_for_the_executors_says_so() {
    let snap = known();
    let text = frame(&snap, &View::default(), 60, 6);
    assert!(text.contains("need 8 rows"), "{text}");
    // Degenerate sizes draw without panicking.
    for (w, h) in [(1, 1), (2, 30), (30, 2), (10, 10)] {
        frame(&snap, &View::default(), w, h);
        frame(
            &snap,
            &View {
                help: true,
                ..View::default()
            },
            w,
            h,
        );
    }
}

#[test]
fn workers_sort_by_cpu_rss_and_done() {
    let snap = known();
    let first_worker = |sort| {
        let text = frame(
            &snap,
            &View {
                sort,
                ..View::default()
            },
            200,
            60,
        );
        let header = text
            .lines()
            .position(|l| is_workers_header(&words(l)))
            .unwrap();
        (
            words(text.lines().nth(header + 1).unwrap())[1].clone(),
            text,
        )
    };
    let (pid, text) = first_worker(SortBy::Cpu);
    assert_eq!(pid, "17038", "{text}");
    assert!(text.contains("workers (8, by cpu)"), "{text}");
    assert_eq!(first_worker(SortBy::Rss).0, "19301");
    assert_eq!(first_worker(SortBy::Done).0, "17038");
    assert!(first_worker(SortBy::Rss).1.contains("s sort: rss"));
}

#[test]
fn pause_and_help_show() {
    let snap = known();
    let paused = frame(
        &snap,
        &View {
            paused: true,
            ..View::default()
        },
        80,
        24,
    );
    assert!(
        paused.contains("PAUSED") && paused.contains("p resume"),
        "{paused}"
    );
    let help = frame(
        &snap,
        &View {
            help: true,
            ..View::default()
        },
        80,
        24,
    );
    for part in ["quit", "sort the workers", "pause or resume", "Hidden now"] {
        assert!(help.contains(part), "no `{part}` in:\n{help}");
    }
}

#[test]
fn before_the_first_reading_the_frame_says_what_it_waits_for() {
    let snap = Snapshot {
        source: "http://127.0.0.1:9/stats.json".into(),
        error: Some("fetching http://127.0.0.1:9/stats.json: connection refused".into()),
        ..Snapshot::default()
    };
    let text = frame(&snap, &View::default(), 80, 24);
    assert!(text.contains("waiting"), "{text}");
    assert!(text.contains("connection refused"), "{text}");
}
