//! QMP, QEMU's JSON machine protocol, only as far as the launcher needs it: the greeting, the capabilities
//! handshake, then the events, of which `SHUTDOWN` (with `data.reason`: `guest-shutdown` for a power-off,
//! `guest-reset` for a reset under `-no-reboot`, `guest-panic`, `host-signal`, …) says how the guest ended.
//! Lines longer than [`MAX_LINE`] end the session (QEMU's events are a few hundred bytes).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest QMP line read.
pub const MAX_LINE: usize = 64 * 1024;

/// How a guest ended, as QEMU reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShutdownReason {
    /// The guest powered itself off (ACPI).
    PowerOff,
    /// The guest reset itself (with `-no-reboot`, QEMU then exits).
    Reset,
    /// The guest kernel panicked (pvpanic).
    Panic,
    /// Another reason QEMU named (`host-signal`, `host-qmp-quit`, …).
    Other(String),
}

impl ShutdownReason {
    /// The reason of a `SHUTDOWN` event's `data.reason`.
    pub fn from_qmp(reason: &str) -> Self {
        match reason {
            "guest-shutdown" => Self::PowerOff,
            "guest-reset" => Self::Reset,
            "guest-panic" => Self::Panic,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// The last `SHUTDOWN` reason seen, shared with the reader thread.
pub type LastShutdown = Arc<Mutex<Option<ShutdownReason>>>;

/// Connects to QEMU's QMP socket (retrying until `deadline` while QEMU starts), completes the handshake and
/// reads events on a background thread into the returned slot.
pub fn watch(socket: &Path, deadline: Instant) -> Result<LastShutdown, String> {
    let stream = loop {
        match UnixStream::connect(socket) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => {
                return Err(format!(
                    "cannot connect to QMP at {}: {e}",
                    socket.display()
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut greeting = String::new();
    read_line(&mut reader, &mut greeting)?;
    if !greeting.contains("\"QMP\"") {
        return Err(format!("not a QMP greeting: {}", greeting.trim()));
    }
    writer
        .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .map_err(|e| format!("QMP handshake: {e}"))?;
    let last: LastShutdown = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&last);
    std::thread::spawn(move || {
        let mut line = String::new();
        while read_line(&mut reader, &mut line).is_ok() {
            if let Some(reason) = shutdown_reason(&line)
                && let Ok(mut s) = slot.lock()
            {
                *s = Some(reason);
            }
        }
    });
    Ok(last)
}

/// Reads one line of at most [`MAX_LINE`] bytes into `line` (cleared first); EOF is an error.
fn read_line(reader: &mut impl BufRead, line: &mut String) -> Result<(), String> {
    line.clear();
    let n = reader
        .by_ref()
        .take(MAX_LINE as u64)
        .read_line(line)
        .map_err(|e| e.to_string())?;
    if n == 0 || !line.ends_with('\n') {
        return Err("QMP closed".into());
    }
    Ok(())
}

/// The reason of a `SHUTDOWN` event line; `None` for any other line.
pub fn shutdown_reason(line: &str) -> Option<ShutdownReason> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("event")?.as_str()? != "SHUTDOWN" {
        return None;
    }
    let reason = v.get("data")?.get("reason")?.as_str()?;
    Some(ShutdownReason::from_qmp(reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_events_say_how_the_guest_ended() {
        let line = r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}"#;
        assert_eq!(shutdown_reason(line), Some(ShutdownReason::PowerOff));
        let line = r#"{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-reset"}}"#;
        assert_eq!(shutdown_reason(line), Some(ShutdownReason::Reset));
        let line = r#"{"event": "SHUTDOWN", "data": {"guest": false, "reason": "host-signal"}}"#;
        assert_eq!(
            shutdown_reason(line),
            Some(ShutdownReason::Other("host-signal".into()))
        );
        assert_eq!(shutdown_reason(r#"{"return": {}}"#), None);
        assert_eq!(shutdown_reason(r#"{"event": "RESET", "data": {}}"#), None);
        assert_eq!(shutdown_reason("not json"), None);
    }
}
