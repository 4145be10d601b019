//! The appraisal policy (DESIGN.md "Appraisal policy"): a TOML document per secret on the server, `--policy`
//! offline. Defaults deny: no debug guests, only `UpToDate` TDX platforms, and any value the policy names must
//! match exactly. Absent fields mean "any"; an empty list is refused (it would accept nothing, which is never
//! what was meant). A policy the service releases a secret under must constrain the launch measurement
//! (`[snp] measurements` or `[tdx] mrtd`) unless it says `allow_any_measurement = true`
//! ([`Policy::check_for_release`]).

use serde::Deserialize;
use std::fmt;

/// A TDX TCB status as Intel's TCB info names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
pub enum TcbStatus {
    /// The platform is patched to the latest TCB.
    UpToDate,
    /// Patched, but software hardening is needed.
    SWHardeningNeeded,
    /// Patched, but the platform configuration needs attention.
    ConfigurationNeeded,
    /// Both of the above.
    ConfigurationAndSWHardeningNeeded,
    /// The platform needs a TCB recovery.
    OutOfDate,
    /// Out of date, and the configuration needs attention.
    OutOfDateConfigurationNeeded,
    /// The TCB level is revoked: never accepted.
    Revoked,
}

impl TcbStatus {
    /// The status for Intel's spelling of it.
    pub fn parse(s: &str) -> Option<TcbStatus> {
        Some(match s {
            "UpToDate" => TcbStatus::UpToDate,
            "SWHardeningNeeded" => TcbStatus::SWHardeningNeeded,
            "ConfigurationNeeded" => TcbStatus::ConfigurationNeeded,
            "ConfigurationAndSWHardeningNeeded" => TcbStatus::ConfigurationAndSWHardeningNeeded,
            "OutOfDate" => TcbStatus::OutOfDate,
            "OutOfDateConfigurationNeeded" => TcbStatus::OutOfDateConfigurationNeeded,
            "Revoked" => TcbStatus::Revoked,
            _ => return None,
        })
    }

    /// Intel's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TcbStatus::UpToDate => "UpToDate",
            TcbStatus::SWHardeningNeeded => "SWHardeningNeeded",
            TcbStatus::ConfigurationNeeded => "ConfigurationNeeded",
            TcbStatus::ConfigurationAndSWHardeningNeeded => "ConfigurationAndSWHardeningNeeded",
            TcbStatus::OutOfDate => "OutOfDate",
            TcbStatus::OutOfDateConfigurationNeeded => "OutOfDateConfigurationNeeded",
            TcbStatus::Revoked => "Revoked",
        }
    }
}

impl fmt::Display for TcbStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Fixed-size bytes written as lowercase or uppercase hex in the policy.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HexBytes<const N: usize>(pub [u8; N]);

impl<const N: usize> fmt::Debug for HexBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl<'de, const N: usize> Deserialize<'de> for HexBytes<N> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; N];
        hex::decode_to_slice(s.trim(), &mut out).map_err(|_| {
            serde::de::Error::custom(format!(
                "expected {} hex digits ({N} bytes), got {}",
                N * 2,
                crate::excerpt::quote(&s)
            ))
        })?;
        Ok(HexBytes(out))
    }
}

/// A 48-byte measurement (SNP MEASUREMENT, TDX MRTD/RTMR/MRCONFIGID).
pub type Hex48 = HexBytes<48>;

/// The whole policy.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Accept guests that run in debug mode (their memory is readable by the host). Default false.
    #[serde(default)]
    pub allow_debug: bool,
    /// TDX TCB statuses to accept. Default `["UpToDate"]`; `Revoked` is refused when the policy is read.
    #[serde(default = "default_accept_tcb_status")]
    pub accept_tcb_status: Vec<TcbStatus>,
    /// Reject evidence when no CRL could be checked (`COLLATERAL_MISSING`). Default false.
    #[serde(default)]
    pub require_revocation: bool,
    /// Release the secret to guests of any launch measurement: the service refuses a policy that constrains
    /// neither `[snp] measurements` nor `[tdx] mrtd` unless this is true, and refuses evidence of a TEE whose
    /// measurement the policy leaves open. Default false. No effect offline.
    #[serde(default)]
    pub allow_any_measurement: bool,
    /// SEV-SNP reference values.
    #[serde(default)]
    pub snp: SnpPolicy,
    /// TDX reference values.
    #[serde(default)]
    pub tdx: TdxPolicy,
}

