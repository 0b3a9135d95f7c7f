//! The DDI JSON documents slotctl reads and writes (hawkBit's Direct
//! Device Integration API, v1). Reading is tolerant: unknown fields are
//! ignored, missing links are `None`, a `null` deployment is no deployment.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Link {
    pub href: String,
}

/// `GET {base}`: the controller base.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ControllerBase {
    #[serde(default)]
    pub config: Option<BaseConfig>,
    #[serde(default, rename = "_links")]
    pub links: BTreeMap<String, Link>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct BaseConfig {
    #[serde(default)]
    pub polling: Option<Polling>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Polling {
    #[serde(default)]
    pub sleep: Option<String>,
}

impl ControllerBase {
    pub fn link(&self, name: &str) -> Option<&str> {
        self.links.get(name).map(|l| l.href.as_str())
    }

    /// The polling interval the server asks for, when it gives a valid one.
    pub fn sleep(&self) -> Option<Duration> {
        let s = self.config.as_ref()?.polling.as_ref()?.sleep.as_deref()?;
        parse_sleep(s)
    }
}

/// `HH:MM:SS` (hawkBit's format) as a duration.
pub fn parse_sleep(s: &str) -> Option<Duration> {
    let mut it = s.trim().split(':');
    let (h, m, sec) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    let num = |x: &str| -> Option<u64> {
        (!x.is_empty() && x.len() <= 6 && x.bytes().all(|b| b.is_ascii_digit()))
            .then(|| x.parse().ok())
            .flatten()
    };
    let (h, m, sec) = (num(h)?, num(m)?, num(sec)?);
    if m > 59 || sec > 59 {
        return None;
    }
    Some(Duration::from_secs(h * 3600 + m * 60 + sec))
}

/// `GET deploymentBase/{id}`.
#[derive(Debug, Clone, Deserialize)]
pub struct DeploymentBase {
    /// The action id (hawkBit sends a string, some servers a number).
    pub id: Value,
    #[serde(default)]
    pub deployment: Option<Deployment>,
}

impl DeploymentBase {
    pub fn action_id(&self) -> Option<String> {
        id_string(&self.id)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Deployment {
    #[serde(default)]
    pub download: Option<String>,
    #[serde(default)]
    pub update: Option<String>,
    #[serde(default, rename = "maintenanceWindow")]
    pub maintenance_window: Option<String>,
    #[serde(default)]
    pub chunks: Vec<Chunk>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Chunk {
    #[serde(default)]
    pub part: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Artifact {
    pub filename: String,
    #[serde(default)]
    pub hashes: BTreeMap<String, String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default, rename = "_links")]
    pub links: BTreeMap<String, Link>,
}

impl Artifact {
    /// The download link: `download` (https), else `download-http`.
    pub fn download_href(&self) -> Option<&str> {
        ["download", "download-http"]
            .iter()
            .find_map(|k| self.links.get(*k))
            .map(|l| l.href.as_str())
    }
}

/// `GET cancelAction/{id}`: the action the server wants stopped.
#[derive(Debug, Clone, Deserialize)]
pub struct CancelAction {
    /// The cancel action's own id (hawkBit: the same as the stopped one).
    pub id: Value,
    #[serde(default, rename = "cancelAction")]
    pub cancel_action: Option<StopId>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StopId {
    #[serde(rename = "stopId")]
    pub stop_id: Value,
}

fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl CancelAction {
    /// The id of the action to stop: `cancelAction.stopId`, else `id`.
    pub fn stop_id(&self) -> Option<String> {
        self.cancel_action
            .as_ref()
            .and_then(|c| id_string(&c.stop_id))
            .or_else(|| id_string(&self.id))
    }
}

/// `execution` of a feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Execution {
    Proceeding,
    Closed,
    /// hawkBit: "an update or cancellation is rejected, i.e. cannot be
    /// fulfilled at this point in time" (a cancel refused).
    Rejected,
}

/// `result.finished` of a feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Finished {
    Success,
    Failure,
    None,
}

/// A feedback body (`POST deploymentBase/{id}/feedback`). Progress carries
/// both `cnt` and `of` (goosebit requires both).
pub fn feedback(
    execution: Execution,
    finished: Finished,
    progress: Option<(u64, u64)>,
    details: &[String],
) -> Value {
    let mut result = json!({ "finished": finished });
    if let Some((cnt, of)) = progress {
        result["progress"] = json!({ "cnt": cnt, "of": of });
    }
    // The time as hawkBit's own clients send it (`20261202T154300`).
    let time: String = crate::feed::time::Timestamp::now()
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':' | 'Z'))
        .collect();
    json!({
        "time": time,
        "status": {
            "execution": execution,
            "result": result,
            "details": details,
        }
    })
}

