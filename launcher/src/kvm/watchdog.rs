//! Interrupts a vCPU thread stuck in `KVM_RUN` (a guest spinning without exits): after the timeout
//! a real-time signal is sent to that thread every 100 ms; its handler does nothing, so `KVM_RUN`
//! returns `EINTR` and the run loop sees the time is up (the kernel's documented way to kick a vCPU).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::signal::{SIGRTMIN, register_signal_handler};

/// The signal used: the first real-time signal.
fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

extern "C" fn ignore(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// A running watchdog for the calling thread; stops (and joins) on drop.
#[derive(Debug)]
pub struct Watchdog {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts watching the calling thread. Without a signal handler (registration failed) the
    /// watchdog does nothing and the run can only end by itself.
    pub fn start(timeout: Duration) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        if register_signal_handler(kick_signal(), ignore).is_err() {
            return Self { done, thread: None };
        }
        // SAFETY: pthread_self has no preconditions and returns the calling thread's id.
        let target = unsafe { libc::pthread_self() };
        let flag = Arc::clone(&done);
        let start = Instant::now();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(100));
                if start.elapsed() >= timeout && !flag.load(Ordering::Acquire) {
                    // SAFETY: `target` is the thread that created this watchdog; it outlives
                    // this thread because `Drop` sets `done` and joins before that thread can
                    // leave the scope that owns the watchdog. The signal has a no-op handler.
                    unsafe {
                        libc::pthread_kill(target, kick_signal());
                    }
                }
            }
        });
        Self {
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
