//! Log output of the `ferrovs` binary: human-readable text (colours only on a
//! terminal) or one JSON object per line for log shippers (`--log-format
//! json`: `timestamp`, `level`, `target`, `fields`, and `spans` when the
//! event happened inside spans).
//!
//! The JSON formatter is written here on top of `serde_json` rather than
//! with tracing-subscriber's `json` feature, which would pull in
//! tracing-serde for the handful of lines below.

use serde_json::{Map, Value};
use std::fmt;
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-01-01T00:00:00.000000Z  INFO ferrovs: message key=value`; ANSI
    /// colours only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber writing to stderr; the level filter comes
/// from `FERROVS_LOG` (default `info`). Colour escapes only when stderr is a
/// terminal (not in journald or log files).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERROVS_LOG").unwrap_or_else(|_| "info".into());
    let sub = subscriber(format, filter, std::io::stderr, std::io::stderr().is_terminal());
    // Only fails when a subscriber is already installed (a second init).
    let _ = tracing::subscriber::set_global_default(sub);
}

/// The subscriber [`init`] installs, with any writer (tests read it back).
pub fn subscriber<W>(
    format: LogFormat,
    filter: tracing_subscriber::EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match format {
        LogFormat::Text => Box::new(b.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(b.with_ansi(false).event_format(JsonLines).finish()),
    }
}

/// Formats each event as one line of JSON.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonLines;

/// Collects an event's fields; `message` is the format string's result.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, f: &Field, v: f64) {
        self.0.insert(f.name().into(), serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number));
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_str(&mut self, f: &Field, v: &str) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_error(&mut self, f: &Field, v: &(dyn std::error::Error + 'static)) {
        self.0.insert(f.name().into(), v.to_string().into());
    }
    fn record_debug(&mut self, f: &Field, v: &dyn fmt::Debug) {
        self.0.insert(f.name().into(), format!("{v:?}").into());
    }
}

/// The JSON object for one event (without spans), for [`JsonLines`] and tests.
pub fn event_object(timestamp: &str, event: &Event<'_>) -> Map<String, Value> {
    let meta = event.metadata();
    let mut fields = Map::new();
    event.record(&mut JsonVisitor(&mut fields));
    let mut obj = Map::new();
    obj.insert("timestamp".into(), timestamp.into());
    obj.insert("level".into(), meta.level().as_str().into());
    obj.insert("target".into(), meta.target().into());
    obj.insert("fields".into(), Value::Object(fields));
    obj
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        let mut obj = event_object(&ts, event);
        if let Some(scope) = ctx.event_scope() {
            // Span fields as the text formatter rendered them ("a=1 b=2").
            let spans: Vec<Value> = scope
                .from_root()
                .map(|span| {
                    let mut s = Map::new();
                    s.insert("name".into(), span.name().into());
                    if let Some(f) = span.extensions().get::<FormattedFields<N>>() {
                        if !f.is_empty() {
                            s.insert("fields".into(), f.fields.as_str().into());
                        }
                    }
                    Value::Object(s)
                })
                .collect();
            obj.insert("spans".into(), Value::Array(spans));
        }
        let line = serde_json::to_string(&obj).map_err(|_| fmt::Error)?;
        writeln!(w, "{line}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// A writer into a shared buffer, to read back what the subscriber wrote.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture(format: LogFormat, ansi: bool, f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = subscriber(format, "info".into(), move || w.clone(), ansi);
        tracing::subscriber::with_default(sub, f);
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_is_one_object_per_line_with_level_target_fields() {
        let out = capture(LogFormat::Json, true, || {
            let span = tracing::info_span!("worker", id = 3);
            span.in_scope(
                || tracing::warn!(target: "ferrovs::t", cores = ?[1, 2], n = 7u64, ok = true, "pinned \"x\"\nnext"),
            );
            tracing::info!(target: "ferrovs::t", ratio = 1.5, "second");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        let v: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["target"], "ferrovs::t");
        assert_eq!(v["fields"]["message"], "pinned \"x\"\nnext");
        assert_eq!(v["fields"]["cores"], "[1, 2]");
        assert_eq!(v["fields"]["n"], 7);
        assert_eq!(v["fields"]["ok"], true);
        assert_eq!(v["spans"][0]["name"], "worker");
        assert_eq!(v["spans"][0]["fields"], "id=3");
        let ts = v["timestamp"].as_str().unwrap();
        assert!(ts.len() >= 20 && ts.ends_with('Z') && &ts[4..5] == "-" && &ts[10..11] == "T", "{ts}");
        let v: Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v["fields"]["ratio"], 1.5);
        assert!(v.get("spans").is_none());
    }

    #[test]
    fn text_has_escape_codes_only_on_a_terminal() {
        let plain = capture(LogFormat::Text, false, || tracing::error!(code = 5, "failed"));
        assert!(plain.contains("ERROR") && plain.contains("failed") && plain.contains("code=5"), "{plain}");
        assert!(!plain.contains('\x1b'), "{plain:?}");
        let tty = capture(LogFormat::Text, true, || tracing::error!(code = 5, "failed"));
        assert!(tty.contains('\x1b'), "{tty:?}");
        // JSON never carries escapes, whatever stderr is.
        let json = capture(LogFormat::Json, true, || tracing::error!(code = 5, "failed"));
        assert!(!json.contains('\x1b') && json.starts_with('{'), "{json:?}");
    }
}
