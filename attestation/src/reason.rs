//! The reason codes of DESIGN.md: every rejection carries exactly one. Scripts match on the strings, so the
//! spelling of [`Reason::code`] is a contract.

use std::fmt;

macro_rules! reasons {
    ($($(#[$doc:meta])* $variant:ident = $code:literal,)*) => {
        /// Why evidence (or a request) was refused.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $variant,)*
        }

        impl Reason {
            /// Every reason, in the order DESIGN.md lists them.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant,)*];

            /// The stable code, e.g. `SIGNATURE_INVALID`.
            pub fn code(self) -> &'static str {
                match self {
                    $(Reason::$variant => $code,)*
                }
            }

            /// The reason for a code, if it is one of ours.
            pub fn from_code(code: &str) -> Option<Reason> {
                match code {
                    $($code => Some(Reason::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

reasons! {
    /// The bytes are not well-formed evidence (wrong size, bad encoding, inconsistent lengths).
    Malformed = "MALFORMED",
    /// The evidence version is not one this verifier supports.
    UnsupportedVersion = "UNSUPPORTED_VERSION",
    /// The evidence is signed with an algorithm this verifier does not accept.
    UnsupportedSigAlgo = "UNSUPPORTED_SIG_ALGO",
    /// The quote is not from a TEE type this verifier handles (TDX is 0x81).
    UnsupportedTeeType = "UNSUPPORTED_TEE_TYPE",
    /// The quote's attestation key type is not ECDSA P-256.
    UnsupportedAttKeyType = "UNSUPPORTED_ATT_KEY_TYPE",
    /// The evidence signature does not verify.
    SignatureInvalid = "SIGNATURE_INVALID",
    /// A certificate in the chain is not signed by its issuer, or the chain is incomplete.
    ChainInvalid = "CHAIN_INVALID",
    /// The chain does not end at a trusted root.
    UntrustedRoot = "UNTRUSTED_ROOT",
    /// A certificate has expired at the verification time.
    CertExpired = "CERT_EXPIRED",
    /// A certificate is not yet valid at the verification time.
    CertNotYetValid = "CERT_NOT_YET_VALID",
    /// A certificate is listed in a CRL.
    CertRevoked = "CERT_REVOKED",
    /// The VCEK's hwID differs from the report's CHIP_ID.
    ChipIdMismatch = "CHIP_ID_MISMATCH",
    /// The VCEK's TCB extensions differ from the report's REPORTED_TCB.
    TcbMismatch = "TCB_MISMATCH",
    /// The QE report is not signed by the PCK key.
    QeReportSigInvalid = "QE_REPORT_SIG_INVALID",
    /// The QE report data does not bind the attestation key.
    QeReportDataMismatch = "QE_REPORT_DATA_MISMATCH",
    /// The quoting enclave does not match Intel's QE identity.
    QeIdentityMismatch = "QE_IDENTITY_MISMATCH",
    /// The PCK certificate is revoked.
    PckRevoked = "PCK_REVOKED",
    /// The TCB info is for another FMSPC than the PCK certificate's.
    FmspcMismatch = "FMSPC_MISMATCH",
    /// Collateral needed for the decision is absent.
    CollateralMissing = "COLLATERAL_MISSING",
    /// A collateral signature does not verify.
    CollateralSigInvalid = "COLLATERAL_SIG_INVALID",
    /// The collateral signing chain does not verify.
    CollateralChainInvalid = "COLLATERAL_CHAIN_INVALID",
    /// Collateral (TCB info, QE identity, CRL) is past its nextUpdate or not yet issued.
    CollateralExpired = "COLLATERAL_EXPIRED",
    /// No TCB level matches the platform.
    TcbUnknown = "TCB_UNKNOWN",
    /// The TCB status is not in the policy's `accept_tcb_status`.
    TcbOutOfDate = "TCB_OUT_OF_DATE",
    /// The platform's TCB level is revoked.
    TcbRevoked = "TCB_REVOKED",
    /// The guest runs in debug mode and the policy forbids it.
    PolicyDebug = "POLICY_DEBUG",
    /// The report's VMPL is not allowed by the policy.
    PolicyVmpl = "POLICY_VMPL",
    /// The measurement (MRTD, RTMR, MRCONFIGID) is not allowed by the policy.
    PolicyMeasurement = "POLICY_MEASUREMENT",
    /// The report data differs from the policy's.
    PolicyReportData = "POLICY_REPORT_DATA",
    /// The host data differs from the policy's.
    PolicyHostData = "POLICY_HOST_DATA",
    /// The reported TCB is below the policy's `min_tcb`.
    PolicyTcb = "POLICY_TCB",
    /// The evidence chains to a simulated root and simulated mode is not configured.
    SimulatedNotAllowed = "SIMULATED_NOT_ALLOWED",
    /// Server: the nonce is not one the server issued.
    NonceInvalid = "NONCE_INVALID",
    /// Server: the nonce has expired.
    NonceExpired = "NONCE_EXPIRED",
    /// Server: the nonce was already used.
    NonceReplayed = "NONCE_REPLAYED",
    /// Server: report_data does not bind the nonce, the HPKE key and the resource.
    BindingMismatch = "BINDING_MISMATCH",
    /// Server: no secret of that name.
    UnknownResource = "UNKNOWN_RESOURCE",
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

/// A refusal: the reason code and a sentence a person can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Rejection {
    /// The reason code.
    pub reason: Reason,
    /// What was wrong, in words.
    pub message: String,
}

impl Rejection {
    /// A rejection with the given reason and message.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Rejection {
            reason,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.code()));
            assert_eq!(Reason::from_code(r.code()), Some(*r));
        }
        assert_eq!(Reason::ALL.len(), 37);
    }
}
