//! Native-messaging framing: a 32-bit length in native byte order, then that many
//! bytes of UTF-8 JSON.

use std::io::{self, Read, Write};

/// How reading the next frame ended.
#[derive(Debug)]
pub enum Frame {
    /// One message's bytes.
    Message(Vec<u8>),
    /// The other side closed the stream between messages.
    Eof,
    /// A message of this many bytes, over the limit but not absurd: its bytes were
    /// read and dropped, and the next frame can be read.
    TooLong(usize),
    /// An absurd length (over [`ABSURD`]), or a stream that ended inside a frame: the
    /// framing cannot be trusted past this point.
    Broken(String),
}

/// A length prefix above this is not a request (a broken or hostile stream): the
/// host stops reading rather than skip gigabytes.
pub(crate) const ABSURD: usize = 64 << 20;

/// Read one frame of at most `max` bytes. A longer one (up to [`ABSURD`]) is
/// skipped and reported as `TooLong`, so the caller can answer it and go on.
pub fn read_frame(r: &mut impl Read, max: usize) -> io::Result<Frame> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(Frame::Eof),
            Ok(0) => {
                return Ok(Frame::Broken(
                    "the stream ended inside a length prefix".into(),
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let n = u32::from_ne_bytes(len) as usize;
    if n > max.max(ABSURD) {
        return Ok(Frame::Broken(format!(
            "a message of {n} bytes is over the limit of {}",
            max.max(ABSURD)
        )));
    }
    if n > max {
        let skipped = io::copy(&mut r.take(n as u64), &mut io::sink())?;
        return Ok(if skipped == n as u64 {
            Frame::TooLong(n)
        } else {
            Frame::Broken(format!("the stream ended inside a message of {n} bytes"))
        });
    }
    let mut buf = vec![0u8; n];
    match r.read_exact(&mut buf) {
        Ok(()) => Ok(Frame::Message(buf)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Frame::Broken(format!(
            "the stream ended inside a message of {n} bytes"
        ))),
        Err(e) => Err(e),
    }
}

/// Write one frame and flush it.
pub fn write_frame(w: &mut impl Write, msg: &[u8]) -> io::Result<()> {
    let n = u32::try_from(msg.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message over 4 GiB"))?;
    w.write_all(&n.to_ne_bytes())?;
    w.write_all(msg)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_broken_frames() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"{\"a\":1}").unwrap();
        write_frame(&mut buf, b"").unwrap();
        let mut r = &buf[..];
        assert!(matches!(read_frame(&mut r, 100).unwrap(), Frame::Message(m) if m == b"{\"a\":1}"));
        assert!(matches!(read_frame(&mut r, 100).unwrap(), Frame::Message(m) if m.is_empty()));
        assert!(matches!(read_frame(&mut r, 100).unwrap(), Frame::Eof));
        let mut r: &[u8] = &[1, 0];
        assert!(matches!(read_frame(&mut r, 100).unwrap(), Frame::Broken(_)));
        let mut r: &[u8] = &u32::MAX.to_ne_bytes();
        assert!(
            matches!(read_frame(&mut r, 100).unwrap(), Frame::Broken(m) if m.contains("limit"))
        );
        // Over the limit but not absurd: skipped, and the next frame reads.
        let mut long = Vec::new();
        write_frame(&mut long, &[b'x'; 150]).unwrap();
        write_frame(&mut long, b"{}").unwrap();
        let mut r = &long[..];
        assert!(matches!(
            read_frame(&mut r, 100).unwrap(),
            Frame::TooLong(150)
        ));
        assert!(matches!(read_frame(&mut r, 100).unwrap(), Frame::Message(m) if m == b"{}"));
        assert!(matches!(
            read_frame(&mut &long[..120], 100).unwrap(),
            Frame::Broken(_)
        ));
        let mut short = 10u32.to_ne_bytes().to_vec();
        short.extend_from_slice(b"abc");
        assert!(matches!(
            read_frame(&mut &short[..], 100).unwrap(),
            Frame::Broken(_)
        ));
    }
}
