//! Feedback to the DDI server: `proceeding` with progress while an action
//! runs, `closed` + `success` / `failure` when it has ended, and the
//! download's progress as the bytes arrive.

use std::sync::{Arc, Mutex};

use super::client::Client;
use super::model::{feedback, Execution, Finished};

/// The feedback URL of an action: the deploymentBase href as the server
/// gave it, less its query, plus `/feedback` (DDI's
/// `.../deploymentBase/{actionId}/feedback`).
pub fn feedback_url(deployment_href: &str) -> String {
    let end = deployment_href
        .find(['?', '#'])
        .unwrap_or(deployment_href.len());
    format!("{}/feedback", deployment_href[..end].trim_end_matches('/'))
}

pub fn proceeding(
    client: &Client,
    url: &str,
    progress: Option<(u64, u64)>,
    details: &[String],
) -> anyhow::Result<()> {
    let body = feedback(Execution::Proceeding, Finished::None, progress, details);
    client.send_json("POST", url, &body)
}

pub fn closed(client: &Client, url: &str, success: bool, details: &[String]) -> anyhow::Result<()> {
    let finished = if success {
        Finished::Success
    } else {
        Finished::Failure
    };
    let body = feedback(Execution::Closed, finished, None, details);
    client.send_json("POST", url, &body)
}

/// A cancel refused (hawkBit maps `rejected` to CANCEL_REJECTED and keeps
/// the action running; its end is reported on its deployment's feedback).
pub fn rejected(client: &Client, url: &str, details: &[String]) -> anyhow::Result<()> {
    let body = feedback(Execution::Rejected, Finished::None, None, details);
    client.send_json("POST", url, &body)
}

/// Posts `proceeding` feedback at each tenth of the artifact received
/// (`cnt` = percent, `of` = 100, details `Downloaded N%`). A feedback that
/// fails is warned about once and does not stop the download.
pub struct DownloadProgress {
    client: Client,
    url: String,
    size: u64,
    next_step: u64,
    warned: bool,
}

impl DownloadProgress {
    pub fn new(client: Client, url: String, size: u64) -> DownloadProgress {
        DownloadProgress {
            client,
            url,
            size: size.max(1),
            next_step: 1,
            warned: false,
        }
    }

    pub fn received(&mut self, n: u64) {
        let pct = (n.saturating_mul(100) / self.size).min(100);
        if pct < self.next_step * 10 {
            return;
        }
        self.next_step = pct / 10 + 1;
        let details = [format!("Downloaded {pct}%")];
        if let Err(e) = proceeding(&self.client, &self.url, Some((pct, 100)), &details) {
            if !self.warned {
                eprintln!(
                    "slotctl: warning: progress feedback: {}",
                    crate::term::printable(&format!("{e:#}"))
                );
                self.warned = true;
            }
        }
    }

    pub fn into_callback(self) -> super::artifact::OnProgress {
        let me = Arc::new(Mutex::new(self));
        Box::new(move |n| {
            if let Ok(mut p) = me.lock() {
                p.received(n);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feedback_url_follows_the_href() {
        assert_eq!(
            feedback_url("https://h/T/controller/v1/d/deploymentBase/3?c=-21"),
            "https://h/T/controller/v1/d/deploymentBase/3/feedback"
        );
        assert_eq!(
            feedback_url("http://127.0.0.1:9/DEFAULT/controller/v1/d/deploymentBase/1"),
            "http://127.0.0.1:9/DEFAULT/controller/v1/d/deploymentBase/1/feedback"
        );
    }
}
