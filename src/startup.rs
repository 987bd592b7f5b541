//! Building and running one application instance: the composition root.
//!
//! `Application::build` turns a validated `Config` into bound listeners and a
//! ready router (backends chosen here, by one `match` each); `run_until_stopped`
//! serves until the shutdown future resolves, then drains. Tests build it on
//! port 0 exactly as `main` does.

use crate::auth::{self, Jwks, mint_token};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Secret};
use crate::http::{self, AppParts, AppState};
use crate::live_config::RuntimeConfig;
use crate::ratelimit::redis::RedisLimiter;
use crate::ratelimit::{self, LimiterBackend, MemoryLimiter, RateLimiter};
use crate::sessions::{Limits, ServiceParts, SessionService, ToolSets};
use crate::telemetry::{Detached, Events, Metrics};
use crate::{agent, store};
use anyhow::{Context, bail};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Choices made by the caller rather than the config file.
#[derive(Clone, Default)]
pub struct BuildOptions {
    /// Missing key material is a start-up error instead of dev mode.
    pub production: bool,
    /// The clock to use; the system clock when `None` (tests inject one).
    pub clock: Option<Arc<dyn Clock>>,
}

/// Dev mode's ready-made credentials, to print at start-up.
#[derive(Debug, Clone)]
pub struct DevCredentials {
    pub user_token: String,
    pub admin_token: String,
}

pub struct Application {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: AppState,
    config: Config,
    dev: Option<DevCredentials>,
    jwks: Option<Arc<Jwks>>,
    /// Work of requests that went away, which shutdown waits for.
    detached: Detached,
}

