//! Telling the RDP client why its session ends.
//!
//! RDP has no text channel the gateway could write to, but it has a standard way for a server to
//! say why it disconnects: the Set Error Info PDU, whose codes every client knows (xfreerdp
//! prints them and exits with a code per reason; mstsc shows a dialog). When the gateway ends a
//! session (terminated, idle, lifespan, shutdown) it sends one, followed by an MCS Disconnect
//! Provider Ultimatum, on the client's connection at a PDU boundary of the target's stream.
//!
//! [`Boundaries`] follows that stream's PDU framing as it is relayed (headers only; no copy
//! after the Demand Active), and learns from the server's Demand Active the ids a share data PDU
//! must carry (MCS initiator and I/O channel, share id, PDU source).

use std::borrow::Cow;

use ironrdp_core::{decode, encode_vec};
use ironrdp_pdu::mcs::{DisconnectProviderUltimatum, DisconnectReason, SendDataIndication};
use ironrdp_pdu::rdp::client_info::CompressionType;
use ironrdp_pdu::rdp::headers::{
    CompressionFlags, ShareControlHeader, ShareControlPdu, ShareDataHeader, ShareDataPdu,
    StreamPriority,
};
use ironrdp_pdu::rdp::server_error_info::{
    ErrorInfo, ProtocolIndependentCode, ServerSetErrorInfoPdu,
};
use ironrdp_pdu::x224::X224;
use ironrdp_pdu::Action;

/// Largest PDU followed (TPKT lengths are 16-bit; fast-path lengths 15-bit).
const MAX_PDU: usize = 0x1_0000;
/// Bytes that always hold a PDU's length (TPKT: 4, fast-path: at most 3).
const HEADER: usize = 4;

/// Where the server's share data goes, from its Demand Active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareIds {
    pub initiator: u16,
    pub channel: u16,
    pub share_id: u32,
    pub source: u16,
}

/// The PDU framing of the target → client stream.
#[derive(Debug, Default)]
pub struct Boundaries {
    /// Bytes of the current PDU still to come.
    rest: usize,
    /// The start of a PDU whose length is not known yet (a read ended inside its header).
    head: Vec<u8>,
    /// A slow-path PDU kept whole until the Demand Active is found.
    keep: Option<Vec<u8>>,
    pub ids: Option<ShareIds>,
    /// The desktop's width, from the same Demand Active (where a banner can go).
    pub desktop_width: Option<u16>,
    /// The stream could not be framed: no farewell can be placed safely.
    pub lost: bool,
}

impl Boundaries {
    /// Bytes the target sent, in order, as relayed.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.lost {
            if self.rest > 0 {
                let n = self.rest.min(data.len());
                if let Some(k) = &mut self.keep {
                    k.extend_from_slice(&data[..n]);
                }
                self.rest -= n;
                data = &data[n..];
                if self.rest == 0 {
                    if let Some(pdu) = self.keep.take() {
                        self.inspect(&pdu);
                    }
                }
                continue;
            }
            // At the start of a PDU, possibly with part of its header from the previous read.
            let seen = self.head.len();
            let take = data.len().min(HEADER);
            self.head.extend_from_slice(&data[..take]);
            let info = match ironrdp_pdu::find_size(&self.head) {
                Ok(Some(info))
                    if info.length > 0 && info.length >= seen && info.length <= MAX_PDU =>
                {
                    info
                }
                Ok(None) if take == data.len() => return, // the header continues in the next read
                _ => {
                    self.lost = true;
                    return;
                }
            };
            // `seen` bytes of this PDU came with earlier reads; the rest starts at data[0].
            let start = std::mem::take(&mut self.head);
            self.rest = info.length - seen;
            if self.ids.is_none() && info.action == Action::X224 {
                self.keep = Some(start[..seen].to_vec());
            }
        }
    }

    /// Between two PDUs: a farewell written now cannot cut one in half.
    pub fn at_boundary(&self) -> bool {
        !self.lost && self.rest == 0 && self.head.is_empty()
    }

    /// How many bytes at the start of `data` (what comes next) finish the PDU under way, its
    /// header included when a read ended inside it; 0 at a boundary.
    pub fn to_boundary(&self, data: &[u8]) -> usize {
        if self.rest > 0 {
            return self.rest.min(data.len());
        }
        if self.head.is_empty() {
            return 0;
        }
        let take = data.len().min(HEADER);
        let mut header = self.head.clone();
        header.extend_from_slice(&data[..take]);
        match ironrdp_pdu::find_size(&header) {
            Ok(Some(info)) if info.length >= self.head.len() => {
                (info.length - self.head.len()).min(data.len())
            }
            // Still not a whole header (or not a PDU): what there is, to learn more.
            _ => take,
        }
    }

    fn inspect(&mut self, pdu: &[u8]) {
        let Ok(X224(data)) = decode::<X224<SendDataIndication<'_>>>(pdu) else {
            return;
        };
        let Ok(header) = decode::<ShareControlHeader>(&data.user_data) else {
            return;
        };
        if let ShareControlPdu::ServerDemandActive(demand) = &header.share_control_pdu {
            self.desktop_width = demand.pdu.capability_sets.iter().find_map(|c| match c {
                ironrdp_pdu::rdp::capability_sets::CapabilitySet::Bitmap(b) => {
                    Some(b.desktop_width)
                }
                _ => None,
            });
            self.ids = Some(ShareIds {
                initiator: data.initiator_id,
                channel: data.channel_id,
                share_id: header.share_id,
                source: header.pdu_source,
            });
        }
    }
}

/// Why the gateway ends a session, in the client's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goodbye {
    /// Terminated by an operator, or the gateway is shutting down ("disconnected by an
    /// administrative tool").
    Administrative,
    /// The idle timeout ("the idle session limit timer on the server has elapsed").
    Idle,
    /// The maximum lifespan ("the active session limit timer on the server has elapsed").
    Lifespan,
}

