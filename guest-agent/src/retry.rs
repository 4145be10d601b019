//! Bounded retries of the transient errors of the TDX quote path.
//!
//! The kernel answers `EBUSY` while an earlier GetQuote still owns its shared buffer, `EINTR` when its
//! one-second wait is interrupted, and `ETIMEDOUT` after its 30 s wait (`tdx_report_new` and
//! `wait_for_quote_completion` in `drivers/virt/coco/tdx-guest/tdx-guest.c`); Intel's GetQuote drivers
//! answer `EBUSY`/`EAGAIN` likewise, and DCAP's `tdx_attest` reports them as "busy" for its callers to try
//! again. These are retried here with a doubling delay, a bounded number of times and within a time budget;
//! every other error ends the attempt at once.

use std::time::{Duration, Instant};

/// How a transient error is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// The delay before the second attempt; doubled before each further one.
    pub first: Duration,
    /// The longest delay.
    pub max: Duration,
    /// No attempt starts later than this after the first began.
    pub budget: Duration,
}

impl Backoff {
    /// The TDX quote path: 5 attempts, 1 s doubling to 8 s, none started after 60 s (so that with the
    /// kernel's own 30 s wait the whole stays inside the agent's evidence limit).
    pub const TDX_QUOTE: Backoff = Backoff {
        attempts: 5,
        first: Duration::from_secs(1),
        max: Duration::from_secs(8),
        budget: Duration::from_secs(60),
    };
}

/// `EBUSY`, `EAGAIN`, `EINTR` or `ETIMEDOUT`.
pub fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBUSY | libc::EAGAIN | libc::EINTR | libc::ETIMEDOUT)
    )
}

/// Runs `op` until it succeeds, fails with an error `transient` does not accept, or `backoff` is spent;
/// the last error is returned.
pub fn retry<T, E>(
    backoff: &Backoff,
    transient: impl Fn(&E) -> bool,
    mut op: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let start = Instant::now();
    let mut delay = backoff.first;
    let mut attempt = 1;
    loop {
        match op() {
            Err(e)
                if transient(&e)
                    && attempt < backoff.attempts
                    && start.elapsed() + delay <= backoff.budget =>
            {
                std::thread::sleep(delay);
                delay = delay.saturating_mul(2).min(backoff.max);
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK: Backoff = Backoff {
        attempts: 4,
        first: Duration::from_millis(1),
        max: Duration::from_millis(2),
        budget: Duration::from_secs(60),
    };

    fn errno(n: i32) -> std::io::Error {
        std::io::Error::from_raw_os_error(n)
    }

    #[test]
    fn transient_errors_are_retried_a_bounded_number_of_times() {
        for n in [libc::EBUSY, libc::EAGAIN, libc::EINTR, libc::ETIMEDOUT] {
            let mut calls = 0;
            let r: Result<(), _> = retry(&QUICK, is_transient, || {
                calls += 1;
                Err(errno(n))
            });
            assert_eq!(r.unwrap_err().raw_os_error(), Some(n));
            assert_eq!(calls, 4);
        }
        let mut calls = 0;
        let r = retry(&QUICK, is_transient, || {
            calls += 1;
            if calls < 3 {
                Err(errno(libc::EBUSY))
            } else {
                Ok(calls)
            }
        });
        assert_eq!(r.ok(), Some(3));
    }

    #[test]
    fn other_errors_and_a_spent_budget_end_at_once() {
        let mut calls = 0;
        let r: Result<(), _> = retry(&QUICK, is_transient, || {
            calls += 1;
            Err(errno(libc::EIO))
        });
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EIO));
        assert_eq!(calls, 1);
        let spent = Backoff {
            budget: Duration::ZERO,
            ..QUICK
        };
        let mut calls = 0;
        let _: Result<(), _> = retry(&spent, is_transient, || {
            calls += 1;
            Err(errno(libc::EBUSY))
        });
        assert_eq!(calls, 1);
    }
}
