//! Structured logs through `tracing`, and traces exported over OTLP when an endpoint is set.
//!
//! Traces follow the standard OpenTelemetry variables ([`TraceSettings::from_env`]). With no
//! endpoint (or `OTEL_SDK_DISABLED=true`) nothing is installed: no exporter, no OpenTelemetry
//! layer, and the pipeline makes no spans but the request span the logs have always had (see
//! `waybill_trace`). With one, finished
//! spans go to a batch processor with a bounded queue (a full queue drops spans) exported from
//! its own thread with a timeout, so an exporter that is down never holds a request or a
//! delivery up; [`Telemetry::shutdown`] flushes what is left with a bounded wait.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    trace::{Sampler, SdkTracerProvider},
};
use tracing::{Dispatch, Event, Subscriber, dispatcher::WeakDispatch};
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::filter_fn,
    fmt::{
        self, FmtContext, FormatEvent, FormatFields,
        format::{Full, Json, JsonFields, Writer},
    },
    prelude::*,
    registry::{LookupSpan, Registry},
};

use crate::config::LogSettings;

/// How long the stop path waits for the last spans to be exported.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// The OTLP protocols this build exports with.
const PROTOCOLS: &str = "http/protobuf";

/// Which spans are kept: the standard `OTEL_TRACES_SAMPLER` values.
#[derive(Debug, Clone, PartialEq)]
pub enum SamplerChoice {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    /// Follows the parent's decision; decides as the inner choice for a new trace.
    ParentBased(Box<SamplerChoice>),
}

impl SamplerChoice {
    fn sampler(&self) -> Sampler {
        match self {
            SamplerChoice::AlwaysOn => Sampler::AlwaysOn,
            SamplerChoice::AlwaysOff => Sampler::AlwaysOff,
            SamplerChoice::TraceIdRatio(r) => Sampler::TraceIdRatioBased(*r),
            SamplerChoice::ParentBased(root) => Sampler::ParentBased(Box::new(root.sampler())),
        }
    }
}

/// Trace export as the `OTEL_*` variables configure it.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// `service.name` of the spans.
    pub service_name: String,
    pub sampler: SamplerChoice,
}

/// Why the `OTEL_*` variables cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TraceConfigError {
    #[error("{var}=`{value}` is not supported; supported: {PROTOCOLS}")]
    Protocol { var: &'static str, value: String },
    #[error(
        "OTEL_TRACES_SAMPLER=`{0}` is not a sampler; use always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
    )]
    Sampler(String),
    #[error("OTEL_TRACES_SAMPLER_ARG=`{0}` is not a ratio between 0 and 1")]
    Ratio(String),
}

