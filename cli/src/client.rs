//! Talking to a running daemon over its HTTP API.

use std::io::Write;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use serde::de::DeserializeOwned;

/// A daemon's API.
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Client {
    /// Connects to the daemon at `base` (`http://host:port`) with the token
    /// its control API takes, or `None` if nothing answers there (a daemon
    /// that stopped without cleaning up).
    pub fn connect(base: &str, token: Option<String>) -> Result<Option<Client>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the HTTP client")?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .context("starting the HTTP client")?;
        let client = Client {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http,
            rt,
        };
        let probe = client.rt.block_on(client.request("id", &[]).send());
        Ok(probe.ok().map(|_| client))
    }

    /// The daemon's base URL (`http://host:port`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A call: every call of the control API is a POST.
    fn request(&self, path: &str, query: &[(&str, &str)]) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .post(format!("{}/api/v0/{path}", self.base))
            .query(query);
        if let Some(token) = &self.token {
            r = r.bearer_auth(token);
        }
        r
    }

    async fn checked(response: reqwest::Response) -> Result<reqwest::Response> {
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("daemon answered {status}: {text}"));
        bail!("{message}")
    }

    /// Makes a call and reads its JSON answer.
    pub fn call<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T> {
        self.rt.block_on(async {
            let response = self
                .request(path, query)
                .send()
                .await
                .context("the daemon did not answer")?;
            let response = Self::checked(response).await?;
            response
                .json::<T>()
                .await
                .context("reading the daemon's answer")
        })
    }

    /// Posts `body` as JSON and hands each line of the streamed answer
    /// (JSON lines) to `on_line` until the daemon ends it.
    pub fn post_lines(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        on_line: &mut dyn FnMut(serde_json::Value) -> Result<()>,
    ) -> Result<()> {
        self.rt.block_on(async {
            let response = self
                .request(path, &[])
                .json(body)
                .send()
                .await
                .context("the daemon did not answer")?;
            let response = Self::checked(response).await?;
            let mut stream = response.bytes_stream();
            let mut pending: Vec<u8> = Vec::new();
            while let Some(chunk) = stream.next().await {
                pending.extend_from_slice(&chunk.context("the daemon stopped answering")?);
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    let value: serde_json::Value = serde_json::from_slice(&line)
                        .context("the daemon sent something that is not JSON")?;
                    on_line(value)?;
                }
            }
            Ok(())
        })
    }

    /// Streams a stream's bytes into `out`; returns how many were written.
    pub fn cat(
        &self,
        cid: &str,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64> {
        self.rt.block_on(async {
            let response = self
                .request("cat", &[("arg", cid)])
                .send()
                .await
                .context("the daemon did not answer")?;
            let response = Self::checked(response).await?;
            let expected = response.content_length();
            let mut body = response.bytes_stream();
            let mut written = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.context("the daemon stopped sending the stream")?;
                out.write_all(&chunk)?;
                written += chunk.len() as u64;
                progress(written);
            }
            if let Some(expected) = expected
                && expected != written
            {
                bail!("the daemon sent {written} of {expected} bytes");
            }
            out.flush()?;
            Ok(written)
        })
    }
}
