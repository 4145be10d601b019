//! Fuzz target for the simulated PSP socket's request decoding (`cvm_launch::sim_socket::answer`): any bytes
//! get a CBOR answer, never a panic; a well-formed request for 64 bytes of REPORT_DATA gets evidence.
#![no_main]

use cvm_launch::devices::psp::ReportSigner;
use cvm_launch::sim_socket::answer;
use libfuzzer_sys::fuzz_target;

struct Echo;

impl ReportSigner for Echo {
    fn snp_report(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, String> {
        Ok(report_data.to_vec())
    }
    fn certs(&self) -> Vec<Vec<u8>> {
        vec![vec![1, 2, 3]]
    }
}

fuzz_target!(|data: &[u8]| {
    let reply = answer(data, &Echo);
    assert!(!reply.is_empty());
});
