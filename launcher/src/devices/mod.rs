//! Emulated devices on the x86 I/O port bus (Firecracker style: each behind a small trait, placed on
//! a bus; guest accesses to nothing are counted, never fatal).

pub mod i8042;
pub mod psp;
pub mod serial;

/// A device answering port I/O. `offset` is relative to the device's base port.
pub trait PioDevice {
    /// A guest `in`: fill `data` (already zeroed).
    fn read(&mut self, offset: u16, data: &mut [u8]);
    /// A guest `out`.
    fn write(&mut self, offset: u16, data: &[u8]);
}

/// Port ranges and their devices.
#[derive(Default)]
pub struct PioBus {
    devices: Vec<(u16, u16, Box<dyn PioDevice + Send>)>,
}

impl std::fmt::Debug for PioBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ranges: Vec<(u16, u16)> = self.devices.iter().map(|(b, l, _)| (*b, *l)).collect();
        f.debug_struct("PioBus").field("ranges", &ranges).finish()
    }
}

impl PioBus {
    /// Places `dev` at ports `[base, base + len)`.
    pub fn insert(&mut self, base: u16, len: u16, dev: Box<dyn PioDevice + Send>) {
        self.devices.push((base, len, dev));
    }

    fn find(&mut self, port: u16) -> Option<(u16, &mut (dyn PioDevice + Send + 'static))> {
        self.devices
            .iter_mut()
            .find(|(b, l, _)| port >= *b && port - *b < *l)
            .map(|(b, _, d)| (port - *b, d.as_mut()))
    }

    /// Dispatches a guest `in`; `data` is zero-filled first. Returns false when no device is there.
    pub fn read(&mut self, port: u16, data: &mut [u8]) -> bool {
        data.fill(0);
        match self.find(port) {
            Some((off, d)) => {
                d.read(off, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a guest `out`. Returns false when no device is there.
    pub fn write(&mut self, port: u16, data: &[u8]) -> bool {
        match self.find(port) {
            Some((off, d)) => {
                d.write(off, data);
                true
            }
            None => false,
        }
    }
}
