//! What counts as a person at the keyboard in the client's stream: key presses and releases,
//! mouse buttons and wheel, and mouse motion while a modifier key is held. Plain motion, the
//! client's synchronize and quality-of-experience events, heartbeats and frame acknowledgements
//! are not input (a mouse resting on a desk jitters; clients send the others on their own).

use ironrdp_core::decode;
use ironrdp_pdu::input::fast_path::{FastPathInput, FastPathInputEvent, KeyboardFlags};
use ironrdp_pdu::input::mouse::PointerFlags;
use ironrdp_pdu::input::mouse_x::PointerXFlags;

/// Scan codes of the modifier keys (set 1; right-hand ones carry the extended flag).
const SHIFT_LEFT: u8 = 0x2a;
const SHIFT_RIGHT: u8 = 0x36;
const CTRL: u8 = 0x1d;
const ALT: u8 = 0x38;
const WIN_LEFT: u8 = 0x5b;
const WIN_RIGHT: u8 = 0x5c;

/// A fast-path input header whose length covers the header itself and matches the frame
/// (ironrdp's decoder subtracts without checking, and would panic on a short length).
fn well_formed(frame: &[u8]) -> bool {
    let (Some(&header), Some(&b1)) = (frame.first(), frame.get(1)) else {
        return false;
    };
    if header & 0x03 != 0 {
        return false; // not fast-path (a TPKT frame starts with 0x03)
    }
    let (length, sizeof_length) = if b1 & 0x80 != 0 {
        match frame.get(2) {
            Some(&b2) => ((usize::from(b1 & 0x7f) << 8) | usize::from(b2), 2),
            None => return false,
        }
    } else {
        (usize::from(b1), 1)
    };
    let count_byte = usize::from((header >> 2) & 0x0f == 0);
    length == frame.len() && length > 1 + sizeof_length + count_byte
}

/// Follows the modifier keys across frames and judges each client frame.
#[derive(Debug, Default)]
pub struct InputFilter {
    /// One bit per held modifier scan code.
    held: u8,
}

impl InputFilter {
    fn modifier_bit(code: u8) -> Option<u8> {
        Some(match code {
            SHIFT_LEFT => 1,
            SHIFT_RIGHT => 2,
            CTRL => 4,
            ALT => 8,
            WIN_LEFT => 16,
            WIN_RIGHT => 32,
            _ => return None,
        })
    }

    /// Whether a fast-path input frame holds meaningful input; frames that are not fast-path
    /// input (or do not parse) are not input.
    pub fn meaningful(&mut self, frame: &[u8]) -> bool {
        if !well_formed(frame) {
            return false;
        }
        // The decoder is fed what a client sent: a panic in it must not take the relay down.
        let Ok(Ok(input)) = std::panic::catch_unwind(|| decode::<FastPathInput>(frame)) else {
            return false;
        };
        let mut any = false;
        for ev in input.input_events() {
            any |= match ev {
                FastPathInputEvent::KeyboardEvent(flags, code) => {
                    if let Some(bit) = Self::modifier_bit(*code) {
                        if flags.contains(KeyboardFlags::RELEASE) {
                            self.held &= !bit;
                        } else {
                            self.held |= bit;
                        }
                    }
                    true
                }
                FastPathInputEvent::UnicodeKeyboardEvent(..) => true,
                FastPathInputEvent::MouseEvent(m) => {
                    let buttons = PointerFlags::LEFT_BUTTON
                        | PointerFlags::RIGHT_BUTTON
                        | PointerFlags::MIDDLE_BUTTON_OR_WHEEL
                        | PointerFlags::VERTICAL_WHEEL
                        | PointerFlags::HORIZONTAL_WHEEL;
                    m.flags.intersects(buttons)
                        || (m.flags.contains(PointerFlags::MOVE) && self.held != 0)
                }
                FastPathInputEvent::MouseEventEx(m) => {
                    m.flags
                        .intersects(PointerXFlags::BUTTON1 | PointerXFlags::BUTTON2)
                        || self.held != 0
                }
                FastPathInputEvent::MouseEventRel(_) => self.held != 0,
                // Synchronize resets the toggle keys' state when the client regains focus.
                FastPathInputEvent::SyncEvent(_) => {
                    self.held = 0;
                    false
                }
                FastPathInputEvent::QoeEvent(_) => false,
            };
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironrdp_core::encode_vec;
    use ironrdp_pdu::input::fast_path::FastPathInput;
    use ironrdp_pdu::input::fast_path::SynchronizeFlags;
    use ironrdp_pdu::input::mouse::MousePdu;

    fn frame(events: Vec<FastPathInputEvent>) -> Vec<u8> {
        encode_vec(&FastPathInput::new(events).expect("events")).expect("encode")
    }

    fn mouse(flags: PointerFlags) -> FastPathInputEvent {
        FastPathInputEvent::MouseEvent(MousePdu {
            flags,
            number_of_wheel_rotation_units: 0,
            x_position: 10,
            y_position: 20,
        })
    }

    #[test]
    fn keys_and_buttons_count_plain_motion_does_not() {
        let mut f = InputFilter::default();
        assert!(f.meaningful(&frame(vec![FastPathInputEvent::KeyboardEvent(
            KeyboardFlags::empty(),
            0x1e
        )])));
        assert!(f.meaningful(&frame(vec![mouse(
            PointerFlags::DOWN | PointerFlags::LEFT_BUTTON
        )])));
        assert!(!f.meaningful(&frame(vec![mouse(PointerFlags::MOVE)])));
        assert!(!f.meaningful(&frame(vec![
            FastPathInputEvent::QoeEvent(7),
            FastPathInputEvent::SyncEvent(SynchronizeFlags::empty())
        ])));
        assert!(
            !f.meaningful(b"\x03\x00\x00\x07\x02\xf0\x80"),
            "not fast-path input"
        );
        // Hostile lengths: shorter than the header, longer than the frame.
        for bad in [
            &b"\x04\x01"[..],
            b"\x04\x02\x00",
            b"\x00\x02\x00",
            b"\x04\x09\x00\x1e",
        ] {
            assert!(!f.meaningful(bad), "{bad:?}");
        }
    }

    #[test]
    fn motion_counts_while_a_modifier_is_held() {
        let mut f = InputFilter::default();
        assert!(f.meaningful(&frame(vec![FastPathInputEvent::KeyboardEvent(
            KeyboardFlags::empty(),
            CTRL
        )])));
        assert!(f.meaningful(&frame(vec![mouse(PointerFlags::MOVE)])));
        assert!(f.meaningful(&frame(vec![FastPathInputEvent::KeyboardEvent(
            KeyboardFlags::RELEASE,
            CTRL
        )])));
        assert!(!f.meaningful(&frame(vec![mouse(PointerFlags::MOVE)])));
        // A synchronize (focus regained) forgets held keys.
        f.meaningful(&frame(vec![FastPathInputEvent::KeyboardEvent(
            KeyboardFlags::empty(),
            SHIFT_LEFT,
        )]));
        f.meaningful(&frame(vec![FastPathInputEvent::SyncEvent(
            SynchronizeFlags::empty(),
        )]));
        assert!(!f.meaningful(&frame(vec![mouse(PointerFlags::MOVE)])));
    }
}
