//! What the gateway changes in the client's offer so that every session can be replayed from its
//! recording: the graphics pipeline (RDPGFX: H.264 and progressive codecs over a dynamic channel)
//! is withdrawn from the client's core data, and of its bitmap codecs only those the recording
//! decoder reads stay (RemoteFX; NSCodec goes). The server then paints with fast-path bitmap
//! updates or RemoteFX surface bits, which `wardengate_recorder::desktop` decodes.
//!
//! Each rewrite first checks that the original PDU re-encodes to the same bytes through ironrdp's
//! codec; one that does not is forwarded untouched (and said in the log), never mangled.

use std::borrow::Cow;

use ironrdp_core::{decode, encode_vec};
use ironrdp_pdu::gcc::ClientEarlyCapabilityFlags;
use ironrdp_pdu::mcs::{ConnectInitial, SendDataRequest};
use ironrdp_pdu::rdp::capability_sets::{BitmapCodecs, CapabilitySet, CodecProperty};
use ironrdp_pdu::rdp::headers::{ShareControlHeader, ShareControlPdu};
use ironrdp_pdu::x224::{X224Data, X224};

/// Client PDUs looked at before giving up on finding the Confirm Active.
const LOOK_AT_MOST: u32 = 64;

/// The client's side of the capability exchange, PDU by PDU, until its Confirm Active.
#[derive(Debug, Default)]
pub struct Offer {
    seen: u32,
    done: bool,
    /// What was withdrawn, for the log and the recording.
    pub withdrawn: Vec<&'static str>,
}

impl Offer {
    /// Whether client PDUs still have to be looked at (and held whole) before going on.
    pub fn pending(&self) -> bool {
        !self.done
    }

    /// Stop looking (the stream could not be framed, or the exchange is over).
    pub fn finish(&mut self) {
        self.done = true;
    }

    /// The PDU to forward in place of `pdu`, if it changes.
    pub fn rewrite(&mut self, pdu: &[u8]) -> Option<Vec<u8>> {
        self.seen += 1;
        if self.seen >= LOOK_AT_MOST || pdu.first() != Some(&3) {
            // A fast-path PDU is input: the exchange is over without a Confirm Active seen.
            self.done = true;
            return None;
        }
        let result = if self.seen == 1 {
            connect_initial(pdu).map(|r| r.map(|b| (b, "graphics pipeline (RDPGFX)")))
        } else {
            match confirm_active(pdu) {
                Ok(Some((bytes, changed))) => {
                    self.done = true;
                    Ok(changed.then_some((bytes, "NSCodec and other undecodable bitmap codecs")))
                }
                Ok(None) => Ok(None),
                Err(e) => {
                    self.done = true;
                    Err(e)
                }
            }
        };
        match result {
            Ok(Some((bytes, what))) => {
                self.withdrawn.push(what);
                Some(bytes)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(
                    "forwarding the client's {e} untouched: the recording may not replay fully"
                );
                None
            }
        }
    }
}

fn connect_initial(pdu: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let what = "MCS Connect Initial";
    let decoded = |b: &[u8]| -> Result<ConnectInitial, String> {
        let X224(data) = decode::<X224<X224Data<'_>>>(b).map_err(|e| format!("{what} ({e})"))?;
        decode::<ConnectInitial>(&data.data).map_err(|e| format!("{what} ({e})"))
    };
    let original = decoded(pdu)?;
    let blocks = original.conference_create_request.gcc_blocks();
    let gfx = ClientEarlyCapabilityFlags::SUPPORT_DYN_VC_GFX_PROTOCOL;
    let Some(flags) = blocks.core.optional_data.early_capability_flags else {
        return Ok(None);
    };
    if !flags.contains(gfx) {
        return Ok(None);
    }
    // Re-encoding would change more than the flag (clients differ from ironrdp in a PER length
    // of the conference request that servers ignore), so the two bytes are changed in place:
    // CS_CORE is the first user data block, after the H.221 key "Duca" and a PER length, and
    // earlyCapabilityFlags sits 144 bytes into it ([MS-RDPBCGR] 2.2.1.3.2). The result must
    // decode to the original with that one flag removed.
    let misplaced = || format!("{what} (client core data not where expected)");
    let key = pdu
        .windows(4)
        .position(|w| w == b"Duca")
        .ok_or_else(misplaced)?;
    let per = pdu.get(key + 4).ok_or_else(misplaced)?;
    let core = key + 4 + if per & 0x80 != 0 { 2 } else { 1 };
    if pdu.get(core..core + 2) != Some(&[0x01, 0xc0]) {
        return Err(misplaced());
    }
    let field = core + 144;
    let current = pdu.get(field..field + 2).ok_or_else(misplaced)?;
    if u16::from_le_bytes([current[0], current[1]]) != flags.bits() {
        return Err(misplaced());
    }
    let mut out = pdu.to_vec();
    out[field..field + 2].copy_from_slice(&(flags - gfx).bits().to_le_bytes());
    let mut expected = blocks.clone();
    expected.core.optional_data.early_capability_flags = Some(flags - gfx);
    if decoded(&out)?.conference_create_request.gcc_blocks() != &expected {
        return Err(format!("{what} (the change did not decode as intended)"));
    }
    Ok(Some(out))
}

