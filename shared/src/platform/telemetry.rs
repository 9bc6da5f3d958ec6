//! Tracing, initialised once per process: human-readable by default, JSON lines with
//! `LOG_FORMAT=json`; the level from `RUST_LOG` (default `info`).

use tracing::Subscriber;
use tracing_subscriber::{
    EnvFilter, Layer, fmt, fmt::MakeWriter, prelude::*, registry::LookupSpan,
};

pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    // try_init: a second call (tests build many apps in one process) is a no-op.
    let _ = if json {
        registry.with(json_layer(std::io::stdout)).try_init()
    } else {
        registry.with(fmt::layer()).try_init()
    };
}

/// JSON lines, each with the fields of the span it was logged in (`span`) and of
/// every span around it (`spans`): a request's `request_id`, a job's `job_id`.
pub fn json_layer<S, W>(writer: W) -> impl Layer<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(true)
        .with_writer(writer)
}

/// Cancels `shutdown` on SIGTERM or Ctrl-C: the one place processes learn to stop.
pub async fn stop_signal(shutdown: tokio_util::sync::CancellationToken) {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("stop signal received; shutting down");
    shutdown.cancel();
}
