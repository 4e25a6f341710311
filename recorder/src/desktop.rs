//! RDP desktops from recordings: the target's plaintext stream, as recorded, fed through
//! ironrdp's client-side graphics decoding (fast-path bitmap updates, RemoteFX and uncompressed
//! surface bits, bulk decompression) into a frame buffer, without taking part in any connection.
//! The desktop size comes from the server's Demand Active PDU; a reactivation (resize) starts a
//! new frame buffer. Also the PNG encoding of a frame, for `wgctl recording export`.
//!
//! The gateway makes recordings decodable by withdrawing, from the client's offer, the graphics
//! pipeline and the codecs ironrdp cannot decode (see the RDP relay); a recording made otherwise
//! decodes to whatever part of it the decoder understands, and [`Desktop::errors`] says so.

use std::panic::AssertUnwindSafe;

use ironrdp_core::{decode, WriteBuf};
use ironrdp_graphics::image_processing::PixelFormat;
use ironrdp_pdu::mcs::SendDataIndication;
use ironrdp_pdu::rdp::capability_sets::CapabilitySet;
use ironrdp_pdu::rdp::headers::{ShareControlHeader, ShareControlPdu};
use ironrdp_pdu::x224::X224;
use ironrdp_pdu::Action;
use ironrdp_session::fast_path::{Processor, ProcessorBuilder};
use ironrdp_session::image::DecodedImage;

use crate::{Event, EventKind};

/// Largest PDU taken whole (TPKT lengths are 16-bit; fast-path lengths 15-bit).
const MAX_PDU: usize = 0x1_0000;
/// Largest desktop accepted from a Demand Active (8K on either side).
const MAX_SIDE: u16 = 8192;

/// A desktop rebuilt from the target's side of an RDP session.
pub struct Desktop {
    pending: Vec<u8>,
    image: Option<DecodedImage>,
    processor: Processor,
    bulk: Option<ironrdp_bulk::BulkCompressor>,
    scratch: WriteBuf,
    lost: bool,
    /// Increases with every update that changed the frame buffer.
    pub version: u64,
    /// Updates or PDUs the decoder could not read.
    pub errors: u64,
    /// The first of them, for the user.
    pub first_error: Option<String>,
}

impl Default for Desktop {
    fn default() -> Self {
        Self::new()
    }
}

impl Desktop {
    pub fn new() -> Desktop {
        Desktop {
            pending: Vec::new(),
            image: None,
            processor: processor(),
            bulk: Some(ironrdp_bulk::BulkCompressor::new(
                ironrdp_bulk::CompressionType::Rdp61,
            )),
            scratch: WriteBuf::new(),
            lost: false,
            version: 0,
            errors: 0,
            first_error: None,
        }
    }

