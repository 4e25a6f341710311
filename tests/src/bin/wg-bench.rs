//! `wg-bench`: the measuring client of `scripts/bench`, the same russh client against a direct
//! sshd and against the gateway, so the ratio isolates what the gateway adds.
//!
//! - `latency`: opens a pty running `stty raw -echo; cat`, sends one byte at a time and times
//!   its echo; prints p50/p99/mean in microseconds.
//! - `hold`: opens N sessions (pty + a sleeping shell), prints `ready N`, holds them until stdin
//!   closes: the caller measures the gateway's memory meanwhile.
//! - `shadow-lag --port P --user U --key FILE --api URL --token T`: like `latency`, with an
//!   observer attached to the session (`GET /api/v1/sessions/{id}/shadow`); one keystroke every
//!   50 ms (typing speed, so frames are not coalesced), and for each the time from its echo
//!   reaching the user to the observer's frame showing it; prints p50/p99 in microseconds.
//! - `relay --listen ADDR --to ADDR`: a no-op TCP relay (one task per connection, nodelay both
//!   ways), the baseline of `scripts/bench pg`; prints `listening on ADDR` once bound, runs until
//!   killed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use russh::client::Handle;
use russh::keys::PrivateKey;
use russh::ChannelMsg;
use wardengate_tests::russh_client::{self, AcceptAnyHostKey};

struct Args {
    port: u16,
    user: String,
    key: Arc<PrivateKey>,
    n: usize,
    api: Option<String>,
    token: Option<String>,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut port = None;
    let mut user = None;
    let mut key = None;
    let mut n = 1000;
    let (mut api, mut token) = (None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or_else(|| anyhow!("{a} needs a value"))?;
        match a.as_str() {
            "--port" => port = Some(v.parse()?),
            "--user" => user = Some(v.clone()),
            "--key" => {
                key = Some(russh_client::load_key(v.as_ref()).with_context(|| format!("read {v}"))?)
            }
            "--samples" | "--count" => n = v.parse()?,
            "--api" => api = Some(v.trim_end_matches('/').to_string()),
            "--token" => token = Some(v.clone()),
            other => bail!("unknown option {other}"),
        }
    }
    Ok(Args {
        port: port.ok_or_else(|| anyhow!("--port"))?,
        user: user.ok_or_else(|| anyhow!("--user"))?,
        key: key.ok_or_else(|| anyhow!("--key"))?,
        n,
        api,
        token,
    })
}

async fn connect(a: &Args) -> Result<Handle<AcceptAnyHostKey>> {
    russh_client::connect(a.port, &a.user, a.key.clone()).await
}

/// A pty running `cat` in raw mode (every byte sent comes back once), ready for input.
async fn raw_cat(h: &Handle<AcceptAnyHostKey>) -> Result<russh::Channel<russh::client::Msg>> {
    let mut ch = h.channel_open_session().await?;
    ch.request_pty(true, "xterm", 80, 24, 0, 0, &[]).await?;
    ch.exec(true, "stty raw -echo; echo READY; exec cat")
        .await?;
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("READY") {
        match tokio::time::timeout(Duration::from_secs(10), ch.wait()).await? {
            Some(ChannelMsg::Data { data }) => seen.extend_from_slice(&data),
            Some(_) => {}
            None => bail!("channel closed before READY"),
        }
    }
    Ok(ch)
}

async fn latency(a: Args) -> Result<()> {
    let h = connect(&a).await?;
    let mut ch = raw_cat(&h).await?;
    let mut samples = Vec::with_capacity(a.n);
    for i in 0..a.n + 50 {
        let t0 = Instant::now();
        ch.data_bytes(bytes_of(b'a' + (i % 26) as u8)).await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), ch.wait()).await? {
                Some(ChannelMsg::Data { data }) if !data.is_empty() => break,
                Some(_) => {}
                None => bail!("channel closed"),
            }
        }
        if i >= 50 {
            samples.push(t0.elapsed().as_nanos() as f64 / 1000.0);
        }
    }
    samples.sort_by(|x, y| x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal));
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    println!(
        "p50_us={:.1} p99_us={:.1} mean_us={:.1} n={}",
        pct(0.50),
        pct(0.99),
        mean,
        samples.len()
    );
    Ok(())
}

