//! Configuration: builder validation that names the field as
//! `section.key`, and `Config::load` from a TOML file with `SEEDCORE_*`
//! overrides.

use seedcore::{
    CallbackExecutor, ConcurrentSystem, Config, ExecutorKind, ShrinkPolicy, ShutdownMode,
};
use std::time::Duration;

#[test]
fn builder_rejects_invalid_values_naming_the_field() {
    let base = || {
        ConcurrentSystem::builder()
            .name("cfg-bad")
            .core_threads(2)
            .max_threads(4)
    };
    let cases = [
        (base().core_threads(0).max_threads(0), "threads.core"),
        (base().core_threads(0), "threads.core"),
        (base().core_threads(3).max_threads(2), "threads.max"),
        (base().async_threads(0), "async.threads"),
        (base().max_async_tasks(0), "async.max_tasks"),
        (base().shutdown_timeout(Duration::ZERO), "shutdown_timeout"),
        (
            base().thread_keep_alive(Duration::ZERO),
            "threads.keep_alive",
        ),
        (base().thread_stack_size(100), "threads.stack_size"),
        (base().name("  "), "name"),
        (base().core_processes(0), "processes.core"),
        (base().core_processes(3).max_processes(2), "processes.max"),
        (base().process_prefetch(0), "processes.prefetch"),
        (base().process_concurrency(0), "processes.concurrency"),
        (
            base().max_tasks_per_process(0),
            "processes.max_tasks_per_process",
        ),
        (base().max_memory_per_process(1000), "processes.max_memory"),
        (base().max_frame_bytes(100), "processes.max_frame_bytes"),
        (
            base().process_start_timeout(Duration::ZERO),
            "processes.start_timeout",
        ),
        (
            base().shrink_timeout(Duration::ZERO),
            "balance.shrink_timeout",
        ),
        (base().balance_interval(Duration::ZERO), "balance.interval"),
        (base().max_pending_tasks(0), "balance.max_pending_tasks"),
    ];
    for (builder, field) in cases {
        let err = builder.build().expect_err(field);
        assert_eq!(err.field, field, "{err}");
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[test]
fn builder_accepts_core_equal_to_max() {
    let system = ConcurrentSystem::builder()
        .name("cfg-ok")
        .core_threads(1)
        .max_threads(1)
        .build()
        .unwrap();
    assert_eq!(system.config().threads.core, 1);
    assert_eq!(system.config().threads.max, 1);
    let st = system.stats();
    let threads = st
        .executor(ExecutorKind::Threads)
        .expect("a thread pool row");
    assert_eq!((threads.workers, threads.core, threads.max), (1, 1, 1));
}

/// The only test of this binary that touches the environment (it is
/// process-global), with names no other test uses.
#[test]
fn load_reads_a_file_then_env_overrides_it() {
    let dir = std::env::temp_dir().join(format!(
        "seedcore-cfg-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("seedcore.toml");
    std::fs::write(
        &path,
        "name = \"from-file\"\nshutdown_timeout = \"250ms\"\n\
         [threads]\ncore = 2\nmax = 3\n[callbacks]\nexecutor = \"queue\"\n",
    )
    .unwrap();

    let vars = [
        ("SEEDCORE_THREADS_MAX", "7"),
        ("SEEDCORE_SHUTDOWN_MODE", "immediate"),
        ("SEEDCORE_THREADS_KEEP_ALIVE", "1m 30s"),
        ("SEEDCORE_PROCESSES_PREFETCH", "2"),
        ("SEEDCORE_BALANCE_SHRINK", "timeout"),
        ("SEEDCORE_BALANCE_SHRINK_TIMEOUT", "5s"),
    ];
    for (k, v) in vars {
        std::env::set_var(k, v);
    }
    let loaded = Config::load(&path);

    // A bad value in the environment names the key, and the variable in
    // the reason.
    std::env::set_var("SEEDCORE_THREADS_CORE", "lots");
    let bad_env = Config::load(&path);
    std::env::remove_var("SEEDCORE_THREADS_CORE");
    // An old flat name is refused, naming its new place.
    std::env::set_var("SEEDCORE_CORE_THREADS", "4");
    let old_env = Config::load(&path);
    std::env::remove_var("SEEDCORE_CORE_THREADS");
    // A value from the environment that breaks an invariant is refused.
    std::env::set_var("SEEDCORE_THREADS_MAX", "1");
    let bad_max = Config::load(&path);
    for (k, _) in vars {
        std::env::remove_var(k);
    }

    let cfg = loaded.unwrap();
    assert_eq!(cfg.threads.core, 2, "from the file");
    assert_eq!(cfg.threads.max, 7, "the environment wins over the file");
    assert_eq!(cfg.name, "from-file");
    assert_eq!(cfg.shutdown_timeout, Duration::from_millis(250));
    assert_eq!(cfg.shutdown_mode, ShutdownMode::Immediate);
    assert_eq!(cfg.threads.keep_alive, Duration::from_secs(90));
    assert_eq!(cfg.processes.prefetch, 2);
    assert_eq!(cfg.balance.shrink, ShrinkPolicy::TimeoutShrink);
    assert_eq!(cfg.balance.shrink_timeout, Duration::from_secs(5));
    assert!(matches!(cfg.callbacks.executor, CallbackExecutor::Queue(_)));

    let err = bad_env.unwrap_err();
    assert_eq!(err.field, "threads.core", "{err}");
    assert!(err.reason.contains("SEEDCORE_THREADS_CORE"), "{err}");
    let err = old_env.unwrap_err();
    assert_eq!(err.field, "SEEDCORE_CORE_THREADS", "{err}");
    assert!(err.reason.contains("SEEDCORE_THREADS_CORE"), "{err}");
    assert_eq!(bad_max.unwrap_err().field, "threads.max");

    // The loaded config builds a working system.
    let system = ConcurrentSystem::builder().config(cfg).build().unwrap();
    assert_eq!(system.config().name, "from-file");
    assert!(system.callback_queue().is_some());
    drop(system);

    // Errors from the file name their field; an unknown key or section,
    // or a key of the old flat layout, is an error; so is a missing file.
    std::fs::write(&path, "[threads]\ncore = 4\nmax = 2\n").unwrap();
    assert_eq!(Config::load(&path).unwrap_err().field, "threads.max");
    std::fs::write(&path, "[threads]\ncore_treads = 4\n").unwrap();
    assert_eq!(
        Config::load(&path).unwrap_err().field,
        "threads.core_treads"
    );
    std::fs::write(&path, "[treads]\ncore = 4\n").unwrap();
    assert_eq!(Config::load(&path).unwrap_err().field, "treads");
    std::fs::write(&path, "core_threads = 4\n").unwrap();
    let err = Config::load(&path).unwrap_err();
    assert_eq!(err.field, "core_threads");
    assert!(err.reason.contains("threads.core"), "{err}");
    std::fs::write(&path, "[threads]\ncore = [\n").unwrap();
    assert_eq!(Config::load(&path).unwrap_err().field, "<toml>");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(Config::load(&path).is_err());
}