    /// The frame buffer's size, once the server has announced the desktop.
    pub fn size(&self) -> Option<(u16, u16)> {
        self.image.as_ref().map(|i| (i.width(), i.height()))
    }

    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }

    /// Feed bytes of the target → client stream, in order, cut anywhere.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.lost {
            return;
        }
        self.pending.extend_from_slice(bytes);
        let buf = std::mem::take(&mut self.pending);
        let mut at = 0;
        while at < buf.len() {
            let rest = &buf[at..];
            let info = match ironrdp_pdu::find_size(rest) {
                Ok(Some(info)) if info.length > 0 && info.length <= MAX_PDU => info,
                Ok(None) => break,
                Ok(Some(info)) => {
                    self.lost(format!("a PDU of {} bytes", info.length));
                    return;
                }
                Err(e) => {
                    self.lost(format!("unframeable data ({e})"));
                    return;
                }
            };
            if rest.len() < info.length {
                break;
            }
            self.pdu(info.action, &rest[..info.length]);
            at += info.length;
        }
        self.pending = buf[at..].to_vec();
    }

    fn lost(&mut self, what: String) {
        self.error(format!("the stream cannot be followed after {what}"));
        self.lost = true;
        self.pending.clear();
    }

    fn pdu(&mut self, action: Action, pdu: &[u8]) {
        match action {
            Action::X224 => self.slow_path(pdu),
            Action::FastPath => {
                let Some(image) = self.image.as_mut() else {
                    return; // graphics before the desktop was announced: nothing to draw on
                };
                let (processor, bulk, scratch) =
                    (&mut self.processor, &mut self.bulk, &mut self.scratch);
                // ironrdp's decoders have panicked on malformed input before: a bad update in
                // one recording must not take the whole export down.
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    processor.process(image, pdu, scratch, bulk)
                }));
                scratch.clear();
                match result {
                    Ok(Ok(updates)) => {
                        if !updates.is_empty() {
                            self.version += 1;
                        }
                    }
                    Ok(Err(e)) => self.error(format!("graphics update: {e}")),
                    Err(_) => self.error("graphics update: the decoder panicked".into()),
                }
            }
        }
    }

    /// Slow-path PDUs: only the Demand Active matters (the desktop's size, a new activation).
    fn slow_path(&mut self, pdu: &[u8]) {
        let Ok(X224(data)) = decode::<X224<SendDataIndication<'_>>>(pdu) else {
            return; // connection-phase PDUs (MCS connect response, attach, join, licensing)
        };
        let Ok(header) = decode::<ShareControlHeader>(&data.user_data) else {
            return; // virtual channel traffic
        };
        let ShareControlPdu::ServerDemandActive(demand) = header.share_control_pdu else {
            return;
        };
        let size = demand.pdu.capability_sets.iter().find_map(|c| match c {
            CapabilitySet::Bitmap(b) => Some((b.desktop_width, b.desktop_height)),
            _ => None,
        });
        match size {
            Some((w, h)) if (1..=MAX_SIDE).contains(&w) && (1..=MAX_SIDE).contains(&h) => {
                self.image = Some(DecodedImage::new(PixelFormat::RgbA32, w, h));
                self.processor = processor();
                self.version += 1;
            }
            other => self.error(format!("a Demand Active with desktop size {other:?}")),
        }
    }

    /// The current frame as a PNG (RGB, 8-bit), once the desktop has been announced.
    pub fn png(&self) -> Option<Result<Vec<u8>, png::EncodingError>> {
        let image = self.image.as_ref()?;
        Some(encode_png(image))
    }

    /// The current frame as RGB rows (width × height × 3 bytes).
    pub fn rgb(&self) -> Option<(u16, u16, Vec<u8>)> {
        let image = self.image.as_ref()?;
        Some((image.width(), image.height(), rgb(image)))
    }

    /// The current frame shrunk `factor` times on each side (each pixel the average of a
    /// `factor`×`factor` block; a partial block at the right or bottom edge is dropped), as RGB
    /// rows. `factor` 1 is [`Desktop::rgb`].
    pub fn rgb_scaled(&self, factor: u16) -> Option<(u16, u16, Vec<u8>)> {
        let image = self.image.as_ref()?;
        let f = usize::from(factor.max(1));
        if f == 1 {
            return self.rgb();
        }
        let (w, h) = (
            usize::from(image.width()) / f,
            usize::from(image.height()) / f,
        );
        if w == 0 || h == 0 {
            return None;
        }
        let (stride, data) = (image.stride(), image.data());
        let mut out = vec![0u8; w * h * 3];
        let mut sums = vec![0u32; w * 3];
        let area = (f * f) as u32;
        for (y, row_out) in out.chunks_exact_mut(w * 3).enumerate() {
            sums.iter_mut().for_each(|s| *s = 0);
            for row in data[y * f * stride..].chunks(stride).take(f) {
                for (x, sum) in sums.chunks_exact_mut(3).enumerate() {
                    for px in row[x * f * 4..(x + 1) * f * 4].chunks_exact(4) {
                        sum[0] += u32::from(px[0]);
                        sum[1] += u32::from(px[1]);
                        sum[2] += u32::from(px[2]);
                    }
                }
            }
            for (o, s) in row_out.iter_mut().zip(&sums) {
                *o = (s / area) as u8;
            }
        }
        Some((w as u16, h as u16, out))
    }
}

fn processor() -> Processor {
    // The processor writes frame acknowledgements nobody sends; the ids only have to encode
    // (MCS user ids start at 1001).
    ProcessorBuilder {
        io_channel_id: 1003,
        user_channel_id: 1007,
        share_id: 0,
        // The pointer is drawn by the viewer's own cursor, not into the recorded frames.
        enable_server_pointer: false,
        pointer_software_rendering: false,
    }
    .build()
}

