//! Listeners and lifecycle: the client listener (plain HTTP, or TLS with Conduit's `tls`
//! table), the optional HTTPS federation listener, and graceful shutdown on SIGINT/SIGTERM that
//! finishes in-flight requests and flushes the database before exit.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use axum::{Router, body::Body, extract::ConnectInfo};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{self, pki_types::CertificateDer},
};
use tower::ServiceExt;

use crate::{api, config::Config, service::Services, storage::Db};

/// How long shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// Opens the database, builds the services and serves until a shutdown signal.
pub async fn run(config: Config) -> Result<(), String> {
    let db = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || Db::open(&config))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    let mut signals = ShutdownSignals::register()?;
    let services = Services::build(config.clone(), db.clone()).map_err(|e| e.to_string())?;
    db.spawn_key_rotation(config.media.directory(&config.database_path));
    let routers = api::routers(services.clone());
    let push_sender = crate::service::push::gateway::GatewaySender::spawn(services.clone());
    let appservice_senders = crate::service::appservice::sender::AppServiceSenders::spawn(services.clone())
        .await
        .map_err(|e| format!("cannot start the application service senders: {e}"))?;
    let federation_sender = crate::service::federation::sender::SenderTask::spawn(services.clone());
    let scheduled_backups = services.server_backups.spawn_schedule();
    // Wakes the syncs of users sharing a room with one whose devices or presence changed.
    let room_mates = tokio::spawn(crate::service::notifier::run_room_mates(services.clone()));
    let app = routers.main;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let client_addr = SocketAddr::new(config.address, config.port);
    let client_listener =
        TcpListener::bind(client_addr).await.map_err(|e| format!("cannot listen on {client_addr}: {e}"))?;
    let client_addr = client_listener.local_addr().map_err(|e| e.to_string())?;
    let client_tls = match &config.tls {
        Some(files) => Some(tls_acceptor(&files.certs, &files.key)?),
        None => None,
    };
    let federation = match &config.federation_listener {
        Some(_) if !config.allow_federation => {
            tracing::warn!("federation_listener is configured but allow_federation is false: not listening");
            None
        }
        Some(listener) => {
            let acceptor = tls_acceptor(&listener.certs, &listener.key)?;
            let addr = SocketAddr::new(listener.address, listener.port);
            let tcp = TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            Some((tcp, acceptor))
        }
        None => None,
    };

    // The metrics listener (plain HTTP, meant for loopback or a private network).
    let metrics = match &config.metrics {
        metrics if metrics.enabled => {
            let addr = SocketAddr::new(metrics.address, metrics.port);
            let tcp = TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr} for metrics: {e}"))?;
            let addr = tcp.local_addr().map_err(|e| e.to_string())?;
            if !addr.ip().is_loopback() {
                tracing::warn!(%addr, "the metrics listener is reachable from other hosts; it has no authentication");
            }
            Some((tcp, addr))
        }
        _ => None,
    };

    // These lines are the start-up contract: people and test harnesses read the address here.
    // The metrics line comes first: harnesses stop reading at the client line.
    if let Some((_, addr)) = &metrics {
        println!("Trellis serving metrics on http://{addr}/metrics");
    }
    let scheme = if client_tls.is_some() { "https" } else { "http" };
    println!(
        "Trellis {} for {} listening for clients on {scheme}://{client_addr}",
        env!("CARGO_PKG_VERSION"),
        config.server_name
    );
    if let Some((tcp, _)) = &federation {
        let addr = tcp.local_addr().map_err(|e| e.to_string())?;
        println!("Trellis listening for federation on https://{addr}");
    }

    // Start-up is over: what opening the database allocated for a moment goes back to the OS.
    let heap_release = crate::heap::spawn_periodic_release();

    let mut tasks = tokio::task::JoinSet::new();
    match client_tls {
        Some(acceptor) => {
            tasks.spawn(serve_tls(client_listener, acceptor, app.clone(), shutdown_rx.clone()));
        }
        None => {
            let mut rx = shutdown_rx.clone();
            let app = app.clone();
            tasks.spawn(async move {
                let result = axum::serve(client_listener, app.into_make_service_with_connect_info::<SocketAddr>())
                    .with_graceful_shutdown(async move {
                        let _ = rx.wait_for(|stop| *stop).await;
                    })
                    .await;
                if let Err(error) = result {
                    tracing::error!(%error, "client listener failed");
                }
            });
        }
    }
    if let Some((tcp, acceptor)) = federation {
        tasks.spawn(serve_tls(tcp, acceptor, routers.federation, shutdown_rx.clone()));
    }
    if let Some((tcp, _)) = metrics {
        let mut rx = shutdown_rx.clone();
        let app = api::observe::metrics_router(services.clone());
        tasks.spawn(async move {
            let result = axum::serve(tcp, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                })
                .await;
            if let Err(error) = result {
                tracing::error!(%error, "metrics listener failed");
            }
        });
    }

    signals.wait().await;
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = shutdown_tx.send(true);
    // Long-polling syncs return now instead of holding their connections.
    services.notifier.shut_down();
    if tokio::time::timeout(SHUTDOWN_GRACE, async { while tasks.join_next().await.is_some() {} }).await.is_err() {
        tracing::warn!("some requests did not finish within the grace period");
    }
    if let Some(task) = scheduled_backups {
        task.abort();
    }
    heap_release.abort();
    // The notifier's shutdown ends it.
    let _ = tokio::time::timeout(Duration::from_secs(2), room_mates).await;
    push_sender.stop().await;
    appservice_senders.stop().await;
    federation_sender.stop().await;
    drop(services);
    tokio::task::spawn_blocking(move || db.flush())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("flushing the database failed: {e}"))?;
    tracing::info!("database flushed; stopped");
    Ok(())
}

/// SIGINT and SIGTERM, registered before the server announces it is ready, so a signal that
/// arrives during start-up still shuts down gracefully instead of killing the process.
struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn register() -> Result<Self, String> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let interrupt = signal(SignalKind::interrupt()).map_err(|e| format!("cannot listen for SIGINT: {e}"))?;
            let terminate = signal(SignalKind::terminate()).map_err(|e| format!("cannot listen for SIGTERM: {e}"))?;
            Ok(Self { interrupt, terminate })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn wait(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {},
            _ = self.terminate.recv() => {},
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Loads a PEM certificate chain and key into a TLS acceptor offering HTTP/2 and HTTP/1.1.
pub fn tls_acceptor(certs: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let read = |path: &Path| std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
    let cert_pem = read(certs)?;
    let key_pem = read(key)?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", certs.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate found", certs.display()));
    }
    let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| format!("{}: not a PEM private key: {e}", key.display()))?
        .ok_or_else(|| format!("{}: no private key found", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| format!("{}: certificate and key do not match: {e}", certs.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` over TLS until shutdown, then lets open connections finish.
async fn serve_tls(listener: TcpListener, acceptor: TlsAcceptor, app: Router, mut shutdown: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            // The only change ever sent is the shutdown.
            _ = shutdown.changed() => break,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%error, %peer, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(request.map(Body::new))
            });
            let connection = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .into_owned();
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("TLS connections did not close within the grace period");
    }
}
