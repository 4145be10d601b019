//! Collateral JSON parsing: a `QuoteCollateralV3` document, a PCS `{"tcbInfo":…,"signature":…}` response,
//! and the TCB info / QE identity bodies.
#![no_main]

use cvm_attest::tdx::Collateral;
use cvm_attest::tdx::collateral::{QeIdentity, TcbInfo, parse_pcs_json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Collateral::from_v3_json(data);
    let _ = parse_pcs_json(data, "tcbInfo", "fuzz");
    let _ = parse_pcs_json(data, "enclaveIdentity", "fuzz");
    let _ = TcbInfo::parse(data);
    let _ = QeIdentity::parse(data);
});
