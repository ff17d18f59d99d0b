//! What one frame of `seedcore top` shows, as plain values: the latest
//! reading of the metrics document and the charts' history. The renderer
//! draws from these alone, so a frame can be drawn (and tested) without a
//! server.

use serde_json::Value;
use std::collections::VecDeque;
use std::time::Duration;

/// Points kept for each chart (more than the widest chart shows).
pub(crate) const HISTORY: usize = 240;

/// Everything a frame shows.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    /// Where the readings come from (the URL), shown in the footer.
    pub(crate) source: String,
    /// How often the source is read.
    pub(crate) interval: Duration,
    /// The latest reading; `None` until the first one arrives.
    pub(crate) reading: Option<Reading>,
    /// Why the latest poll failed, if it did (the reading before it stays).
    pub(crate) error: Option<String>,
    /// The charts' points, oldest first, one per interval.
    pub(crate) history: History,
}

/// One reading of the metrics document.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Reading {
    /// The system's name.
    pub(crate) name: String,
    /// Seconds since the system was built.
    pub(crate) uptime_s: f64,
    /// Whether the system is shut down.
    pub(crate) closed: bool,
    /// Task counts.
    pub(crate) tasks: Tasks,
    /// The balancer's expand policy, by name.
    pub(crate) expand_policy: String,
    /// The balancer's shrink policy, by name.
    pub(crate) shrink_policy: String,
    /// The machine and the serving process.
    pub(crate) machine: Machine,
    /// One row per executor, in the order the system lists them.
    pub(crate) executors: Vec<ExecutorRow>,
    /// Every worker thread and worker process, executor by executor.
    pub(crate) workers: Vec<WorkerRow>,
    /// The balancer's latest events, oldest first.
    pub(crate) events: Vec<EventRow>,
    /// Times the balancer grew an executor.
    pub(crate) expansions: u64,
    /// Times it shrank one.
    pub(crate) shrinks: u64,
}

/// Task counts since the system was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tasks {
    /// Tasks submitted.
    pub(crate) submitted: u64,
    /// Tasks that finished with a value.
    pub(crate) completed: u64,
    /// Tasks that did not: failed, panicked or timed out.
    pub(crate) failed: u64,
    /// Submitted and not yet finished (queued or running).
    pub(crate) pending: u64,
    /// Waiting in a queue.
    pub(crate) queued: u64,
    /// Running now.
    pub(crate) running: u64,
}

/// The machine, and the process the system runs in.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Machine {
    /// Whole-machine CPU use, 0..=1 (`None` on the very first reading).
    pub(crate) cpu_load: Option<f64>,
    /// Memory available to new work, bytes.
    pub(crate) memory_available: u64,
    /// Total memory, bytes.
    pub(crate) memory_total: u64,
    /// Logical cores.
    pub(crate) logical_cores: u64,
    /// Physical cores, where the OS says.
    pub(crate) physical_cores: Option<u64>,
    /// The process's id.
    pub(crate) pid: u64,
    /// The process's CPU use, percent of one core.
    pub(crate) cpu_percent: f64,
    /// The process's resident memory, bytes.
    pub(crate) rss: u64,
}

/// One executor's row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ExecutorRow {
    /// Its name (`threads`, `processes`, `async`, `services` or an added one).
    pub(crate) name: String,
    /// Tasks in its queue.
    pub(crate) queued: u64,
    /// Its queue by priority level, level 0 first.
    pub(crate) queue_depth: Vec<u64>,
    /// Tasks it runs now.
    pub(crate) running: u64,
    /// Workers alive.
    pub(crate) alive: u64,
    /// Workers running a task.
    pub(crate) busy: u64,
    /// Workers stuck in one task past the stuck threshold.
    pub(crate) stuck: u64,
    /// The size the balancer aims at.
    pub(crate) target: u64,
    /// The fewest workers it keeps.
    pub(crate) core: u64,
    /// The most it may have.
    pub(crate) max: u64,
}

/// One worker thread or worker process.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct WorkerRow {
    /// The executor it works for.
    pub(crate) executor: String,
    /// OS thread id (threads) or process id (processes); 0 where unknown.
    pub(crate) id: u64,
    /// Thread or process name.
    pub(crate) name: String,
    /// OS state: `running`, `sleeping`, ...
    pub(crate) state: String,
    /// CPU use, percent of one core.
    pub(crate) cpu_percent: f64,
    /// Resident memory (worker processes only: threads share the process's).
    pub(crate) rss: Option<u64>,
    /// Tasks it finished, where the executor counts them.
    pub(crate) done: Option<u64>,
    /// The task it runs now, where the executor says.
    pub(crate) task: Option<u64>,
}

/// One decision of the balancer.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct EventRow {
    /// Seconds since the system was built.
    pub(crate) at_s: f64,
    /// Which executor.
    pub(crate) executor: String,
    /// `expand`, `shrink` or `hold`.
    pub(crate) kind: String,
    /// Target size before.
    pub(crate) from: u64,
    /// Target size after.
    pub(crate) to: u64,
    /// The readings that decided it.
    pub(crate) reason: String,
}

/// The charts' points, oldest first, at most [`HISTORY`] each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct History {
    /// Tasks finished per second in each interval.
    pub(crate) throughput: VecDeque<u64>,
    /// Queue-wait p99 of each interval, µs; `None` where no task started.
    pub(crate) wait_p99_us: VecDeque<Option<u64>>,
    /// Run-time p99 of each interval, µs; `None` where no task finished.
    pub(crate) run_p99_us: VecDeque<Option<u64>>,
    /// Workers alive at each reading, every executor together.
    pub(crate) workers: VecDeque<u64>,
}

