//! The connection's opening on both legs: the X.224 negotiation (TPKT frames), and CredSSP —
//! as the server towards the client (NTLM against the gateway user's NT hash; the client's own
//! credentials arrive in TSCredentials and stay at the gateway) and as the client towards the
//! target (the vault's credentials). The protocol codecs are ironrdp's and sspi's.

use ironrdp_core::{decode, encode_vec};
use ironrdp_pdu::nego::{
    ConnectionConfirm, ConnectionRequest, FailureCode, NegoRequestData, RequestFlags,
    ResponseFlags, SecurityProtocol,
};
use ironrdp_pdu::x224::X224;
use sspi::credssp::{
    ClientMode, ClientState, CredSspClient, CredSspMode, CredSspServer, CredentialsProxy,
    NStatusCode, ServerMode, ServerState, TsRequest,
};
use sspi::{AuthIdentity, Username};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest TPKT frame (its length field is 16 bits).
const TPKT_MAX: usize = 0xffff;
/// Largest CredSSP message accepted (NTLM messages and TSCredentials are a few KB).
const TS_REQUEST_MAX: usize = 64 * 1024;

/// Read one TPKT frame (version 3, 16-bit length) whole.
pub async fn read_tpkt<S: AsyncRead + Unpin>(s: &mut S) -> Result<Vec<u8>, String> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head)
        .await
        .map_err(|e| format!("connection closed before an X.224 frame: {e}"))?;
    if head[0] != 3 {
        return Err(format!(
            "not an RDP connection (first byte 0x{:02x}, a TPKT frame starts with 0x03)",
            head[0]
        ));
    }
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    if !(7..=TPKT_MAX).contains(&len) {
        return Err(format!("TPKT frame length {len} is out of range"));
    }
    let mut frame = head.to_vec();
    frame.resize(len, 0);
    s.read_exact(&mut frame[4..])
        .await
        .map_err(|e| format!("connection closed inside an X.224 frame: {e}"))?;
    Ok(frame)
}

/// The client's X.224 Connection Request.
pub fn parse_request(frame: &[u8]) -> Result<ConnectionRequest, String> {
    decode::<X224<ConnectionRequest>>(frame)
        .map(|X224(r)| r)
        .map_err(|e| format!("malformed X.224 Connection Request: {e}"))
}

/// The `mstshash` cookie of a request (what clients put there: the user name, often cut short).
pub fn cookie(req: &ConnectionRequest) -> Option<&str> {
    match &req.nego_data {
        Some(NegoRequestData::Cookie(c)) => Some(c.0.as_str()),
        _ => None,
    }
}

pub fn confirm(protocol: SecurityProtocol) -> Result<Vec<u8>, String> {
    encode_vec(&X224(ConnectionConfirm::Response {
        flags: ResponseFlags::EXTENDED_CLIENT_DATA_SUPPORTED,
        protocol,
    }))
    .map_err(|e| format!("cannot encode the X.224 Connection Confirm: {e}"))
}

pub fn failure(code: FailureCode) -> Result<Vec<u8>, String> {
    encode_vec(&X224(ConnectionConfirm::Failure { code }))
        .map_err(|e| format!("cannot encode the X.224 negotiation failure: {e}"))
}

/// The gateway's request to the target: NLA only, with the account as the cookie.
pub fn request(username: &str) -> Result<Vec<u8>, String> {
    encode_vec(&X224(ConnectionRequest {
        nego_data: Some(NegoRequestData::cookie(username.to_string())),
        flags: RequestFlags::empty(),
        protocol: SecurityProtocol::HYBRID,
        correlation_info: None,
    }))
    .map_err(|e| format!("cannot encode the X.224 Connection Request: {e}"))
}

