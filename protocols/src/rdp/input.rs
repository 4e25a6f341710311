//! What counts as a person at the keyboard in the client's stream: key presses and releases,
//! mouse buttons and wheel, and mouse motion while a modifier key is held. Plain motion, the
//! client's synchronize and quality-of-experience events, heartbeats and frame acknowledgements
//! are not input (a mouse resting on a desk jitters; clients send the others on their own).

use ironrdp_core::decode;
use ironrdp_pdu::input::fast_path::{FastPathInput, FastPathInputEvent, KeyboardFlags};
use ironrdp_pdu::input::mouse::PointerFlags;
use ironrdp_pdu::input::mouse_x::PointerXFlags;
use ironrdp_pdu::input::scan_code::KeyboardFlags as SlowKeyboardFlags;
use ironrdp_pdu::input::{InputEvent, InputEventPdu};
use ironrdp_pdu::mcs::SendDataRequest;
use ironrdp_pdu::rdp::headers::{ShareControlHeader, ShareControlPdu, ShareDataPdu};
use ironrdp_pdu::x224::X224;

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

/// One input event, fast-path or slow-path, as far as idle cares.
enum Event {
    Key { code: u16, release: bool },
    Unicode,
    Mouse(PointerFlags),
    MouseX(PointerXFlags),
    MouseRel,
    Sync,
    Other,
}

/// The events of a slow-path input PDU (Client Input Event PDU in an MCS Send Data Request);
/// `None` for any other PDU.
fn slow_path(frame: &[u8]) -> Option<Vec<Event>> {
    let X224(req) = decode::<X224<SendDataRequest<'_>>>(frame).ok()?;
    let header = decode::<ShareControlHeader>(&req.user_data).ok()?;
    let ShareControlPdu::Data(data) = header.share_control_pdu else {
        return None;
    };
    let ShareDataPdu::Input(InputEventPdu(events)) = data.share_data_pdu else {
        return None;
    };
    Some(
        events
            .into_iter()
            .map(|e| match e {
                InputEvent::ScanCode(k) => Event::Key {
                    code: k.key_code,
                    release: k.flags.contains(SlowKeyboardFlags::RELEASE),
                },
                InputEvent::Unicode(_) => Event::Unicode,
                InputEvent::Mouse(m) => Event::Mouse(m.flags),
                InputEvent::MouseX(m) => Event::MouseX(m.flags),
                InputEvent::MouseRel(_) => Event::MouseRel,
                InputEvent::Sync(_) => Event::Sync,
                InputEvent::Unused(_) => Event::Other,
            })
            .collect(),
    )
}

/// The events of a fast-path input frame; `None` for anything else.
fn fast_path(frame: &[u8]) -> Option<Vec<Event>> {
    if !well_formed(frame) {
        return None;
    }
    let input = decode::<FastPathInput>(frame).ok()?;
    Some(
        input
            .input_events()
            .iter()
            .map(|e| match e {
                FastPathInputEvent::KeyboardEvent(flags, code) => Event::Key {
                    code: u16::from(*code),
                    release: flags.contains(KeyboardFlags::RELEASE),
                },
                FastPathInputEvent::UnicodeKeyboardEvent(..) => Event::Unicode,
                FastPathInputEvent::MouseEvent(m) => Event::Mouse(m.flags),
                FastPathInputEvent::MouseEventEx(m) => Event::MouseX(m.flags),
                FastPathInputEvent::MouseEventRel(_) => Event::MouseRel,
                FastPathInputEvent::SyncEvent(_) => Event::Sync,
                FastPathInputEvent::QoeEvent(_) => Event::Other,
            })
            .collect(),
    )
}

/// Follows the modifier keys across frames and judges each client frame.
#[derive(Debug, Default)]
pub struct InputFilter {
    /// One bit per held modifier scan code.
    held: u8,
}

impl InputFilter {
    fn modifier_bit(code: u16) -> Option<u8> {
        Some(match u8::try_from(code).ok()? {
            SHIFT_LEFT => 1,
            SHIFT_RIGHT => 2,
            CTRL => 4,
            ALT => 8,
            WIN_LEFT => 16,
            WIN_RIGHT => 32,
            _ => return None,
        })
    }

