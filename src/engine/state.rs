//! KV state files: a sequence's tokens and KV cells on disk, loadable into a
//! sequence of a context on the same model with the same KV layout (n_seq_max and
//! kv_unified: llama.cpp's state names its streams), in this or another process.
//!
//! Layout (little-endian): magic `TAKVSTAT`, u32 version, the model's 32-byte
//! fingerprint, u32 token count, the tokens (i32 each), u64 length of llama.cpp's
//! sequence state, that state, then a SHA-256 of everything before it. A file is
//! checked whole (size, magic, version, model, digest) before llama.cpp sees a byte.

use super::sequence::Sequence;
use super::{shim, sys};
use crate::error::{Error, ErrorKind, Result};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

const MAGIC: &[u8; 8] = b"TAKVSTAT";
const VERSION: u32 = 1;
const HEAD: usize = 8 + 4 + 32 + 4;
const DIGEST: usize = 32;

/// What identifies a model's weights without hashing all of them: the file size,
/// every byte before the tensor data (header, metadata, tensor table) and 16
/// samples of 4 KiB spread over the tensor data. `read_at` reads the model's bytes
/// at an offset (a file or a buffer). None when they cannot be read.
pub(crate) fn fingerprint(
    read_at: &dyn Fn(u64, &mut [u8]) -> std::io::Result<usize>,
    data_offset: u64,
    file_size: u64,
) -> Option<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(file_size.to_le_bytes());
    let head = data_offset.min(file_size);
    let mut buf = vec![0u8; 1 << 16];
    let mut at = 0u64;
    while at < head {
        let want = (head - at).min(buf.len() as u64) as usize;
        let n = read_at(at, &mut buf[..want]).ok()?;
        if n == 0 {
            return None;
        }
        h.update(&buf[..n]);
        at += n as u64;
    }
    let span = file_size.saturating_sub(head);
    for k in 0..16u64 {
        let n = read_at(head + span * k / 16, &mut buf[..4096]).ok()?;
        h.update(&buf[..n]);
    }
    Some(h.finalize().into())
}

