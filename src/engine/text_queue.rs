//! A text queue between a generating thread and a consumer on another thread.
//!
//! Bindings whose callbacks are expensive to enter (Python's GIL, a JS event loop)
//! pass the queue's push as the generation's text callback: the generating thread
//! then only appends bytes and wakes the consumer, and never waits for the
//! consumer's language runtime while the next token could be decoding. The
//! consumer pops whatever has arrived, in order, whole pieces only.

use parking_lot::{Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    /// Text pushed and not yet popped; piece boundaries in `cuts`.
    text: Vec<u8>,
    /// End offset in `text` of each piece not yet popped.
    cuts: std::collections::VecDeque<usize>,
    /// The producer said no more text comes.
    ended: bool,
    /// The consumer said it wants no more text: pushes are refused.
    stopped: bool,
}

/// What [`TextQueue::pop`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Popped {
    /// Whole pieces, `n` bytes written to the buffer.
    Text(usize),
    /// Nothing arrived within the timeout.
    Empty,
    /// The producer ended and everything was popped.
    Ended,
    /// The next piece needs a buffer of at least this many bytes.
    TooSmall(usize),
}

/// Producer: [`push`](TextQueue::push) each piece, then [`end`](TextQueue::end).
/// Consumer: [`pop`](TextQueue::pop) until `Ended`; [`stop`](TextQueue::stop)
/// to make further pushes fail (which stops a generation using push as its
/// callback). Safe to share between threads.
#[derive(Default)]
pub struct TextQueue {
    state: Mutex<State>,
    ready: Condvar,
}

impl TextQueue {
    pub fn new() -> TextQueue {
        TextQueue::default()
    }

    /// Append one piece (empty pieces are dropped). False once the consumer has
    /// stopped, or after `end`: the caller should stop producing.
    pub fn push(&self, piece: &[u8]) -> bool {
        let mut s = self.state.lock();
        if s.stopped || s.ended {
            return false;
        }
        if !piece.is_empty() {
            s.text.extend_from_slice(piece);
            let end = s.text.len();
            s.cuts.push_back(end);
            drop(s);
            self.ready.notify_all();
        }
        true
    }

    /// No more text comes: a consumer sees `Ended` once it has popped the rest.
    pub fn end(&self) {
        self.state.lock().ended = true;
        self.ready.notify_all();
    }

    /// The consumer wants no more: later pushes return false. Text already queued
    /// can still be popped.
    pub fn stop(&self) {
        self.state.lock().stopped = true;
        self.ready.notify_all();
    }

    /// Move as many whole pieces as fit into `buf`, waiting up to `timeout`
    /// (`None`: until text arrives or the queue ends) when none is queued.
    pub fn pop(&self, buf: &mut [u8], timeout: Option<Duration>) -> Popped {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut s = self.state.lock();
        while s.cuts.is_empty() {
            if s.ended {
                return Popped::Ended;
            }
            match deadline {
                None => self.ready.wait(&mut s),
                Some(d) => {
                    if self.ready.wait_until(&mut s, d).timed_out() && s.cuts.is_empty() {
                        return if s.ended {
                            Popped::Ended
                        } else {
                            Popped::Empty
                        };
                    }
                }
            }
        }
        let first = s.cuts[0];
        if first > buf.len() {
            return Popped::TooSmall(first);
        }
        let mut n = 0;
        while let Some(&c) = s.cuts.front() {
            if c > buf.len() {
                break;
            }
            n = c;
            s.cuts.pop_front();
        }
        buf[..n].copy_from_slice(&s.text[..n]);
        s.text.drain(..n);
        for c in s.cuts.iter_mut() {
            *c -= n;
        }
        Popped::Text(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn pieces_come_out_whole_and_in_order() {
        let q = TextQueue::new();
        assert!(q.push(b"he"));
        assert!(q.push(b"llo"));
        assert!(q.push(b""));
        assert!(q.push(" wörld".as_bytes()));
        let mut buf = [0u8; 6];
        // "hello" fits, " wörld" (7 bytes) does not follow it into this buffer.
        assert_eq!(q.pop(&mut buf, Some(Duration::ZERO)), Popped::Text(5));
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(q.pop(&mut buf, Some(Duration::ZERO)), Popped::TooSmall(7));
        let mut big = [0u8; 64];
        assert_eq!(q.pop(&mut big, Some(Duration::ZERO)), Popped::Text(7));
        assert_eq!(std::str::from_utf8(&big[..7]).unwrap(), " wörld");
        assert_eq!(q.pop(&mut big, Some(Duration::ZERO)), Popped::Empty);
        q.end();
        assert!(!q.push(b"late"), "push after end is refused");
        assert_eq!(q.pop(&mut big, None), Popped::Ended);
    }

    #[test]
    fn stop_refuses_pushes_but_keeps_queued_text() {
        let q = TextQueue::new();
        assert!(q.push(b"a"));
        q.stop();
        assert!(!q.push(b"b"));
        let mut buf = [0u8; 8];
        assert_eq!(q.pop(&mut buf, Some(Duration::ZERO)), Popped::Text(1));
        assert_eq!(q.pop(&mut buf, Some(Duration::ZERO)), Popped::Empty);
    }

    #[test]
    fn a_waiting_consumer_wakes_for_text_and_for_the_end() {
        let q = Arc::new(TextQueue::new());
        let p = q.clone();
        let t = std::thread::spawn(move || {
            for i in 0..100 {
                assert!(p.push(format!("{i},").as_bytes()));
            }
            p.end();
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 16];
        loop {
            match q.pop(&mut buf, None) {
                Popped::Text(n) => got.extend_from_slice(&buf[..n]),
                Popped::Ended => break,
                other => panic!("{other:?}"),
            }
        }
        t.join().unwrap();
        let want: String = (0..100).map(|i| format!("{i},")).collect();
        assert_eq!(String::from_utf8(got).unwrap(), want);
    }
}
