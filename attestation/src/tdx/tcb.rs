//! TCB level selection as Intel's Quote Verification Library does it for TDX (QVL `TcbLevelCheck` and
//! `TdxModuleCheck`; Intel "TDX DCAP Quoting Library API" Appendix "TCB status determination"):
//!
//! 1. The platform level is the first entry of `tcbLevels` (they are sorted best first) where every
//!    `sgxtcbcomponents[i].svn` ≤ the PCK certificate's sgxtcbcomp(i+1)svn, `pcesvn` ≤ the PCK's PCESVN and
//!    every `tdxtcbcomponents[i].svn` ≤ TEE_TCB_SVN[i]. When TEE_TCB_SVN[1] (the TDX module major version)
//!    is non-zero, the TDX comparison starts at index 2: the module's own SVN is judged by its identity.
//! 2. The TDX module: with a major version `n` > 0 the identity `TDX_0n` of `tdxModuleIdentities` must exist,
//!    its MRSIGNER must equal MRSIGNERSEAM and SEAM_ATTRIBUTES & mask must equal its attributes; its status is
//!    the first level with isvsvn ≤ TEE_TCB_SVN[0]. With major version 0, `tdxModule` (if given) is matched
//!    the same way and has no status of its own.
//! 3. The statuses converge (QVL `convergeTcbStatus…`): an `OutOfDate` module or QE makes an
//!    `UpToDate`/`SWHardeningNeeded` platform `OutOfDate` and a `ConfigurationNeeded`/
//!    `ConfigurationAndSWHardeningNeeded` one `OutOfDateConfigurationNeeded`; a `Revoked` one makes it
//!    `Revoked`; other component statuses leave the platform status as it is.
//! 4. TDX 1.5 reports also carry TEE_TCB_SVN2, the current TCB after a TD-preserving module update: it is
//!    evaluated the same way and must match a level too (QVL `checkForRelaunch`).

use super::collateral::{IsvSvnLevel, QeIdentity, TcbInfo, TcbLevel, TdxModuleIdentity};
use super::pck::PckExtensions;
use super::quote::{QeReport, TdReport};
use crate::policy::TcbStatus;

/// Why no TCB status could be determined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TcbError {
    /// No platform TCB level matches (QVL: `STATUS_TCB_NOT_SUPPORTED`).
    NoPlatformLevel,
    /// No `TDX_0n` identity for the module's major version.
    NoModuleIdentity(u8),
    /// The module's MRSIGNER or SEAM attributes differ from its identity.
    ModuleMismatch(&'static str),
    /// The module's SVN is below every level of its identity.
    NoModuleLevel(u8),
}

/// The outcome of the TDX module check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleMatch {
    /// The identity id (`TDX_01`, ...), or empty for `tdxModule`.
    pub id: String,
    /// The matching level, when the identity has levels.
    pub level: Option<IsvSvnLevel>,
}

/// The first platform level the PCK's SGX TCB, PCESVN and TEE_TCB_SVN reach.
pub fn platform_level<'t>(
    info: &'t TcbInfo,
    pck: &PckExtensions,
    tee_tcb_svn: &[u8; 16],
) -> Option<&'t TcbLevel> {
    let start = if tee_tcb_svn[1] > 0 { 2 } else { 0 };
    info.levels.iter().find(|level| {
        let sgx_ok = level
            .sgx_components
            .iter()
            .zip(&pck.sgx_tcb_components)
            .all(|(need, have)| have >= need);
        let tdx_ok = level
            .tdx_components
            .iter()
            .zip(tee_tcb_svn)
            .skip(start)
            .all(|(need, have)| have >= need);
        sgx_ok && pck.pcesvn >= level.pcesvn && tdx_ok
    })
}

fn masked_eq(value: &[u8], mask: &[u8], expected: &[u8]) -> bool {
    value.len() == mask.len()
        && mask.len() == expected.len()
        && value
            .iter()
            .zip(mask)
            .zip(expected)
            .all(|((v, m), e)| v & m == e & m)
}