/// Set Error Info with `why`, then Disconnect Provider Ultimatum: what the client is sent last.
pub fn farewell(ids: ShareIds, why: Goodbye) -> Result<Vec<u8>, String> {
    let code = match why {
        Goodbye::Administrative => ProtocolIndependentCode::RpcInitiatedDisconnect,
        Goodbye::Idle => ProtocolIndependentCode::IdleTimeout,
        Goodbye::Lifespan => ProtocolIndependentCode::LogonTimeout,
    };
    let info = ShareControlHeader {
        share_id: ids.share_id,
        pdu_source: ids.source,
        share_control_pdu: ShareControlPdu::Data(ShareDataHeader {
            share_data_pdu: ShareDataPdu::ServerSetErrorInfo(ServerSetErrorInfoPdu(
                ErrorInfo::ProtocolIndependentCode(code),
            )),
            stream_priority: StreamPriority::Undefined,
            compression_flags: CompressionFlags::empty(),
            compression_type: CompressionType::K8,
        }),
    };
    let user_data = encode_vec(&info).map_err(|e| format!("Set Error Info: {e}"))?;
    let mut out = encode_vec(&X224(SendDataIndication {
        initiator_id: ids.initiator,
        channel_id: ids.channel,
        user_data: Cow::Owned(user_data),
    }))
    .map_err(|e| format!("Set Error Info: {e}"))?;
    let bye = DisconnectProviderUltimatum::from_reason(DisconnectReason::UserRequested);
    out.extend(encode_vec(&X224(bye)).map_err(|e| format!("Disconnect Provider Ultimatum: {e}"))?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FreeRDP shadow server's stream to xfreerdp, from TLS on (see fixtures/rdp/README.md).
    const SHADOW: &[u8] = include_bytes!("../../../fixtures/rdp/freerdp-shadow-logo-1024x768.bin");

    fn follow(chunk: usize) -> Boundaries {
        let mut b = Boundaries::default();
        for piece in SHADOW.chunks(chunk) {
            b.feed(piece);
            assert!(!b.lost, "lost the framing with {chunk}-byte reads");
        }
        b
    }

    #[test]
    fn the_demand_active_gives_the_ids_however_the_stream_is_cut() {
        let whole = follow(SHADOW.len());
        let ids = whole.ids.expect("the Demand Active was seen");
        // What FreeRDP's shadow server put in its Demand Active (the I/O channel is MCS's 1003;
        // the server sends as its user channel, 1009).
        let want = ShareIds {
            initiator: 1009,
            channel: 1003,
            share_id: 66545,
            source: 1009,
        };
        assert_eq!(ids, want);
        assert!(whole.at_boundary(), "the capture ends between PDUs");
        for chunk in [1, 2, 3, 5, 977, 4096] {
            let b = follow(chunk);
            assert_eq!(b.ids, Some(ids), "{chunk}-byte reads");
            assert!(b.at_boundary());
        }
    }

    #[test]
    fn mid_pdu_is_not_a_boundary() {
        let mut b = Boundaries::default();
        b.feed(&SHADOW[..SHADOW.len() - 1]);
        assert!(!b.at_boundary());
        assert_eq!(b.to_boundary(&SHADOW[SHADOW.len() - 1..]), 1);
        b.feed(&SHADOW[SHADOW.len() - 1..]);
        assert!(b.at_boundary());
        assert_eq!(b.to_boundary(b"\x03\x00"), 0);
        // A read that ended two bytes into a PDU's header: the rest of that PDU, header
        // included, is what finishes it.
        let first = ironrdp_pdu::find_size(SHADOW)
            .expect("frames")
            .expect("whole")
            .length;
        let second = ironrdp_pdu::find_size(&SHADOW[first..])
            .expect("frames")
            .expect("whole")
            .length;
        let mut cut = Boundaries::default();
        cut.feed(&SHADOW[..first + 2]);
        assert!(!cut.at_boundary());
        let next = &SHADOW[first + 2..];
        assert_eq!(cut.to_boundary(next), second - 2);
        cut.feed(&next[..second - 2]);
        assert!(cut.at_boundary());
        let mut junk = Boundaries::default();
        junk.feed(b"\xff\xff\xff\xff\xff\xff");
        assert!(junk.lost && !junk.at_boundary());
    }

    #[test]
    fn the_farewell_is_an_error_info_then_a_disconnect() {
        let ids = follow(SHADOW.len()).ids.expect("ids");
        let bytes = farewell(ids, Goodbye::Idle).expect("encodes");
        let first = ironrdp_pdu::find_size(&bytes)
            .expect("frames")
            .expect("whole");
        let X224(ind) =
            decode::<X224<SendDataIndication<'_>>>(&bytes[..first.length]).expect("MCS");
        assert_eq!(
            (ind.initiator_id, ind.channel_id),
            (ids.initiator, ids.channel)
        );
        let header = decode::<ShareControlHeader>(&ind.user_data).expect("share control");
        assert_eq!(header.share_id, ids.share_id);
        let ShareControlPdu::Data(data) = header.share_control_pdu else {
            panic!("a share data PDU");
        };
        assert_eq!(
            data.share_data_pdu,
            ShareDataPdu::ServerSetErrorInfo(ServerSetErrorInfoPdu(
                ErrorInfo::ProtocolIndependentCode(ProtocolIndependentCode::IdleTimeout)
            ))
        );
        let rest = &bytes[first.length..];
        let X224(bye) = decode::<X224<DisconnectProviderUltimatum>>(rest).expect("ultimatum");
        assert_eq!(bye.reason, DisconnectReason::UserRequested);
    }
}
