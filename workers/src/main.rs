//! `commcenter-workers`: runs the job handlers until SIGTERM or Ctrl-C, then drains.

use commcenter_shared::{platform::settings::Settings, platform::telemetry};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    telemetry::init(settings.telemetry.json);
    let shutdown = CancellationToken::new();
    tokio::spawn(telemetry::stop_signal(shutdown.clone()));
    commcenter_workers::process::run(settings, shutdown).await
}
