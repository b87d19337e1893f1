//! Worker threads, the one way ocimount spreads work over the cores: how
//! many there are, a numbered list of jobs shared by a few threads
//! (indexing layers, filling spans), and long-lived named workers
//! (decode-ahead).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The cores this process may use (1 when unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Run `job(i)` for every `i` in `0..count` on up to `threads` threads,
/// each taking the next number until none is left; a thread whose job
/// returns `false` takes no more. Returns when every thread has stopped.
pub fn for_each_index<F>(threads: usize, count: usize, job: F)
where
    F: Fn(usize) -> bool + Sync,
{
    let next = AtomicUsize::new(0);
    let run = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= count || !job(i) {
            break;
        }
    };
    let threads = threads.clamp(1, count.max(1));
    if threads == 1 {
        run();
        return;
    }
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(run);
        }
    });
}

/// Start `count` threads named `NAME-N`, each running `work`; those the
/// system refuses are left out (with a warning). Returns the handles.
pub fn spawn_named<F>(name: &str, count: usize, work: F) -> Vec<JoinHandle<()>>
where
    F: Fn() + Send + Sync + 'static,
{
    let work = Arc::new(work);
    let mut handles = Vec::with_capacity(count);
    for n in 0..count {
        let work = work.clone();
        match std::thread::Builder::new()
            .name(format!("{name}-{n}"))
            .spawn(move || work())
        {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                tracing::warn!("{name}: cannot start a thread ({e})");
                break;
            }
        }
    }
    handles
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn every_index_runs_once() {
        for threads in [1, 2, 5] {
            let seen = Mutex::new(vec![0u32; 100]);
            for_each_index(threads, 100, |i| {
                seen.lock().unwrap()[i] += 1;
                true
            });
            assert_eq!(*seen.lock().unwrap(), vec![1u32; 100], "{threads} threads");
        }
    }

    #[test]
    fn a_job_that_fails_stops_its_thread() {
        let ran = AtomicUsize::new(0);
        for_each_index(1, 10, |i| {
            ran.fetch_add(1, Ordering::Relaxed);
            i < 3
        });
        assert_eq!(ran.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn named_workers_run_and_join() {
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let handles = spawn_named("test-worker", 3, move || {
            c.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(handles.len(), 3);
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(count.load(Ordering::Relaxed), 3);
    }
}