/// Appends `v`, dropping the oldest point once [`HISTORY`] are kept.
pub(crate) fn push<T>(q: &mut VecDeque<T>, v: T) {
    if q.len() == HISTORY {
        q.pop_front();
    }
    q.push_back(v);
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or("?").to_owned()
}

impl Reading {
    /// Reads the metrics document (`/stats.json`); members it lacks read
    /// as zero or `?`, so an older or newer server still shows.
    pub(crate) fn from_json(doc: &Value) -> Reading {
        let (s, c, m) = (&doc["stats"], &doc["config"], &doc["monitor"]);
        let executors = s["executors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| ExecutorRow {
                name: text(&e["executor"]),
                queued: num(&e["queued"]),
                queue_depth: e["queue_depth"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(num)
                    .collect(),
                running: num(&e["running"]),
                alive: num(&e["workers"]),
                busy: num(&e["busy"]),
                stuck: num(&e["stuck"]),
                target: num(&e["target"]),
                core: num(&e["core"]),
                max: num(&e["max"]),
            })
            .collect();
        let workers = m["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| WorkerRow {
                executor: text(&w["executor"]),
                id: num(&w["id"]),
                name: w["name"].as_str().unwrap_or("").to_owned(),
                state: w["state"].as_str().unwrap_or("").to_owned(),
                cpu_percent: w["cpu_percent"].as_f64().unwrap_or(0.0),
                rss: w["rss"].as_u64(),
                done: w["tasks_done"].as_u64(),
                task: w["current_task"].as_u64(),
            })
            .collect();
        let events = s["balance_events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| EventRow {
                at_s: e["at_s"].as_f64().unwrap_or(0.0),
                executor: text(&e["executor"]),
                kind: text(&e["kind"]),
                from: num(&e["from"]),
                to: num(&e["to"]),
                reason: e["reason"].as_str().unwrap_or("").to_owned(),
            })
            .collect();
        Reading {
            name: text(&doc["name"]),
            uptime_s: doc["uptime_s"].as_f64().unwrap_or(0.0),
            closed: doc["closed"] == true,
            tasks: Tasks {
                submitted: num(&s["submitted"]),
                completed: num(&s["completed"]),
                failed: num(&s["failed"]) + num(&s["panicked"]) + num(&s["timed_out"]),
                pending: num(&s["pending"]),
                queued: num(&s["queued"]),
                running: num(&s["running"]),
            },
            expand_policy: text(&c["expand_policy"]),
            shrink_policy: text(&c["shrink_policy"]),
            machine: Machine {
                cpu_load: m["cpu_load"].as_f64(),
                memory_available: num(&m["memory_available"]),
                memory_total: num(&m["memory_total"]),
                logical_cores: num(&m["logical_cores"]),
                physical_cores: m["physical_cores"].as_u64(),
                pid: num(&m["pid"]),
                cpu_percent: m["cpu_percent"].as_f64().unwrap_or(0.0),
                rss: num(&m["rss"]),
            },
            executors,
            workers,
            events,
            expansions: num(&s["expansions"]),
            shrinks: num(&s["shrinks"]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_reads_into_rows() {
        let doc = serde_json::json!({
            "name": "demo", "uptime_s": 12.5, "closed": false,
            "config": {"expand_policy": "auto", "shrink_policy": "timeout"},
            "stats": {
                "submitted": 10, "completed": 6, "failed": 1, "panicked": 1, "timed_out": 0,
                "pending": 2, "queued": 1, "running": 1, "expansions": 3, "shrinks": 2,
                "executors": [{"executor": "threads", "queued": 1, "queue_depth": [0, 1],
                    "running": 1, "workers": 2, "busy": 1, "stuck": 0, "target": 2,
                    "core": 2, "max": 4}],
                "balance_events": [{"at_s": 1.5, "executor": "threads", "kind": "expand",
                    "from": 2, "to": 3, "reason": "queue wait"}]
            },
            "monitor": {"cpu_load": 0.5, "memory_available": 1, "memory_total": 2,
                "logical_cores": 8, "physical_cores": null, "pid": 7, "rss": 3,
                "cpu_percent": 12.0,
                "workers": [{"executor": "processes", "id": 99, "name": "w",
                    "state": "sleeping", "cpu_percent": 1.5, "rss": 4096,
                    "tasks_done": 5, "current_task": null}]}
        });
        let r = Reading::from_json(&doc);
        assert_eq!(r.name, "demo");
        assert_eq!(r.tasks.failed, 2, "failed counts panics and timeouts");
        assert_eq!(r.executors[0].alive, 2);
        assert_eq!(r.executors[0].queue_depth, vec![0, 1]);
        assert_eq!(r.workers[0].rss, Some(4096));
        assert_eq!(r.workers[0].task, None);
        assert_eq!(r.machine.physical_cores, None);
        assert_eq!(r.events[0].to, 3);
        assert_eq!((r.expansions, r.shrinks), (3, 2));
    }

    #[test]
    fn history_keeps_the_latest_points() {
        let mut q = VecDeque::new();
        for i in 0..HISTORY as u64 + 5 {
            push(&mut q, i);
        }
        assert_eq!(q.len(), HISTORY);
        assert_eq!(q.front(), Some(&5));
    }
}