fn default_accept_tcb_status() -> Vec<TcbStatus> {
    vec![TcbStatus::UpToDate]
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allow_debug: false,
            accept_tcb_status: default_accept_tcb_status(),
            require_revocation: false,
            allow_any_measurement: false,
            snp: SnpPolicy::default(),
            tdx: TdxPolicy::default(),
        }
    }
}

/// SEV-SNP reference values. Each absent field accepts any value.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpPolicy {
    /// Allowed launch measurements.
    pub measurements: Option<Vec<Hex48>>,
    /// Allowed VMPLs (0 to 3).
    pub vmpl: Option<Vec<u32>>,
    /// Required HOST_DATA.
    pub host_data: Option<HexBytes<32>>,
    /// Required REPORT_DATA (offline only: the server derives it from the nonce binding).
    pub report_data: Option<HexBytes<64>>,
    /// Minimum REPORTED_TCB, component by component.
    pub min_tcb: Option<MinTcb>,
}

/// Minimum SNP TCB components (`fmc` only applies to Turin).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinTcb {
    /// Minimum FMC SPL (Turin).
    #[serde(default)]
    pub fmc: u8,
    /// Minimum boot loader SPL.
    #[serde(default)]
    pub bootloader: u8,
    /// Minimum PSP OS (TEE) SPL.
    #[serde(default)]
    pub tee: u8,
    /// Minimum SNP firmware SPL.
    #[serde(default)]
    pub snp: u8,
    /// Minimum microcode SPL.
    #[serde(default)]
    pub microcode: u8,
}

/// TDX reference values. Each absent field accepts any value.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TdxPolicy {
    /// Allowed MRTD values.
    pub mrtd: Option<Vec<Hex48>>,
    /// Allowed RTMR0 values.
    pub rtmr0: Option<Vec<Hex48>>,
    /// Allowed RTMR1 values.
    pub rtmr1: Option<Vec<Hex48>>,
    /// Allowed RTMR2 values.
    pub rtmr2: Option<Vec<Hex48>>,
    /// Allowed RTMR3 values.
    pub rtmr3: Option<Vec<Hex48>>,
    /// Required MRCONFIGID.
    pub mrconfigid: Option<Hex48>,
    /// Required REPORT_DATA (offline only).
    pub report_data: Option<HexBytes<64>>,
}

/// A policy document that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Not valid TOML, or a field of the wrong shape (where, and what; never the whole offending line).
    #[error("invalid policy: {0}")]
    Toml(String),
    /// `accept_tcb_status` names `Revoked`.
    #[error(
        "invalid policy: accept_tcb_status must not contain \"Revoked\" (revoked platforms are never accepted)"
    )]
    AcceptsRevoked,
    /// A VMPL outside 0 to 3.
    #[error("invalid policy: [snp] vmpl = {0} is not a VMPL: use 0 to 3")]
    Vmpl(u32),
    /// A list that accepts nothing.
    #[error(
        "invalid policy: {0} = [] accepts nothing: list the accepted values, or remove the key to accept any"
    )]
    EmptyList(&'static str),
    /// A policy for the service that leaves the launch measurement open.
    #[error(
        "invalid policy: it constrains no launch measurement, so any guest would get the secret: add \
         [snp] measurements and/or [tdx] mrtd (the values `cvm-launch measure` prints), or say \
         allow_any_measurement = true if that is really meant"
    )]
    NoMeasurement,
}

/// A TOML error as "line N: what", without the source line the TOML library would quote in full.
fn describe(e: &toml::de::Error, text: &str) -> String {
    let message = crate::excerpt::truncate(e.message().trim().to_owned());
    match e.span().and_then(|span| text.get(..span.start)) {
        Some(before) => format!("line {}: {message}", before.matches('\n').count() + 1),
        None => message,
    }
}

