//! Short excerpts of untrusted text for messages: an error about an input quotes at most a short prefix of
//! it, so a 64 KB name cannot make a 64 KB answer (or log line).

use std::fmt::Write;

/// Characters of an input quoted in a message.
pub const QUOTE_CHARS: usize = 40;
/// Longest message the service sends in an error body, in bytes.
pub const MAX_MESSAGE: usize = 400;

/// `text` quoted (Rust string syntax) when short; otherwise its first [`QUOTE_CHARS`] characters quoted,
/// an ellipsis and its length in bytes.
pub fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => {
            let mut out = format!("{:?}", &text[..cut]);
            out.pop();
            let _ = write!(out, "…\" ({} bytes)", text.len());
            out
        }
    }
}

/// `message` cut to at most [`MAX_MESSAGE`] bytes (on a character boundary, with an ellipsis).
pub fn truncate(mut message: String) -> String {
    if message.len() <= MAX_MESSAGE {
        return message;
    }
    let mut cut = MAX_MESSAGE - '…'.len_utf8();
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    message.truncate(cut);
    message.push('…');
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_short_text_whole_and_long_text_as_a_prefix() {
        assert_eq!(quote("db"), "\"db\"");
        let long = "é".repeat(65_000);
        let q = quote(&long);
        assert_eq!(
            q,
            format!("\"{}…\" (130000 bytes)", "é".repeat(QUOTE_CHARS))
        );
        assert!(q.len() < 120);
    }

    #[test]
    fn truncates_long_messages_on_a_character_boundary() {
        assert_eq!(truncate("short".into()), "short");
        let t = truncate("ü".repeat(1000));
        assert!(t.len() <= MAX_MESSAGE && t.ends_with('…'), "{}", t.len());
    }
}
