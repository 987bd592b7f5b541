//! The command line: `serve` (the default), `token`, `hash-key`, `check-config`,
//! `openapi`, and `probe` (a health check for images without a shell or curl).

use crate::auth::mint_token;
use crate::config::Config;
use crate::startup::{Application, BuildOptions};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "sessiongate", version, about = "Agent sessions for authenticated frontend clients")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Mint an HS256 token with the configured secret (development, load tests).
    Token(TokenArgs),
    /// Make a new random API key and print it with the SHA-256 to configure.
    HashKey(HashKeyArgs),
    /// Validate the configuration and print it, secrets redacted.
    CheckConfig(ConfigArg),
    /// Print the OpenAPI document.
    Openapi,
    /// GET a probe URL; exit 0 on a 2xx answer, 1 otherwise (container health checks).
    Probe(ProbeArgs),
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// What to ask.
    #[arg(long, default_value = "http://127.0.0.1:8080/readyz")]
    pub url: String,
    /// How long to wait for the answer.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args, Default)]
pub struct ConfigArg {
    /// TOML configuration file; `SESSIONGATE__SECTION__KEY` variables override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Refuse to start without key material (no dev mode).
    #[arg(
        long,
        env = "SESSIONGATE_PRODUCTION",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub production: bool,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The subject (user id).
    #[arg(long)]
    pub sub: String,
    /// A role to grant; repeat for more.
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// Lifetime, e.g. `1h` or `30m`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

#[derive(Debug, Args)]
pub struct HashKeyArgs {
    /// The service's id (the principal becomes `apikey:<id>`).
    #[arg(long, default_value = "my-service")]
    pub id: String,
    /// Hash this key instead of making a new one.
    #[arg(long)]
    pub key: Option<String>,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::Token(args)) => {
            let config = Config::load(args.config.config.as_deref())?;
            let secret = config.auth.load_hs256_secret()?.context(
                "auth.hs256_secret: not configured; `token` needs the server's secret \
                 (in dev mode the server prints its own tokens at start-up)",
            )?;
            let a = &config.auth;
            anyhow::ensure!(
                a.max_token_lifetime.is_zero() || args.ttl <= a.max_token_lifetime,
                "--ttl {}: longer than auth.max_token_lifetime ({}), so the server would refuse the token",
                humantime::format_duration(args.ttl),
                humantime::format_duration(a.max_token_lifetime)
            );
            println!("{}", mint_token(&secret, &a.issuer, &a.audience, &args.sub, &args.roles, args.ttl)?);
            Ok(())
        }
        Some(Command::HashKey(args)) => {
            let (key, sha256) = match args.key {
                Some(k) => {
                    let h = crate::auth::api_keys::hash(&k);
                    (k, h)
                }
                None => crate::auth::api_keys::generate(),
            };
            println!(
                "# Give the key to the service (send it as `X-API-Key`); keep only the hash in config.\n\
                 # key: {key}\n[[auth.api_keys]]\nid = \"{}\"\nsha256 = \"{sha256}\"\nroles = []",
                args.id
            );
            Ok(())
        }
        Some(Command::CheckConfig(args)) => {
            let config = Config::load(args.config.as_deref())?;
            crate::auth::check_key_material(&config.auth)?;
            print!("{}", config.to_redacted_toml());
            Ok(())
        }
        Some(Command::Openapi) => {
            // `sessiongate openapi | head` closes the pipe early: not an error.
            use std::io::Write;
            match writeln!(std::io::stdout().lock(), "{}", crate::http::openapi::document_json()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
        Some(Command::Probe(args)) => {
            let response = crate::net::client(args.timeout)
                .get(&args.url)
                .send()
                .await
                .with_context(|| format!("probe {}", args.url))?;
            let status = response.status();
            anyhow::ensure!(status.is_success(), "probe {}: {status}", args.url);
            println!("{status}");
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.config.as_deref())?;
    // Shut down when serving ends: buffered spans and log lines are flushed then.
    let telemetry = crate::telemetry::init(&config.telemetry)?;
    let app =
        match Application::build(config, BuildOptions { production: args.production, clock: None }).await {
            Ok(app) => app,
            Err(e) => {
                telemetry.shutdown().await;
                return Err(e);
            }
        };
    let addr = app.local_addr();
    if let Some(dev) = app.dev_credentials() {
        tracing::warn!(
            "dev mode: no key material configured; using an ephemeral HS256 secret and binding loopback only"
        );
        // Not eprintln!: a closed stderr must not bring the server down.
        let _ = writeln!(
            std::io::stderr(),
            "\nsessiongate dev mode on http://{addr}\n\
             user token (sub=dev-user, 24h):\n  {}\n\
             admin token (sub=dev-admin, role admin, 24h):\n  {}\n\
             try:\n  curl -s http://{addr}/v1/tool-sets -H \"Authorization: Bearer $TOKEN\"\n",
            dev.user_token,
            dev.admin_token
        );
    }
    tracing::info!(
        event = "listening", %addr, store = app.config().store.backend_name(),
        trace_export = telemetry.exporting(), "sessiongate listening"
    );
    let result = app.run_until_stopped(shutdown_signal()).await;
    telemetry.shutdown().await;
    result
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