/// A configData body: `mode` merge, the attributes as strings.
pub fn config_data(attributes: &BTreeMap<String, String>) -> Value {
    json!({ "mode": "merge", "data": attributes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_is_parsed() {
        assert_eq!(parse_sleep("00:00:05"), Some(Duration::from_secs(5)));
        assert_eq!(parse_sleep("12:01:00"), Some(Duration::from_secs(43260)));
        for bad in ["", "5", "00:60:00", "a:b:c", "00:00:00:00", "-1:00:00"] {
            assert_eq!(parse_sleep(bad), None, "{bad}");
        }
    }

    #[test]
    fn tolerant_reading() {
        let b: ControllerBase = serde_json::from_str(
            r#"{"config":{"polling":{"sleep":"00:00:10"}},"_links":{"configData":{"href":"http://x/c"}},"extra":1}"#,
        )
        .unwrap();
        assert_eq!(b.link("configData"), Some("http://x/c"));
        assert_eq!(b.link("deploymentBase"), None);
        assert_eq!(b.sleep(), Some(Duration::from_secs(10)));
        let b: ControllerBase = serde_json::from_str("{}").unwrap();
        assert_eq!(b.sleep(), None);
        let d: DeploymentBase = serde_json::from_str(r#"{"id":"7","deployment":null}"#).unwrap();
        assert_eq!(d.action_id().as_deref(), Some("7"));
        assert!(d.deployment.is_none());
        let d: DeploymentBase = serde_json::from_str(
            r#"{"id":12,"deployment":{"download":"forced","update":"forced","chunks":[{"name":"a","version":"1.1.0","artifacts":[{"filename":"a.swu","hashes":{"sha1":"ab"},"size":3,"_links":{"download-http":{"href":"http://x/d"}}}]}]}}"#,
        )
        .unwrap();
        assert_eq!(d.action_id().as_deref(), Some("12"));
        let a = &d.deployment.unwrap().chunks[0].artifacts[0];
        assert_eq!(a.download_href(), Some("http://x/d"));
    }

    #[test]
    fn feedback_has_cnt_and_of() {
        let f = feedback(
            Execution::Proceeding,
            Finished::None,
            Some((3, 10)),
            &["x".into()],
        );
        assert_eq!(f["status"]["result"]["progress"]["cnt"], 3);
        assert_eq!(f["status"]["result"]["progress"]["of"], 10);
        assert_eq!(f["status"]["execution"], "proceeding");
        assert_eq!(f["status"]["result"]["finished"], "none");
        let t = f["time"].as_str().unwrap();
        assert!(t.len() == 15 && t.as_bytes()[8] == b'T', "{t}");
    }

    #[test]
    fn cancel_action_names_the_action_to_stop() {
        let c: CancelAction =
            serde_json::from_str(r#"{"id":"11","cancelAction":{"stopId":"10"}}"#).unwrap();
        assert_eq!(c.stop_id().as_deref(), Some("10"));
        let c: CancelAction = serde_json::from_str(r#"{"id":12}"#).unwrap();
        assert_eq!(c.stop_id().as_deref(), Some("12"));
        let c: CancelAction = serde_json::from_str(r#"{"id":""}"#).unwrap();
        assert_eq!(c.stop_id(), None);
        let f = feedback(Execution::Rejected, Finished::None, None, &[]);
        assert_eq!(f["status"]["execution"], "rejected");
    }
}