/// `Some((pdu, changed))` for the Confirm Active, `None` for any other PDU.
fn confirm_active(pdu: &[u8]) -> Result<Option<(Vec<u8>, bool)>, String> {
    let what = "Confirm Active";
    let Ok(X224(req)) = decode::<X224<SendDataRequest<'_>>>(pdu) else {
        return Ok(None); // attach user, channel joins
    };
    let Ok(mut header) = decode::<ShareControlHeader>(&req.user_data) else {
        return Ok(None); // client info, licensing, channel data
    };
    let ShareControlPdu::ClientConfirmActive(confirm) = &mut header.share_control_pdu else {
        return Ok(None);
    };
    let mut changed = false;
    for set in &mut confirm.pdu.capability_sets {
        if let CapabilitySet::BitmapCodecs(BitmapCodecs(codecs)) = set {
            let before = codecs.len();
            codecs.retain(|c| decodable(&c.property));
            changed |= codecs.len() != before;
        }
    }
    if !changed {
        return Ok(Some((pdu.to_vec(), false)));
    }
    // Checked on the original: decode it again, unchanged.
    let original =
        decode::<ShareControlHeader>(&req.user_data).map_err(|e| format!("{what} ({e})"))?;
    same_bytes(&original, &req.user_data, what)?;
    let user_data = encode_vec(&header).map_err(|e| format!("{what} ({e})"))?;
    let out = encode_vec(&X224(SendDataRequest {
        initiator_id: req.initiator_id,
        channel_id: req.channel_id,
        user_data: Cow::Owned(user_data),
    }))
    .map_err(|e| format!("{what} ({e})"))?;
    Ok(Some((out, true)))
}

/// The codecs `wardengate_recorder::desktop` (ironrdp's fast-path processor) decodes.
fn decodable(p: &CodecProperty) -> bool {
    match p {
        CodecProperty::RemoteFx(_) | CodecProperty::ImageRemoteFx(_) => true,
        CodecProperty::Qoi | CodecProperty::QoiZ => true,
        CodecProperty::NsCodec(_) | CodecProperty::Ignore | CodecProperty::None => false,
    }
}

