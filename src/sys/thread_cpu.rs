//! The CPU time the calling thread has used: what a piece of work cost,
//! where a wall clock would also count the time the thread waited for a
//! core (on a 2-core machine, behind a decoder, a FUSE worker or the
//! registry serving the same read).

use std::time::Duration;

/// The calling thread's CPU time so far (user and system); zero where the
/// clock cannot be read.
pub fn now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return Duration::ZERO;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u32::try_from(ts.tv_nsec).unwrap_or(0).min(999_999_999);
    Duration::new(secs, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_on_this_thread_shows_and_sleeping_does_not() {
        let start = now();
        let mut x = 1u64;
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let busy = now() - start;
        assert!(busy >= Duration::from_millis(5), "{busy:?}");
        let before_sleep = now();
        std::thread::sleep(Duration::from_millis(50));
        let asleep = now() - before_sleep;
        assert!(asleep < Duration::from_millis(20), "{asleep:?}");
    }
}
