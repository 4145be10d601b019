//! Which QEMU is there, and whether it can launch the TEE asked for: `sev-snp-guest` arrived in QEMU 9.1,
//! `tdx-guest` in 10.1; the simulated TEE needs only virtio-serial and user-mode networking.

use std::path::Path;

/// A QEMU version, `major.minor.patch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The first QEMU with `sev-snp-guest`.
pub const MIN_SNP: Version = Version(9, 1, 0);
/// The first QEMU with `tdx-guest`.
pub const MIN_TDX: Version = Version(10, 1, 0);

/// The version in `qemu-system-x86_64 --version`'s first line (`QEMU emulator version 7.2.22 (Debian …)`).
pub fn parse(text: &str) -> Option<Version> {
    let rest = text.lines().next()?.split("version ").nth(1)?;
    let number = rest.split_whitespace().next()?;
    let mut parts = number.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
    });
    let major = parts.next()?.ok()?;
    let minor = parts.next().and_then(Result::ok).unwrap_or(0);
    let patch = parts.next().and_then(Result::ok).unwrap_or(0);
    Some(Version(major, minor, patch))
}

/// Runs `qemu --version`.
pub fn of_program(qemu: &Path) -> Result<Version, String> {
    let out = std::process::Command::new(qemu)
        .arg("--version")
        .output()
        .map_err(|e| {
            format!(
                "cannot run {}: {e} (install QEMU: Debian's qemu-system-x86, or give --qemu PATH)",
                qemu.display()
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse(&text).ok_or_else(|| {
        format!(
            "{} --version printed no version: {:?}",
            qemu.display(),
            text.trim()
        )
    })
}

/// Why `version` cannot launch `tee` (`"snp"`, `"tdx"`), if it cannot.
pub fn refusal(tee: &str, version: Version) -> Option<String> {
    let (min, object) = match tee {
        "snp" => (MIN_SNP, "sev-snp-guest"),
        "tdx" => (MIN_TDX, "tdx-guest"),
        _ => return None,
    };
    (version < min).then(|| {
        format!(
            "QEMU {version} cannot launch --tee {tee}: its {object} object needs QEMU {min} or later; \
             nothing was started (install a newer QEMU and give --qemu PATH)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_the_first_line() {
        assert_eq!(
            parse("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b2)\nCopyright"),
            Some(Version(7, 2, 22))
        );
        assert_eq!(
            parse("QEMU emulator version 10.1.0\n"),
            Some(Version(10, 1, 0))
        );
        assert_eq!(
            parse("QEMU emulator version 9.2.50 (v9.2.0-1234-gabc)"),
            Some(Version(9, 2, 50))
        );
        assert_eq!(parse("something else"), None);
    }

    #[test]
    fn snp_needs_9_1_and_tdx_10_1() {
        let m = refusal("snp", Version(7, 2, 22)).unwrap();
        assert!(
            m.contains("QEMU 7.2.22") && m.contains("9.1.0") && m.contains("sev-snp-guest"),
            "{m}"
        );
        assert_eq!(refusal("snp", Version(9, 1, 0)), None);
        assert!(
            refusal("tdx", Version(10, 0, 2))
                .unwrap()
                .contains("10.1.0")
        );
        assert_eq!(refusal("tdx", Version(10, 1, 0)), None);
        assert_eq!(refusal("sim", Version(4, 0, 0)), None);
    }
}
