//! COM1, an 8250 UART (vm-superio) whose output goes to a writer; its interrupt goes nowhere
//! (guests that poll) or to an eventfd wired to IRQ 4 of the in-kernel irqchip.

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

/// An interrupt line that signals an eventfd (registered with `KVM_IRQFD`).
#[derive(Debug)]
pub struct EventFdIrq(pub vmm_sys_util::eventfd::EventFd);

impl Trigger for EventFdIrq {
    type E = std::io::Error;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.write(1)
    }
}

/// The IRQ line of COM1 on a PC.
pub const COM1_IRQ: u32 = 4;

/// The serial port device.
pub struct SerialPort<W: Write, T: Trigger = NoIrq> {
    uart: Serial<T, vm_superio::serial::NoEvents, W>,
}

impl<W: Write> SerialPort<W> {
    /// A UART writing what the guest transmits to `out`, without an interrupt.
    pub fn new(out: W) -> Self {
        Self::with_irq(out, NoIrq)
    }
}

impl<W: Write, T: Trigger> SerialPort<W, T> {
    /// A UART writing to `out` and raising `irq`.
    pub fn with_irq(out: W, irq: T) -> Self {
        Self {
            uart: Serial::new(irq, out),
        }
    }
}

impl<W: Write, T: Trigger> PioDevice for SerialPort<W, T> {
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