fn same_bytes<T: ironrdp_core::Encode>(pdu: &T, original: &[u8], what: &str) -> Result<(), String> {
    match encode_vec(pdu) {
        Ok(again) if again == original => Ok(()),
        Ok(_) => Err(format!("{what} (ironrdp re-encodes it differently)")),
        Err(e) => Err(format!("{what} ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironrdp_pdu::rdp::capability_sets::{Codec, NsCodec};

    const CONNECT_INITIAL: &[u8] =
        include_bytes!("../../../fixtures/rdp/xfreerdp2-connect-initial.bin");
    const CONFIRM_ACTIVE: &[u8] =
        include_bytes!("../../../fixtures/rdp/xfreerdp2-confirm-active.bin");

    #[test]
    fn xfreerdp_connect_initial_loses_the_graphics_pipeline_and_nothing_else() {
        let mut offer = Offer::default();
        let out = offer.rewrite(CONNECT_INITIAL).expect("rewritten");
        assert_eq!(out.len(), CONNECT_INITIAL.len());
        let differing: Vec<usize> = (0..out.len())
            .filter(|&i| out[i] != CONNECT_INITIAL[i])
            .collect();
        assert_eq!(
            differing.len(),
            1,
            "one byte of the flags changes: {differing:?}"
        );
        let X224(data) = decode::<X224<X224Data<'_>>>(&out).expect("x224");
        let ci = decode::<ConnectInitial>(&data.data).expect("connect initial");
        let flags = ci
            .conference_create_request
            .gcc_blocks()
            .core
            .optional_data
            .early_capability_flags;
        let flags = flags.expect("early capability flags");
        assert!(!flags.contains(ClientEarlyCapabilityFlags::SUPPORT_DYN_VC_GFX_PROTOCOL));
        assert!(flags.contains(ClientEarlyCapabilityFlags::SUPPORT_ERR_INFO_PDU));
        assert_eq!(offer.withdrawn, ["graphics pipeline (RDPGFX)"]);
        assert!(offer.pending(), "the Confirm Active is still to come");
    }

    /// The recorded xfreerdp Confirm Active (which offers RemoteFX only) with NSCodec added, as
    /// a client that offers both sends it.
    fn confirm_active_with_nscodec() -> Vec<u8> {
        let X224(req) =
            decode::<X224<SendDataRequest<'_>>>(CONFIRM_ACTIVE).expect("send data request");
        let mut header = decode::<ShareControlHeader>(&req.user_data).expect("share control");
        let ShareControlPdu::ClientConfirmActive(c) = &mut header.share_control_pdu else {
            panic!("not a Confirm Active");
        };
        for set in &mut c.pdu.capability_sets {
            if let CapabilitySet::BitmapCodecs(BitmapCodecs(codecs)) = set {
                codecs.insert(
                    0,
                    Codec {
                        id: 1,
                        property: CodecProperty::NsCodec(NsCodec {
                            is_dynamic_fidelity_allowed: true,
                            is_subsampling_allowed: true,
                            color_loss_level: 3,
                        }),
                    },
                );
            }
        }
        encode_vec(&X224(SendDataRequest {
            initiator_id: req.initiator_id,
            channel_id: req.channel_id,
            user_data: Cow::Owned(encode_vec(&header).expect("share control")),
        }))
        .expect("pdu")
    }

    fn capability_sets(pdu: &[u8]) -> Vec<CapabilitySet> {
        let X224(req) = decode::<X224<SendDataRequest<'_>>>(pdu).expect("send data request");
        let header = decode::<ShareControlHeader>(&req.user_data).expect("share control");
        match header.share_control_pdu {
            ShareControlPdu::ClientConfirmActive(c) => c.pdu.capability_sets,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_confirm_active_loses_nscodec_and_keeps_the_rest() {
        let with_nsc = confirm_active_with_nscodec();
        let mut offer = Offer::default();
        offer.rewrite(CONNECT_INITIAL);
        let out = offer.rewrite(&with_nsc).expect("rewritten");
        assert!(
            !offer.pending(),
            "the offer is over after the Confirm Active"
        );
        // Exactly the recorded one again: NSCodec gone, RemoteFX and every other set kept.
        assert_eq!(capability_sets(&out), capability_sets(CONFIRM_ACTIVE));
        assert_eq!(out, CONFIRM_ACTIVE);
        assert_eq!(offer.withdrawn.len(), 2, "{:?}", offer.withdrawn);
    }

    #[test]
    fn a_confirm_active_with_decodable_codecs_only_goes_on_as_it_was() {
        let mut offer = Offer::default();
        offer.rewrite(CONNECT_INITIAL);
        assert_eq!(offer.rewrite(CONFIRM_ACTIVE), None);
        assert!(!offer.pending());
        assert_eq!(offer.withdrawn, ["graphics pipeline (RDPGFX)"]);
    }

    #[test]
    fn other_pdus_and_garbage_go_on_untouched() {
        let mut offer = Offer::default();
        assert_eq!(
            offer.rewrite(b"\x03\x00\x00\x0c\x02\xf0\x80\x04\x01\x00\x01\x00"),
            None
        );
        assert_eq!(offer.rewrite(&[3, 0, 0, 4]), None);
        assert!(offer.pending());
        // Fast-path input: the exchange is over.
        assert_eq!(offer.rewrite(&[0x44, 0x04, 0x00, 0x00]), None);
        assert!(!offer.pending());
    }
}
