//! Fuzz target for the VMM's answers to a confidential guest's exits (`cvm_launch::cvm::exits`), whose
//! operands the guest controls: MAP_GPA_RANGE, memory faults and TDX GetQuote over 16 KiB of shared memory
//! (from the input) with a quote service that echoes the TDREPORT. Must never panic; memory conversions are
//! whole pages; GetQuote writes only inside the buffer the guest named.
#![no_main]

use cvm_launch::cvm::Recorder;
use cvm_launch::cvm::exits::{self, QuoteService};
use libfuzzer_sys::fuzz_target;

/// Answers with the TDREPORT repeated `times` times (a quote longer than the buffer when the guest asks).
struct Echo {
    times: usize,
}

impl QuoteService for Echo {
    fn quote(&self, tdreport: &[u8]) -> Result<Vec<u8>, String> {
        if self.times == 0 {
            return Err("unavailable".into());
        }
        Ok(tdreport.repeat(self.times))
    }
}

const SHARED: usize = 16 * 4096;

/// The little-endian `u64` at `at` (0 past the end).
fn get_u64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|w| w.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fuzz_target!(|data: &[u8]| {
    let Some((operands, memory)) = data.split_at_checked(33) else {
        return;
    };
    let word = |i: usize| get_u64(operands, 8 * i);
    let (gpa, size, flags, pages) = (word(0), word(1), word(2), word(3));
    let mut rec = Recorder {
        calls: Vec::new(),
        memory: memory
            .iter()
            .copied()
            .chain(std::iter::repeat(0))
            .take(SHARED)
            .collect(),
    };
    let _ = exits::map_gpa_range(&mut rec, &[gpa, pages, flags, 0, 0, 0]);
    let _ = exits::memory_fault(&mut rec, flags, gpa, size);
    for call in &rec.calls {
        let (at, len) = (get_u64(&call.payload, 0), get_u64(&call.payload, 8));
        assert!(
            at % 4096 == 0 && len % 4096 == 0 && len > 0,
            "{at:#x}+{len:#x}"
        );
    }
    let before = rec.memory.clone();
    let service = Echo {
        times: usize::from(operands[32] % 4),
    };
    let status = exits::get_quote(&mut rec, &service, gpa, size);
    if status == exits::TDVMCALL_STATUS_SUCCESS {
        // Only the buffer [gpa, gpa + size) may change.
        let (start, end) = (gpa as usize, (gpa + size) as usize);
        assert!(end <= SHARED);
        assert_eq!(rec.memory[..start], before[..start]);
        assert_eq!(rec.memory[end..], before[end..]);
    } else {
        assert_eq!(rec.memory, before);
    }
});