    /// Whether a client PDU holds meaningful input: fast-path input frames, and the slow-path
    /// input PDUs some clients send instead; anything else (or what does not parse) is not.
    pub fn meaningful(&mut self, frame: &[u8]) -> bool {
        // The decoders are fed what a client sent: a panic in them must not take the relay down.
        let events = std::panic::catch_unwind(|| match frame.first() {
            Some(0x03) => slow_path(frame),
            _ => fast_path(frame),
        });
        let Ok(Some(events)) = events else {
            return false;
        };
        let mut any = false;
        for ev in events {
            any |= self.judge(ev);
        }
        any
    }

    fn judge(&mut self, ev: Event) -> bool {
        match ev {
            Event::Key { code, release } => {
                if let Some(bit) = Self::modifier_bit(code) {
                    if release {
                        self.held &= !bit;
                    } else {
                        self.held |= bit;
                    }
                }
                true
            }
            Event::Unicode => true,
            Event::Mouse(flags) => {
                let buttons = PointerFlags::LEFT_BUTTON
                    | PointerFlags::RIGHT_BUTTON
                    | PointerFlags::MIDDLE_BUTTON_OR_WHEEL
                    | PointerFlags::VERTICAL_WHEEL
                    | PointerFlags::HORIZONTAL_WHEEL;
                flags.intersects(buttons) || (flags.contains(PointerFlags::MOVE) && self.held != 0)
            }
            Event::MouseX(flags) => {
                flags.intersects(PointerXFlags::BUTTON1 | PointerXFlags::BUTTON2) || self.held != 0
            }
            Event::MouseRel => self.held != 0,
            // Synchronize resets the toggle keys' state when the client regains focus.
            Event::Sync => {
                self.held = 0;
                false
            }
            Event::Other => false,
        }
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

    /// A slow-path Client Input Event PDU, as a client that does not use fast-path input sends.
    fn slow(events: Vec<InputEvent>) -> Vec<u8> {
        use ironrdp_pdu::rdp::client_info::CompressionType;
        use ironrdp_pdu::rdp::headers::{CompressionFlags, ShareDataHeader, StreamPriority};
        let header = ShareControlHeader {
            share_id: 0x1_03ea,
            pdu_source: 1007,
            share_control_pdu: ShareControlPdu::Data(ShareDataHeader {
                share_data_pdu: ShareDataPdu::Input(InputEventPdu(events)),
                stream_priority: StreamPriority::Medium,
                compression_flags: CompressionFlags::empty(),
                compression_type: CompressionType::K8,
            }),
        };
        let user_data = encode_vec(&header).expect("share data");
        encode_vec(&X224(SendDataRequest {
            initiator_id: 1007,
            channel_id: 1003,
            user_data: std::borrow::Cow::Owned(user_data),
        }))
        .expect("MCS")
    }

    #[test]
    fn slow_path_input_is_judged_like_fast_path() {
        use ironrdp_pdu::input::scan_code::ScanCodePdu;
        use ironrdp_pdu::input::sync::{SyncPdu, SyncToggleFlags};
        let key = |code: u16, flags: SlowKeyboardFlags| {
            InputEvent::ScanCode(ScanCodePdu {
                flags,
                key_code: code,
            })
        };
        let motion = || {
            InputEvent::Mouse(MousePdu {
                flags: PointerFlags::MOVE,
                number_of_wheel_rotation_units: 0,
                x_position: 5,
                y_position: 6,
            })
        };
        let mut f = InputFilter::default();
        assert!(f.meaningful(&slow(vec![key(0x1e, SlowKeyboardFlags::DOWN)])));
        assert!(!f.meaningful(&slow(vec![motion()])), "plain motion");
        assert!(f.meaningful(&slow(vec![key(u16::from(ALT), SlowKeyboardFlags::DOWN)])));
        assert!(f.meaningful(&slow(vec![motion()])), "motion with Alt held");
        assert!(!f.meaningful(&slow(vec![InputEvent::Sync(SyncPdu {
            flags: SyncToggleFlags::empty()
        })])));
        assert!(
            !f.meaningful(&slow(vec![motion()])),
            "Alt forgotten at a sync"
        );
        // A slow-path PDU that is not input, and a truncated one.
        let input = slow(vec![key(0x1e, SlowKeyboardFlags::DOWN)]);
        assert!(!f.meaningful(&input[..input.len() - 3]));
    }
}
