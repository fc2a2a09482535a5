//! A look at a file's first bytes before FFmpeg gets it: is it media at all, and how large
//! are the frames its header declares?
//!
//! FFmpeg answers neither question in a way the pipelines can use. It picks a demuxer from
//! the file name when the bytes say nothing (so random bytes named `.mp4` fail exactly like a
//! truncated MP4, "moov atom not found"), and it silently zeroes a declared frame size that it
//! considers invalid (a 100,000 × 100,000 header opens as a 0 × 0 stream). So:
//!
//! - [`looks_like_media`] recognises the signatures of common containers and codecs. It is
//!   only used to *classify* a file FFmpeg could not open (`corrupt_input` when the signature
//!   is there, `unsupported_format` when it is not); it never rejects anything FFmpeg reads.
//! - [`declared_frame_size`] reads the frame size that PNG, YUV4MPEG2, Matroska/WebM and
//!   ISO-BMFF (MP4/MOV, track header) headers declare, so that a hostile size is refused
//!   against `maxPixels` before any decoder allocates for it. Other formats are checked on
//!   the stream parameters FFmpeg reports and on every decoded frame (see [`super`]).
//!
//! Everything here is bounds-checked parsing of untrusted bytes: it returns `None` on
//! anything it does not understand and never panics.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// How many bytes of the head are read.
pub const HEAD_BYTES: usize = 1 << 20;

