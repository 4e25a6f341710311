//! RDP in the end-to-end tests: FreeRDP's `xfreerdp` as the client on a virtual display of its
//! own, and screenshots of that display (what the person would see).

use std::process::{Command, Stdio};

pub use wardengate_dev::desktop::{Desktop, Xvfb};

/// The Windows account's password: in the target's SAM file and the gateway's vault, never
/// anywhere the client can see.
pub const BOB_PASSWORD: &str = "Vault-only-RDP-secret-4e1a";

/// `xfreerdp` towards the gateway's RDP front, drawing on `display`.
pub fn xfreerdp(display: &Xvfb, port: u16, user: &str, password: &str) -> Command {
    let mut c = Command::new("xfreerdp");
    c.arg(format!("/v:127.0.0.1:{port}"))
        .arg(format!("/u:{user}"))
        .arg(format!("/p:{password}"))
        .args([
            "/cert:ignore",
            "/size:1024x768",
            "-grab-keyboard",
            "/log-level:WARN",
        ])
        .env("DISPLAY", display.name())
        .stdin(Stdio::null());
    c
}

/// The display's pixels as RGB rows (`xwd | xwdtopnm`): (width, height, pixels).
pub fn screenshot(display: &Xvfb) -> (usize, usize, Vec<u8>) {
    let shot = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "xwd -root -silent -display {} | xwdtopnm 2>/dev/null",
            display.name()
        ))
        .output()
        .expect("xwd | xwdtopnm");
    parse_ppm(&shot.stdout).expect("a PPM screenshot")
}

/// A binary PPM (P6, 8-bit): (width, height, RGB bytes).
pub fn parse_ppm(b: &[u8]) -> Option<(usize, usize, Vec<u8>)> {
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        fields.push(std::str::from_utf8(b.get(start..i)?).ok()?.to_string());
    }
    if fields[0] != "P6" || fields[3] != "255" {
        return None;
    }
    let (w, h): (usize, usize) = (fields[1].parse().ok()?, fields[2].parse().ok()?);
    let data = b.get(i + 1..i + 1 + w * h * 3)?.to_vec();
    Some((w, h, data))
}

/// A PNG (8-bit RGB or RGBA): (width, height, RGB bytes).
pub fn parse_png(b: &[u8]) -> (usize, usize, Vec<u8>) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(b))
        .read_info()
        .expect("a PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("PNG size")];
    let info = reader.next_frame(&mut buf).expect("a PNG frame");
    let px = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    let rgb = buf[..info.buffer_size()]
        .chunks_exact(px)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width as usize, info.height as usize, rgb)
}

/// How many pixels are clearly red (the demo desktop's `xlogo` background).
pub fn red_pixels(rgb: &[u8]) -> usize {
    rgb.chunks_exact(3)
        .filter(|p| p[0] > 200 && p[1] < 60 && p[2] < 60)
        .count()
}
