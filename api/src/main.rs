//! `commcenter-api`: the HTTP and WebSocket API, the outbox relay and the notifier.

use commcenter_api::App;
use commcenter_shared::{platform::settings::Settings, platform::telemetry};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    telemetry::init(settings.telemetry.json);
    let app = App::build(settings).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(telemetry::stop_signal(shutdown.clone()));
    app.run(shutdown).await
}
