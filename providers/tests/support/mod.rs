//! Tiny provider servers on loopback for the client tests, and settings pointing at them.

#![allow(dead_code)] // Each test file uses its part.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::Router;
use commcenter_providers::settings::{GmailSettings, RingCentralSettings, Secret};

/// Serves `router` on a loopback port; the base URL.
pub async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}")
}

/// A loopback URL where nothing listens.
pub async fn refused_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    format!("http://{address}")
}

pub fn ringcentral_settings(server_url: &str, timeout: Duration) -> RingCentralSettings {
    RingCentralSettings {
        server_url: server_url.into(),
        client_id: "app".into(),
        client_secret: Secret::new("app-secret"),
        jwt: Secret::new("user-jwt"),
        from_number: "+16505550100".into(),
        webhook_token: Secret::new("hook"),
        timeout,
        call_log_import_every: None,
    }
}

pub fn gmail_settings(base: &str, timeout: Duration) -> GmailSettings {
    GmailSettings {
        client_id: "google-client".into(),
        client_secret: Secret::new("google-secret"),
        token_url: format!("{base}/token"),
        api_url: base.into(),
        refresh_token: Secret::new("mailbox-refresh"),
        sender: "team@example.com".into(),
        timeout,
        poll_every: None,
    }
}

/// A counter shared with handlers.
#[derive(Clone, Default)]
pub struct Count(Arc<AtomicUsize>);

impl Count {
    pub fn bump(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// When requests arrived.
#[derive(Clone, Default)]
pub struct Arrivals(Arc<Mutex<Vec<Instant>>>);

impl Arrivals {
    pub fn record(&self) {
        self.0.lock().expect("arrivals").push(Instant::now());
    }
    pub fn all(&self) -> Vec<Instant> {
        self.0.lock().expect("arrivals").clone()
    }
}