/// The newest active session (the one this process just opened).
async fn newest_session(http: &reqwest::Client, api: &str, token: &str) -> Result<String> {
    let v: serde_json::Value = http
        .get(format!("{api}/api/v1/sessions?state=active"))
        .bearer_auth(token)
        .send()
        .await?
        .json()
        .await?;
    v["sessions"]
        .as_array()
        .and_then(|s| {
            s.iter()
                .max_by_key(|x| x["started_at"].as_str().map(str::to_string))
        })
        .and_then(|s| s["id"].as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no active session: {v}"))
}

async fn shadow_lag(a: Args) -> Result<()> {
    let (Some(api), Some(token)) = (a.api.clone(), a.token.clone()) else {
        bail!("shadow-lag needs --api and --token");
    };
    let h = connect(&a).await?;
    let mut ch = raw_cat(&h).await?;
    let http = reqwest::Client::new();
    let id = newest_session(&http, &api, &token).await?;
    let mut resp = http
        .get(format!("{api}/api/v1/sessions/{id}/shadow"))
        .bearer_auth(&token)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("shadow refused: {}", resp.text().await.unwrap_or_default());
    }
    // Frame arrival times, from a reader task.
    let (tx, mut frames) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    tokio::spawn(async move {
        let mut pending = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            let at = Instant::now();
            pending.extend_from_slice(&chunk);
            while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                let pat = b"\"type\":\"output\"";
                let output = line.windows(pat.len()).any(|w| w == pat);
                if output && tx.send(at).is_err() {
                    return;
                }
            }
        }
    });
    // Let the attach snapshot and banner pass.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while frames.try_recv().is_ok() {}
    let mut samples = Vec::with_capacity(a.n);
    for i in 0..a.n + 10 {
        ch.data_bytes(bytes_of(b'a' + (i % 26) as u8)).await?;
        let echoed = loop {
            match tokio::time::timeout(Duration::from_secs(10), ch.wait()).await? {
                Some(ChannelMsg::Data { data }) if !data.is_empty() => break Instant::now(),
                Some(_) => {}
                None => bail!("channel closed"),
            }
        };
        let shown = tokio::time::timeout(Duration::from_secs(10), frames.recv())
            .await?
            .ok_or_else(|| anyhow!("the shadow stream ended"))?;
        if i >= 10 {
            samples.push(shown.saturating_duration_since(echoed).as_nanos() as f64 / 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        while frames.try_recv().is_ok() {}
    }
    samples.sort_by(|x, y| x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal));
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "p50_us={:.1} p99_us={:.1} max_us={:.1} n={}",
        pct(0.50),
        pct(0.99),
        pct(1.0),
        samples.len()
    );
    Ok(())
}

fn bytes_of(b: u8) -> Vec<u8> {
    vec![b]
}

async fn hold(a: Args) -> Result<()> {
    let a = Arc::new(a);
    let mut handles = Vec::with_capacity(a.n);
    let mut opened = 0;
    while opened < a.n {
        // Under the gateway's cap of 16 unauthenticated connections per source.
        let batch = (a.n - opened).min(10);
        let tasks: Vec<_> = (0..batch)
            .map(|_| {
                let a = a.clone();
                tokio::spawn(async move {
                    let h = connect(&a).await?;
                    let ch = h.channel_open_session().await?;
                    ch.request_pty(true, "xterm", 80, 24, 0, 0, &[]).await?;
                    ch.exec(true, "exec sleep 100000").await?;
                    anyhow::Ok((h, ch))
                })
            })
            .collect();
        for t in tasks {
            handles.push(t.await??);
        }
        opened += batch;
    }
    println!("ready {}", handles.len());
    // Hold until stdin closes.
    let _ = tokio::task::spawn_blocking(|| {
        let mut s = String::new();
        let _ = std::io::stdin().read_line(&mut s);
    })
    .await;
    drop(handles);
    Ok(())
}

/// `relay --listen ADDR --to ADDR`.
fn parse_relay(args: &[String]) -> Result<(String, String)> {
    let mut listen = None;
    let mut to = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or_else(|| anyhow!("{a} needs a value"))?;
        match a.as_str() {
            "--listen" => listen = Some(v.clone()),
            "--to" => to = Some(v.clone()),
            other => bail!("unknown option {other}"),
        }
    }
    Ok((
        listen.ok_or_else(|| anyhow!("--listen"))?,
        to.ok_or_else(|| anyhow!("--to"))?,
    ))
}

async fn relay(listen: String, to: String) -> Result<()> {
    let l = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!("listening on {}", l.local_addr()?);
    loop {
        let (mut client, _) = match l.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let to = to.clone();
        tokio::spawn(async move {
            let mut target = match tokio::net::TcpStream::connect(&to).await {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("connect {to}: {e}");
                    return;
                }
            };
            let _ = client.set_nodelay(true);
            let _ = target.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut target).await;
        });
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        bail!("usage: wg-bench latency|hold --port P --user U --key FILE [--samples N|--count N]\n       wg-bench relay --listen ADDR --to ADDR");
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if cmd == "relay" {
        let (listen, to) = parse_relay(rest)?;
        return rt.block_on(relay(listen, to));
    }
    let a = parse(rest)?;
    match cmd.as_str() {
        "latency" => rt.block_on(latency(a)),
        "hold" => rt.block_on(hold(a)),
        "shadow-lag" => rt.block_on(shadow_lag(a)),
        other => bail!("unknown command {other}"),
    }
}