impl Application {
    pub async fn build(mut config: Config, options: BuildOptions) -> anyhow::Result<Self> {
        let dev = !config.auth.has_key_material();
        let secret = if dev {
            if options.production {
                bail!(
                    "auth: no key material configured (set auth.hs256_secret(_file), auth.public_key_files, \
                     auth.jwks_url or auth.api_keys); --production refuses to start in dev mode"
                );
            }
            force_loopback(&mut config);
            Some(Secret::new(hex::encode(rand::random::<[u8; 32]>())))
        } else {
            config.auth.load_hs256_secret()?
        };

        let clock = options.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let metrics = Arc::new(Metrics::new());
        let events = Arc::new(Events::new(metrics.clone()));
        let store::Built { store, redis, overrides } =
            store::build(&config.store, events.clone(), clock.is_wall()).context("store")?;
        if let Some(redis) = &redis {
            redis.check_at_start().await?;
        }
        let tool_sets = ToolSets::from_config(&config.tool_sets);
        events.initialise(&tool_sets.names(), store.backend());
        let names: Vec<String> = tool_sets.names().iter().map(|n| n.to_string()).collect();
        let openapi: Arc<str> = Arc::from(http::openapi::document_json_for(&names));
        let policies = ratelimit::policies(&config.rate_limit, http::limitable_routes())?;
        events.initialise_rate_limits(&policies.iter().map(|p| p.name.clone()).collect::<Vec<_>>());
        let limiter = Arc::new(RateLimiter::new(
            policies,
            match &redis {
                Some(r) => Arc::new(RedisLimiter::new(r.clone(), config.server.request_timeout * 2)),
                None => Arc::new(MemoryLimiter::default()) as Arc<dyn LimiterBackend>,
            },
            config.rate_limit.on_store_error,
            clock.clone(),
            events.clone(),
        ));
        let per_ip = http::per_ip_config(
            config.rate_limit.per_ip.per_second,
            config.rate_limit.per_ip.burst,
            &config.server.trusted_proxies,
        );
        let detached = Detached::default();
        let service = Arc::new(SessionService::new(ServiceParts {
            store,
            agent: agent::build(&config.agent).context("agent")?,
            clock,
            tool_sets,
            limits: Limits::from(&config.sessions),
            agent_timeout: config.agent.timeout,
            events: events.clone(),
            detached: detached.clone(),
        }));
        let (auth, jwks) =
            auth::build(&config.auth, secret.as_ref(), options.production, events.clone()).await?;
        let auth = Arc::new(auth);
        let a = &config.auth;
        let dev = match secret.filter(|_| dev) {
            Some(secret) => {
                let ttl = Duration::from_secs(24 * 3600);
                let admin = std::slice::from_ref(&a.admin_role);
                Some(DevCredentials {
                    user_token: mint_token(&secret, &a.issuer, &a.audience, "dev-user", &[], ttl)?,
                    admin_token: mint_token(&secret, &a.issuer, &a.audience, "dev-admin", admin, ttl)?,
                })
            }
            None => None,
        };

        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("server.listen: cannot bind {}", config.server.listen))?;
        let metrics_listener = if config.server.metrics_listen.is_empty() {
            None
        } else {
            let addr: SocketAddr = config.server.metrics_listen.parse().context("server.metrics_listen")?;
            Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("server.metrics_listen: cannot bind {addr}"))?,
            )
        };
        let runtime = RuntimeConfig::start(
            config.clone(),
            overrides,
            service.clone(),
            limiter.clone(),
            events.clone(),
            http::limitable_routes(),
            detached.clone(),
        )
        .await?;
        let state = AppState::new(AppParts {
            service,
            auth,
            events,
            metrics,
            draining: Default::default(),
            limiter,
            per_ip,
            runtime,
            openapi,
            max_body_bytes: config.server.max_body_bytes,
            request_timeout: config.server.request_timeout,
            in_flight: http::InFlightBound::new(config.server.max_in_flight),
        });
        Ok(Self { listener, metrics_listener, state, config, dev, jwks, detached })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Set in dev mode only.
    pub fn dev_credentials(&self) -> Option<&DevCredentials> {
        self.dev.as_ref()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Serve until `shutdown` resolves; then stop accepting, fail `/readyz`,
    /// drain in-flight requests for up to `server.shutdown_grace`, and stop
    /// the background tasks.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application { listener, metrics_listener, state, config, jwks, detached, .. } = self;
        let stop = CancellationToken::new();
        // The grace is over: what is still in flight is dropped (a 499 each).
        let abort = CancellationToken::new();
        let background = CancellationToken::new();

        let reaper = tokio::spawn(
            state.service.clone().run_reaper(config.sessions.reaper_interval, background.clone()),
        );
        let jwks_refresher = jwks.map(|j| tokio::spawn(j.run_refresher(background.clone())));
        let config_watcher =
            tokio::spawn(state.runtime.clone().run_watcher(Duration::from_millis(500), background.clone()));
        let limiter_sweeper =
            tokio::spawn(state.limiter.clone().run_sweeper(Duration::from_secs(10), background.clone()));
        let per_ip_sweeper = state.per_ip.clone().map(|config| {
            let cancel = background.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        // Forget IPs whose bucket has refilled: memory follows active clients.
                        _ = tick.tick() => config.config.limiter().retain_recent(),
                    }
                }
            })
        });
        let upkeep = {
            let metrics = state.metrics.clone();
            let cancel = background.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tick.tick() => metrics.run_upkeep(),
                    }
                }
            })
        };

        let limits = http::serve::ConnectionLimits {
            header_read_timeout: config.server.header_read_timeout,
            max_connections: config.server.max_connections,
        };
        let metrics_server = metrics_listener.map(|l| {
            let app = http::metrics_router(state.clone());
            tokio::spawn(http::serve::serve(l, app, stop.clone(), abort.clone(), limits))
        });

        let app = http::router(state.clone(), &config.server, metrics_server.is_none());
        let server = tokio::spawn(http::serve::serve(listener, app, stop.clone(), abort.clone(), limits));

        let draining = state.draining.clone();
        let stop_on_signal = stop.clone();
        let delay = config.server.shutdown_delay;
        tokio::spawn(async move {
            shutdown.await;
            // Readiness fails at once; new requests are still served for
            // `shutdown_delay`, while load balancers notice and stop routing here.
            draining.store(true, Ordering::SeqCst);
            if !delay.is_zero() {
                tracing::info!(
                    event = "shutdown", delay = ?delay,
                    "shutdown requested; failing readiness, still serving until the delay ends"
                );
                tokio::time::sleep(delay).await;
            }
            tracing::info!(event = "shutdown", "draining in-flight requests; accepting no new connections");
            stop_on_signal.cancel();
        });

        let grace = config.server.shutdown_grace;
        let mut server = server;
        let mut served = tokio::select! {
            r = &mut server => Some(r),
            _ = async { stop.cancelled().await; tokio::time::sleep(grace).await } => None,
        };
        if served.is_none() {
            tracing::warn!(grace = ?grace, "shutdown grace elapsed with requests still in flight; dropping them");
            // Each is dropped in its connection's task, counted and logged as
            // a 499 while metrics and logs still run; then the server returns.
            abort.cancel();
            served = tokio::time::timeout(Duration::from_secs(1), &mut server).await.ok();
        }
        background.cancel();
        let _ = tokio::join!(reaper, upkeep, limiter_sweeper, config_watcher);
        if let Some(s) = per_ip_sweeper {
            let _ = s.await;
        }
        if let Some(j) = jwks_refresher {
            let _ = j.await;
        }
        if let Some(m) = metrics_server {
            m.abort();
        }
        let served = match served {
            Some(r) => r.context("server task"),
            None => {
                server.abort();
                Ok(())
            }
        };
        // Changes whose clients went away: each within a store call's bound.
        detached.finish(config.store.command_timeout * 2).await;
        served?;
        tracing::info!(event = "stopped", "stopped");
        Ok(())
    }
}

/// Dev mode never listens beyond loopback: its secret is printed on the console.
fn force_loopback(config: &mut Config) {
    let listen = &mut config.server.listen;
    if !listen.ip().is_loopback() {
        tracing::warn!(configured = %listen, "dev mode: binding loopback only");
        listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    if let Ok(mut addr) = config.server.metrics_listen.parse::<SocketAddr>()
        && !addr.ip().is_loopback()
    {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        config.server.metrics_listen = addr.to_string();
    }
}