/// llama.cpp restores a cell at whatever position a state names, and `seq_rm`
/// cannot remove a cell at a negative position again: a crafted file would leave
/// a sequence that no longer decodes. So for a plain KV cache the cells are read
/// here first (llama.cpp's layout: magic, sequence id, stream count, then per
/// stream a cell count, each cell's position, 1 and its sequence id, then the
/// cells' data): exactly the positions 0..n, each once, in one stream.
fn check_cells(blob: &[u8], n: usize) -> std::result::Result<(), String> {
    let mut at = 0usize;
    let mut word = || -> std::result::Result<u32, String> {
        let b = blob
            .get(at..at + 4)
            .ok_or_else(|| format!("the KV cells end early (byte {at})"))?;
        at += 4;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let (_magic, _seq, n_stream) = (word()?, word()?, word()?);
    if n_stream == 0 || n_stream > super::context::MAX_SEQ {
        return Err(format!("{n_stream} KV streams"));
    }
    for _ in 0..n_stream {
        let count = word()? as usize;
        if count == 0 {
            continue;
        }
        if count != n {
            return Err(format!("{count} KV cells for {n} tokens"));
        }
        let mut seen = vec![false; n];
        for _ in 0..count {
            let (pos, n_seq, _id) = (word()? as i32, word()?, word()?);
            if n_seq != 1 {
                return Err(format!("a KV cell in {n_seq} sequences"));
            }
            match usize::try_from(pos).ok().filter(|&p| p < n) {
                Some(p) if !seen[p] => seen[p] = true,
                _ => return Err(format!("a KV cell at position {pos} (tokens: {n})")),
            }
        }
        // The cells' data follows; llama.cpp checks its sizes.
        return Ok(());
    }
    if n == 0 {
        Ok(())
    } else {
        Err(format!("no KV cells for {n} tokens"))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Sequence {
    /// Save this sequence's tokens and KV cells to `path` (written to a temporary
    /// file beside it, then renamed, so a crash never leaves half a file). Returns
    /// the number of tokens saved.
    pub fn save_state(&self, path: &Path) -> Result<usize> {
        let sh = &self.core().sh;
        let fp = sh.model.fingerprint().ok_or_else(|| {
            Error::unsupported(format!(
                "{}: the model file could not be read to fingerprint it",
                sh.model.source()
            ))
        })?;
        let seq = self.id();
        let (tokens, blob) = {
            let l = sh.llama.lock();
            let tokens = l.cached[seq as usize].clone();
            let ctx = l.ptr.as_ptr();
            let what = format!("{}: saving sequence state", sh.model.source());
            let mut size = 0usize;
            // SAFETY: valid context; a NULL destination asks for the size.
            shim::guard(ErrorKind::Backend, &what, |e, el| unsafe {
                shim::tas_state_seq_get_data(ctx, seq, std::ptr::null_mut(), 0, &mut size, e, el)
            })?;
            let mut blob = vec![0u8; size];
            let mut got = 0usize;
            // SAFETY: `blob` holds `size` writable bytes.
            shim::guard(ErrorKind::Backend, &what, |e, el| unsafe {
                shim::tas_state_seq_get_data(ctx, seq, blob.as_mut_ptr(), size, &mut got, e, el)
            })?;
            if got != size {
                return Err(shim::backend_failure(
                    ErrorKind::Backend,
                    &what,
                    &format!("llama.cpp wrote {got} of {size} bytes"),
                ));
            }
            (tokens, blob)
        };
        let mut out = Vec::with_capacity(HEAD + tokens.len() * 4 + 8 + blob.len() + DIGEST);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&fp);
        out.extend_from_slice(&(tokens.len() as u32).to_le_bytes());
        for t in &tokens {
            out.extend_from_slice(&t.to_le_bytes());
        }
        out.extend_from_slice(&(blob.len() as u64).to_le_bytes());
        out.extend_from_slice(&blob);
        let digest: [u8; 32] = Sha256::digest(&out).into();
        out.extend_from_slice(&digest);

        let shown = path.display();
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        let name = path
            .file_name()
            .ok_or_else(|| Error::invalid_arg(format!("{shown}: not a file path")))?;
        let tmp = dir.unwrap_or(Path::new(".")).join(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&out)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io("write", path, e)
        })?;
        Ok(tokens.len())
    }

    /// Load a state file saved by [`Sequence::save_state`] into this sequence,
    /// replacing what it held. A file from another model, a truncated or altered
    /// file, or one that does not fit this context is refused and the sequence
    /// is left empty. Returns the number of tokens restored.
    pub fn load_state(&mut self, path: &Path) -> Result<usize> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
        let seq = self.id();
        let sh = &self.core().sh;
        let parsed = parse(&bytes, &shown, sh.model.fingerprint(), sh.n_ctx_seq);
        let mut l = sh.llama.lock();
        if l.poisoned[seq as usize].load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::invalid_arg(format!(
                "{shown}: this sequence was retired after a damaged state file; use a new sequence"
            )));
        }
        l.clear_seq(seq);
        let (tokens, blob) = parsed?;
        let n_vocab = sh.model.info().n_vocab;
        if let Some(t) = tokens.iter().find(|&&t| t < 0 || t >= n_vocab) {
            return Err(Error::invalid_arg(format!(
                "{shown}: token {t} is out of range (vocabulary has {n_vocab})"
            )));
        }
        let what = format!("{shown}: loading sequence state");
        // Models with extra per-cell data (M-RoPE) or other memories (recurrent)
        // write another layout; for them the position check after the load stands.
        let mrope = sh
            .model
            .gguf()
            .kv
            .iter()
            .any(|(k, _)| k.ends_with(".rope.dimension_sections"));
        if sh.plain_kv && !mrope {
            check_cells(blob, tokens.len())
                .map_err(|why| Error::invalid_arg(format!("{what}: {why}")))?;
        }
        let ctx = l.ptr.as_ptr();
        let mut read = 0usize;
        crate::log::clear_backend_errors();
        // SAFETY: valid context; `blob` holds blob.len() readable bytes.
        let r = shim::guard(ErrorKind::InvalidArg, &what, |e, el| unsafe {
            shim::tas_state_seq_set_data(ctx, seq, blob.as_ptr(), blob.len(), &mut read, e, el)
        });
        // SAFETY (both): valid memory.
        let (lo, hi) = unsafe {
            (
                sys::llama_memory_seq_pos_min(l.mem(), seq),
                sys::llama_memory_seq_pos_max(l.mem(), seq),
            )
        };
        let fail = match r {
            Err(e) => Some(e),
            Ok(()) if read == 0 => Some(shim::backend_failure(
                ErrorKind::InvalidArg,
                &what,
                "llama.cpp refused the KV cells (a different context layout or KV type?)",
            )),
            Ok(()) if read != blob.len() => Some(Error::invalid_arg(format!(
                "{what}: llama.cpp read {read} of {} bytes",
                blob.len()
            ))),
            Ok(()) if (hi + 1) as usize != tokens.len() || (!tokens.is_empty() && lo != 0) => {
                Some(Error::invalid_arg(format!(
                    "{what}: the KV cells hold positions {lo}..={hi} but the file lists {} tokens",
                    tokens.len()
                )))
            }
            Ok(()) => None,
        };
        if let Some(e) = fail {
            l.clear_seq(seq);
            return Err(e);
        }
        let n = tokens.len();
        l.cached[seq as usize] = tokens;
        Ok(n)
    }
}

