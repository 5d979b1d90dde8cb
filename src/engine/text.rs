//! Text assembly for streaming: turns token pieces (arbitrary byte strings) into
//! callback-sized chunks that are always whole UTF-8 characters and never contain,
//! or end with the beginning of, a stop string.

/// Collects token bytes and releases the longest prefix that is valid UTF-8.
/// A character split across tokens is held until its last byte arrives; bytes that
/// can never become valid UTF-8 are replaced with U+FFFD so the output stays valid.
#[derive(Default, Debug)]
pub struct Utf8Assembler {
    pending: Vec<u8>,
}

impl Utf8Assembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add bytes; append whatever is now complete to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut String) {
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // SAFETY-free: from_utf8 said these bytes are valid.
                    out.push_str(
                        std::str::from_utf8(&self.pending[start..start + valid]).unwrap_or(""),
                    );
                    start += valid;
                    match e.error_len() {
                        // Invalid sequence: replace it and keep going.
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start += n;
                        }
                        // Incomplete sequence at the end: wait for more bytes.
                        None => break,
                    }
                }
            }
        }
        self.pending.drain(..start);
    }

    /// End of stream: anything still pending is the start of a character that was
    /// never finished (generation stopped inside it). It is dropped, not replaced:
    /// the reply holds only bytes the model generated, and U+FFFD in it would make
    /// the next turn's prompt match the KV cache less. Returns the bytes dropped.
    pub fn finish(&mut self) -> usize {
        let n = self.pending.len();
        self.pending.clear();
        n
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

/// Result of feeding text to a [`StopMatcher`].
#[derive(Debug, PartialEq, Eq)]
pub enum StopScan {
    /// Emit this text; nothing matched.
    Continue(String),
    /// A stop string matched: emit this text (everything before the match) and stop.
    Stopped(String),
}

/// Matches stop strings across chunk boundaries. Text that could be the start of a
/// stop string is held back until it is known not to be one.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        let stops = stops.into_iter().filter(|s| !s.is_empty()).collect();
        StopMatcher {
            stops,
            held: String::new(),
        }
    }

    pub fn feed(&mut self, text: &str) -> StopScan {
        if self.stops.is_empty() {
            return StopScan::Continue(text.to_owned());
        }
        self.held.push_str(text);
        // Earliest match wins: that is where the model's text really stops.
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(pos) = first {
            let out = self.held[..pos].to_owned();
            self.held.clear();
            return StopScan::Stopped(out);
        }
        let keep = self.partial_suffix_len();
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_owned();
        self.held.drain(..cut);
        StopScan::Continue(out)
    }

    /// Length of the longest suffix of `held` that is a proper prefix of a stop string.
    fn partial_suffix_len(&self) -> usize {
        let h = self.held.as_bytes();
        let mut best = 0;
        for s in &self.stops {
            let s = s.as_bytes();
            let max = (s.len() - 1).min(h.len());
            for k in (best + 1..=max).rev() {
                if h[h.len() - k..] == s[..k] && self.held.is_char_boundary(h.len() - k) {
                    best = k;
                    break;
                }
            }
        }
        best
    }

    /// End of generation: release what was held (it was not a stop string).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// The whole per-token text path of generation: token bytes in, callback calls out
/// (whole UTF-8 characters, stop strings held back and never emitted).
#[derive(Debug, Default)]
pub struct TextStream {
    utf8: Utf8Assembler,
    stops: StopMatcher,
    scratch: String,
}

/// What the stream wants after a push.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Flow {
    Continue,
    /// A stop string matched; generation should end.
    Stopped,
    /// The callback returned false.
    Cancelled,
}

impl TextStream {
    pub fn new(stops: Vec<String>) -> Self {
        TextStream {
            utf8: Utf8Assembler::new(),
            stops: StopMatcher::new(stops),
            scratch: String::new(),
        }
    }

    /// Feed one token's bytes; calls `emit` with any text now safe to release.
    pub fn push(&mut self, bytes: &[u8], emit: &mut dyn FnMut(&str) -> bool) -> Flow {
        self.scratch.clear();
        self.utf8.push(bytes, &mut self.scratch);
        if self.scratch.is_empty() {
            return Flow::Continue;
        }
        let (text, stopped) = match self.stops.feed(&self.scratch) {
            StopScan::Continue(s) => (s, false),
            StopScan::Stopped(s) => (s, true),
        };
        if !text.is_empty() && !emit(&text) {
            return Flow::Cancelled;
        }
        if stopped {
            Flow::Stopped
        } else {
            Flow::Continue
        }
    }

