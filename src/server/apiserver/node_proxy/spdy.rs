//! The SPDY/3.1 frames a remote-command client sends and reads (draft 3.1: SYN_STREAM,
//! DATA, PING; SYN_REPLY, RST_STREAM, GOAWAY and the rest are read and mostly ignored).
//!
//! Header blocks must be zlib streams. They are written as stored (uncompressed) deflate
//! blocks, each frame's ended by an empty one as a sync flush does, without the SPDY
//! dictionary flag, which every zlib reader accepts; the kubelet's
//! header blocks are never needed, so none is inflated. Flow control (WINDOW_UPDATE) is not
//! enforced, as the kubelet's SPDY library does not enforce it either.

use tokio::io::{AsyncRead, AsyncReadExt};

const VERSION: u16 = 3;
pub const SYN_STREAM: u16 = 1;
pub const RST_STREAM: u16 = 3;
pub const PING: u16 = 6;
pub const GOAWAY: u16 = 7;
pub const FLAG_FIN: u8 = 0x01;
/// Frames larger than this end the session (the kubelet sends at most 32 KiB of data).
const MAX_FRAME: usize = 1 << 20;

/// Writes header blocks: one zlib stream over a connection, a stored block per frame.
#[derive(Debug, Default)]
pub struct HeaderWriter {
    started: bool,
}

impl HeaderWriter {
    /// The zlib bytes of one header block.
    pub fn block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (k, v) in headers {
            // SPDY header names are lower case.
            let k = k.to_ascii_lowercase();
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 16);
        if !self.started {
            // CMF: deflate, 32 KiB window; FLG: no dictionary, check bits.
            out.extend_from_slice(&[0x78, 0x01]);
            self.started = true;
        }
        for chunk in raw.chunks(0xFFFF) {
            // A stored block, not the last one: BFINAL 0, BTYPE 00, padded to a byte.
            out.push(0x00);
            let len = chunk.len() as u16;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
            out.extend_from_slice(chunk);
        }
        // An empty stored block, as zlib's sync flush ends a frame: Go's inflater hands out
        // a stored block's bytes only when it reaches the next block, so without it the
        // kubelet would wait for more of a header block that is already complete.
        out.extend_from_slice(&[0x00, 0x00, 0x00, 0xFF, 0xFF]);
        out
    }
}

/// A control frame.
fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    let len = payload.len() as u32;
    out.push(flags);
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(payload);
    out
}

/// SYN_STREAM opening stream `id` with `headers`.
pub fn syn_stream(id: u32, headers: &mut HeaderWriter, pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&(id & 0x7FFF_FFFF).to_be_bytes());
    payload.extend_from_slice(&0u32.to_be_bytes());
    // Priority 0, slot 0.
    payload.extend_from_slice(&[0, 0]);
    payload.extend(headers.block(pairs));
    control(SYN_STREAM, 0, &payload)
}

/// A DATA frame; `fin` half-closes the stream.
pub fn data(id: u32, fin: bool, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 8);
    out.extend_from_slice(&(id & 0x7FFF_FFFF).to_be_bytes());
    out.push(if fin { FLAG_FIN } else { 0 });
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(bytes);
    out
}

/// A PING answering one from the kubelet.
pub fn ping(payload: &[u8]) -> Vec<u8> {
    control(PING, 0, payload)
}

/// A frame read from the kubelet.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Data { stream: u32, fin: bool, bytes: Vec<u8> },
    Control { kind: u16, flags: u8, payload: Vec<u8> },
}

impl Frame {
    /// The stream a control frame is about (its first 31-bit word), for RST_STREAM and
    /// SYN_REPLY.
    pub fn stream_of(payload: &[u8]) -> Option<u32> {
        payload.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7FFF_FFFF)
    }
}

/// Reads one frame; Ok(None) at end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Frame>> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let flags = head[4];
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "SPDY frame too large"));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    if head[0] & 0x80 != 0 {
        let kind = u16::from_be_bytes([head[2], head[3]]);
        Ok(Some(Frame::Control { kind, flags, payload }))
    } else {
        let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7FFF_FFFF;
        Ok(Some(Frame::Data { stream, fin: flags & FLAG_FIN != 0, bytes: payload }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_blocks_are_a_valid_zlib_stream() {
        use std::io::Read;
        let mut w = HeaderWriter::default();
        let mut stream = w.block(&[("streamType", "error")]);
        stream.extend(w.block(&[("streamtype", "stdout")]));
        // A reader that inflates the whole stream sees both blocks' bytes in order.
        let mut out = Vec::new();
        let mut d = flate2::read::ZlibDecoder::new(&stream[..]);
        let _ = d.read_to_end(&mut out);
        let mut want = Vec::new();
        for v in ["error", "stdout"] {
            want.extend_from_slice(&1u32.to_be_bytes());
            want.extend_from_slice(&10u32.to_be_bytes());
            want.extend_from_slice(b"streamtype");
            want.extend_from_slice(&(v.len() as u32).to_be_bytes());
            want.extend_from_slice(v.as_bytes());
        }
        assert_eq!(out, want);
        assert_eq!(stream[0..2], [0x78, 0x01]);
        assert_eq!((0x78u32 * 256 + 0x01) % 31, 0);
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let mut wire = data(5, true, b"hi");
        wire.extend(ping(&[0, 0, 0, 2]));
        let mut r = &wire[..];
        assert_eq!(
            read_frame(&mut r).await.unwrap(),
            Some(Frame::Data { stream: 5, fin: true, bytes: b"hi".to_vec() })
        );
        assert_eq!(
            read_frame(&mut r).await.unwrap(),
            Some(Frame::Control { kind: PING, flags: 0, payload: vec![0, 0, 0, 2] })
        );
        assert_eq!(read_frame(&mut r).await.unwrap(), None);
        let syn = syn_stream(1, &mut HeaderWriter::default(), &[("streamtype", "error")]);
        assert_eq!(syn[..4], [0x80, 0x03, 0x00, 0x01]);
        assert_eq!(Frame::stream_of(&syn[8..]), Some(1));
    }
}