/// Check a state file whole and split it into tokens and llama.cpp's state.
fn parse<'a>(
    b: &'a [u8],
    shown: &str,
    fp: Option<[u8; 32]>,
    n_ctx_seq: u32,
) -> Result<(Vec<i32>, &'a [u8])> {
    let bad = |why: &str| {
        Err(Error::invalid_arg(format!(
            "{shown}: not a usable KV state file: {why}"
        )))
    };
    if b.len() < HEAD + 8 + DIGEST || &b[..8] != MAGIC {
        return bad("too short or wrong magic");
    }
    let (body, digest) = b.split_at(b.len() - DIGEST);
    let u32_at = |o: usize| u32::from_le_bytes(body[o..o + 4].try_into().expect("4 bytes"));
    let version = u32_at(8);
    if version != VERSION {
        return bad(&format!("version {version}, this library reads {VERSION}"));
    }
    if Sha256::digest(body).as_slice() != digest {
        return bad("its checksum does not match (truncated or altered)");
    }
    let file_fp = &body[12..44];
    match fp {
        Some(fp) if fp == file_fp => {}
        Some(fp) => {
            return Err(Error::invalid_arg(format!(
                "{shown}: the state belongs to another model (fingerprint {}, this model {})",
                hex(&file_fp[..8]),
                hex(&fp[..8])
            )))
        }
        None => {
            return Err(Error::unsupported(
                "the model file could not be read to fingerprint it",
            ))
        }
    }
    let n = u32_at(44) as usize;
    // n < 2^32, so n * 4 cannot overflow a 64-bit usize.
    let toks_end = HEAD + n * 4;
    if toks_end + 8 > body.len() {
        return bad("token count past the end");
    }
    let tokens = body[HEAD..toks_end]
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect::<Vec<_>>();
    let blob_len = u64::from_le_bytes(body[toks_end..toks_end + 8].try_into().expect("8 bytes"));
    if blob_len != (body.len() - toks_end - 8) as u64 {
        return bad("state length does not match the file size");
    }
    if n >= n_ctx_seq as usize {
        return Err(Error::new(
            ErrorKind::ContextFull,
            format!(
                "{shown}: the state holds {n} tokens but a sequence of this context holds {n_ctx_seq}"
            ),
        ));
    }
    Ok((tokens, &body[toks_end + 8..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(tokens: &[i32], blob: &[u8], fp: [u8; 32]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&fp);
        out.extend_from_slice(&(tokens.len() as u32).to_le_bytes());
        for t in tokens {
            out.extend_from_slice(&t.to_le_bytes());
        }
        out.extend_from_slice(&(blob.len() as u64).to_le_bytes());
        out.extend_from_slice(blob);
        let d: [u8; 32] = Sha256::digest(&out).into();
        out.extend_from_slice(&d);
        out
    }

    fn cells(n_stream: u32, streams: &[(u32, &[(i32, u32)])]) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [0x0dd0_fdd0u32, 1, n_stream] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        for (count, list) in streams {
            b.extend_from_slice(&count.to_le_bytes());
            for (pos, n_seq) in *list {
                b.extend_from_slice(&pos.to_le_bytes());
                b.extend_from_slice(&n_seq.to_le_bytes());
                b.extend_from_slice(&1i32.to_le_bytes());
            }
        }
        b.extend_from_slice(b"data");
        b
    }

    #[test]
    fn cell_positions_are_checked_before_llama_restores_them() {
        // Positions in any cell order, each once: fine (a shifted cache).
        assert!(check_cells(&cells(2, &[(0, &[]), (3, &[(2, 1), (0, 1), (1, 1)])]), 3).is_ok());
        assert!(check_cells(&cells(1, &[(0, &[])]), 0).is_ok());
        let bad: [(Vec<u8>, usize, &str); 6] = [
            (
                cells(1, &[(3, &[(0, 1), (1, 1), (-7, 1)])]),
                3,
                "position -7",
            ),
            (cells(1, &[(3, &[(0, 1), (1, 1), (1, 1)])]), 3, "position 1"),
            (cells(1, &[(3, &[(0, 1), (1, 1), (3, 1)])]), 3, "position 3"),
            (cells(1, &[(2, &[(0, 1), (1, 2)])]), 2, "2 sequences"),
            (cells(1, &[(2, &[(0, 1), (1, 1)])]), 3, "2 KV cells for 3"),
            (cells(0, &[]), 0, "0 KV streams"),
        ];
        for (b, n, want) in bad {
            let e = check_cells(&b, n).unwrap_err();
            assert!(e.contains(want), "{e} / {want}");
        }
        let b = cells(1, &[(3, &[(0, 1), (1, 1), (2, 1)])]);
        for cut in 0..b.len() - 4 {
            assert!(check_cells(&b[..cut], 3).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn parse_checks_everything_before_llama_sees_it() {
        let fp = [7u8; 32];
        let f = file(&[1, 2, 3], b"cells", fp);
        let (t, blob) = parse(&f, "s", Some(fp), 100).unwrap();
        assert_eq!(t, vec![1, 2, 3]);
        assert_eq!(blob, b"cells");
        // Another model.
        let e = parse(&f, "s", Some([8u8; 32]), 100).unwrap_err();
        assert!(e.message().contains("another model"), "{}", e.message());
        // Every truncation and every single-byte flip is refused.
        for cut in 0..f.len() {
            assert!(parse(&f[..cut], "s", Some(fp), 100).is_err(), "cut {cut}");
        }
        for i in 0..f.len() {
            let mut g = f.clone();
            g[i] ^= 0x40;
            assert!(parse(&g, "s", Some(fp), 100).is_err(), "flip {i}");
        }
        // Consistent digest but lying lengths.
        let mut g = file(&[1, 2, 3], b"cells", fp);
        g[44] = 200;
        let body = g.len() - DIGEST;
        let d: [u8; 32] = Sha256::digest(&g[..body]).into();
        g[body..].copy_from_slice(&d);
        assert!(parse(&g, "s", Some(fp), 1000).is_err());
        // Too many tokens for the window.
        let e = parse(&f, "s", Some(fp), 3).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ContextFull);
    }
}
