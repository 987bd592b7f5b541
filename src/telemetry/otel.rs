//! OpenTelemetry trace export over OTLP, configured only by the standard
//! `OTEL_*` environment variables.
//!
//! Export is on when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, unless `OTEL_TRACES_EXPORTER=none`
//! (or `OTEL_SDK_DISABLED=true`). With no endpoint, no exporter, provider or
//! layer exists: spans are never recorded, so they cost nothing.
//!
//! The protocol is `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or
//! `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` or `http/protobuf` (the spec's default).
//! The SDK itself reads the rest: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER(_ARG)` (default parent-based, always on), `OTEL_BSP_*`,
//! `OTEL_EXPORTER_OTLP_(TRACES_)HEADERS` and `…_TIMEOUT`.
//!
//! Knows nothing of requests; `trace_context` reads the spans this produces.

use anyhow::{Context, bail};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// Where and how spans go, read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    pub protocol: OtlpProtocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

impl OtlpSettings {
    /// `Ok(None)` when export is off; an error for a protocol we cannot speak.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Self>> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        if let Some(exporter) = set("OTEL_TRACES_EXPORTER") {
            match exporter.trim() {
                "none" => return Ok(None),
                "otlp" => {}
                other => bail!("OTEL_TRACES_EXPORTER={other}: only \"otlp\" and \"none\" are supported"),
            }
        }
        if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none() && set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        {
            return Ok(None);
        }
        let protocol = match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
        {
            None => OtlpProtocol::HttpProtobuf,
            Some(p) => match p.trim() {
                "grpc" => OtlpProtocol::Grpc,
                "http/protobuf" => OtlpProtocol::HttpProtobuf,
                other => bail!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL={other}: supported protocols are \"grpc\" and \"http/protobuf\""
                ),
            },
        };
        Ok(Some(Self { protocol }))
    }
}

/// Build the exporter and a batching tracer provider. Must run inside a tokio
/// runtime (the gRPC channel is created on it).
pub fn build_provider(settings: &OtlpSettings) -> anyhow::Result<SdkTracerProvider> {
    // The HTTP exporter's client shares our rustls, which needs its provider.
    crate::net::init_tls();
    let exporter = match settings.protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_protocol(opentelemetry_otlp::Protocol::Grpc)
            .build(),
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build(),
    }
    .context("OTLP trace exporter")?;
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource()).build())
}

/// `service.name` defaults to `sessiongate` unless the environment names it.
fn resource() -> Resource {
    let named_by_env = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let mut builder =
        Resource::builder().with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if !named_by_env {
        builder = builder.with_service_name("sessiongate");
    }
    builder.build()
}

/// Export what is buffered and stop. Blocks (the batch processor joins its
/// thread), so it runs on the blocking pool.
pub async fn shutdown(provider: SdkTracerProvider) {
    let outcome = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "trace exporter did not shut down cleanly"),
        Err(e) => tracing::warn!(error = %e, "trace exporter shutdown panicked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> anyhow::Result<Option<OtlpSettings>> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        OtlpSettings::from_env(|k| map.get(k).cloned())
    }

    #[test]
    fn export_is_on_only_with_an_endpoint() {
        assert_eq!(settings(&[]).unwrap(), None);
        assert_eq!(settings(&[("OTEL_SERVICE_NAME", "x")]).unwrap(), None);
        let on = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")]).unwrap().unwrap();
        assert_eq!(on.protocol, OtlpProtocol::HttpProtobuf);
        let grpc = settings(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(grpc.protocol, OtlpProtocol::Grpc);
        // The signal-specific protocol wins over the generic one.
        let specific = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(specific.protocol, OtlpProtocol::HttpProtobuf);
    }

    #[test]
    fn export_can_be_switched_off_and_bad_values_are_refused() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert_eq!(settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]).unwrap(), None);
        assert_eq!(settings(&[endpoint, ("OTEL_SDK_DISABLED", "true")]).unwrap(), None);
        assert!(settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")]).is_err());
        assert!(settings(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).is_err());
    }
}
