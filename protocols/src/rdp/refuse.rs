//! Telling a client that the gateway refuses its session after NLA (no policy, a concurrency
//! limit): RDP carries no text, but a server can end the connection sequence with a Set Error
//! Info PDU saying "insufficient privileges", which clients show (xfreerdp prints
//! ERRINFO_SERVER_INSUFFICIENT_PRIVILEGES; mstsc a dialog). To send it the gateway plays the
//! server's part of the connection sequence after NLA (MCS connect, channel joins, client info,
//! licensing) with `ironrdp-acceptor`, up to the capability exchange, and stops there. The
//! reason itself is in the audit log.

use ironrdp_acceptor::{Acceptor, DesktopSize};
use ironrdp_async::{single_sequence_step, Framed, FramedRead, FramedWrite};
use ironrdp_connector::Sequence;
use ironrdp_core::WriteBuf;
use ironrdp_pdu::nego::SecurityProtocol;

/// Replay the client's X.224 request (`request`, already answered by the gateway) through an
/// acceptor, as if it had done the TLS upgrade and CredSSP itself.
fn acceptor_after_nla(request: &[u8]) -> Result<Acceptor, String> {
    let mut a = Acceptor::new(
        SecurityProtocol::HYBRID,
        DesktopSize {
            width: 1024,
            height: 768,
        },
        Vec::new(),
        None,
    );
    let mut scratch = WriteBuf::new();
    a.step(request, None, &mut scratch)
        .map_err(|e| format!("the client's X.224 request: {e}"))?;
    // The confirm it writes was sent by the gateway already.
    a.step(&[], None, &mut scratch)
        .map_err(|e| format!("the X.224 confirm: {e}"))?;
    if a.reached_security_upgrade() != Some(SecurityProtocol::HYBRID) {
        return Err("the client's request does not select NLA".into());
    }
    a.mark_security_upgrade_as_done();
    if !a.should_perform_credssp() {
        return Err("the acceptor does not expect CredSSP".into());
    }
    a.mark_credssp_as_done();
    Ok(a)
}

/// Go through the connection sequence with the client up to the capability exchange, then send
/// Set Error Info "insufficient privileges". `Err` says why the client could not be told.
pub async fn refuse<S>(framed: &mut Framed<S>, request: &[u8]) -> Result<(), String>
where
    S: FramedRead + FramedWrite,
{
    let mut a = acceptor_after_nla(request)?;
    let mut buf = WriteBuf::new();
    // At most a few dozen PDUs: MCS connect, erect domain, attach user, channel joins, client
    // info, licensing.
    for _ in 0..64 {
        if a.state().name() == "CapabilitiesSendServer" {
            buf.clear();
            let n = a
                .encode_access_denied(&mut buf)
                .map_err(|e| format!("Set Error Info: {e}"))?;
            if n == 0 {
                return Err("the client does not accept error information PDUs".into());
            }
            framed
                .write_all(&buf[..n])
                .await
                .map_err(|e| format!("cannot write to the client: {e}"))?;
            return Ok(());
        }
        single_sequence_step(framed, &mut a, &mut buf)
            .await
            .map_err(|e| format!("connection sequence ({}): {e}", a.state().name()))?;
    }
    Err("the connection sequence did not reach the capability exchange".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_nla_request_puts_the_acceptor_after_credssp() {
        let req = crate::rdp::nego::request("alice:win-dc01.test").expect("request");
        let a = acceptor_after_nla(&req).expect("acceptor");
        assert_eq!(a.state().name(), "BasicSettingsWaitInitial");
    }

    #[test]
    fn a_request_without_nla_is_not_replayed() {
        assert!(acceptor_after_nla(b"\x03\x00\x00\x0b\x06\xe0\x00\x00\x00\x00\x00").is_err());
        assert!(acceptor_after_nla(b"garbage").is_err());
    }
}
