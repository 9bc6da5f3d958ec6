//! A TCP proxy in front of RabbitMQ or PostgreSQL. `cut()` drops every open connection
//! and refuses new ones until `restore()`: an outage for one test only.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub struct TcpProxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    stop: CancellationToken,
}

struct ProxyState {
    up: bool,
    /// Cancelled on `cut()`: ends every connection opened before it.
    generation: CancellationToken,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(Mutex::new(ProxyState {
            up: true,
            generation: CancellationToken::new(),
        }));
        let stop = CancellationToken::new();
        let (accept_state, accept_stop) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = accept_stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut client, _)) = accepted else {
                    continue;
                };
                let (up, generation) = {
                    let s = accept_state.lock().expect("proxy state");
                    (s.up, s.generation.clone())
                };
                if !up {
                    drop(client);
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        () = generation.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
        Self { addr, state, stop }
    }

    /// A `DATABASE_URL` for `database` that goes through this proxy.
    pub fn database_url(&self, database: &str) -> String {
        format!("postgres://root@{}/{database}", self.addr)
    }

    /// The `AMQP_URL` that goes through this proxy.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    pub fn cut(&self) {
        let mut s = self.state.lock().expect("proxy state");
        s.up = false;
        s.generation.cancel();
        s.generation = CancellationToken::new();
    }

    pub fn restore(&self) {
        self.state.lock().expect("proxy state").up = true;
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.state.lock().map(|s| s.generation.cancel()).ok();
    }
}
