//! Tracing: every task attempt is a span named `attempt` with the task's
//! id, name, priority, executor and attempt number; retries and timeouts
//! are events inside the attempt's span; the user's own events inside a
//! thread task land in its attempt's span. A real subscriber (a
//! tracing-subscriber registry with a collecting layer) is installed
//! globally, since attempts run on the pools' threads.

mod common;

use seedcore::{Priority, RetryPolicy, TaskError, TaskOptions};
use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

type Fields = BTreeMap<String, String>;

#[derive(Debug, Clone)]
struct SpanRec {
    name: String,
    fields: Fields,
    closed: bool,
}

#[derive(Debug, Clone)]
struct EventRec {
    fields: Fields,
    /// The fields of the span the event was recorded in.
    span: Option<Fields>,
}

#[derive(Default)]
struct Seen {
    spans: BTreeMap<u64, SpanRec>,
    events: Vec<EventRec>,
}

struct Collect(Fields);

impl Visit for Collect {
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        self.0.insert(f.name().to_owned(), format!("{v:?}"));
    }
    fn record_str(&mut self, f: &Field, v: &str) {
        self.0.insert(f.name().to_owned(), v.to_owned());
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.0.insert(f.name().to_owned(), v.to_string());
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.0.insert(f.name().to_owned(), v.to_string());
    }
}

struct Recorder;

fn seen() -> &'static Mutex<Seen> {
    static SEEN: OnceLock<Mutex<Seen>> = OnceLock::new();
    SEEN.get_or_init(Default::default)
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut c = Collect(Fields::new());
        attrs.record(&mut c);
        seen().lock().unwrap().spans.insert(
            id.into_u64(),
            SpanRec {
                name: attrs.metadata().name().to_owned(),
                fields: c.0,
                closed: false,
            },
        );
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut c = Collect(Fields::new());
        event.record(&mut c);
        let mut seen = seen().lock().unwrap();
        let span = ctx
            .event_span(event)
            .and_then(|s| seen.spans.get(&s.id().into_u64()))
            .map(|s| s.fields.clone());
        seen.events.push(EventRec { fields: c.0, span });
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        if let Some(s) = seen().lock().unwrap().spans.get_mut(&id.into_u64()) {
            s.closed = true;
        }
    }
}

fn install() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let subscriber = tracing_subscriber::registry().with(Recorder);
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    });
}

/// The attempt spans of task `id`, by attempt number.
fn attempts_of(id: u64) -> BTreeMap<u32, SpanRec> {
    seen()
        .lock()
        .unwrap()
        .spans
        .values()
        .filter(|s| s.name == "attempt" && s.fields.get("task") == Some(&id.to_string()))
        .map(|s| (s.fields["attempt"].parse().unwrap(), s.clone()))
        .collect()
}

/// The events whose message is `msg` recorded inside a span of task `id`.
fn events_of(id: u64, msg: &str) -> Vec<EventRec> {
    seen()
        .lock()
        .unwrap()
        .events
        .iter()
        .filter(|e| {
            e.fields.get("message").map(String::as_str) == Some(msg)
                && e.span.as_ref().and_then(|s| s.get("task")) == Some(&id.to_string())
        })
        .cloned()
        .collect()
}

#[test]
fn each_attempt_is_a_span_with_retries_and_timeouts_as_events() {
    install();
    let system = common::builder("trace").build().unwrap();

    // Two failed attempts, then a success: three spans, two retry events.
    let opts = TaskOptions::new()
        .name("flaky")
        .priority(Priority::HIGH)
        .retry(RetryPolicy::retries(2));
    let f = system
        .submit_thread_fallible(opts, |cx| {
            tracing::info!(attempt_seen = cx.attempt(), "inside the task");
            if cx.attempt() < 3 {
                Err("not yet")
            } else {
                Ok(cx.attempt())
            }
        })
        .unwrap();
    let id = f.id().as_u64();
    assert_eq!(f.wait().unwrap(), 3);
    // The span closes once the attempt's end has run, just after the
    // future resolved.
    let deadline = std::time::Instant::now() + common::LONG;
    while attempts_of(id).values().any(|s| !s.closed) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let spans = attempts_of(id);
    assert_eq!(
        spans.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3],
        "{spans:?}"
    );
    for s in spans.values() {
        assert_eq!(s.fields["name"], "flaky");
        assert_eq!(s.fields["priority"], Priority::HIGH.level().to_string());
        assert_eq!(s.fields["executor"], "threads");
        assert!(s.closed, "{s:?}");
    }
    let retries = events_of(id, "retry scheduled");
    assert_eq!(retries.len(), 2, "{retries:?}");
    assert!(retries
        .iter()
        .all(|e| e.fields["error"].contains("not yet")));
    // The task's own events are inside its attempts' spans.
    let inside = events_of(id, "inside the task");
    let attempts: Vec<String> = inside
        .iter()
        .map(|e| e.span.as_ref().unwrap()["attempt"].clone())
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    assert_eq!(events_of(id, "attempt succeeded").len(), 1);

    // A timeout: an event in the attempt's span.
    let f = system
        .submit_thread(
            TaskOptions::new().timeout(Duration::from_millis(20)),
            |cx| {
                while !cx.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            },
        )
        .unwrap();
    let id = f.id().as_u64();
    assert!(matches!(f.wait(), Err(TaskError::TimedOut(_))));
    let timeouts = events_of(id, "attempt timed out");
    assert_eq!(timeouts.len(), 1, "{timeouts:?}");
    assert_eq!(timeouts[0].fields["timeout_ms"], "20");

    // An async task: its attempt is a span of the async executor.
    let f = system
        .submit_async(TaskOptions::new().name("later"), |_| async { 7 })
        .unwrap();
    let id = f.id().as_u64();
    assert_eq!(f.wait().unwrap(), 7);
    let deadline = std::time::Instant::now() + common::LONG;
    while attempts_of(id).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let spans = attempts_of(id);
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[&1].fields["executor"], "async");
    assert_eq!(spans[&1].fields["name"], "later");
}
