//! COM1, an 8250 UART (vm-superio) whose output goes to a writer; its interrupt goes nowhere
//! (guests that poll) or to an eventfd wired to IRQ 4 of the in-kernel irqchip. A
//! [`SerialInput`] feeds the receive FIFO from another thread (the host's stdin).

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

type Uart<W, T> = Serial<T, vm_superio::serial::NoEvents, W>;

/// The serial port device.
pub struct SerialPort<W: Write, T: Trigger = NoIrq> {
    uart: Arc<Mutex<Uart<W, T>>>,
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
            uart: Arc::new(Mutex::new(Serial::new(irq, out))),
        }
    }

    /// The receive side, for another thread.
    pub fn input(&self) -> SerialInput<W, T> {
        SerialInput {
            uart: Arc::clone(&self.uart),
        }
    }
}

/// What the guest receives on a [`SerialPort`].
pub struct SerialInput<W: Write, T: Trigger> {
    uart: Arc<Mutex<Uart<W, T>>>,
}

impl<W: Write, T: Trigger> SerialInput<W, T> {
    /// Queues as many of `bytes` as the receive FIFO takes (raising the interrupt when the guest
    /// enabled it); returns how many were taken.
    pub fn feed(&self, bytes: &[u8]) -> usize {
        let Ok(mut uart) = self.uart.lock() else {
            return 0;
        };
        let n = uart.fifo_capacity().min(bytes.len());
        match bytes.get(..n) {
            Some(b) if n > 0 => uart.enqueue_raw_bytes(b).unwrap_or(0),
            _ => 0,
        }
    }
}

impl<W: Write + Send + 'static, T: Trigger + Send + 'static> SerialInput<W, T> {
    /// Copies `from` into the guest's receive FIFO on a detached thread until `from` ends, waiting
    /// while the FIFO is full. The thread may stay blocked in `read` after the run; the process
    /// ending stops it.
    pub fn pump<R: Read + Send + 'static>(self, mut from: R) {
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok(n) = from.read(&mut buf) {
                let Some(mut rest) = buf.get(..n).filter(|r| !r.is_empty()) else {
                    return;
                };
                while !rest.is_empty() {
                    let taken = self.feed(rest);
                    rest = rest.get(taken..).unwrap_or_default();
                    if taken == 0 {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        });
    }
}

impl<W: Write, T: Trigger> PioDevice for SerialPort<W, T> {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        if let (Some(b), Ok(off), Ok(mut uart)) =
            (data.first_mut(), u8::try_from(offset), self.uart.lock())
        {
            *b = uart.read(off);
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        if let (Some(&b), Ok(off), Ok(mut uart)) =
            (data.first(), u8::try_from(offset), self.uart.lock())
        {
            // Output errors (a closed stdout) cannot be reported to the guest; drop the byte.
            let _ = uart.write(off, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_fills_the_receive_fifo_up_to_its_capacity() {
        let mut port = SerialPort::new(Vec::new());
        let input = port.input();
        assert_eq!(input.feed(&[b'x'; 100]), 64);
        assert_eq!(input.feed(b"y"), 0);
        let mut lsr = [0u8];
        port.read(5, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        let mut rbr = [0u8];
        port.read(0, &mut rbr);
        assert_eq!(rbr[0], b'x');
        assert_eq!(input.feed(b"y"), 1);
    }
}
