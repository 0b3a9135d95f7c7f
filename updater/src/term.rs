//! Strings from outside (a feed, an image header, an HTTP server, a file
//! name) on a terminal.
//!
//! Such a string may carry control characters: an escape sequence that
//! recolours, moves the cursor or retitles the terminal, a carriage return
//! that overwrites the line before it, or a bidi override that reorders
//! what the eye reads. Human output passes every such string through
//! [`printable`] before it prints it; the error printer (`exit::report`) and
//! the warning printers pass the whole line. JSON output is left to serde,
//! which escapes control characters itself.

use std::borrow::Cow;

/// True for a character that must not reach a terminal raw: C0 controls
/// (newline and tab included), DEL, C1 controls, and the Unicode bidi
/// controls (LRM, RLM, ALM, the embeddings and overrides U+202A..U+202E and
/// the isolates U+2066..U+2069).
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every character [`unsafe_char`] names written as a Rust
/// escape (`\u{1b}`); borrowed unchanged when there is none.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::printable;
    use std::borrow::Cow;

    #[test]
    fn plain_text_is_borrowed() {
        let s = "slotctl: error: v2.img: 2.0.0 naïve ✓";
        assert!(matches!(printable(s), Cow::Borrowed(x) if x == s));
    }

    #[test]
    fn controls_and_bidi_are_escaped() {
        let cases = [
            ("a\x1b[31mb", "a\\u{1b}[31mb"),
            ("x\ry\nz\t", "x\\u{d}y\\u{a}z\\u{9}"),
            ("\0\x7f", "\\u{0}\\u{7f}"),
            ("c1:\u{9b}31m", "c1:\\u{9b}31m"),
            ("\u{202e}gpj.exe", "\\u{202e}gpj.exe"),
            ("\u{2066}i\u{2069}", "\\u{2066}i\\u{2069}"),
            ("\u{200f}\u{061c}", "\\u{200f}\\u{61c}"),
        ];
        for (raw, want) in cases {
            let got = printable(raw);
            assert_eq!(got, want, "{raw:?}");
            assert!(!got.chars().any(|c| c.is_control()), "{got:?}");
        }
    }
}