/// Reads up to [`HEAD_BYTES`] from the start of `path`.
pub fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let mut head = Vec::with_capacity(64 * 1024);
    file.take(HEAD_BYTES as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// Whether `head` starts like a media file of a kind FFmpeg reads.
pub fn looks_like_media(head: &[u8]) -> bool {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    // ISO-BMFF (MP4, MOV, M4A, 3GP, HEIF): a box type among the usual top-level ones.
    let bmff = [
        &b"ftyp"[..],
        b"moov",
        b"mdat",
        b"free",
        b"wide",
        b"skip",
        b"pnot",
        b"styp",
    ]
    .iter()
    .any(|t| at(4, t));
    let riff = at(0, b"RIFF") && (at(8, b"WAVE") || at(8, b"AVI ") || at(8, b"WEBP"));
    let mpeg_ts =
        head.len() >= 188 * 3 && head[0] == 0x47 && head[188] == 0x47 && head[376] == 0x47;
    let adts_or_mp3 = head.len() >= 2 && head[0] == 0xFF && head[1] & 0xE0 == 0xE0;
    bmff || riff
        || mpeg_ts
        || adts_or_mp3
        || at(0, b"\x1A\x45\xDF\xA3") // EBML: Matroska, WebM
        || at(0, b"OggS")
        || at(0, b"fLaC")
        || at(0, b"ID3")
        || at(0, b"FLV")
        || at(0, b"FORM") // AIFF
        || at(0, b"caff")
        || at(0, b"#!AMR")
        || at(0, b"\x30\x26\xB2\x75\x8E\x66\xCF\x11") // ASF, WMV
        || at(0, b"\x00\x00\x01\xBA") // MPEG program stream
        || at(0, b"\x00\x00\x00\x01") // H.264/HEVC Annex B
        || at(0, b"YUV4MPEG2")
        || at(0, b"\x89PNG\r\n\x1a\n")
        || at(0, b"\xFF\xD8\xFF") // JPEG
        || at(0, b"GIF8")
        || at(0, b"BM")
        || at(0, b".snd")
        || at(0, b"MThd")
}

/// The largest frame size (width, height) the header declares, for the formats this module
/// reads; `None` when it cannot tell.
pub fn declared_frame_size(path: &Path, head: &[u8]) -> Option<(u64, u64)> {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        return png(head);
    }
    if head.starts_with(b"YUV4MPEG2") {
        return y4m(head);
    }
    if head.starts_with(b"\x1A\x45\xDF\xA3") {
        return matroska(head);
    }
    if head.get(4..8) == Some(b"ftyp") || head.get(4..8) == Some(b"moov") {
        return bmff(path, head);
    }
    None
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

fn png(head: &[u8]) -> Option<(u64, u64)> {
    // Signature (8), chunk length (4), "IHDR" (4), width (4), height (4).
    if head.get(12..16)? != b"IHDR" {
        return None;
    }
    Some((u64::from(be32(head, 16)?), u64::from(be32(head, 20)?)))
}

fn y4m(head: &[u8]) -> Option<(u64, u64)> {
    let line_end = head.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    let mut width = None;
    let mut height = None;
    for token in line.split(' ').skip(1) {
        match token.as_bytes().first() {
            Some(b'W') => width = token[1..].parse().ok(),
            Some(b'H') => height = token[1..].parse().ok(),
            _ => {}
        }
    }
    Some((width?, height?))
}

/// Reads an EBML variable-length integer: (value, length). With `marker`, the length marker
/// bit is kept (element ids); without, it is cleared (sizes).
fn vint(b: &[u8], at: usize, marker: bool) -> Option<(u64, usize)> {
    let first = *b.get(at)?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 {
        return None;
    }
    let bytes = b.get(at..at + len)?;
    let mut value = u64::from(if marker {
        first
    } else {
        first & (0xFFu16 >> len) as u8
    });
    for &byte in &bytes[1..] {
        value = (value << 8) | u64::from(byte);
    }
    Some((value, len))
}

/// Walks the elements in `b[start..end]`, calling `visit(id, body_start, body_end)`. An
/// element of unknown size runs to `end`.
fn ebml_children(
    b: &[u8],
    start: usize,
    end: usize,
    mut visit: impl FnMut(u64, usize, usize) -> Option<()>,
) {
    let mut at = start;
    while at < end {
        let Some((id, id_len)) = vint(b, at, true) else {
            return;
        };
        let Some((size, size_len)) = vint(b, at + id_len, false) else {
            return;
        };
        let body = at + id_len + size_len;
        let unknown = size == (1u64 << (7 * size_len)) - 1;
        let body_end = if unknown {
            end
        } else {
            match usize::try_from(size).ok().and_then(|s| body.checked_add(s)) {
                Some(e) => e.min(end),
                None => end,
            }
        };
        if visit(id, body, body_end).is_none() {
            return;
        }
        if body_end <= at {
            return;
        }
        at = body_end;
    }
}

fn ebml_uint(b: &[u8], start: usize, end: usize) -> Option<u64> {
    let bytes = b.get(start..end)?;
    if bytes.is_empty() || bytes.len() > 8 {
        return None;
    }
    Some(bytes.iter().fold(0u64, |v, &x| (v << 8) | u64::from(x)))
}

fn matroska(head: &[u8]) -> Option<(u64, u64)> {
    const SEGMENT: u64 = 0x1853_8067;
    const TRACKS: u64 = 0x1654_AE6B;
    const TRACK_ENTRY: u64 = 0xAE;
    const VIDEO: u64 = 0xE0;
    const PIXEL_WIDTH: u64 = 0xB0;
    const PIXEL_HEIGHT: u64 = 0xBA;
    const CLUSTER: u64 = 0x1F43_B675;
    let mut best: Option<(u64, u64)> = None;
    ebml_children(head, 0, head.len(), |id, s, e| {
        if id != SEGMENT {
            return Some(());
        }
        ebml_children(head, s, e, |id, s, e| {
            if id == CLUSTER {
                return None;
            }
            if id != TRACKS {
                return Some(());
            }
            ebml_children(head, s, e, |id, s, e| {
                if id == TRACK_ENTRY {
                    ebml_children(head, s, e, |id, s, e| {
                        if id == VIDEO {
                            let (mut w, mut h) = (None, None);
                            ebml_children(head, s, e, |id, s, e| {
                                match id {
                                    PIXEL_WIDTH => w = ebml_uint(head, s, e),
                                    PIXEL_HEIGHT => h = ebml_uint(head, s, e),
                                    _ => {}
                                }
                                Some(())
                            });
                            if let (Some(w), Some(h)) = (w, h) {
                                best = larger(best, (w, h));
                            }
                        }
                        Some(())
                    });
                }
                Some(())
            });
            Some(())
        });
        None
    });
    best
}

fn larger(best: Option<(u64, u64)>, candidate: (u64, u64)) -> Option<(u64, u64)> {
    match best {
        Some(b) if b.0.saturating_mul(b.1) >= candidate.0.saturating_mul(candidate.1) => Some(b),
        _ => Some(candidate),
    }
}

/// ISO-BMFF: the largest `tkhd` width × height (16.16 fixed point) of any track. `moov` may
/// be at the end of the file, so top-level boxes are walked through the file itself.
fn bmff(path: &Path, head: &[u8]) -> Option<(u64, u64)> {
    let moov = find_moov(path, head)?;
    let mut best = None;
    bmff_children(&moov, |ty, body| {
        if ty == *b"trak" {
            bmff_children(body, |ty, body| {
                if ty == *b"tkhd" {
                    let version = *body.first()?;
                    let dims = if version == 1 { 88 } else { 76 };
                    let w = u64::from(be32(body, dims)? >> 16);
                    let h = u64::from(be32(body, dims + 4)? >> 16);
                    if w > 0 && h > 0 {
                        best = larger(best, (w, h));
                    }
                }
                Some(())
            });
        }
        Some(())
    });
    best
}

/// The body of the top-level `moov` box, at most 16 MiB of it.
fn find_moov(path: &Path, head: &[u8]) -> Option<Vec<u8>> {
    const MAX_MOOV: u64 = 16 << 20;
    let mut file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let mut at = 0u64;
    for _ in 0..64 {
        let mut header = [0u8; 16];
        let got = if let Some(h) = usize::try_from(at).ok().and_then(|a| head.get(a..a + 16)) {
            header.copy_from_slice(h);
            16
        } else {
            file.seek(SeekFrom::Start(at)).ok()?;
            read_up_to(&mut file, &mut header)?
        };
        if got < 8 {
            return None;
        }
        let size32 = u64::from(be32(&header, 0)?);
        let (size, header_len) = match size32 {
            0 => (len.checked_sub(at)?, 8),
            1 if got >= 16 => (u64::from_be_bytes(header[8..16].try_into().ok()?), 16),
            1 => return None,
            n => (n, 8),
        };
        if size < header_len {
            return None;
        }
        if header[4..8] == *b"moov" {
            let body_len = (size - header_len).min(MAX_MOOV);
            let mut body = vec![0u8; usize::try_from(body_len).ok()?];
            file.seek(SeekFrom::Start(at + header_len)).ok()?;
            let got = read_up_to(&mut file, &mut body)?;
            body.truncate(got);
            return Some(body);
        }
        at = at.checked_add(size)?;
        if at >= len {
            return None;
        }
    }
    None
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> Option<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(_) => return None,
        }
    }
    Some(got)
}