impl TraceSettings {
    /// Reads the variables through `var`. `None`: traces are off, because neither
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` nor `OTEL_EXPORTER_OTLP_ENDPOINT` is set or
    /// `OTEL_SDK_DISABLED` is `true`. Bad values are refused rather than guessed at. The
    /// endpoints, `OTEL_EXPORTER_OTLP_HEADERS`, `_TIMEOUT`, `_COMPRESSION`, `OTEL_BSP_*` and
    /// `OTEL_RESOURCE_ATTRIBUTES` are read by the OpenTelemetry SDK and exporter themselves.
    pub fn from_env(
        service: &str,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<TraceSettings>, TraceConfigError> {
        let set = |name: &str| {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
            && set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        {
            return Ok(None);
        }
        for name in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(value) = set(name) {
                if value != "http/protobuf" {
                    return Err(TraceConfigError::Protocol { var: name, value });
                }
                break;
            }
        }
        let ratio = || match set("OTEL_TRACES_SAMPLER_ARG") {
            None => Ok(1.0),
            Some(arg) => arg
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or(TraceConfigError::Ratio(arg)),
        };
        let sampler = match set("OTEL_TRACES_SAMPLER").as_deref() {
            None | Some("parentbased_always_on") => {
                SamplerChoice::ParentBased(Box::new(SamplerChoice::AlwaysOn))
            }
            Some("always_on") => SamplerChoice::AlwaysOn,
            Some("always_off") => SamplerChoice::AlwaysOff,
            Some("traceidratio") => SamplerChoice::TraceIdRatio(ratio()?),
            Some("parentbased_always_off") => {
                SamplerChoice::ParentBased(Box::new(SamplerChoice::AlwaysOff))
            }
            Some("parentbased_traceidratio") => {
                SamplerChoice::ParentBased(Box::new(SamplerChoice::TraceIdRatio(ratio()?)))
            }
            Some(other) => return Err(TraceConfigError::Sampler(other.to_owned())),
        };
        // OTEL_SERVICE_NAME first, then a `service.name` in OTEL_RESOURCE_ATTRIBUTES, then the
        // service's own name.
        let service_name = set("OTEL_SERVICE_NAME")
            .or_else(|| {
                set("OTEL_RESOURCE_ATTRIBUTES")?.split(',').find_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    (k.trim() == "service.name" && !v.trim().is_empty())
                        .then(|| v.trim().to_owned())
                })
            })
            .unwrap_or_else(|| service.to_owned());
        Ok(Some(TraceSettings {
            service_name,
            sampler,
        }))
    }
}

/// What [`start`] installed; [`Telemetry::shutdown`] flushes it.
#[must_use = "shut down on the stop path so the last spans are exported"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still queued, waiting at most a few seconds.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let flush = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_WAIT));
        match tokio::time::timeout(FLUSH_WAIT + Duration::from_secs(1), flush).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the last spans were not all exported"),
            _ => tracing::warn!("exporting the last spans did not finish in time"),
        }
    }
}

/// Installs the global subscriber with logs only; `RUST_LOG` overrides the configured level.
/// Safe to call twice. For a process that exports no traces (a test harness).
pub fn init(service: &'static str, log: &LogSettings) {
    if install(log, None).is_ok() {
        initialised(service, false);
    }
}

/// Installs the global subscriber: logs, and traces when the `OTEL_*` variables ask for them.
/// Fails on unusable `OTEL_*` values or an exporter that cannot be built.
pub fn start(service: &'static str, log: &LogSettings) -> anyhow::Result<Telemetry> {
    let Some(traces) = TraceSettings::from_env(service, |k| std::env::var(k).ok())? else {
        init(service, log);
        return Ok(Telemetry { provider: None });
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the OTLP exporter: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(traces.sampler.sampler())
        .with_resource(
            Resource::builder()
                .with_service_name(traces.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer(service);
    if install(log, Some(tracer)).is_ok() {
        waybill_trace::switch_on();
        initialised(service, true);
    }
    Ok(Telemetry {
        provider: Some(provider),
    })
}

fn initialised(service: &'static str, traces: bool) {
    tracing::info!(
        service,
        version = env!("CARGO_PKG_VERSION"),
        traces,
        "logging initialised"
    );
}

fn install(
    log: &LogSettings,
    tracer: Option<opentelemetry_sdk::trace::Tracer>,
) -> Result<(), tracing_subscriber::util::TryInitError> {
    match tracer {
        Some(tracer) => traced(log, tracer, std::io::stdout).try_init(),
        None => logs_only(log),
    }
}

/// The filter of log lines: the configured level, or `RUST_LOG`.
fn log_filter(log: &LogSettings) -> EnvFilter {
    // actix-http logs every malformed request from a client at ERROR; that is the client's
    // problem, and answered with a 400, so it would only page someone for nothing.
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{},actix_http::h1::dispatcher=off", log.level)))
}

/// Logs alone, the level filtering globally: what is not logged is not even built.
fn logs_only(log: &LogSettings) -> Result<(), tracing_subscriber::util::TryInitError> {
    let registry = tracing_subscriber::registry().with(log_filter(log));
    if log.format == "pretty" {
        registry.with(fmt::layer().with_target(false)).try_init()
    } else {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init()
    }
}

/// Logs to `writer` in the configured format with the ids of their span, and spans to
/// `tracer`. Each has its own filter: Waybill's spans are exported whatever the log level, and
/// of events only warnings and errors, which become events of the span they happen in.
fn traced<W>(
    log: &LogSettings,
    tracer: opentelemetry_sdk::trace::Tracer,
    writer: W,
) -> impl Subscriber + Send + Sync + 'static
where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let installed = Installed::default();
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(
            filter_fn(|meta| {
                if meta.is_span() {
                    // Waybill's own spans only: a library's are not part of the contract.
                    meta.target().starts_with("waybill")
                        && meta.target() != crate::http::OPERATIONS_TARGET
                } else {
                    *meta.level() <= tracing::Level::WARN
                }
            })
            .with_max_level_hint(tracing::level_filters::LevelFilter::INFO),
        );
    let lines = if log.format == "pretty" {
        let format = fmt::format().with_target(false);
        fmt::layer()
            .with_writer(writer)
            .event_format(TraceIds::<Full>::new(format, installed.clone()))
            .and_then(installed)
            .with_filter(log_filter(log))
            .boxed()
    } else {
        let format = fmt::format()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false);
        fmt::layer()
            .with_writer(writer)
            .fmt_fields(JsonFields::new())
            .event_format(TraceIds::<Json>::new(format, installed.clone()))
            .and_then(installed)
            .with_filter(log_filter(log))
            .boxed()
    };
    tracing_subscriber::registry().with(otel).with(lines)
}

/// Remembers the dispatcher the subscriber is installed in: the log format looks a span's
/// OpenTelemetry context up through it, the current one being out of reach while an event is
/// handled.
#[derive(Clone, Default)]
struct Installed(Arc<OnceLock<WeakDispatch>>);

impl<S: Subscriber> Layer<S> for Installed {
    fn on_register_dispatch(&self, dispatch: &Dispatch) {
        let _ = self.0.set(dispatch.downgrade());
    }
}

/// An event format that adds the current span's `trace_id` and `span_id` to each line: top-level
/// fields of a JSON line, appended to a pretty one.
struct TraceIds<K> {
    inner: fmt::format::Format<K>,
    installed: Installed,
}

impl<K> TraceIds<K> {
    fn new(inner: fmt::format::Format<K>, installed: Installed) -> Self {
        Self { inner, installed }
    }

    /// The trace and span id of the span the event happens in, or of its nearest exported
    /// ancestor. Looked up in the registry itself, not through `ctx`: the log lines' own filter
    /// hides the INFO spans when the log level is above INFO, and a library's span in between
    /// would hide Waybill's parent.
    fn ids(&self, event: &Event<'_>) -> Option<(String, String)> {
        let dispatch = self.installed.0.get()?.upgrade()?;
        let registry = dispatch.downcast_ref::<Registry>()?;
        let start = match event.parent() {
            Some(id) => id.clone(),
            None if event.is_contextual() => dispatch.current_span().id()?.clone(),
            None => return None,
        };
        let mut span = registry.span(&start)?;
        loop {
            if let Some(cx) = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch) {
                let sc = cx.span().span_context().clone();
                if sc.is_valid() {
                    return Some((sc.trace_id().to_string(), sc.span_id().to_string()));
                }
            }
            span = span.parent()?;
        }
    }
}

/// How a format puts the ids on a line it wrote.
trait WithIds {
    fn with_ids(line: &str, trace_id: &str, span_id: &str, writer: Writer<'_>) -> std::fmt::Result;
}

impl WithIds for Json {
    /// As the first fields of the object.
    fn with_ids(
        line: &str,
        trace_id: &str,
        span_id: &str,
        mut writer: Writer<'_>,
    ) -> std::fmt::Result {
        match line.strip_prefix('{') {
            Some(rest) => {
                let sep = if rest.starts_with('}') { "" } else { "," };
                write!(
                    writer,
                    "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"{sep}{rest}"
                )
            }
            None => writer.write_str(line),
        }
    }
}

impl WithIds for Full {
    /// Appended to the line.
    fn with_ids(
        line: &str,
        trace_id: &str,
        span_id: &str,
        mut writer: Writer<'_>,
    ) -> std::fmt::Result {
        let body = line.trim_end_matches('\n');
        writeln!(writer, "{body} trace_id={trace_id} span_id={span_id}")
    }
}

impl<S, N, K> FormatEvent<S, N> for TraceIds<K>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    K: WithIds,
    fmt::format::Format<K>: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let Some((trace_id, span_id)) = self.ids(event) else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        K::with_ids(&line, &trace_id, &span_id, writer)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::{collections::HashMap, sync::Mutex};

    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<Option<TraceSettings>, TraceConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TraceSettings::from_env("waybill-api", |k| vars.get(k).cloned())
    }

    const ENDPOINT: (&str, &str) = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");

    /// Log output kept in memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Logs a line inside a span and one outside with traces on, in `format`; returns the
    /// lines and the span's trace and span id.
    fn logged(format: &str) -> (Vec<String>, String, String) {
        logged_at(format, "info", false)
    }

    /// [`logged`] at a log level of `level`, the lines being warnings; with `library`, inside a
    /// library's span inside the traced one.
    fn logged_at(format: &str, level: &str, library: bool) -> (Vec<String>, String, String) {
        let provider = SdkTracerProvider::builder().build();
        let lines = Lines::default();
        let log = LogSettings {
            format: format.into(),
            level: level.into(),
        };
        let writer = lines.clone();
        let sub = traced(&log, provider.tracer("test"), move || writer.clone());
        let (trace_id, span_id) = tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("work");
            let ids = {
                let _entered = span.enter();
                // A library's span between the line and Waybill's is skipped over.
                let library = if library {
                    tracing::info_span!(target: "h2", "library")
                } else {
                    tracing::Span::none()
                };
                let _library = library.enter();
                tracing::warn!("inside");
                let cx = span.context();
                let sc = cx.span().span_context().clone();
                (sc.trace_id().to_string(), sc.span_id().to_string())
            };
            tracing::warn!("outside");
            ids
        });
        let out = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        (out.lines().map(str::to_owned).collect(), trace_id, span_id)
    }

    #[test]
    fn json_lines_in_a_span_carry_its_ids_at_the_top_level() {
        let (lines, trace_id, span_id) = logged("json");
        let lines: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0]["message"], "inside");
        assert_eq!(lines[0]["trace_id"], trace_id.as_str());
        assert_eq!(lines[0]["span_id"], span_id.as_str());
        assert_eq!(lines[0]["span"]["name"], "work");
        assert_eq!(lines[1]["message"], "outside");
        assert!(lines[1].get("trace_id").is_none());
    }

    #[test]
    fn lines_carry_the_ids_of_the_nearest_traced_span() {
        // At info the library's span exists, untraced, and the walk goes past it; at warn the
        // log lines' filter hides every span.
        for (format, level) in [
            ("json", "warn"),
            ("pretty", "warn"),
            ("json", "info"),
            ("pretty", "info"),
        ] {
            let (lines, trace_id, span_id) = logged_at(format, level, true);
            assert_eq!(lines.len(), 2, "{lines:?}");
            assert!(
                lines[0].contains(&trace_id) && lines[0].contains(&span_id),
                "{}",
                lines[0]
            );
            assert!(!lines[1].contains("trace_id"), "{}", lines[1]);
        }
    }

    #[test]
    fn pretty_lines_in_a_span_end_with_its_ids() {
        let (lines, trace_id, span_id) = logged("pretty");
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("inside"));
        assert!(
            lines[0].ends_with(&format!(" trace_id={trace_id} span_id={span_id}")),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains("outside") && !lines[1].contains("trace_id="));
    }

    #[test]
    fn traces_are_off_without_an_endpoint_or_when_disabled() {
        assert_eq!(read(&[]), Ok(None));
        assert_eq!(read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]), Ok(None));
        assert_eq!(read(&[ENDPOINT, ("OTEL_SDK_DISABLED", "TRUE")]), Ok(None));
        // Off even with values that would be refused: nothing is installed.
        assert_eq!(read(&[("OTEL_TRACES_SAMPLER", "sometimes")]), Ok(None));
        assert!(
            read(&[ENDPOINT, ("OTEL_SDK_DISABLED", "false")])
                .unwrap()
                .is_some()
        );
        let signal = [(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://collector:4318/v1/traces",
        )];
        assert!(read(&signal).unwrap().is_some());
    }

    #[test]
    fn the_default_is_parent_based_always_on_under_the_services_own_name() {
        let s = read(&[ENDPOINT]).unwrap().unwrap();
        assert_eq!(s.service_name, "waybill-api");
        assert_eq!(
            s.sampler,
            SamplerChoice::ParentBased(Box::new(SamplerChoice::AlwaysOn))
        );
    }

    #[test]
    fn the_service_name_comes_from_the_variable_then_the_resource_attributes() {
        let attrs = (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=prod, service.name=hooks",
        );
        let s = read(&[ENDPOINT, attrs]).unwrap().unwrap();
        assert_eq!(s.service_name, "hooks");
        let s = read(&[ENDPOINT, attrs, ("OTEL_SERVICE_NAME", "edge")])
            .unwrap()
            .unwrap();
        assert_eq!(s.service_name, "edge");
    }

    #[test]
    fn samplers_and_their_ratio() {
        let with = |sampler: &str, arg: Option<&str>| {
            let mut vars = vec![ENDPOINT, ("OTEL_TRACES_SAMPLER", sampler)];
            if let Some(a) = arg {
                vars.push(("OTEL_TRACES_SAMPLER_ARG", a));
            }
            read(&vars).map(|s| s.unwrap().sampler)
        };
        assert_eq!(with("always_on", None), Ok(SamplerChoice::AlwaysOn));
        assert_eq!(with("always_off", None), Ok(SamplerChoice::AlwaysOff));
        assert_eq!(
            with("traceidratio", Some("0.25")),
            Ok(SamplerChoice::TraceIdRatio(0.25))
        );
        assert_eq!(
            with("traceidratio", None),
            Ok(SamplerChoice::TraceIdRatio(1.0))
        );
        assert_eq!(
            with("parentbased_traceidratio", Some("0")),
            Ok(SamplerChoice::ParentBased(Box::new(
                SamplerChoice::TraceIdRatio(0.0)
            )))
        );
        assert_eq!(
            with("parentbased_always_off", None),
            Ok(SamplerChoice::ParentBased(Box::new(
                SamplerChoice::AlwaysOff
            )))
        );
        assert_eq!(
            with("traceidratio", Some("1.5")),
            Err(TraceConfigError::Ratio("1.5".into()))
        );
        assert_eq!(
            with("traceidratio", Some("half")),
            Err(TraceConfigError::Ratio("half".into()))
        );
        let bad = with("jaeger_remote", None).unwrap_err();
        assert!(bad.to_string().contains("parentbased_always_on"), "{bad}");
    }

    #[test]
    fn only_http_protobuf_is_exported() {
        assert!(read(&[ENDPOINT, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]).is_ok());
        let err = read(&[ENDPOINT, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "OTEL_EXPORTER_OTLP_PROTOCOL=`grpc` is not supported; supported: http/protobuf"
        );
        // The traces variable wins over the general one.
        let err = read(&[
            ENDPOINT,
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ])
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        );
    }
}
