//! The real `commcenter-api` binary as a bench's running child: started with the
//! settings every bench api needs (its own database URL and queue prefix, a free port,
//! quiet logs) and the bench's own on top, ready when `start` returns. Shared by the
//! `websocket` and `hardening` bench binaries (with `child_api` and `procfs`).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::Context;
use tokio::process::Command;

use crate::{child_api, procfs};

pub struct ApiProcess {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub addr: std::net::SocketAddr,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl ApiProcess {
    /// Starts `bin` on `database_url` and `prefix` with `settings` added, and waits
    /// until it is ready.
    pub async fn start(
        bin: &Path,
        database_url: String,
        prefix: &str,
        secret: &str,
        (tiers, delivery_limit): (&str, u32),
        settings: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let addr = child_api::free_port()?;
        let log = std::env::temp_dir().join(format!("{prefix}-{}.log", addr.port()));
        let log_file = std::fs::File::create(&log)?;
        let mut child = Command::new(bin)
            .env_clear()
            .envs([
                ("DATABASE_URL", database_url),
                ("AMQP_URL", commcenter_tests::broker_url()),
                ("QUEUE_PREFIX", prefix.to_owned()),
                ("API_ADDR", addr.to_string()),
                ("JWT_SECRET", secret.to_owned()),
                ("RETRY_TIERS", tiers.to_owned()),
                ("DELIVERY_LIMIT", delivery_limit.to_string()),
                ("RUST_LOG", "warn".to_owned()),
                (
                    "UPLOAD_DIR",
                    std::env::temp_dir().join(prefix).display().to_string(),
                ),
            ])
            .envs(settings.iter().map(|(k, v)| (*k, *v)))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("the api exited at once")?;
        child_api::wait_ready(Some(&mut child), &format!("http://{addr}")).await?;
        Ok(Self {
            child,
            pid,
            addr,
            log,
        })
    }

    pub fn rss_mib(&self) -> anyhow::Result<f64> {
        Ok(procfs::kib_to_mib(procfs::status_kib(self.pid, "VmRSS:")?))
    }

    pub fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid)).map_or(0, Iterator::count)
    }

    /// Stops it (SIGTERM, then SIGKILL) and removes its log.
    pub async fn stop(self) {
        child_api::stop(self.child).await;
        std::fs::remove_file(&self.log).ok();
    }
}
