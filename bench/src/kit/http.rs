//! A minimal HTTP/1.1 client: one keep-alive connection, reconnected when it breaks.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode, client::conn::http1};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub struct Conn {
    addr: SocketAddr,
    host: String,
    sender: Option<http1::SendRequest<Empty<Bytes>>>,
    pub reconnects: u64,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Conn {
        Conn {
            addr,
            host: addr.to_string(),
            sender: None,
            reconnects: 0,
        }
    }

    async fn connect(&mut self) -> anyhow::Result<&mut http1::SendRequest<Empty<Bytes>>> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("connecting to {}", self.addr))?;
            stream.set_nodelay(true)?;
            let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            if self.sender.is_some() {
                self.reconnects += 1;
            }
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("connected"))
    }

    /// GET `path`; the whole body.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
        let result = self.get_once(path).await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn get_once(&mut self, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
        let host = self.host.clone();
        let sender = self.connect().await?;
        sender.ready().await?;
        let request = Request::get(path)
            .header(hyper::header::HOST, host)
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// GET with a timeout.
    pub async fn get_within(
        &mut self,
        path: &str,
        timeout: Duration,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        match tokio::time::timeout(timeout, self.get(path)).await {
            Ok(result) => result,
            Err(_) => {
                self.sender = None;
                anyhow::bail!("GET {path}: no answer within {timeout:?}")
            }
        }
    }
}
