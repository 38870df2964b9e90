//! Logs: `tracing` to stderr, one line per event, each carrying rank, role and host.
//!
//! `[rank-launch 12:00:01.234 rank=3 role=GEN_0 host=node7] INFO started child="task" pid=42`
//!
//! The identity is set once the rank is known; lines before that say `rank=?`. The filter comes
//! from `RANK_LAUNCH_LOG` (`RUST_LOG` syntax), default `info`. Nothing here ever formats the
//! environment: secrets live there.
//!
//! Lines are not written here: each goes whole into stderr's queue ([`crate::stream`]), which
//! the supervisor writes when stderr can take it, so a log line never blocks signal handling;
//! the binary's edge flushes what is left, bounded, at exit.

use std::fmt;
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The variable that sets the log filter.
pub const LOG_VAR: &str = "RANK_LAUNCH_LOG";

static IDENTITY: RwLock<String> = RwLock::new(String::new());

/// Sets the `rank=… role=… host=…` part of every later line (`?` where not known yet).
pub fn set_identity(rank: &str, role: &str, host: &str) {
    if let Ok(mut identity) = IDENTITY.write() {
        *identity = format!("rank={rank} role={role} host={host}");
    }
}

struct Format;

impl<S, N> FormatEvent<S, N> for Format
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let secs = since_epoch.as_secs() % 86_400;
        let identity = IDENTITY.read().map(|i| i.clone()).unwrap_or_default();
        let identity = if identity.is_empty() {
            "rank=? role=? host=?"
        } else {
            identity.as_str()
        };
        write!(
            writer,
            "[rank-launch {:02}:{:02}:{:02}.{:03} {identity}] {} ",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            since_epoch.subsec_millis(),
            event.metadata().level()
        )?;
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Collects one formatted event and queues it whole when dropped.
#[derive(Default)]
pub struct LineWriter(Vec<u8>);

impl std::io::Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            crate::stream::push_log(&self.0);
        }
    }
}

struct Queued;

impl<'a> MakeWriter<'a> for Queued {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter::default()
    }
}

/// Installs the subscriber. Bad filter text falls back to `info` with a warning.
pub fn init(filter: Option<&str>) {
    let (filter, bad) = match filter {
        None => (EnvFilter::new("info"), None),
        Some(text) => match EnvFilter::try_new(text) {
            Ok(f) => (f, None),
            Err(_) => (EnvFilter::new("info"), Some(text.to_string())),
        },
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Queued)
        .event_format(Format)
        .try_init();
    if let Some(text) = bad {
        tracing::warn!(
            "`{LOG_VAR}` is `{text}`: expected a filter like `info` or `rank_launch=debug`; using `info`"
        );
    }
}
