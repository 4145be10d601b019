//! Fixed-size byte fields from hex text (the `cvm-attest sim` arguments).

use super::error::SimError;

/// `text` as exactly `N` bytes of hex, or, with `zero_pad`, at most `N` bytes zero-padded on the right.
pub fn parse<const N: usize>(text: &str, what: &str, zero_pad: bool) -> Result<[u8; N], SimError> {
    let text = text.trim();
    let bytes = hex::decode(text).map_err(|e| {
        SimError::Request(format!(
            "{what} is not hex ({e}): expected {} hex digits",
            N * 2
        ))
    })?;
    let ok = if zero_pad {
        bytes.len() <= N
    } else {
        bytes.len() == N
    };
    if !ok {
        return Err(SimError::Request(format!(
            "{what} is {} bytes; it must be {}{N} bytes ({} hex digits)",
            bytes.len(),
            if zero_pad { "at most " } else { "" },
            N * 2
        )));
    }
    let mut out = [0u8; N];
    if let Some(dst) = out.get_mut(..bytes.len()) {
        dst.copy_from_slice(&bytes);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_only_when_asked_and_refuses_wrong_lengths() {
        assert_eq!(parse::<4>("0102", "x", true).unwrap(), [1, 2, 0, 0]);
        assert!(parse::<4>("0102", "x", false).is_err());
        assert!(parse::<4>("0102030405", "x", true).is_err());
        assert!(parse::<4>("zz", "x", true).is_err());
        assert_eq!(parse::<2>("ABCD", "x", false).unwrap(), [0xab, 0xcd]);
    }
}