fn bmff_children(b: &[u8], mut visit: impl FnMut([u8; 4], &[u8]) -> Option<()>) {
    let mut at = 0usize;
    while at + 8 <= b.len() {
        let Some(size) = be32(b, at) else { return };
        let size = size as usize;
        if size < 8 {
            return;
        }
        let Some(end) = at.checked_add(size) else {
            return;
        };
        let end = end.min(b.len());
        let mut ty = [0u8; 4];
        ty.copy_from_slice(&b[at + 4..at + 8]);
        if visit(ty, &b[at + 8..end]).is_none() {
            return;
        }
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(id: &[u8], body: &[u8]) -> Vec<u8> {
        let mut out = id.to_vec();
        // 8-byte size, always valid.
        out.push(0x01);
        out.extend_from_slice(&(body.len() as u64).to_be_bytes()[1..]);
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn reads_declared_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend_from_slice(&100_000u32.to_be_bytes());
        png.extend_from_slice(&100_000u32.to_be_bytes());
        assert_eq!(declared_frame_size(&p, &png), Some((100_000, 100_000)));

        let y4m = b"YUV4MPEG2 W1920 H1080 F25:1 Ip\nFRAME\n";
        assert_eq!(declared_frame_size(&p, y4m), Some((1920, 1080)));

        let video = [
            el(&[0xB0], &[0x01, 0x86, 0xA0]),
            el(&[0xBA], &[0x01, 0x86, 0xA0]),
        ]
        .concat();
        let track = el(&[0xAE], &el(&[0xE0], &video));
        let mkv = [
            el(&[0x1A, 0x45, 0xDF, 0xA3], b"\x42\x82\x88matroska"),
            el(
                &[0x18, 0x53, 0x80, 0x67],
                &el(&[0x16, 0x54, 0xAE, 0x6B], &track),
            ),
        ]
        .concat();
        assert_eq!(declared_frame_size(&p, &mkv), Some((100_000, 100_000)));
    }

    #[test]
    fn reads_mp4_track_headers_even_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.mp4");
        let bx = |ty: &[u8], body: &[u8]| {
            let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
            out.extend_from_slice(ty);
            out.extend_from_slice(body);
            out
        };
        let mut tkhd = vec![0u8; 84];
        tkhd[76..80].copy_from_slice(&(40_000u32 << 16).to_be_bytes());
        tkhd[80..84].copy_from_slice(&(30_000u32 << 16).to_be_bytes());
        let file = [
            bx(b"ftyp", b"isom\0\0\0\0"),
            bx(b"mdat", &vec![0u8; 5000]),
            bx(b"moov", &bx(b"trak", &bx(b"tkhd", &tkhd))),
        ]
        .concat();
        std::fs::write(&p, &file).unwrap();
        let head = &file[..100];
        assert_eq!(declared_frame_size(&p, head), Some((40_000, 30_000)));
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"").unwrap();
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for len in 0..400 {
            let mut buf: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed >> 24) as u8
                })
                .collect();
            for prefix in [
                &b"\x89PNG\r\n\x1a\n"[..],
                b"YUV4MPEG2 ",
                b"\x1A\x45\xDF\xA3",
                b"\0\0\0\x10ftyp",
            ] {
                let n = prefix.len().min(buf.len());
                buf[..n].copy_from_slice(&prefix[..n]);
                let _ = declared_frame_size(&p, &buf);
                let _ = looks_like_media(&buf);
            }
        }
    }

    #[test]
    fn random_bytes_are_not_media() {
        let mut seed = 7u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 56) as u8
            })
            .collect();
        // The noise generator must not start with a signature by chance.
        assert!(!looks_like_media(&noise));
        assert!(!looks_like_media(b"x"));
        assert!(looks_like_media(b"\0\0\0\x20ftypisom"));
        assert!(looks_like_media(b"RIFF\0\0\0\0WAVEfmt "));
    }
}
