//! A process task is also a plain function: `ProcessTask::call` runs it in
//! this process (unit tests, a sequential fallback), and its types may use
//! the serde that seedcore re-exports.

use seedcore::serde::{Deserialize, Serialize};
use seedcore::{ProcessTask, TaskError};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(crate = "seedcore::serde")]
struct Point {
    x: i64,
    y: i64,
}

seedcore::process_task! {
    fn manhattan(p: Point, q: Point) -> i64 { (p.x - q.x).abs() + (p.y - q.y).abs() }
}

seedcore::process_task! {
    fn parse(s: String) -> Result<u32, std::num::ParseIntError> { s.parse() }
}

seedcore::process_task! {
    fn explode(x: u32) -> u32 {
        if x > 1 {
            panic!("too big: {x}");
        }
        x
    }
}

seedcore::process_task! {
    async fn later(x: u32) -> u32 {
        tokio::task::yield_now().await;
        x + 1
    }
}

#[test]
fn a_process_task_runs_as_a_plain_function_in_this_process() {
    let d = manhattan
        .call((Point { x: 1, y: 2 }, Point { x: 4, y: -2 }))
        .unwrap();
    assert_eq!(d, 7);
    assert_eq!(parse.call("42".into()).unwrap(), 42);
    match parse.call("forty-two".into()) {
        Err(TaskError::Failed(e)) => assert!(e.to_string().contains("invalid digit"), "{e}"),
        other => panic!("{other:?}"),
    }
    match explode.call(5) {
        Err(e) => assert_eq!(e.panic_message(), Some("too big: 5")),
        Ok(v) => panic!("{v}"),
    }
    assert_eq!(later.call(1).unwrap(), 2);
    let remote: ProcessTask<u32, u32> = ProcessTask::external("elsewhere::task");
    assert!(remote
        .call(1)
        .unwrap_err()
        .to_string()
        .contains("another program"));
}