fn identity_matches(identity: &TdxModuleIdentity, td: &TdReport<'_>) -> Result<(), TcbError> {
    if identity.mrsigner != *td.mrsignerseam {
        return Err(TcbError::ModuleMismatch("MRSIGNERSEAM"));
    }
    if !masked_eq(
        td.seam_attributes,
        &identity.attributes_mask,
        &identity.attributes,
    ) {
        return Err(TcbError::ModuleMismatch("SEAM attributes"));
    }
    Ok(())
}

/// The TDX module's identity and level (step 2 above).
/// `tee_tcb_svn` is TEE_TCB_SVN (the launch TCB) or, for TDX 1.5, TEE_TCB_SVN2 (the current TCB).
pub fn module_level(
    info: &TcbInfo,
    td: &TdReport<'_>,
    tee_tcb_svn: &[u8; 16],
) -> Result<Option<ModuleMatch>, TcbError> {
    let major = tee_tcb_svn[1];
    let svn = tee_tcb_svn[0];
    if major == 0 {
        return match &info.tdx_module {
            Some(module) => {
                identity_matches(module, td)?;
                Ok(Some(ModuleMatch {
                    id: module.id.clone(),
                    level: None,
                }))
            }
            None => Ok(None),
        };
    }
    let id = format!("TDX_{major:02X}");
    let identity = info
        .tdx_module_identities
        .iter()
        .find(|m| m.id.eq_ignore_ascii_case(&id))
        .ok_or(TcbError::NoModuleIdentity(major))?;
    identity_matches(identity, td)?;
    let level = identity
        .levels
        .iter()
        .find(|l| l.isvsvn <= u16::from(svn))
        .ok_or(TcbError::NoModuleLevel(svn))?;
    Ok(Some(ModuleMatch {
        id: identity.id.clone(),
        level: Some(level.clone()),
    }))
}

/// Fold a module or QE status into the platform status (step 3 above).
pub fn converge(platform: TcbStatus, other: TcbStatus) -> TcbStatus {
    use TcbStatus::*;
    match other {
        Revoked => Revoked,
        OutOfDate => match platform {
            UpToDate | SWHardeningNeeded => OutOfDate,
            ConfigurationNeeded | ConfigurationAndSWHardeningNeeded => OutOfDateConfigurationNeeded,
            p => p,
        },
        _ => platform,
    }
}

/// Why the QE does not match its identity.
pub fn qe_identity_mismatch(identity: &QeIdentity, qe: &QeReport<'_>) -> Option<String> {
    if identity.mrsigner != *qe.mrsigner {
        return Some("QE MRSIGNER differs from the QE identity".into());
    }
    if identity.isvprodid != qe.isvprodid {
        return Some(format!(
            "QE ISVPRODID {} differs from the QE identity's {}",
            qe.isvprodid, identity.isvprodid
        ));
    }
    if qe.miscselect & identity.miscselect_mask != identity.miscselect & identity.miscselect_mask {
        return Some("QE MISCSELECT (masked) differs from the QE identity".into());
    }
    if !masked_eq(
        qe.attributes,
        &identity.attributes_mask,
        &identity.attributes,
    ) {
        return Some("QE ATTRIBUTES (masked) differ from the QE identity".into());
    }
    None
}

/// The QE identity level for the QE's ISVSVN.
pub fn qe_level<'i>(identity: &'i QeIdentity, qe: &QeReport<'_>) -> Option<&'i IsvSvnLevel> {
    identity.levels.iter().find(|l| l.isvsvn <= qe.isvsvn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use TcbStatus::*;

    #[test]
    fn converges_like_qvl() {
        assert_eq!(converge(UpToDate, UpToDate), UpToDate);
        assert_eq!(converge(SWHardeningNeeded, OutOfDate), OutOfDate);
        assert_eq!(
            converge(ConfigurationNeeded, OutOfDate),
            OutOfDateConfigurationNeeded
        );
        assert_eq!(converge(UpToDate, Revoked), Revoked);
        assert_eq!(converge(OutOfDate, UpToDate), OutOfDate);
    }
}
