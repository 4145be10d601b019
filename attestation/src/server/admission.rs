//! Admission of new connections by client address, decided right after `accept` and before any TLS work:
//! at most `max_connections_per_address` open at once per address, and new ones at no more than
//! `connection_rate_per_address` per second on average (a token bucket of `connection_burst_per_address`).
//! A refused connection is closed at once, so one address that opens and re-opens connections as fast as it
//! can (churn) holds a bounded share of the service and costs it an `accept` and a `close` per attempt.
//!
//! IPv4 addresses (and IPv4-mapped IPv6 ones) count one by one; IPv6 addresses count by /64, the smallest
//! block a site is usually given, so that one client cannot use its 2^64 addresses to escape the limits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// The key an address counts under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressKey {
    /// One IPv4 address.
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6Prefix([u8; 8]),
}

impl AddressKey {
    /// The key of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => AddressKey::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey::V4(v4.octets()),
                None => {
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    AddressKey::V6Prefix(prefix)
                }
            },
        }
    }
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The address already has its maximum of open connections.
    PerAddressConnections,
    /// The address opens connections faster than its rate.
    PerAddressRate,
}

impl Refused {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Refused::PerAddressConnections => "per_address_connections",
            Refused::PerAddressRate => "per_address_rate",
        }
    }
}

/// The limits admission applies.
#[derive(Clone, Copy, Debug)]
pub struct AdmissionLimits {
    /// Most open connections per address.
    pub per_address: usize,
    /// New connections per second per address.
    pub rate: f64,
    /// Bucket size: new connections allowed at once.
    pub burst: f64,
}

/// One address's open connections and token bucket.
#[derive(Debug)]
struct Slot {
    open: usize,
    tokens: f64,
    refilled: Instant,
}

/// Per-address connection counts and rates.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    state: Mutex<State>,
    /// The map size below which it is never swept.
    sweep_floor: usize,
}

/// The slots, and when to sweep idle ones (so that sweeping costs amortized constant time per admission).
#[derive(Debug)]
struct State {
    slots: HashMap<AddressKey, Slot>,
    next_sweep_len: usize,
    last_sweep: Instant,
}

/// Idle slots are swept at most this often, unless the map doubles first.
const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// An admitted connection; dropping it gives its place back.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    key: AddressKey,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut state = self
            .admission
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = state.slots.get_mut(&self.key) {
            slot.open = slot.open.saturating_sub(1);
        }
    }
}

impl Admission {
    /// Admission with these limits; `max_connections` bounds how many addresses can have open connections.
    pub fn new(limits: AdmissionLimits, max_connections: usize) -> Arc<Self> {
        let sweep_floor = max_connections.saturating_mul(2).max(1024);
        Arc::new(Admission {
            limits,
            state: Mutex::new(State {
                slots: HashMap::new(),
                next_sweep_len: sweep_floor,
                last_sweep: Instant::now(),
            }),
            sweep_floor,
        })
    }

    /// Admit a new connection from `ip` at `now`, or say why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Admitted, Refused> {
        let key = AddressKey::of(ip);
        let limits = self.limits;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let len = state.slots.len();
        if len >= state.next_sweep_len
            || (len > 0 && now.saturating_duration_since(state.last_sweep) >= SWEEP_INTERVAL)
        {
            // Addresses with nothing open whose bucket has refilled carry no state worth keeping.
            state
                .slots
                .retain(|_, s| s.open > 0 || refilled(s, limits, now) < limits.burst);
            state.next_sweep_len = state.slots.len().saturating_mul(2).max(self.sweep_floor);
            state.last_sweep = now;
        }
        let slot = state.slots.entry(key).or_insert(Slot {
            open: 0,
            tokens: limits.burst,
            refilled: now,
        });
        slot.tokens = refilled(slot, limits, now);
        slot.refilled = now;
        if slot.open >= limits.per_address {
            return Err(Refused::PerAddressConnections);
        }
        if slot.tokens < 1.0 {
            return Err(Refused::PerAddressRate);
        }
        slot.tokens -= 1.0;
        slot.open += 1;
        Ok(Admitted {
            admission: self.clone(),
            key,
        })
    }

    /// Addresses currently tracked.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .slots
            .len()
    }
}

/// The slot's tokens at `now`: refilled at the rate since the last refill, up to the burst.
fn refilled(slot: &Slot, limits: AdmissionLimits, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(slot.refilled).as_secs_f64();
    (slot.tokens + elapsed * limits.rate).min(limits.burst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn admission(per_address: usize, rate: f64, burst: f64) -> Arc<Admission> {
        Admission::new(
            AdmissionLimits {
                per_address,
                rate,
                burst,
            },
            16,
        )
    }

    #[test]
    fn caps_open_connections_per_address_and_frees_them_on_drop() {
        let a = admission(2, 1000.0, 1000.0);
        let t = Instant::now();
        let attacker: IpAddr = "127.0.0.2".parse().unwrap();
        let first = a.admit(attacker, t).unwrap();
        let _second = a.admit(attacker, t).unwrap();
        assert_eq!(
            a.admit(attacker, t).unwrap_err(),
            Refused::PerAddressConnections
        );
        // Another address is not affected.
        let _other = a.admit("127.0.0.1".parse().unwrap(), t).unwrap();
        drop(first);
        a.admit(attacker, t).unwrap();
    }

    #[test]
    fn limits_the_rate_of_new_connections_with_a_burst() {
        let a = admission(1000, 10.0, 3.0);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t = Instant::now();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(a.admit(ip, t).unwrap());
        }
        assert_eq!(a.admit(ip, t).unwrap_err(), Refused::PerAddressRate);
        // 10/s: one more token after 100 ms.
        held.push(a.admit(ip, t + Duration::from_millis(100)).unwrap());
        assert_eq!(
            a.admit(ip, t + Duration::from_millis(100)).unwrap_err(),
            Refused::PerAddressRate
        );
    }

    #[test]
    fn counts_ipv6_by_64_prefix_and_mapped_ipv4_as_ipv4() {
        let a = admission(1, 1000.0, 1000.0);
        let t = Instant::now();
        let _one = a.admit("2001:db8:1:2::1".parse().unwrap(), t).unwrap();
        assert!(a.admit("2001:db8:1:2::ffff".parse().unwrap(), t).is_err());
        let _other_prefix = a.admit("2001:db8:1:3::1".parse().unwrap(), t).unwrap();
        let _v4 = a.admit("192.0.2.7".parse().unwrap(), t).unwrap();
        assert!(a.admit("::ffff:192.0.2.7".parse().unwrap(), t).is_err());
    }

    #[test]
    fn forgets_idle_addresses_once_their_bucket_is_full() {
        let a = admission(4, 100.0, 2.0);
        let t = Instant::now();
        for i in 0..=255u8 {
            for j in 0..8u8 {
                drop(a.admit(IpAddr::from([10, 0, j, i]), t).unwrap());
            }
        }
        // A second later every bucket is full again: the next admission sweeps them.
        let later = t + Duration::from_millis(1500);
        let _kept = a.admit("10.9.9.9".parse().unwrap(), later).unwrap();
        assert!(a.tracked() < 1024, "{}", a.tracked());
    }
}
