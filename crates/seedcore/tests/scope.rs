//! Scoped work: thread tasks and maps that borrow from the caller's stack,
//! and a scope that does not return before their code has.

mod common;

use seedcore::{TaskError, TaskOptions};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

#[test]
fn tasks_and_maps_borrow_from_the_stack() {
    let system = common::system("scope-borrow", 2, 4);
    let words: Vec<String> = (0..500).map(|i| "w".repeat(i % 17)).collect();
    let counter = AtomicUsize::new(0);
    let (lengths, total) = system.scope(|s| {
        let total = s
            .submit_thread(TaskOptions::new(), |_| {
                words.iter().map(String::len).sum::<usize>()
            })
            .unwrap();
        for _ in 0..10 {
            let _ = s
                .submit_thread(TaskOptions::new(), |_| {
                    counter.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
        }
        let lengths = s.map(&words, |w| w.len()).unwrap();
        (lengths, total.wait().unwrap())
    });
    assert_eq!(lengths, words.iter().map(String::len).collect::<Vec<_>>());
    assert_eq!(total, lengths.iter().sum::<usize>());
    // Detached scoped tasks ran before the scope returned.
    assert_eq!(counter.load(Ordering::SeqCst), 10);
}

#[test]
fn the_scope_waits_for_code_still_running_past_its_timeout() {
    let system = common::system("scope-timeout", 2, 4);
    let finished = AtomicBool::new(false);
    system.scope(|s| {
        let f = s
            .submit_thread(
                TaskOptions::new().timeout(Duration::from_millis(20)),
                |_| {
                    // Ignores its cancellation token, as stuck code does.
                    std::thread::sleep(Duration::from_millis(300));
                    finished.store(true, Ordering::SeqCst);
                },
            )
            .unwrap();
        assert!(matches!(f.wait(), Err(TaskError::TimedOut(_))));
    });
    // The borrow of `finished` was still in use after the timeout: the
    // scope returned only once the code had.
    assert!(finished.load(Ordering::SeqCst));
}

#[test]
fn a_panic_in_the_scope_still_waits_for_its_tasks() {
    let system = common::system("scope-panic", 2, 4);
    let ran = AtomicBool::new(false);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        system.scope(|s| {
            let _ = s
                .submit_thread(TaskOptions::new(), |_| {
                    std::thread::sleep(Duration::from_millis(100));
                    ran.store(true, Ordering::SeqCst);
                })
                .unwrap();
            panic!("{}: the scope's own code panics", common::PANIC_MARKER);
        })
    }));
    assert!(r.is_err());
    assert!(ran.load(Ordering::SeqCst));
}

#[test]
fn a_map_error_is_returned_and_every_chunk_still_finishes() {
    let system = common::system("scope-map-err", 2, 4);
    let seen = AtomicUsize::new(0);
    let items: Vec<u32> = (0..200).collect();
    let r = system.scope(|s| {
        s.map(&items, |&x| {
            seen.fetch_add(1, Ordering::SeqCst);
            if x == 57 {
                panic!("{}: item 57", common::PANIC_MARKER);
            }
            x
        })
    });
    match r {
        Err(e) => assert!(e.panic_message().unwrap().contains("item 57"), "{e}"),
        Ok(_) => panic!("the panic was lost"),
    }
    // Items after 57 in its chunk were not mapped; every other chunk was.
    assert!(seen.load(Ordering::SeqCst) > 100);
}