    /// End of generation: release held text (a partial stop-string prefix was not a
    /// stop after all; an unfinished character is dropped, see [`Utf8Assembler::finish`]).
    pub fn finish(&mut self, emit: &mut dyn FnMut(&str) -> bool) -> Flow {
        self.scratch.clear();
        self.utf8.finish();
        let mut tail = match self.stops.feed(&self.scratch) {
            StopScan::Continue(s) => s,
            StopScan::Stopped(s) => {
                return if s.is_empty() || emit(&s) {
                    Flow::Stopped
                } else {
                    Flow::Cancelled
                }
            }
        };
        tail.push_str(&self.stops.flush());
        if !tail.is_empty() && !emit(&tail) {
            return Flow::Cancelled;
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assemble(chunks: &[&[u8]]) -> Vec<String> {
        let mut a = Utf8Assembler::new();
        let mut outs = Vec::new();
        for c in chunks {
            let mut s = String::new();
            a.push(c, &mut s);
            outs.push(s);
        }
        // What finish adds is nothing: it reports the bytes it dropped.
        outs.push("\u{0}".repeat(a.finish()));
        outs
    }

    #[test]
    fn split_multibyte_chars_are_held_until_whole() {
        let euro = "€".as_bytes(); // 3 bytes
        let crab = "🦀".as_bytes(); // 4 bytes
        let outs = assemble(&[&euro[..1], &euro[1..2], &euro[2..], &crab[..3], &crab[3..]]);
        assert_eq!(outs, vec!["", "", "€", "", "🦀", ""]);
    }

    #[test]
    fn every_split_of_mixed_text_reassembles_exactly() {
        let text = "a€b🦀ç日本語x";
        let b = text.as_bytes();
        for i in 0..=b.len() {
            for j in i..=b.len() {
                let outs = assemble(&[&b[..i], &b[i..j], &b[j..]]);
                for o in &outs {
                    assert!(std::str::from_utf8(o.as_bytes()).is_ok());
                }
                assert_eq!(outs.concat(), text, "split at {i},{j}");
            }
        }
    }

    #[test]
    fn invalid_bytes_become_replacement_chars() {
        let outs = assemble(&[b"a\xffb", b"\xe2\x82"]);
        assert_eq!(outs[0], "a\u{FFFD}b");
        // A character cut off by the end of the stream (2 of its 3 bytes) is
        // dropped: only generated bytes are emitted, never an invented U+FFFD.
        assert_eq!(outs[1], "");
        assert_eq!(outs[2], "\u{0}\u{0}");
    }

    fn run_stop(stops: &[&str], chunks: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for c in chunks {
            match m.feed(c) {
                StopScan::Continue(s) => out.push_str(&s),
                StopScan::Stopped(s) => {
                    out.push_str(&s);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.flush());
        (out, false)
    }

    #[test]
    fn stop_string_across_chunks_is_not_emitted() {
        assert_eq!(
            run_stop(&["</end>"], &["hello </", "en", "d> world"]),
            ("hello ".to_string(), true)
        );
    }

    #[test]
    fn partial_stop_prefix_is_released_when_it_diverges() {
        let mut m = StopMatcher::new(vec!["STOP".into()]);
        assert_eq!(m.feed("abST"), StopScan::Continue("ab".into()));
        assert_eq!(m.feed("x"), StopScan::Continue("STx".into()));
        assert_eq!(run_stop(&["STOP"], &["ST", "OR"]), ("STOR".into(), false));
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        assert_eq!(run_stop(&["bb", "a"], &["xxbba"]), ("xx".to_string(), true));
        assert_eq!(
            run_stop(&["\n\n", "User:"], &["hi\nUs", "er: x"]),
            ("hi\n".into(), true)
        );
    }

    #[test]
    fn every_chunking_of_text_gives_same_result() {
        let text = "one two <|im_end|> three";
        for i in 0..=text.len() {
            for j in i..=text.len() {
                let (out, stopped) =
                    run_stop(&["<|im_end|>"], &[&text[..i], &text[i..j], &text[j..]]);
                assert!(stopped);
                assert_eq!(out, "one two ");
            }
        }
    }

    #[test]
    fn multibyte_stop_strings_respect_char_boundaries() {
        assert_eq!(run_stop(&["€€"], &["a€", "b€", "€c"]), ("a€b".into(), true));
    }

    #[test]
    fn no_stops_pass_through() {
        assert_eq!(run_stop(&[], &["a", "b"]), ("ab".into(), false));
        assert_eq!(run_stop(&[""], &["a", "b"]), ("ab".into(), false));
    }
}
