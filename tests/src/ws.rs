//! A WebSocket client for tests: connect with a token, read JSON frames.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The `connected` frame (its `seq` is where a later `?since=` resumes).
    pub hello: Value,
}

impl WsClient {
    /// As [`Self::connect`], but `None` when the server refuses the upgrade or closes
    /// before its `connected` frame (as during a database outage).
    pub async fn try_connect(url: &str) -> Option<Self> {
        let (stream, _) = tokio_tungstenite::connect_async(url).await.ok()?;
        let mut client = Self {
            stream,
            hello: Value::Null,
        };
        let hello = client.next_json(Duration::from_secs(5)).await?;
        (hello["type"] == "connected").then(|| {
            client.hello = hello;
            client
        })
    }

    /// Connects and waits for the `connected` frame, after which events are delivered.
    pub async fn connect(url: &str) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let (stream, _) = tokio_tungstenite::connect_async(url).await?;
        let mut client = Self {
            stream,
            hello: Value::Null,
        };
        let hello = client
            .next_json(Duration::from_secs(5))
            .await
            .expect("a connected frame");
        assert_eq!(hello["type"], "connected", "first frame: {hello}");
        client.hello = hello;
        Ok(client)
    }

    /// Sends a JSON text frame.
    pub async fn send(&mut self, frame: &Value) {
        self.send_raw(Message::Text(frame.to_string().into())).await;
    }

    /// Sends any frame (binary, oversized text, …).
    pub async fn send_raw(&mut self, message: Message) {
        self.stream.send(message).await.expect("the frame is sent");
    }

    /// Sends any frame, answering whether it went (false once the server has closed).
    pub async fn try_send_raw(&mut self, message: Message) -> bool {
        self.stream.send(message).await.is_ok()
    }

    /// The next JSON text frame, answering pings; `None` on timeout or close.
    pub async fn next_json(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()??
                .ok()?;
            match message {
                Message::Text(text) => return serde_json::from_str(&text).ok(),
                Message::Ping(payload) => {
                    self.stream.send(Message::Pong(payload)).await.ok();
                }
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// The next frame of the given `type`, skipping others.
    pub async fn next_of_type(&mut self, kind: &str, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self.next_json(left).await?;
            if frame["type"] == kind {
                return Some(frame);
            }
        }
    }

    /// Every frame that arrives within `window`.
    pub async fn drain(&mut self, window: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + window;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return frames;
            }
            match self.next_json(left).await {
                Some(frame) => frames.push(frame),
                None => return frames,
            }
        }
    }

    /// Reads raw frames until the server closes; returns the close code.
    pub async fn close_code(&mut self, timeout: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()?
            {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    }

    pub fn into_inner(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.stream
    }
}
