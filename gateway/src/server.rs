//! Running the daemon: open the store and vault, bind the listeners, serve SSH connections and the
//! API, and shut down gracefully (stop accepting, tell every live session why it ends, drain).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wardengate_protocols::listener::{accept_loop, Gate, GateLimits, GateReport, Refused};
use wardengate_protocols::postgres;
use wardengate_protocols::ssh::{self, SshSettings};

use crate::broker::Gateway;
use crate::config::Loaded;
use crate::store::{Postgres, Sqlite, Store};
use crate::vault::Vault;

/// What a started gateway listens on.
#[derive(Debug, Clone)]
pub struct Listening {
    pub ssh: std::net::SocketAddr,
    pub postgres: Option<std::net::SocketAddr>,
    pub rdp: Option<std::net::SocketAddr>,
    /// The brokered-TCP listener (`[tcp]`), when configured.
    pub tcp: Option<std::net::SocketAddr>,
    pub api: std::net::SocketAddr,
}

/// Open the store and the vault of a configuration (also used by the `vault` subcommands).
pub async fn open_state(cfg: &Loaded, create_key: bool) -> Result<(Arc<dyn Store>, Vault)> {
    let tightened = crate::perms::tighten_data_dir(&cfg.data_dir)?;
    if tightened > 0 {
        tracing::warn!(
            dir = %cfg.data_dir.display(),
            "made {tightened} file(s) and folder(s) of the data directory private to their owner (they were open to other users)"
        );
    }
    let url = std::env::var("WARDENGATE_STORE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .or_else(|| cfg.config.store.url.clone());
    let store: Arc<dyn Store> = match &url {
        Some(url) => {
            let tls = match &cfg.config.store.ca_file {
                Some(f) => Some(crate::config::ca_roots(
                    &cfg.in_data_dir(f),
                    "[store] ca_file",
                )?),
                None => None,
            };
            Arc::new(Postgres::open(url, tls).await?)
        }
        None => Arc::new(Sqlite::open(&cfg.data_dir.join("wardengate.db"))?),
    };
    let vault = Vault::open(
        &cfg.in_data_dir(&cfg.config.gateway.vault_key_file),
        create_key,
    )?;
    Ok((store, vault))
}

/// Run until `shutdown` is cancelled (or SIGINT/SIGTERM arrives).
pub async fn run(
    cfg: Loaded,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(&Listening),
) -> Result<()> {
    let (store, vault) = open_state(&cfg, true).await?;
    let host_key =
        crate::keys::load_or_create_host_key(&cfg.in_data_dir(&cfg.config.ssh.host_key_file))?;
    let token =
        crate::keys::load_or_create_token(&cfg.in_data_dir(&cfg.config.api.admin_token_file))?;
    let settings = Arc::new(SshSettings {
        host_keys: vec![host_key],
        auth_rejection_time: cfg.config.ssh.auth_rejection_time,
        connect_timeout: cfg.config.ssh.connect_timeout,
        server_id: format!("SSH-2.0-Wardengate_{}", env!("CARGO_PKG_VERSION")),
        ciphers: cfg.config.ssh.ciphers.clone(),
    });
    let ssh_listener = bind(cfg.config.ssh.listen, "SSH").await?;
    let pg = match &cfg.config.postgres {
        Some(section) => {
            let settings = Arc::new(crate::broker::postgres::settings(&cfg, section)?);
            Some((bind(section.listen, "PostgreSQL").await?, settings))
        }
        None => None,
    };
    let rdp = match &cfg.config.rdp {
        Some(section) => {
            let settings = Arc::new(crate::broker::rdp::settings(&cfg, section)?);
            Some((bind(section.listen, "RDP").await?, settings))
        }
        None => None,
    };
    let tcp = match &cfg.config.tcp {
        Some(section) => Some(crate::tcp::front::bind(&cfg, section, shutdown.clone()).await?),
        None => None,
    };
    let api_listener = bind(cfg.config.api.listen, "the API").await?;
    let listening = Listening {
        ssh: ssh_listener.local_addr()?,
        postgres: match &pg {
            Some((l, _)) => Some(l.local_addr()?),
            None => None,
        },
        rdp: match &rdp {
            Some((l, _)) => Some(l.local_addr()?),
            None => None,
        },
        tcp: match &tcp {
            Some(b) => Some(b.listener.local_addr()?),
            None => None,
        },
        api: api_listener.local_addr()?,
    };
    let rc = &cfg.config.recording;
    let spool = match &rc.store {
        Some(url) => Some(Arc::new(crate::recording::Spool::new(
            recording_bucket(&cfg, url)?,
            cfg.in_data_dir(&rc.dir),
            rc.spool_max_mb.saturating_mul(1 << 20),
        ))),
        None => None,
    };
    let recordings = crate::recording::Recordings::open(
        cfg.in_data_dir(&rc.dir),
        &cfg.in_data_dir(&rc.key_file),
        wardengate_recorder::Limits {
            chunk_raw_bytes: rc.chunk_bytes.max(1),
            chunk_age: rc.chunk_age,
        },
        rc.input,
        rc.write_ahead_interval,
        spool,
    )?;
    let geoip = match &cfg.config.geoip.database {
        Some(db) => {
            let path = cfg
                .path
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join(db);
            Some(crate::geoip::GeoIp::open(&path)?)
        }
        None => None,
    };
    let mut gw = Gateway::new(cfg, store, vault, recordings).await;
    gw.geoip = geoip;
    gw.console_key =
        crate::identity::cookie::CookieKey::open(&gw.cfg().data_dir.join("console.key"))?;
    {
        let c = &gw.cfg().config.console;
        if c.idle_timeout.is_zero() && c.lifespan.is_zero() {
            tracing::warn!(
                "[console] idle_timeout and lifespan are both 0: console sessions then end only \
                 when their person signs out (or an administrator invalidates them)"
            );
        }
    }
    gw.api_port = listening.api.port();
    let tcp = tcp.map(|b| {
        let _ = gw.tcp.front.set(b.front);
        (b.listener, b.acceptor, b.section)
    });
    let cluster = gw.cfg().config.cluster.clone();
    let cluster_key =
        crate::cluster::sign::ClusterKey::load(&gw.cfg().in_data_dir(&cluster.key_file))?;
    if gw.store.shared() && cluster_key.is_none() {
        tracing::warn!(
            "the store is shared but this gateway has no cluster key ([cluster] key_file): it cannot \
             terminate or watch sessions other gateways run. Run `wardengate cluster init` once and copy \
             the key to every gateway"
        );
    }
    gw.peers = crate::cluster::peers::Peers::new(cluster_key, cluster.ca_file.as_deref())?;
    let advertise = cluster.advertise_url.clone().unwrap_or_else(|| {
        let scheme = if gw.cfg().config.api.plain_http {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}", listening.api)
    });
    let gw = Arc::new(gw);
    tokio::spawn(gw.clone().watch_cluster(advertise, shutdown.clone()));
    gw.recover().await;
    gw.load_approvals().await;
    // Access sessions' rules as the store says they should be, before anyone may start one.
    gw.access_reconcile().await;
    tokio::spawn(gw.clone().access_timer(shutdown.clone()));
    for seal in gw.recordings.recover_all() {
        tracing::warn!(session = %seal.session_id, chunks = seal.chunks, "sealed an unfinished recording as truncated");
        gw.audit(
            "recording.recovered",
            None,
            Some(&seal.session_id),
            serde_json::json!({"status": "truncated", "chunks": seal.chunks, "events": seal.events, "raw_bytes": seal.raw_bytes}),
        );
    }
    // After crash recovery: what it seals (or moves aside) is what gets uploaded.
    let uploads_stop = CancellationToken::new();
    tokio::spawn(gw.clone().upload_recordings(uploads_stop.clone()));
    gw.audit(
        "gateway.start",
        None,
        None,
        serde_json::json!({"ssh": listening.ssh.to_string(), "postgres": listening.postgres.map(|a| a.to_string()), "rdp": listening.rdp.map(|a| a.to_string()), "tcp": listening.tcp.map(|a| a.to_string()), "api": listening.api.to_string()}),
    );

    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signals.cancel();
    });
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                let gw = gw.clone();
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        // Errors are logged and audited by reload; the old policies stay.
                        let _ = gw.reload("sighup");
                    }
                });
            }
            Err(e) => tracing::warn!("cannot listen for SIGHUP (reload): {e}"),
        }
    }

    let sec = gw.cfg().config.security.clone();
    let cfg_api = gw.cfg().config.api.clone();
    // Refusal bursts are audited by a task of their own, never in an accept loop (the audit
    // writes to the store and may sign a checkpoint).
    let report: GateReport = {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Refused>();
        let gw = gw.clone();
        tokio::spawn(async move {
            while let Some(r) = rx.recv().await {
                tracing::warn!(listener = r.listener, source = %r.source, cap = r.cap, limit = r.limit, refused = r.refused, ended = r.ended, "connections refused before authentication");
                let gw = gw.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    gw.audit(
                        if r.ended { "connection.refused_summary" } else { "connection.refused" },
                        None,
                        None,
                        serde_json::json!({"listener": r.listener, "source": r.source.to_string(), "cap": r.cap, "limit": r.limit, "refused": r.refused}),
                    )
                })
                .await;
            }
        });
        Arc::new(move |r: &Refused| {
            let _ = tx.send(r.clone());
        })
    };
    let gate = |name: &'static str, auth_timeout: Duration, per_source: usize| {
        Gate::new(
            name,
            GateLimits {
                auth_timeout,
                max_unauthenticated: sec.max_unauthenticated,
                max_unauthenticated_per_source: per_source,
            },
            Some(report.clone()),
        )
    };

    let api_state = crate::api::ApiState {
        gw: gw.clone(),
        token_hash: Sha256::digest(token.as_bytes()).into(),
        tickets: Default::default(),
        views: Default::default(),
    };
    // The API's trusted proxies are not held to the per-source cap (their connections carry
    // everyone's requests, counted by the forwarded address); the listener's cap holds them.
    let trusted = {
        let gw = gw.clone();
        Arc::new(move |ip: std::net::IpAddr| {
            crate::access::trusted(&gw.cfg())
                .iter()
                .any(|c| c.contains(ip))
        }) as wardengate_protocols::listener::Exempt
    };
    let api_gate = Gate::exempting(
        "api",
        GateLimits {
            auth_timeout: sec.auth_timeout,
            max_unauthenticated: sec.max_unauthenticated,
            max_unauthenticated_per_source: sec.api_connections_per_source,
        },
        Some(report.clone()),
        Some(trusted),
    );
    let api_tls = if cfg_api.plain_http {
        None
    } else {
        let (mut c, _) = crate::tls::server_config(
            &gw.cfg(),
            &cfg_api.tls_cert_file,
            &cfg_api.tls_key_file,
            "api",
        )?;
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Some(Arc::new(c))
    };
    let api_task = tokio::spawn(crate::http::serve(
        api_listener,
        api_gate,
        crate::api::router(api_state),
        api_tls,
        shutdown.clone(),
        Duration::from_secs(5),
    ));

    // Failed-login bursts that went quiet are summarised in the audit; the audit chain head is
    // signed at least every checkpoint_interval while events arrive.
    {
        let (gw, stop) = (gw.clone(), shutdown.clone());
        let every = gw.cfg().config.audit.checkpoint_interval;
        tokio::spawn(async move {
            let mut sweep = tokio::time::interval(Duration::from_secs(15));
            let mut sign = tokio::time::interval(every.max(Duration::from_secs(1)));
            let mut approvals = tokio::time::interval(Duration::from_secs(1));
            let mut console = tokio::time::interval(gw.cfg().config.console.cleanup_interval);
            console.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = approvals.tick() => gw.expire_approvals(),
                    _ = console.tick() => gw.console_cleanup().await,
                    _ = sweep.tick() => {
                        gw.audit_throttle("login", gw.throttle.sweep());
                        gw.audit_throttle("api", gw.api_throttle.sweep());
                        gw.audit_cancels();
                    }
                    _ = sign.tick() => gw.checkpoint().await,
                    _ = gw.checkpoints.due.notified() => gw.checkpoint().await,
                    _ = stop.cancelled() => break,
                }
            }
        });
    }

    tracing::info!(ssh = %listening.ssh, postgres = ?listening.postgres, rdp = ?listening.rdp, tcp = ?listening.tcp, api = %listening.api, gateway = %gw.name, "wardengate is ready");
    on_ready(&listening);

    let config = Arc::new(ssh::server_config(&settings));
    let tracker = TaskTracker::new();
    // Each protocol's listener: its gate (pre-authentication deadline and caps), then its loop.
    let gate = |name, auth_timeout| gate(name, auth_timeout, sec.max_unauthenticated_per_source);
    if let Some((listener, settings)) = pg {
        let (gw, stop) = (gw.clone(), shutdown.clone());
        let cancels = Arc::new(postgres::Cancels::default());
        let gate = gate("postgres", settings.auth_timeout);
        let serve = move |socket, peer, slot| {
            let (gw, cancels, stop) = (gw.clone(), cancels.clone(), stop.clone());
            postgres::serve_connection(gw, settings.clone(), cancels, socket, peer, slot, stop)
        };
        let accepting = accept_loop(listener, gate, tracker.clone(), shutdown.clone(), serve);
        tracker.spawn(accepting);
    }
    if let Some((listener, settings)) = rdp {
        let (gw, stop) = (gw.clone(), shutdown.clone());
        let gate = gate("rdp", settings.auth_timeout);
        let serve = move |socket, peer, slot| {
            let (gw, stop) = (gw.clone(), stop.clone());
            wardengate_protocols::rdp::serve_connection(
                gw,
                settings.clone(),
                socket,
                peer,
                slot,
                stop,
            )
        };
        let accepting = accept_loop(listener, gate, tracker.clone(), shutdown.clone(), serve);
        tracker.spawn(accepting);
    }
    if let Some((listener, acceptor, section)) = tcp {
        let gw = gw.clone();
        let gate = gate("tcp", section.auth_timeout.unwrap_or(sec.auth_timeout));
        let serve = move |socket, peer, slot| {
            let (gw, acceptor) = (gw.clone(), acceptor.clone());
            crate::tcp::front::serve(gw, acceptor, section.connect_timeout, socket, peer, slot)
        };
        let accepting = accept_loop(listener, gate, tracker.clone(), shutdown.clone(), serve);
        tracker.spawn(accepting);
    }
    {
        let (gw, stop) = (gw.clone(), shutdown.clone());
        let gate = gate("ssh", sec.auth_timeout);
        let serve = move |socket, peer, slot| {
            let (gw, config, stop) = (gw.clone(), config.clone(), stop.clone());
            ssh::serve_connection(gw, config, settings.clone(), socket, peer, slot, stop)
        };
        accept_loop(ssh_listener, gate, tracker.clone(), shutdown.clone(), serve).await;
    }
    tracing::info!(sessions = gw.registry.live_count(), "shutting down");
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(10), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within 10s");
    }
    gw.registry.drain(Duration::from_secs(1)).await;
    if !gw.recordings.drain(Duration::from_secs(10)).await {
        tracing::warn!("some recordings were not sealed within 10s; they are sealed as truncated at the next start");
    }
    uploads_stop.cancel();
    gw.upload_last(Duration::from_secs(10)).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), api_task).await;
    gw.audit("gateway.stop", None, None, serde_json::json!({}));
    gw.checkpoint().await;
    if let Err(e) = gw.store.flush().await {
        tracing::error!("cannot write the store's last changes: {e:#}");
    }
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The bucket `[recording] store` names, with its endpoint, region and credentials.
fn recording_bucket(cfg: &Loaded, url: &str) -> Result<wardengate_recorder::bucket::Bucket> {
    let rc = &cfg.config.recording;
    let secret = match &rc.secret_access_key_file {
        Some(f) => {
            let path = cfg.in_data_dir(f);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "[recording] secret_access_key_file: cannot read {}",
                    path.display()
                )
            })?;
            Some(text.trim().to_string())
        }
        None => None,
    };
    let opts = wardengate_recorder::bucket::BucketOptions {
        endpoint: rc.endpoint.clone(),
        region: rc.region.clone(),
        access_key_id: rc.access_key_id.clone(),
        secret_access_key: secret,
        allow_http: rc.allow_http,
    };
    wardengate_recorder::bucket::Bucket::open(url, &opts)
        .with_context(|| "[recording] store".to_string())
}

/// Listen on `addr` for `what`, or say which listener could not.
async fn bind(addr: std::net::SocketAddr, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}