/// Highest VMPL (SEV-SNP has VMPL 0 to 3).
pub const MAX_VMPL: u32 = 3;

impl Policy {
    /// Read a policy from TOML text: its shape, VMPLs within 0 to 3, no empty lists, no `Revoked`.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let policy: Policy =
            toml::from_str(text).map_err(|e| PolicyError::Toml(describe(&e, text)))?;
        if policy.accept_tcb_status.contains(&TcbStatus::Revoked) {
            return Err(PolicyError::AcceptsRevoked);
        }
        if let Some(bad) = policy.snp.vmpl.iter().flatten().find(|v| **v > MAX_VMPL) {
            return Err(PolicyError::Vmpl(*bad));
        }
        let lists = [
            (
                "[snp] measurements",
                policy.snp.measurements.as_ref().map(Vec::len),
            ),
            ("[snp] vmpl", policy.snp.vmpl.as_ref().map(Vec::len)),
            ("[tdx] mrtd", policy.tdx.mrtd.as_ref().map(Vec::len)),
            ("[tdx] rtmr0", policy.tdx.rtmr0.as_ref().map(Vec::len)),
            ("[tdx] rtmr1", policy.tdx.rtmr1.as_ref().map(Vec::len)),
            ("[tdx] rtmr2", policy.tdx.rtmr2.as_ref().map(Vec::len)),
            ("[tdx] rtmr3", policy.tdx.rtmr3.as_ref().map(Vec::len)),
        ];
        if let Some((key, _)) = lists.iter().find(|(_, len)| *len == Some(0)) {
            return Err(PolicyError::EmptyList(key));
        }
        Ok(policy)
    }

    /// Whether this policy may guard a secret on the service: it constrains the launch measurement of at
    /// least one TEE, or says `allow_any_measurement = true`.
    pub fn check_for_release(&self) -> Result<(), PolicyError> {
        if self.allow_any_measurement
            || self.constrains_measurement(crate::Tee::Snp)
            || self.constrains_measurement(crate::Tee::Tdx)
        {
            Ok(())
        } else {
            Err(PolicyError::NoMeasurement)
        }
    }

    /// Whether the launch measurement of `tee` is constrained (`[snp] measurements`, `[tdx] mrtd`).
    pub fn constrains_measurement(&self, tee: crate::Tee) -> bool {
        match tee {
            crate::Tee::Snp => self.snp.measurements.is_some(),
            crate::Tee::Tdx => self.tdx.mrtd.is_some(),
        }
    }

    /// Whether `status` is accepted (never for `Revoked`).
    pub fn accepts_tcb_status(&self, status: TcbStatus) -> bool {
        status != TcbStatus::Revoked && self.accept_tcb_status.contains(&status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_policy_denies_debug_and_accepts_only_up_to_date() {
        let p = Policy::from_toml("").unwrap();
        assert!(!p.allow_debug);
        assert!(p.accepts_tcb_status(TcbStatus::UpToDate));
        assert!(!p.accepts_tcb_status(TcbStatus::OutOfDate));
        assert!(p.snp.measurements.is_none());
    }

    #[test]
    fn reads_the_design_example() {
        let m = "ab".repeat(48);
        let text = format!(
            "allow_debug = true\naccept_tcb_status = [\"UpToDate\", \"OutOfDate\"]\nrequire_revocation = true\n\
             [snp]\nmeasurements = [\"{m}\"]\nvmpl = [0]\nhost_data = \"{}\"\n\
             min_tcb = {{ bootloader = 1, tee = 0, snp = 8, microcode = 115 }}\n\
             [tdx]\nmrtd = [\"{m}\"]\nrtmr0 = [\"{m}\"]\nmrconfigid = \"{m}\"\n",
            "00".repeat(32)
        );
        let p = Policy::from_toml(&text).unwrap();
        assert!(p.allow_debug && p.require_revocation);
        assert!(p.accepts_tcb_status(TcbStatus::OutOfDate));
        assert_eq!(p.snp.measurements.unwrap()[0].0, [0xab; 48]);
        assert_eq!(p.snp.min_tcb.unwrap().microcode, 115);
        assert_eq!(p.tdx.rtmr0.unwrap().len(), 1);
    }

    #[test]
    fn refuses_revoked_unknown_keys_and_bad_hex() {
        assert!(matches!(
            Policy::from_toml("accept_tcb_status = [\"Revoked\"]"),
            Err(PolicyError::AcceptsRevoked)
        ));
        assert!(Policy::from_toml("allow_debugg = true").is_err());
        assert!(Policy::from_toml("[snp]\nmeasurements = [\"abcd\"]").is_err());
        assert!(Policy::from_toml("accept_tcb_status = [\"Fine\"]").is_err());
    }

    #[test]
    fn refuses_vmpls_above_3_empty_lists_and_wrong_hex_lengths() {
        assert!(matches!(
            Policy::from_toml("[snp]\nvmpl = [0, 7]"),
            Err(PolicyError::Vmpl(7))
        ));
        Policy::from_toml("[snp]\nvmpl = [0, 1, 2, 3]").unwrap();
        for key in [
            "[snp]\nmeasurements",
            "[snp]\nvmpl",
            "[tdx]\nmrtd",
            "[tdx]\nrtmr2",
        ] {
            let e = Policy::from_toml(&format!("{key} = []")).unwrap_err();
            assert!(matches!(e, PolicyError::EmptyList(_)), "{key}: {e}");
        }
        // Every hex value has its exact length: one digit short or long is refused.
        for (table, key, digits) in [
            ("snp", "measurements = [\"{}\"]", 96),
            ("snp", "host_data = \"{}\"", 64),
            ("snp", "report_data = \"{}\"", 128),
            ("tdx", "mrtd = [\"{}\"]", 96),
            ("tdx", "rtmr3 = [\"{}\"]", 96),
            ("tdx", "mrconfigid = \"{}\"", 96),
            ("tdx", "report_data = \"{}\"", 128),
        ] {
            let with = |n: usize| format!("[{table}]\n{}", key.replace("{}", &"a".repeat(n)));
            Policy::from_toml(&with(digits)).unwrap();
            assert!(
                Policy::from_toml(&with(digits - 2)).is_err(),
                "{table} {key}"
            );
            assert!(
                Policy::from_toml(&with(digits + 2)).is_err(),
                "{table} {key}"
            );
        }
        // The message quotes only a prefix of a long bad value.
        let long = format!("[snp]\nhost_data = \"{}\"", "z".repeat(65_000));
        let e = Policy::from_toml(&long).unwrap_err().to_string();
        assert!(
            e.contains("65000 bytes") && !e.contains(&"z".repeat(100)),
            "{}",
            e.len()
        );
    }

    #[test]
    fn a_policy_for_the_service_must_constrain_a_measurement_or_say_it_does_not() {
        for open in [
            "",
            "allow_debug = false",
            "[snp]\nvmpl = [0]",
            "[tdx]\nrtmr0 = [\"{m}\"]",
        ] {
            let text = open.replace("{m}", &"00".repeat(48));
            let p = Policy::from_toml(&text).unwrap();
            assert!(
                matches!(p.check_for_release(), Err(PolicyError::NoMeasurement)),
                "{text}"
            );
        }
        let m = "11".repeat(48);
        for constrained in [
            format!("[snp]\nmeasurements = [\"{m}\"]"),
            format!("[tdx]\nmrtd = [\"{m}\"]"),
            "allow_any_measurement = true".to_string(),
        ] {
            Policy::from_toml(&constrained)
                .unwrap()
                .check_for_release()
                .unwrap();
        }
        let snp_only = Policy::from_toml(&format!("[snp]\nmeasurements = [\"{m}\"]")).unwrap();
        assert!(snp_only.constrains_measurement(crate::Tee::Snp));
        assert!(!snp_only.constrains_measurement(crate::Tee::Tdx));
    }
}
