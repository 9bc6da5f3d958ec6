//! `cc-node api|workers`: the api or a workers process, exactly as `commcenter-api` and
//! `commcenter-workers` run (the same library entry points, settings from the
//! environment), built into this package so its tests can run them as processes and
//! kill them with SIGKILL (cargo hands a package's tests only its own binaries).

use commcenter_shared::{platform::settings::Settings, platform::telemetry};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let role = std::env::args().nth(1).unwrap_or_default();
    let settings = Settings::from_env()?;
    telemetry::init(settings.telemetry.json);
    let shutdown = CancellationToken::new();
    tokio::spawn(telemetry::stop_signal(shutdown.clone()));
    match role.as_str() {
        "api" => {
            commcenter_api::App::build(settings)
                .await?
                .run(shutdown)
                .await
        }
        "workers" => commcenter_workers::process::run(settings, shutdown).await,
        other => anyhow::bail!("usage: cc-node api|workers (not {other:?})"),
    }
}
