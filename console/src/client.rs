//! A small blocking HTTP client for the gateway API with one-line errors.

use anyhow::{anyhow, bail, Result};
use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use wardengate_api as api;

pub struct Client {
    http: Http,
    base: String,
    /// None for the sign-in calls, which need none.
    token: Option<String>,
    /// A CA certificate to trust besides the system's (`--ca-file`: a self-signed gateway).
    ca: Option<reqwest::Certificate>,
}

/// Percent-encode a path segment (session ids are plain, but user input may not be): everything
/// but RFC 3986's unreserved characters.
pub fn path_segment(s: &str) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    const RESERVED: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    utf8_percent_encode(s, RESERVED).to_string()
}

impl Client {
    pub fn new(
        addr: &str,
        token: Option<&str>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Client> {
        let token = token
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                anyhow!("not signed in: run `wgctl login`, or pass --token / set WARDENGATE_TOKEN")
            })?;
        let mut c = Self::anonymous(addr, ca_file)?;
        c.token = Some(token.to_string());
        Ok(c)
    }

    /// A client without a token (`wgctl login`).
    pub fn anonymous(addr: &str, ca_file: Option<&std::path::Path>) -> Result<Client> {
        let base = addr.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!("gateway address '{addr}' must start with http:// or https://");
        }
        // rustls's one provider for the process (ring, as the gateway's); a second call is a
        // no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = match ca_file {
            None => None,
            Some(f) => {
                let pem = std::fs::read(f)
                    .map_err(|e| anyhow!("cannot read --ca-file {}: {e}", f.display()))?;
                Some(reqwest::Certificate::from_pem(&pem).map_err(|e| {
                    anyhow!("--ca-file {} is not a PEM certificate: {e}", f.display())
                })?)
            }
        };
        let http = Self::builder(&ca, Some(std::time::Duration::from_secs(30)))?;
        Ok(Client {
            http,
            base,
            token: None,
            ca,
        })
    }

    /// The same client, connecting from `ip` (one of this machine's addresses).
    pub fn connecting_from(mut self, ip: std::net::IpAddr) -> Result<Client> {
        let mut b = Http::builder()
            .timeout(Some(std::time::Duration::from_secs(30)))
            .use_rustls_tls()
            .local_address(ip);
        if let Some(c) = &self.ca {
            b = b.add_root_certificate(c.clone());
        }
        self.http = b
            .build()
            .map_err(|e| anyhow!("cannot build HTTP client from {ip}: {e}"))?;
        Ok(self)
    }

    /// An HTTP client trusting the system's roots and `ca`, with an overall `timeout`.
    fn builder(
        ca: &Option<reqwest::Certificate>,
        timeout: Option<std::time::Duration>,
    ) -> Result<Http> {
        let mut b = Http::builder().timeout(timeout).use_rustls_tls();
        if let Some(c) = ca {
            b = b.add_root_certificate(c.clone());
        }
        b.build()
            .map_err(|e| anyhow!("cannot build HTTP client: {e}"))
    }

    fn send(&self, req: RequestBuilder) -> Result<Response> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        req.send().map_err(|e| {
            // The TLS failure is a few sources down the chain.
            let mut chain = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                chain.push_str(&format!(": {s}"));
                src = s.source();
            }
            if e.is_connect() && chain.to_lowercase().contains("certificate") {
                anyhow!(
                    "the gateway at {} presented a certificate this machine does not trust: pass \
                     its certificate with --ca-file (or WARDENGATE_CA_FILE), e.g. the gateway's \
                     data/api_tls.crt",
                    self.base
                )
            } else if e.is_connect() {
                anyhow!("cannot reach the gateway at {}: is wardengate running? (set --addr or WARDENGATE_ADDR)", self.base)
            } else if e.is_timeout() {
                anyhow!("the gateway at {} did not answer in time", self.base)
            } else {
                anyhow!("request to {} failed: {e}", self.base)
            }
        })
    }

    /// The body of a successful answer, or the gateway's error message as the error.
    fn body(resp: Response) -> Result<String> {
        let status = resp.status();
        let body = resp
            .text()
            .map_err(|e| anyhow!("cannot read the gateway's answer: {e}"))?;
        if !status.is_success() {
            let msg = serde_json::from_str::<api::ApiError>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| body.trim().to_string());
            bail!("{msg} (HTTP {})", status.as_u16());
        }
        Ok(body)
    }

    fn decode<T: DeserializeOwned>(resp: Response) -> Result<T> {
        let body = Self::body(resp)?;
        serde_json::from_str(&body).map_err(|e| anyhow!("unexpected answer from the gateway: {e}"))
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T> {
        Self::decode(self.send(self.http.get(format!("{}{path}", self.base)).query(query))?)
    }

    /// A long-lived streaming GET (no overall timeout); the gateway's error when it refuses.
    pub fn stream(&self, path: &str) -> Result<Response> {
        let http = Self::builder(&self.ca, None)?;
        let resp = self.send(http.get(format!("{}{path}", self.base)))?;
        if !resp.status().is_success() {
            Self::body(resp)?;
            bail!("the gateway refused the stream");
        }
        Ok(resp)
    }

    /// GET a non-JSON body (event streams).
    pub fn get_text(&self, path: &str) -> Result<String> {
        Self::body(self.send(self.http.get(format!("{}{path}", self.base)))?)
    }

    /// [`get_text`](Self::get_text), with the value of response header `name`.
    pub fn get_text_and_header(&self, path: &str, name: &str) -> Result<(String, Option<String>)> {
        let resp = self.send(self.http.get(format!("{}{path}", self.base)))?;
        let header = resp
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        Ok((Self::body(resp)?, header))
    }

    /// The address this client talks to.
    /// The bearer token this client presents.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        Self::decode(self.send(self.http.delete(format!("{}{path}", self.base)))?)
    }

    /// The token: the admin token, or your own (`users.api_token_sha256`).
    pub fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        Self::decode(self.send(self.http.post(format!("{}{path}", self.base)).json(body))?)
    }
}

/// What `session list` and `recording list` share: who, where, which protocol, and the page.
#[derive(clap::Args, Debug)]
pub struct ListFilter {
    #[arg(long)]
    pub actor: Option<String>,
    #[arg(long)]
    pub target: Option<String>,
    #[arg(long)]
    pub protocol: Option<String>,
    /// At most this many, newest first (the rest are counted: "… N more").
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Continue a list that was cut, from where it stopped (the cursor it printed).
    #[arg(long)]
    pub cursor: Option<String>,
}

impl ListFilter {
    /// The API query: the filters given, `extra` ones, and the page.
    pub fn query(self, extra: Vec<(&'static str, Option<String>)>) -> Vec<(&'static str, String)> {
        let named = [
            ("actor", self.actor),
            ("target", self.target),
            ("protocol", self.protocol),
        ];
        let mut q: Vec<(&'static str, String)> = named
            .into_iter()
            .chain(extra)
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        q.push(("limit", self.limit.to_string()));
        if let Some(c) = self.cursor {
            q.push(("cursor", c));
        }
        q
    }
}