/// The target's answer to [`request`]: the protocol it selected.
pub fn parse_confirm(frame: &[u8]) -> Result<SecurityProtocol, String> {
    match decode::<X224<ConnectionConfirm>>(frame) {
        Ok(X224(ConnectionConfirm::Response { protocol, .. })) => Ok(protocol),
        Ok(X224(ConnectionConfirm::Failure { code })) => Err(format!(
            "the target refused network level authentication (X.224 failure code {})",
            u32::from(code)
        )),
        Err(e) => Err(format!(
            "malformed X.224 Connection Confirm from the target: {e}"
        )),
    }
}

/// Read one CredSSP TSRequest (a BER sequence) whole.
async fn read_ts_request<S: AsyncRead + Unpin>(s: &mut S) -> Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Ok(len) = TsRequest::read_length(buf.as_slice()) {
            if len > TS_REQUEST_MAX {
                return Err(format!("CredSSP message of {len} bytes is too large"));
            }
            if buf.len() >= len {
                if buf.len() > len {
                    return Err("unexpected data after a CredSSP message".into());
                }
                return Ok(buf);
            }
        }
        let want = match TsRequest::read_length(buf.as_slice()) {
            Ok(len) => (len - buf.len()).min(chunk.len()),
            // Until the length is known, read a byte at a time so that nothing of the next
            // message is taken.
            Err(_) => 1,
        };
        let n = s
            .read(&mut chunk[..want])
            .await
            .map_err(|e| format!("connection failed during CredSSP: {e}"))?;
        if n == 0 {
            return Err("connection closed during CredSSP".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > TS_REQUEST_MAX {
            return Err("CredSSP message too large".into());
        }
    }
}

async fn write_ts_request<S: AsyncWrite + Unpin>(s: &mut S, ts: &TsRequest) -> Result<(), String> {
    let len = ts
        .buffer_len()
        .map_err(|e| format!("cannot size a CredSSP message: {e}"))?;
    let mut out = Vec::with_capacity(usize::from(len));
    ts.encode_ts_request(&mut out)
        .map_err(|e| format!("cannot encode a CredSSP message: {e}"))?;
    s.write_all(&out)
        .await
        .map_err(|e| format!("connection failed during CredSSP: {e}"))?;
    s.flush()
        .await
        .map_err(|e| format!("connection failed during CredSSP: {e}"))
}

/// How the server-side CredSSP looks a user up: the NT hash for the NTLM user name, if any.
pub struct HashLookup<F: FnMut(&str) -> Option<[u8; 16]> + Send>(pub F);

impl<F: FnMut(&str) -> Option<[u8; 16]> + Send> CredentialsProxy for HashLookup<F> {
    type AuthenticationData = AuthIdentity;

    fn auth_data_by_user(&mut self, username: &Username) -> std::io::Result<AuthIdentity> {
        let name = username.inner();
        let hash = (self.0)(name).ok_or_else(|| std::io::Error::other("unknown user"))?;
        Ok(AuthIdentity {
            username: username.clone(),
            password: format!("{}{}", sspi::NTLM_HASH_PREFIX, hex::encode(hash)).into(),
        })
    }

    /// Used by Kerberos only, which the gateway does not offer.
    fn auth_data(&mut self) -> std::io::Result<Vec<AuthIdentity>> {
        Ok(Vec::new())
    }
}

/// Why the client's NLA failed.
#[derive(Debug)]
pub enum NlaFailure {
    /// Wrong password or unknown user (the client was told: logon failure).
    Denied(String),
    /// Anything else: a protocol or connection error.
    Broken(String),
}

