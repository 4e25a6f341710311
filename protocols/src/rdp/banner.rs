//! Text for the person at the desktop: RDP carries none, so the gateway draws it. A banner is a
//! bar across the top of the client's screen (dark text on amber, `font8x8` glyphs), sent as
//! fast-path bitmap updates between two of the target's PDUs. It stays until the target paints
//! over that part of the screen; the recording has it too.

use font8x8::UnicodeFonts;
use ironrdp_core::encode_vec;
use ironrdp_pdu::bitmap::{BitmapData, BitmapUpdateData, Compression};
use ironrdp_pdu::fast_path::{
    EncryptionFlags, FastPathHeader, FastPathUpdatePdu, Fragmentation, UpdateCode,
};
use ironrdp_pdu::geometry::InclusiveRectangle;

/// Amber background and near-black text (RGB), as on the browser shadow page.
const BACKGROUND: [u8; 3] = [0xf0, 0xb4, 0x29];
const TEXT: [u8; 3] = [0x1b, 0x1d, 0x21];
/// Pixel columns per fast-path PDU (a PDU is under 32 KiB: 128 × 32 rows × 4 bytes fit).
const COLUMNS: usize = 128;

/// The banner's pixels: `width` × `height` RGB, top row first.
fn raster(text: &str, width: usize) -> (usize, Vec<u8>) {
    // Glyphs twice their size when the line fits, else at their own 8 pixels.
    let chars: Vec<char> = text
        .chars()
        .map(|c| if c.is_ascii() { c } else { '?' })
        .collect();
    let scale = if chars.len() * 16 + 16 <= width { 2 } else { 1 };
    let (pad, glyph) = (4 * scale, 8 * scale);
    let height = glyph + 2 * pad;
    let mut px = BACKGROUND.repeat(width * height);
    for (n, c) in chars.iter().enumerate() {
        let x0 = pad + n * glyph;
        if x0 + glyph > width {
            break; // what does not fit is in the audit log and the recording's markers
        }
        let Some(rows) = font8x8::BASIC_FONTS.get(*c) else {
            continue;
        };
        for (gy, row) in rows.iter().enumerate() {
            for gx in 0..8 {
                if row & (1 << gx) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (x, y) = (x0 + gx * scale + dx, pad + gy * scale + dy);
                        px[(y * width + x) * 3..][..3].copy_from_slice(&TEXT);
                    }
                }
            }
        }
    }
    (height, px)
}

/// Fast-path PDUs that draw `text` in a bar across the top of a `desktop_width`-wide screen.
pub fn banner(text: &str, desktop_width: u16) -> Result<Vec<u8>, String> {
    let width = usize::from(desktop_width) & !3; // rows of whole 4-pixel groups
    if width < 64 {
        return Err(format!(
            "a desktop {desktop_width} pixels wide has no room for a banner"
        ));
    }
    let (height, px) = raster(text, width);
    let mut out = Vec::new();
    for left in (0..width).step_by(COLUMNS) {
        let w = COLUMNS.min(width - left);
        // Uncompressed 32 bpp bitmaps are BGRX rows, bottom row first.
        let mut data = Vec::with_capacity(w * height * 4);
        for y in (0..height).rev() {
            for x in left..left + w {
                let p = &px[(y * width + x) * 3..][..3];
                data.extend_from_slice(&[p[2], p[1], p[0], 0xff]);
            }
        }
        let narrow = |v: usize| u16::try_from(v).map_err(|_| "banner too large".to_string());
        let update = BitmapUpdateData {
            rectangles: vec![BitmapData {
                rectangle: InclusiveRectangle {
                    left: narrow(left)?,
                    top: 0,
                    right: narrow(left + w - 1)?,
                    bottom: narrow(height - 1)?,
                },
                width: narrow(w)?,
                height: narrow(height)?,
                bits_per_pixel: 32,
                compression_flags: Compression::empty(),
                compressed_data_header: None,
                bitmap_data: &data,
            }],
        };
        let body = encode_vec(&update).map_err(|e| format!("bitmap update: {e}"))?;
        let pdu = encode_vec(&FastPathUpdatePdu {
            fragmentation: Fragmentation::Single,
            update_code: UpdateCode::Bitmap,
            compression_flags: None,
            compression_type: None,
            data: &body,
        })
        .map_err(|e| format!("fast-path update: {e}"))?;
        out.extend(
            encode_vec(&FastPathHeader::new(EncryptionFlags::empty(), pdu.len()))
                .map_err(|e| format!("fast-path header: {e}"))?,
        );
        out.extend(pdu);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wardengate_recorder::desktop::Desktop;

    const SHADOW: &[u8] = include_bytes!("../../../fixtures/rdp/freerdp-shadow-logo-1024x768.bin");

    #[test]
    fn the_banner_draws_on_a_decoded_desktop() {
        let mut d = Desktop::new();
        d.feed(SHADOW);
        let text = "[wardengate] idle for 5m: closing in 30s";
        let bytes = banner(text, 1024).expect("banner");
        // Every PDU frames, and fits a fast-path PDU.
        let mut at = 0;
        while at < bytes.len() {
            let info = ironrdp_pdu::find_size(&bytes[at..])
                .expect("frames")
                .expect("whole");
            assert!(info.length <= 0x7fff, "{}", info.length);
            at += info.length;
        }
        let before = d.version;
        d.feed(&bytes);
        assert_eq!(d.errors, 0, "{:?}", d.first_error);
        assert!(d.version > before);
        let (_, _, rgb) = d.rgb().expect("desktop");
        let count = |c: [u8; 3]| {
            rgb[..1024 * 32 * 3]
                .chunks_exact(3)
                .filter(|p| *p == c)
                .count()
        };
        let (amber, ink) = (count(BACKGROUND), count(TEXT));
        assert!(
            amber > 1024 * 32 / 2 && ink > 500,
            "amber {amber}, text {ink}"
        );
        assert_eq!(
            amber + ink,
            1024 * 32,
            "the whole bar is drawn, nothing else"
        );
    }

    #[test]
    fn long_text_is_cut_and_tiny_desktops_refused() {
        let long = "x".repeat(500);
        assert!(banner(&long, 640).is_ok());
        assert!(banner("hi", 32).is_err());
    }
}
