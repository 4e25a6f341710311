//! Brokered TCP, Boundary style: `wgctl target authorize` (a pending session and its token),
//! `wgctl proxy --authz TOKEN` (a local listener; each connection is carried over TLS to the
//! gateway's `[tcp]` listener, whose certificate the token pins), and `wgctl connect` (both, then
//! a client against the local port, until it exits).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use wardengate_api as api;

use crate::client::{self, Client};
use crate::output::{note, out, print_json, report};
use crate::proxy::{End, Proxy};

#[derive(Subcommand)]
pub enum TargetCmd {
    /// Authorize a session to a tcp target: prints its Authorization Token for `wgctl proxy`.
    Authorize {
        target: String,
        /// One host of the target's host set (h1, h2, ... or its address); default: at random.
        #[arg(long)]
        host_id: Option<String>,
    },
}

#[derive(Args)]
pub struct ProxyArgs {
    /// The Authorization Token `wgctl target authorize` printed.
    #[arg(long)]
    authz: String,
    /// Where the local listener binds.
    #[arg(long, default_value = "127.0.0.1")]
    listen_addr: std::net::IpAddr,
    /// Its port (0: one the system picks, printed).
    #[arg(long, default_value_t = 0)]
    listen_port: u16,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ConnectArgs {
    #[command(subcommand)]
    helper: Option<Helper>,
    #[command(flatten)]
    common: Common,
    /// The client and its arguments; `{host}`, `{port}` and `{addr}` are replaced by the local
    /// listener's (also in WGCTL_PROXY_HOST / WGCTL_PROXY_PORT / WGCTL_PROXY_ADDR).
    #[arg(last = true)]
    exec: Vec<String>,
}

#[derive(Args)]
struct Common {
    /// The tcp target.
    #[arg(required = true)]
    target: Option<String>,
    /// One host of the target's host set (h1, h2, ... or its address); default: at random.
    #[arg(long)]
    host_id: Option<String>,
    /// The local port the client connects to (0: one the system picks).
    #[arg(long, default_value_t = 0)]
    listen_port: u16,
}

#[derive(Subcommand)]
enum Helper {
    /// ssh with your own key to the target's host: ssh -p PORT -o HostKeyAlias=TARGET 127.0.0.1
    Ssh {
        #[command(flatten)]
        common: Common,
        /// The login name on the host.
        #[arg(short = 'u', long)]
        username: Option<String>,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// psql -h 127.0.0.1 -p PORT
    Psql {
        #[command(flatten)]
        common: Common,
        #[arg(short = 'u', long)]
        username: Option<String>,
        #[arg(short = 'd', long)]
        dbname: Option<String>,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// redis-cli -h 127.0.0.1 -p PORT
    Redis {
        #[command(flatten)]
        common: Common,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// curl http://127.0.0.1:PORT/PATH
    Http {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(last = true)]
        args: Vec<String>,
    },
}

pub fn run_target(cmd: TargetCmd, c: Client, json: bool) -> Result<()> {
    match cmd {
        TargetCmd::Authorize { target, host_id } => {
            let a = authorize(&c, &target, host_id)?;
            report(&a, json, api::table::authorization)
        }
    }
}

fn authorize(c: &Client, target: &str, host_id: Option<String>) -> Result<api::Authorization> {
    let path = format!("/api/v1/targets/{}/authorize", client::path_segment(target));
    c.post(&path, &api::AuthorizeRequest { host_id })
}

/// Tell the gateway the session's client is done (best effort: it may have ended already).
fn close(c: &Client, session: &str) {
    let path = format!("/api/v1/sessions/{}/close", client::path_segment(session));
    let _ = c.post::<_, serde_json::Value>(&path, &serde_json::json!({}));
}

/// Watch the session through the API (every 2 s) until it ends or `stop` is set: a session
/// canceled, terminated or expired at the gateway stops the proxy, as Boundary's does.
fn watch(
    c: &Client,
    sid: &str,
    ended: tokio::sync::oneshot::Sender<String>,
    stop: &std::sync::atomic::AtomicBool,
) {
    let path = format!("/api/v1/sessions/{}", client::path_segment(sid));
    loop {
        for _ in 0..20 {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        match c.get::<api::Session>(&path, &[]) {
            Ok(s) if s.state.is_terminal() => {
                let why = s.end_reason.unwrap_or_else(|| s.state.to_string());
                let _ = ended.send(format!("session {sid} ended ({why})"));
                return;
            }
            Err(e) if e.to_string().contains("no session") => {
                let _ = ended.send(format!("session {sid} is gone: {e}"));
                return;
            }
            _ => {}
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the proxy's runtime")
}

pub fn run_proxy(args: ProxyArgs, c: Client, json: bool) -> Result<()> {
    let claims = api::token_claims(&args.authz).ok_or_else(|| {
        anyhow!("--authz is not an authorization token (copy the whole Authorization Token that `wgctl target authorize` printed)")
    })?;
    check_claims(&c, &claims)?;
    let token = c.token().unwrap_or_default().to_string();
    let rt = runtime()?;
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<String>();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let end = std::thread::scope(|scope| {
        scope.spawn(|| watch(&c, &claims.sid, ended_tx, &stop));
        let end = rt.block_on(async {
            let addr = SocketAddr::new(args.listen_addr, args.listen_port);
            let proxy = Proxy::bind(addr, &args.authz, &claims, &token).await?;
            let local = proxy.local;
            if json {
                print_json(
                    &serde_json::json!({"address": local.ip().to_string(), "port": local.port(),
                    "protocol": "tcp", "connection_limit": claims.connection_limit,
                    "expiration": claims.expiration, "session_id": claims.sid}),
                )?;
            } else {
                out(&api::table::proxy(&local, &claims))?;
            }
            tokio::select! {
                end = proxy.serve() => end,
                Ok(why) = ended_rx => Ok(End::Ended(why)),
                _ = tokio::signal::ctrl_c() => Ok(End::Interrupted),
            }
        });
        stop.store(true, Ordering::SeqCst);
        end
    })
    // A proxy that fails gives its session back (it may have ended already).
    .inspect_err(|_| close(&c, &claims.sid))?;
    if !matches!(end, End::Ended(_)) {
        close(&c, &claims.sid);
    }
    note(&format!(
        "wgctl: proxy for session {} stopped: {}",
        claims.sid,
        end.text()
    ));
    Ok(())
}

/// Before anything is sent to the listener a token names, the gateway's API (which this
/// client already trusts) must vouch for it: the session is the caller's, live, and served by
/// that listener with that certificate. Otherwise a token crafted elsewhere could send the
/// person's own API token to a listener of someone else's choosing.
fn check_claims(c: &Client, claims: &api::TokenClaims) -> Result<()> {
    let path = format!("/api/v1/sessions/{}", client::path_segment(&claims.sid));
    let s: api::Session = c.get(&path, &[]).map_err(|e| {
        anyhow!(
            "the gateway at {} does not know session {} as yours ({e}): the token was not issued \
             there for you; nothing was sent to {}",
            c.base(),
            claims.sid,
            claims.endpoint
        )
    })?;
    let Some(t) = &s.tcp else {
        bail!("session {} is not a TCP session", claims.sid);
    };
    if t.endpoint != claims.endpoint || t.cert_sha256 != claims.cert_sha256 {
        bail!(
            "the token names the listener {} (certificate sha256 {}…), but the gateway at {} \
             serves session {} on {}: refusing to send your credentials there",
            claims.endpoint,
            claims.cert_sha256.get(..12).unwrap_or_default(),
            c.base(),
            claims.sid,
            t.endpoint
        );
    }
    if s.state.is_terminal() {
        bail!(
            "session {} has ended ({}); authorize again with `wgctl target authorize {}`",
            claims.sid,
            s.end_reason.as_deref().unwrap_or(s.state.as_str()),
            claims.target
        );
    }
    Ok(())
}

pub fn run_connect(args: ConnectArgs, c: Client) -> Result<()> {
    let (common, program) = match args.helper {
        None => {
            if args.exec.is_empty() {
                bail!("name the client to run after --, e.g. wgctl connect TARGET -- redis-cli -p {{port}}");
            }
            (args.common, args.exec)
        }
        Some(Helper::Ssh {
            common,
            username,
            args,
        }) => {
            let alias = format!("HostKeyAlias={}", common.target.clone().unwrap_or_default());
            let mut v = vec![
                "ssh".into(),
                "-p".into(),
                "{port}".into(),
                "-o".into(),
                alias,
            ];
            if let Some(u) = username {
                v.extend(["-l".into(), u]);
            }
            v.push("{host}".into());
            v.extend(args);
            (common, v)
        }
        Some(Helper::Psql {
            common,
            username,
            dbname,
            args,
        }) => {
            let mut v = vec![
                "psql".into(),
                "-h".into(),
                "{host}".into(),
                "-p".into(),
                "{port}".into(),
            ];
            if let Some(u) = username {
                v.extend(["-U".into(), u]);
            }
            if let Some(d) = dbname {
                v.extend(["-d".into(), d]);
            }
            v.extend(args);
            (common, v)
        }
        Some(Helper::Redis { common, args }) => {
            let mut v = vec![
                "redis-cli".into(),
                "-h".into(),
                "{host}".into(),
                "-p".into(),
                "{port}".into(),
            ];
            v.extend(args);
            (common, v)
        }
        Some(Helper::Http { common, path, args }) => {
            let mut v = vec!["curl".to_string()];
            v.extend(args);
            let path = if path.starts_with('/') {
                path
            } else {
                format!("/{path}")
            };
            v.push(format!("http://{{addr}}{path}"));
            (common, v)
        }
    };
    let target = common.target.unwrap_or_default();
    let auth = authorize(&c, &target, common.host_id)?;
    let claims = api::token_claims(&auth.authorization_token)
        .ok_or_else(|| anyhow!("the gateway answered with a token wgctl cannot read"))?;
    // Whatever happens from here, the session is given back when wgctl is done with it.
    let guard = CloseOnDrop(&c, claims.sid.clone());
    let token = c.token().unwrap_or_default().to_string();
    let rt = runtime()?;
    let status = rt.block_on(async {
        let addr = SocketAddr::from(([127, 0, 0, 1], common.listen_port));
        let proxy = Proxy::bind(addr, &auth.authorization_token, &claims, &token).await?;
        let local = proxy.local;
        let fill = |a: &str| {
            a.replace("{host}", &local.ip().to_string())
                .replace("{port}", &local.port().to_string())
                .replace("{addr}", &local.to_string())
        };
        let argv: Vec<String> = program.iter().map(|a| fill(a)).collect();
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env("WGCTL_PROXY_HOST", local.ip().to_string())
            .env("WGCTL_PROXY_PORT", local.port().to_string())
            .env("WGCTL_PROXY_ADDR", local.to_string())
            .env("WGCTL_SESSION_ID", &claims.sid);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", argv[0]))?;
        let serving = tokio::spawn(proxy.serve());
        let status = child.wait().await.context("waiting for the client")?;
        serving.abort();
        anyhow::Ok(status)
    })?;
    drop(guard);
    std::process::exit(status.code().unwrap_or(1));
}

/// Closes its session when dropped (`wgctl connect` leaving on any path).
struct CloseOnDrop<'a>(&'a Client, String);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        close(self.0, &self.1);
    }
}
