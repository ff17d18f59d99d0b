//! Configuration: builder validation that names the field, and
//! `Config::load` from a TOML file with `SEEDCORE_*` overrides.

use seedcore::{CallbackExecutor, ConcurrentSystem, Config, ExecutorKind, ShutdownMode};
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
        (base().core_threads(0).max_threads(0), "core_threads"),
        (base().core_threads(0), "core_threads"),
        (base().core_threads(3).max_threads(2), "max_threads"),
        (base().async_threads(0), "async_threads"),
        (base().max_async_tasks(0), "max_async_tasks"),
        (base().shutdown_timeout(Duration::ZERO), "shutdown_timeout"),
        (
            base().thread_keep_alive(Duration::ZERO),
            "thread_keep_alive",
        ),
        (base().thread_stack_size(100), "thread_stack_size"),
        (base().name("  "), "name"),
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
    assert_eq!(system.config().core_threads, 1);
    assert_eq!(system.config().max_threads, 1);
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
        "core_threads = 2\nmax_threads = 3\nname = \"from-file\"\n\
         shutdown_timeout = \"250ms\"\ncallback_executor = \"queue\"\n",
    )
    .unwrap();

    let vars = [
        ("SEEDCORE_MAX_THREADS", "7"),
        ("SEEDCORE_SHUTDOWN_MODE", "immediate"),
        ("SEEDCORE_THREAD_KEEP_ALIVE", "1m 30s"),
    ];
    for (k, v) in vars {
        std::env::set_var(k, v);
    }
    let loaded = Config::load(&path);

    // A bad value in the environment names the variable.
    std::env::set_var("SEEDCORE_CORE_THREADS", "lots");
    let bad_env = Config::load(&path);
    std::env::remove_var("SEEDCORE_CORE_THREADS");
    // A value from the environment that breaks an invariant is refused.
    std::env::set_var("SEEDCORE_MAX_THREADS", "1");
    let bad_max = Config::load(&path);
    for (k, _) in vars {
        std::env::remove_var(k);
    }

    let cfg = loaded.unwrap();
    assert_eq!(cfg.core_threads, 2, "from the file");
    assert_eq!(cfg.max_threads, 7, "the environment wins over the file");
    assert_eq!(cfg.name, "from-file");
    assert_eq!(cfg.shutdown_timeout, Duration::from_millis(250));
    assert_eq!(cfg.shutdown_mode, ShutdownMode::Immediate);
    assert_eq!(cfg.thread_keep_alive, Duration::from_secs(90));
    assert!(matches!(cfg.callback_executor, CallbackExecutor::Queue(_)));

    let err = bad_env.unwrap_err();
    assert_eq!(err.field, "SEEDCORE_CORE_THREADS", "{err}");
    assert_eq!(bad_max.unwrap_err().field, "max_threads");

    // The loaded config builds a working system.
    let system = ConcurrentSystem::builder().config(cfg).build().unwrap();
    assert_eq!(system.config().name, "from-file");
    assert!(system.callback_queue().is_some());
    drop(system);

    // Errors from the file name their field; a missing file is an error.
    std::fs::write(&path, "core_threads = 4\nmax_threads = 2\n").unwrap();
    assert_eq!(Config::load(&path).unwrap_err().field, "max_threads");
    std::fs::write(&path, "core_treads = 4\n").unwrap();
    assert_eq!(Config::load(&path).unwrap_err().field, "core_treads");
    std::fs::write(&path, "core_threads = [\n").unwrap();
    assert_eq!(Config::load(&path).unwrap_err().field, "<toml>");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(Config::load(&path).is_err());
}
