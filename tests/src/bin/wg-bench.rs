//! `wg-bench`: the measuring client of `scripts/bench`, the same russh client against a direct
//! sshd and against the gateway, so the ratio isolates what the gateway adds.
//!
//! - `latency`: opens a pty running `stty raw -echo; cat`, sends one byte at a time and times
//!   its echo; prints p50/p99/mean in microseconds.
//! - `hold`: opens N sessions (pty + a sleeping shell), prints `ready N`, holds them until stdin
//!   closes: the caller measures the gateway's memory meanwhile.
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
}

fn parse(args: &[String]) -> Result<Args> {
    let mut port = None;
    let mut user = None;
    let mut key = None;
    let mut n = 1000;
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
            other => bail!("unknown option {other}"),
        }
    }
    Ok(Args {
        port: port.ok_or_else(|| anyhow!("--port"))?,
        user: user.ok_or_else(|| anyhow!("--user"))?,
        key: key.ok_or_else(|| anyhow!("--key"))?,
        n,
    })
}

async fn connect(a: &Args) -> Result<Handle<AcceptAnyHostKey>> {
    russh_client::connect(a.port, &a.user, a.key.clone()).await
}

async fn latency(a: Args) -> Result<()> {
    let h = connect(&a).await?;
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

fn bytes_of(b: u8) -> Vec<u8> {
    vec![b]
}

async fn hold(a: Args) -> Result<()> {
    let a = Arc::new(a);
    let mut handles = Vec::with_capacity(a.n);
    let mut opened = 0;
    while opened < a.n {
        let batch = (a.n - opened).min(25);
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
        other => bail!("unknown command {other}"),
    }
}
