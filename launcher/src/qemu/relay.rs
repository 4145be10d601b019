//! `cvm-launch relay 127.0.0.1:PORT`: what QEMU's user-mode networking runs for each guest connection to
//! the forwarded attestation address (`guestfwd=…-cmd:`): the connection is this process's stdin, stdout
//! and stderr (so the relay never prints); the relay copies both ways to the service on the host's
//! loopback, and ends when either side closes. Only loopback targets are accepted: the guest can reach the
//! one service the launcher named.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};

/// Copies stdin → `target` and `target` → stdout until both directions end.
pub fn relay(target: SocketAddr) -> std::io::Result<()> {
    if !target.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{target} is not a loopback address: the relay forwards only to this host's services"
            ),
        ));
    }
    let upstream = TcpStream::connect(target)?;
    let mut to_service = upstream.try_clone()?;
    let guest_to_service = std::thread::spawn(move || {
        let copied = copy(&mut std::io::stdin().lock(), &mut to_service);
        let _ = to_service.shutdown(Shutdown::Write);
        copied
    });
    let mut from_service = upstream;
    copy(&mut from_service, &mut std::io::stdout().lock())?;
    let _ = from_service.shutdown(Shutdown::Read);
    guest_to_service
        .join()
        .map_err(|_| std::io::Error::other("the relay's copying thread panicked"))??;
    Ok(())
}

/// Copies until EOF, flushing after every read (TLS records must not wait in a buffer).
fn copy(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        to.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_relayed() {
        let e = relay("10.0.2.2:443".parse().unwrap()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("not a loopback address"), "{e}");
    }
}