fn rgb(image: &DecodedImage) -> Vec<u8> {
    let (w, stride) = (usize::from(image.width()), image.stride());
    let mut out = Vec::with_capacity(w * usize::from(image.height()) * 3);
    for row in image.data().chunks_exact(stride) {
        for px in row.chunks_exact(4).take(w) {
            out.extend_from_slice(&px[..3]);
        }
    }
    out
}

fn encode_png(image: &DecodedImage) -> Result<Vec<u8>, png::EncodingError> {
    rgb_png(image.width(), image.height(), &rgb(image))
}

/// RGB rows (`width` × `height` × 3 bytes) as a PNG.
pub fn rgb_png(width: u16, height: u16, rgb: &[u8]) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, u32::from(width), u32::from(height));
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    let mut w = enc.write_header()?;
    w.write_image_data(rgb)?;
    w.finish()?;
    Ok(out)
}

/// The desktop as it stood `t_us` into the session: every target → client byte recorded up to
/// then, decoded.
pub fn desktop_at(events: &[Event], t_us: u64) -> Desktop {
    let mut d = Desktop::new();
    for e in events.iter().take_while(|e| e.t_us <= t_us) {
        if let EventKind::Output { data, .. } = &e.kind {
            d.feed(data);
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::Desktop;

    const SHADOW: &[u8] = include_bytes!("../../fixtures/rdp/freerdp-shadow-logo-1024x768.bin");

    fn red(d: &Desktop) -> usize {
        let (_, _, rgb) = d.rgb().expect("a desktop");
        rgb.chunks_exact(3)
            .filter(|p| p[0] > 200 && p[1] < 60 && p[2] < 60)
            .count()
    }

    #[test]
    fn a_recorded_freerdp_session_decodes_to_its_desktop() {
        let mut d = Desktop::new();
        d.feed(SHADOW);
        assert_eq!(d.size(), Some((1024, 768)));
        assert_eq!((d.errors, d.first_error.as_deref()), (0, None));
        assert_eq!(red(&d), 90_452, "the red xlogo around its white X");
        let png = d.png().expect("a frame").expect("PNG");
        assert_eq!(&png[1..4], b"PNG");
    }

    #[test]
    fn a_shrunk_frame_averages_blocks() {
        let mut d = Desktop::new();
        d.feed(SHADOW);
        let (w, h, small) = d.rgb_scaled(2).expect("a desktop");
        assert_eq!((w, h, small.len()), (512, 384, 512 * 384 * 3));
        let red = small
            .chunks_exact(3)
            .filter(|p| p[0] > 200 && p[1] < 60 && p[2] < 60)
            .count();
        // A quarter of the full frame's red, less the blended edges of the logo.
        assert!((21_500..=90_452 / 4).contains(&red), "{red} red pixels");
        let (_, _, full) = d.rgb().expect("a desktop");
        // The top-left block: the mean of its four pixels, channel by channel.
        for c in 0..3 {
            let px = |x: usize, y: usize| u32::from(full[(y * 1024 + x) * 3 + c]);
            let mean = (px(0, 0) + px(1, 0) + px(0, 1) + px(1, 1)) / 4;
            assert_eq!(u32::from(small[c]), mean);
        }
        assert_eq!(d.rgb_scaled(1), d.rgb());
    }

    #[test]
    fn the_stream_may_be_cut_anywhere() {
        let mut whole = Desktop::new();
        whole.feed(SHADOW);
        let mut pieces = Desktop::new();
        for piece in SHADOW.chunks(977) {
            pieces.feed(piece);
        }
        assert_eq!(pieces.rgb(), whole.rgb());
        assert_eq!(pieces.version, whole.version);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut d = Desktop::new();
        d.feed(&[0xff; 64]);
        assert_eq!(d.size(), None);
        assert_eq!(d.errors, 1);
        assert!(d
            .first_error
            .as_deref()
            .is_some_and(|e| e.contains("cannot be followed")));
        // A truncated recording decodes as far as it goes.
        let mut d = Desktop::new();
        d.feed(&SHADOW[..SHADOW.len() / 2]);
        assert_eq!(d.size(), Some((1024, 768)));
        assert!(d.version > 0);
        // Nothing drawn before the desktop is announced.
        assert!(Desktop::new().png().is_none());
    }
}
