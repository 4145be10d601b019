//! The reset line of the PC keyboard controller (i8042): a guest that writes command 0xFE
//! ("pulse output line 0", the CPU reset) to port 0x64 asks for a reboot — Linux's `reboot=k`,
//! tried by default when a kernel reboots or panics with `panic=-1`. Nothing else of the
//! controller is emulated: status reads 0 (both buffers empty), data reads 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::PioDevice;

/// Data port.
pub const I8042_BASE: u16 = 0x60;
/// Ports 0x60..=0x64 (0x64 is the status/command port).
pub const I8042_LEN: u16 = 5;
/// Offset of the command port from [`I8042_BASE`].
const COMMAND: u16 = 4;
/// Command: pulse the reset line.
const CMD_RESET_CPU: u8 = 0xfe;

/// The controller; [`I8042::reset_requested`] is shared with the run loop.
#[derive(Debug, Default)]
pub struct I8042 {
    reset: Arc<AtomicBool>,
}

impl I8042 {
    /// A controller with a fresh reset flag.
    pub fn new() -> Self {
        Self::default()
    }

    /// The flag set when the guest asks for a reset.
    pub fn reset_requested(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.reset)
    }
}

impl PioDevice for I8042 {
    fn read(&mut self, _offset: u16, _data: &mut [u8]) {}

    fn write(&mut self, offset: u16, data: &[u8]) {
        if offset == COMMAND && data.first() == Some(&CMD_RESET_CPU) {
            self.reset.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_command_0xfe_on_port_0x64_resets() {
        let mut k = I8042::new();
        let flag = k.reset_requested();
        k.write(0, &[CMD_RESET_CPU]);
        k.write(COMMAND, &[0xd1]);
        assert!(!flag.load(Ordering::Acquire));
        k.write(COMMAND, &[CMD_RESET_CPU]);
        assert!(flag.load(Ordering::Acquire));
    }
}
