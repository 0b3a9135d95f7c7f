//! HTTP to the DDI server: the controller API's JSON requests over the
//! agent of [`crate::source::agent`] (the config's `[http]` timeouts and
//! TLS roots, `ddi.ca_file` over `tls.ca_file`), with the target token,
//! and the download options for the artifact (the same source as
//! `slotctl install URL`: resume, retries, backoff, deadline).

use anyhow::{anyhow, bail};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::config::DdiConfig;
use crate::config::Config;
use crate::source::HttpOptions;

/// The largest JSON answer read.
const MAX_JSON: u64 = 1 << 20;

#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    /// `Authorization: TargetToken ...`, when configured.
    auth: Option<String>,
    /// `{server}/{tenant}/controller/v1/{id}`.
    pub base: String,
    opts: HttpOptions,
}

impl Client {
    pub fn new(cfg: &Config, ddi: &DdiConfig) -> anyhow::Result<Client> {
        let mut opts = HttpOptions::from_config(cfg);
        if let Some(ca) = &ddi.ca_file {
            opts.ca_file = Some(ca.clone());
        }
        let auth = ddi.target_token()?.map(|t| format!("TargetToken {t}"));
        Ok(Client {
            agent: crate::source::agent(&opts)?,
            auth,
            base: ddi.base_url()?,
            opts,
        })
    }

    /// The options to download `href`: the config's `[http]`; the token
    /// only when `href` is on the DDI server's own origin (and then, after
    /// a redirect, only to that origin: [`crate::source`]).
    pub fn download_options(&self, href: &str) -> HttpOptions {
        HttpOptions {
            auth: self
                .auth
                .clone()
                .filter(|_| crate::source::same_origin(href, &self.base)),
            ..self.opts.clone()
        }
    }

    fn with_auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        let req = req.header("Accept", "application/hal+json, application/json");
        match &self.auth {
            Some(a) => req.header("Authorization", a),
            None => req,
        }
    }

    /// GET `url` (an href as the server gave it), a JSON answer.
    pub fn get_json<T: DeserializeOwned>(&self, url: &str) -> anyhow::Result<T> {
        let resp = self
            .with_auth(self.agent.get(url))
            .call()
            .map_err(|e| anyhow!("GET {url}: {e}"))?;
        let body = answer(resp, "GET", url)?;
        serde_json::from_slice(&body)
            .map_err(|e| anyhow!("GET {url}: the answer is not DDI JSON: {e}"))
    }

    /// PUT or POST a JSON body to `url`; any JSON (or none) in the answer
    /// is accepted.
    pub fn send_json(&self, method: &str, url: &str, body: &Value) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(body)?;
        let req = match method {
            "PUT" => self.agent.put(url),
            "POST" => self.agent.post(url),
            m => bail!("unsupported method {m}"),
        };
        let resp = self
            .with_auth(req)
            .content_type("application/json")
            .send(&bytes)
            .map_err(|e| anyhow!("{method} {url}: {e}"))?;
        answer(resp, method, url).map(drop)
    }
}

/// The body of a 2xx answer (bounded); anything else an error naming the
/// status and the start of the body.
fn answer(
    mut resp: ureq::http::Response<ureq::Body>,
    method: &str,
    url: &str,
) -> anyhow::Result<Vec<u8>> {
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_JSON)
        .read_to_vec()
        .map_err(|e| anyhow!("{method} {url}: HTTP {status}: reading the answer: {e}"))?;
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let text: String = String::from_utf8_lossy(&body)
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    let hint = match status {
        401 | 403 => " (the server refused this device's credentials: check ddi.target_token_file)",
        _ => "",
    };
    bail!("{method} {url}: HTTP {status}{hint}: {text}")
}