/// Run CredSSP as the server on the client's TLS stream; returns the user name the client
/// authenticated as (and the credentials it delegated, which are dropped here: the gateway needs
/// only the name).
pub async fn accept_nla<S, F>(
    s: &mut S,
    public_key: Vec<u8>,
    lookup: F,
) -> Result<String, NlaFailure>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(&str) -> Option<[u8; 16]> + Send,
{
    let mut server = CredSspServer::new(
        public_key,
        HashLookup(lookup),
        ServerMode::Ntlm(sspi::ntlm::NtlmConfig::new("wardengate".into())),
    )
    .map_err(|e| NlaFailure::Broken(format!("cannot start CredSSP: {e}")))?;
    loop {
        let frame = read_ts_request(s).await.map_err(NlaFailure::Broken)?;
        let req = TsRequest::from_buffer(&frame)
            .map_err(|e| NlaFailure::Broken(format!("malformed CredSSP message: {e}")))?;
        let result = server.process(req).resolve_to_result();
        match result {
            Ok(ServerState::ReplyNeeded(ts)) => {
                write_ts_request(s, &ts).await.map_err(NlaFailure::Broken)?
            }
            Ok(ServerState::Finished(id)) => return Ok(id.username.inner().to_string()),
            Err(err) => {
                let denied = err.error.error_type == sspi::ErrorKind::LogonDenied
                    || err.error.description.contains("unknown user");
                if let Some(mut ts) = err.ts_request.map(|t| *t) {
                    if denied {
                        ts.error_code = Some(NStatusCode::LOGON_FAILURE);
                    }
                    let _ = write_ts_request(s, &ts).await;
                }
                let text = err.error.to_string();
                return Err(if denied {
                    NlaFailure::Denied(text)
                } else {
                    NlaFailure::Broken(format!("CredSSP failed: {text}"))
                });
            }
        }
    }
}

/// Run CredSSP as the client towards the target with the vault's credentials.
pub async fn connect_nla<S>(
    s: &mut S,
    public_key: Vec<u8>,
    server_name: &str,
    username: &str,
    password: &str,
) -> Result<(), crate::error::TargetError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let account = username.to_string();
    let username = Username::parse(username)
        .map_err(|e| format!("the account name '{username}' is not valid for NLA: {e}"))?;
    let credentials: sspi::Credentials = AuthIdentity {
        username,
        password: password.to_string().into(),
    }
    .into();
    let mut client = CredSspClient::new(
        public_key,
        credentials,
        CredSspMode::WithCredentials,
        ClientMode::Ntlm(sspi::ntlm::NtlmConfig::default()),
        format!("TERMSRV/{server_name}"),
    )
    .map_err(|e| format!("cannot start CredSSP towards the target: {e}"))?;
    let mut next = TsRequest::default();
    loop {
        let state = client
            .process(next)
            .resolve_to_result()
            .map_err(|e| format!("CredSSP with the target failed: {e}"))?;
        match state {
            ClientState::ReplyNeeded(ts) => {
                write_ts_request(s, &ts).await?;
                let frame = read_ts_request(s).await?;
                next = TsRequest::from_buffer(&frame)
                    .map_err(|e| format!("malformed CredSSP message from the target: {e}"))?;
                if let Some(code) = next.error_code {
                    let detail = format!("NTSTATUS 0x{:08x}", code.0);
                    // Logon failure / wrong password: the vault's password is not the account's.
                    if code == NStatusCode::LOGON_FAILURE || code == NStatusCode::WRONG_PASSWORD {
                        return Err(crate::error::TargetError::SecretRejected {
                            target: server_name.to_string(),
                            account,
                            detail,
                        });
                    }
                    return Err(
                        format!("the target refused the account's credentials ({detail})").into(),
                    );
                }
            }
            ClientState::FinalMessage(ts) => {
                write_ts_request(s, &ts).await?;
                return Ok(());
            }
        }
    }
}

/// The public key CredSSP binds to (the certificate's subjectPublicKey bits, as [MS-CSSP] says).
pub fn public_key(cert_der: &[u8]) -> Result<Vec<u8>, String> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(cert_der)
        .map_err(|e| format!("cannot parse the TLS certificate: {e}"))?;
    Ok(cert
        .tbs_certificate()
        .subject_public_key_info()
        .subject_public_key
        .raw_bytes()
        .to_vec())
}
