//! COM1, an 8250 UART (vm-superio) whose output goes to a writer; no interrupts are wired.

use std::io::Write;

use vm_superio::{Serial, Trigger};

use super::PioDevice;

/// COM1 base port.
pub const COM1_BASE: u16 = 0x3f8;
/// Number of 8250 registers.
pub const COM1_LEN: u16 = 8;

/// An interrupt line that goes nowhere (the test guest polls the line status register).
#[derive(Debug, Default)]
pub struct NoIrq;

impl Trigger for NoIrq {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        Ok(())
    }
}

/// The serial port device.
pub struct SerialPort<W: Write> {
    uart: Serial<NoIrq, vm_superio::serial::NoEvents, W>,
}

impl<W: Write> SerialPort<W> {
    /// A UART writing what the guest transmits to `out`.
    pub fn new(out: W) -> Self {
        Self {
            uart: Serial::new(NoIrq, out),
        }
    }
}

impl<W: Write> PioDevice for SerialPort<W> {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        if let (Some(b), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *b = self.uart.read(off);
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        if let (Some(&b), Ok(off)) = (data.first(), u8::try_from(offset)) {
            // Output errors (a closed stdout) cannot be reported to the guest; drop the byte.
            let _ = self.uart.write(off, b);
        }
    }
}
