//! `--tee sim`: the launcher's simulated PSP, on a Unix socket (`cvm-launch run --tee sim --sim-socket`, for
//! processes on the host) or on the virtio-serial port named `cvm-psp` (`cvm-launch run --vmm qemu --tee sim`,
//! for the agent inside a Linux guest: `/dev/virtio-ports/cvm-psp` where udev made that link, else the
//! `/dev/vportNpM` whose `/sys/class/virtio-ports/vportNpM/name` says `cvm-psp`).
//!
//! Each message is a 4-byte big-endian length followed by that much CBOR; the launcher's
//! `sim_socket` module is the other end; both use the wire types of `cvm_attest::sim::wire`:
//!
//! ```text
//! request   {"tee": "snp"|"tdx", "report_data": bytes(64)}
//! response  {"evidence": bytes, "certs": [bytes]}          snp: the report, VCEK DER first; tdx: a quote
//! error     {"code": text, "message": text}
//! ```

use crate::provider::{Provider, ProviderError};
use cvm_attest::client::Evidence;
use cvm_attest::protocol::TeeKind;

use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the agent waits for the simulated PSP.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response accepted.
pub const MAX_RESPONSE: usize = 1 << 20;
/// The name the launcher gives the PSP's virtio-serial port.
pub const PORT_NAME: &str = "cvm-psp";
/// Where udev links a named virtio-serial port.
pub const PORT_LINK: &str = "/dev/virtio-ports/cvm-psp";
/// Where the kernel lists virtio-serial ports with their names (no udev needed).
pub const PORTS_SYSFS: &str = "/sys/class/virtio-ports";

/// The simulated PSP's virtio-serial port in this guest, if there is one: [`PORT_LINK`], else the device
/// node of the port that `sysfs` (normally [`PORTS_SYSFS`]) names [`PORT_NAME`], under `dev`.
pub fn find_port(sysfs: &Path, dev: &Path) -> Option<PathBuf> {
    let link = Path::new(PORT_LINK);
    if sysfs == Path::new(PORTS_SYSFS) && link.exists() {
        return Some(link.to_owned());
    }
    let mut ports: Vec<_> = std::fs::read_dir(sysfs).ok()?.flatten().collect();
    ports.sort_by_key(|e| e.file_name());
    ports.into_iter().find_map(|e| {
        let name = std::fs::read_to_string(e.path().join("name")).ok()?;
        (name.trim_end() == PORT_NAME).then(|| dev.join(e.file_name()))
    })
}

/// An open connection to the simulated PSP: a Unix socket or a virtio-serial port.
enum Channel {
    Socket(UnixStream),
    Port(std::fs::File),
}

impl Read for Channel {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Channel::Socket(s) => s.read(buf),
            Channel::Port(f) => f.read(buf),
        }
    }
}

impl Write for Channel {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Channel::Socket(s) => s.write(buf),
            Channel::Port(f) => f.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Channel::Socket(s) => s.flush(),
            Channel::Port(f) => f.flush(),
        }
    }
}

pub use cvm_attest::sim::wire::{
    ByteString, ErrorResponse, EvidenceRequest, EvidenceResponse, read_frame, write_frame,
};

/// The simulated-PSP provider.
#[derive(Clone, Debug)]
pub struct SimSocket {
    path: PathBuf,
    format: TeeKind,
}

impl SimSocket {
    /// A provider asking the simulated PSP at `path` (a Unix socket or a virtio-serial port's character
    /// device) for evidence in `format` (an SNP report or a TDX quote).
    pub fn new(path: &Path, format: TeeKind) -> Self {
        SimSocket {
            path: path.to_owned(),
            format,
        }
    }

    /// Connects to the socket, or opens the port (a character device). A port has no timeout of its own: the
    /// launcher answers each request as it arrives, and the caller's attempt limit covers a silent one.
    fn open(&self) -> Result<Channel, ProviderError> {
        let is_device = std::fs::metadata(&self.path)
            .map(|m| m.file_type().is_char_device())
            .unwrap_or(false);
        if is_device {
            return std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.path)
                .map(Channel::Port)
                .map_err(self.io("open the virtio-serial port"));
        }
        let s = UnixStream::connect(&self.path)
            .map_err(self.io("connect (is `cvm-launch run --tee sim --sim-socket` running?)"))?;
        s.set_read_timeout(Some(TIMEOUT))
            .map_err(self.io("set timeout"))?;
        s.set_write_timeout(Some(TIMEOUT))
            .map_err(self.io("set timeout"))?;
        Ok(Channel::Socket(s))
    }

    fn io(&self, what: &str) -> impl FnOnce(std::io::Error) -> ProviderError {
        let provider = self.describe();
        let what = what.to_owned();
        move |source| ProviderError::Io {
            provider,
            what,
            source,
        }
    }
}

impl Provider for SimSocket {
    fn tee(&self) -> Option<TeeKind> {
        Some(self.format)
    }

    fn describe(&self) -> String {
        format!(
            "sim ({}-format evidence from the simulated PSP at {})",
            wire_name(self.format),
            self.path.display()
        )
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, ProviderError> {
        let mut s = self.open()?;
        let req = cvm_keys::cbor::to_vec(&EvidenceRequest {
            tee: wire_name(self.format).into(),
            report_data: ByteString(report_data.to_vec()),
        })
        .map_err(|e| ProviderError::Bad {
            provider: self.describe(),
            message: e.to_string(),
        })?;
        write_frame(&mut s, &req).map_err(self.io("send request"))?;
        let body = read_frame(&mut s, MAX_RESPONSE).map_err(self.io("read response"))?;
        decode_response(&body, self.format).map_err(|message| ProviderError::Bad {
            provider: self.describe(),
            message,
        })
    }
}

/// The evidence in a response body from the simulated PSP (bytes from the host, which the guest does not
/// trust: any decoding failure, or the PSP's refusal, is the message of the error).
pub fn decode_response(body: &[u8], format: TeeKind) -> Result<Evidence, String> {
    if let Ok(ok) = cvm_keys::cbor::from_slice::<EvidenceResponse>(body) {
        return Ok(Evidence {
            tee: format,
            evidence: ok.evidence.0,
            certs: ok.certs.into_iter().map(|c| c.0).collect(),
        });
    }
    Err(match cvm_keys::cbor::from_slice::<ErrorResponse>(body) {
        Ok(e) => format!("refused: {}: {}", e.code, e.message),
        Err(e) => format!("undecodable response: {e}"),
    })
}

/// The socket's name for an evidence format.
fn wire_name(format: TeeKind) -> &'static str {
    match format {
        TeeKind::Snp => "snp",
        TeeKind::Tdx => "tdx",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_port_is_found_by_its_sysfs_name_without_udev() {
        let dir = tempfile::tempdir().unwrap();
        let sysfs = dir.path().join("virtio-ports");
        for (port, name) in [
            ("vport0p1", "org.qemu.guest_agent.0\n"),
            ("vport1p1", "cvm-psp\n"),
        ] {
            std::fs::create_dir_all(sysfs.join(port)).unwrap();
            std::fs::write(sysfs.join(port).join("name"), name).unwrap();
        }
        let dev = dir.path().join("dev");
        assert_eq!(find_port(&sysfs, &dev), Some(dev.join("vport1p1")));
        std::fs::write(sysfs.join("vport1p1").join("name"), "other\n").unwrap();
        assert_eq!(find_port(&sysfs, &dev), None);
        assert_eq!(find_port(&dir.path().join("absent"), &dev), None);
    }
}
