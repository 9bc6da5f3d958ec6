//! `commcenter-fakes`: runs the fake RingCentral and Gmail on fixed loopback ports so the
//! whole system can be tried without provider accounts. Prints the environment that
//! points Commcenter at them; stops on Ctrl-C or SIGTERM.

use std::net::SocketAddr;

use anyhow::Context;
use commcenter_fakes::{FakeGmail, FakeRingCentral, GmailConfig, RingCentralConfig};

/// A variable's value, or the default when unset.
fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn addr(name: &str, default: &str) -> anyhow::Result<SocketAddr> {
    env_or(name, default)
        .parse()
        .with_context(|| format!("{name} must be HOST:PORT"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let rc_defaults = RingCentralConfig::default();
    let ringcentral = FakeRingCentral::start(RingCentralConfig {
        client_id: env_or("RINGCENTRAL_CLIENT_ID", &rc_defaults.client_id),
        client_secret: env_or("RINGCENTRAL_CLIENT_SECRET", &rc_defaults.client_secret),
        jwt: env_or("RINGCENTRAL_JWT", &rc_defaults.jwt),
        from_number: env_or("RINGCENTRAL_FROM_NUMBER", &rc_defaults.from_number),
        addr: Some(addr("FAKE_RINGCENTRAL_ADDR", "127.0.0.1:9101")?),
        ..rc_defaults
    })
    .await?;
    let gmail_defaults = GmailConfig::default();
    let gmail = FakeGmail::start(GmailConfig {
        client_id: env_or("GOOGLE_CLIENT_ID", &gmail_defaults.client_id),
        client_secret: env_or("GOOGLE_CLIENT_SECRET", &gmail_defaults.client_secret),
        refresh_token: env_or("GMAIL_REFRESH_TOKEN", &gmail_defaults.refresh_token),
        sender: env_or("GMAIL_SENDER", &gmail_defaults.sender),
        addr: Some(addr("FAKE_GMAIL_ADDR", "127.0.0.1:9102")?),
        ..gmail_defaults
    })
    .await?;

    let rc = ringcentral.config();
    let google = gmail.config();
    let environment = [
        ("RINGCENTRAL_SERVER_URL", ringcentral.url()),
        ("RINGCENTRAL_CLIENT_ID", rc.client_id.clone()),
        ("RINGCENTRAL_CLIENT_SECRET", rc.client_secret.clone()),
        ("RINGCENTRAL_JWT", rc.jwt.clone()),
        ("RINGCENTRAL_FROM_NUMBER", rc.from_number.clone()),
        ("GOOGLE_CLIENT_ID", google.client_id.clone()),
        ("GOOGLE_CLIENT_SECRET", google.client_secret.clone()),
        ("GOOGLE_TOKEN_URL", gmail.token_url()),
        ("GMAIL_API_URL", gmail.url()),
        ("GMAIL_REFRESH_TOKEN", google.refresh_token.clone()),
        ("GMAIL_SENDER", google.sender.clone()),
    ];
    let mut lines = String::from("# Fake providers are up. Point Commcenter at them with:\n");
    for (name, value) in environment {
        lines.push_str(&format!("{name}={value}\n"));
    }
    lines.push_str(
        "# Control APIs: GET/POST {url}/_fake/... (see the fakes crate's documentation)\n",
    );
    // The point of this binary is to print these lines for the user to paste.
    #[allow(clippy::print_stdout)]
    {
        print!("{lines}");
    }

    shutdown_signal().await?;
    tracing::info!("stopping the fake providers");
    tokio::join!(ringcentral.shutdown(), gmail.shutdown());
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
