//! Installing a DDI deployment: pick its one artifact, download it
//! (resumed, retried: the `slotctl install URL` source) checked against
//! the server's size and hashes, unwrap a `.swu` ([`super::unwrap`]),
//! stream the slotctl image through the install pipeline
//! ([`crate::install::install_with`]), and keep the action id for the
//! report after the reboot ([`super::state`]). A refused install (the
//! image's signature, compatible, rollback index; a hash or wrapper that
//! does not match) is reported `closed` + `failure` with the reason; a
//! download that could not finish is reported `proceeding` and retried at
//! the next cycle.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use anyhow::Context;

use super::artifact::{Checked, Expected};
use super::client::Client;
use super::feedback::{self, DownloadProgress};
use super::model::{Artifact, Deployment};
use super::state::{self, Action};
use super::unwrap::{Kind, Unwrap};
use crate::agent::state::{Pending, StateDir};
use crate::cli::Globals;
use crate::config::Config;
use crate::feed::time::Timestamp;
use crate::install::{self, InstallArgs};
use crate::source::{HttpReader, Source, Stream};

/// What a deployment asks to install.
#[derive(Debug, Clone)]
pub struct Plan {
    pub id: String,
    /// The chunk's version, as the server names it (the image's own
    /// version decides; this one is for messages and the failed memory).
    pub version: Option<String>,
    pub artifact: Artifact,
    pub href: String,
}

/// The one artifact of the deployment, with a link and a hash to check.
pub fn plan(id: &str, d: &Deployment) -> Result<Plan, String> {
    let all: Vec<_> = d
        .chunks
        .iter()
        .flat_map(|c| c.artifacts.iter().map(move |a| (c, a)))
        .collect();
    let (chunk, artifact) = match all.as_slice() {
        [one] => *one,
        [] => return Err("the deployment holds no artifact".into()),
        more => {
            let parts: Vec<&str> = d
                .chunks
                .iter()
                .map(|c| c.part.as_deref().or(c.name.as_deref()).unwrap_or("?"))
                .collect();
            return Err(format!(
                "the deployment holds {} artifacts in {} chunk(s) ({}); slotctl installs exactly one, a slotctl image (or a .swu wrapping one) holding every partition",
                more.len(),
                d.chunks.len(),
                parts.join(", ")
            ));
        }
    };
    let href = artifact
        .download_href()
        .ok_or_else(|| format!("artifact {} has no download link", artifact.filename))?
        .to_string();
    if !crate::source::is_url(&href) {
        return Err(format!(
            "artifact {}: download link {href:?} is not http(s)",
            artifact.filename
        ));
    }
    Ok(Plan {
        id: id.to_string(),
        version: chunk.version.clone(),
        artifact: artifact.clone(),
        href,
    })
}

/// Records the first wrapper, size or hash failure seen by the pipeline.
struct Judged<R> {
    inner: R,
    verdict: Arc<Mutex<Option<String>>>,
}

impl<R: Read> Read for Judged<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.inner.read(buf);
        if let Err(e) = &r {
            if e.kind() == io::ErrorKind::InvalidData {
                if let Ok(mut v) = self.verdict.lock() {
                    v.get_or_insert_with(|| e.to_string());
                }
            }
        }
        r
    }
}

impl<R: Read + Send> Stream for Judged<R> {}

fn is_refusal(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<crate::exit::Coded>()
            .is_some_and(|k| k.code == crate::exit::REFUSED)
    })
}

/// Download and install `plan`; the feedback goes to `fb`. Returns the
/// version installed.
pub fn install(
    cfg: &Config,
    globals: &Globals,
    client: &Client,
    plan: &Plan,
    fb: &str,
) -> anyhow::Result<Option<String>> {
    let sd = StateDir::new(&cfg.state_dir);
    let (mut st, _) = sd.load_or_new()?;
    if let Some(v) = &plan.version {
        if let Some(f) = st.is_failed(v) {
            let reason = format!(
                "{v} was rolled back on this device ({}); not installing it again",
                f.reason
            );
            feedback::closed(client, fb, false, std::slice::from_ref(&reason))?;
            return Err(crate::exit::refused(format!(
                "action {}: {reason}",
                plan.id
            )));
        }
    }
    let a = &plan.artifact;
    let expected = Expected {
        size: a.size,
        sha1: a.hashes.get("sha1").cloned(),
        sha256: a.hashes.get("sha256").cloned(),
    };
    if !expected.has_hash() {
        let reason = format!(
            "artifact {}: the server gives no sha1 or sha256",
            a.filename
        );
        feedback::closed(client, fb, false, std::slice::from_ref(&reason))?;
        return Err(crate::exit::refused(format!(
            "action {}: {reason}",
            plan.id
        )));
    }
    let size = a.size.unwrap_or(0);
    let start = format!("downloading {} ({size} bytes)", a.filename);
    feedback::proceeding(client, fb, Some((0, 100)), std::slice::from_ref(&start))?;
    super::cycle::say(globals, "download", &format!("action {}: {start}", plan.id));

    let verdict = Arc::new(Mutex::new(None::<String>));
    let opener: install::Opener = {
        let verdict = verdict.clone();
        let opts = client.download_options(&plan.href);
        let progress = DownloadProgress::new(client.clone(), fb.to_string(), size).into_callback();
        let href = plan.href.clone();
        let name = a.filename.clone();
        Box::new(move |warn| {
            let http = HttpReader::open(&href, opts, warn)?;
            let checked = Checked::new(http, expected, progress);
            let unwrapped = Unwrap::open(checked).map_err(|e| {
                if e.kind() == io::ErrorKind::InvalidData {
                    if let Ok(mut v) = verdict.lock() {
                        v.get_or_insert_with(|| e.to_string());
                    }
                    crate::exit::refused(format!("{name}: {e}"))
                } else {
                    anyhow::anyhow!("{name}: {e}")
                }
            })?;
            let inside = match unwrapped.kind() {
                Kind::Plain => format!("{name} (a plain slotctl image)"),
                Kind::Swu { image_len } => format!("{name} (.swu, {image_len}-byte image)"),
            };
            Ok(Source {
                reader: Box::new(Judged {
                    inner: unwrapped,
                    verdict,
                }),
                name: inside,
            })
        })
    };
    let args = InstallArgs::unattended(plan.href.clone());
    let report = match install::install_with(args, globals, None, Some(opener)) {
        Ok(r) => r,
        Err(e) => {
            let judged = verdict.lock().ok().and_then(|v| v.clone());
            let reason = format!("{e:#}");
            if is_refusal(&e) || judged.is_some() {
                let mut details = vec![format!("install refused: {reason}")];
                details.extend(judged.filter(|j| !reason.contains(j.as_str())));
                feedback::closed(client, fb, false, &details)
                    .context("reporting the refused install")?;
                // A hash or wrapper that does not match is a refusal too
                // (exit code 3), whatever layer of the pipeline met it.
                if !is_refusal(&e) {
                    return Err(crate::exit::refused(reason));
                }
                return Err(e);
            }
            let details = [format!("attempt failed, will retry: {reason}")];
            if let Err(f) = feedback::proceeding(client, fb, None, &details) {
                eprintln!(
                    "slotctl: warning: feedback: {}",
                    crate::term::printable(&format!("{f:#}"))
                );
            }
            return Err(e);
        }
    };
    let slot = report.slot.as_str().to_string();
    state::save(
        &cfg.state_dir,
        &Action {
            id: plan.id.clone(),
            feedback: fb.to_string(),
            version: report.version.clone(),
            slot: slot.clone(),
            installed_at: Timestamp::now(),
        },
    )?;
    st.pending = Some(Pending {
        version: report.version.clone(),
        slot: slot.clone(),
        installed_at: Timestamp::now(),
    });
    sd.save(&st).context("saving the agent state")?;
    let done = format!(
        "installed {} into slot {slot}; it boots next, success is reported once boot-check commits it",
        report.version
    );
    if let Err(e) = feedback::proceeding(client, fb, Some((100, 100)), std::slice::from_ref(&done))
    {
        eprintln!(
            "slotctl: warning: feedback: {}",
            crate::term::printable(&format!("{e:#}"))
        );
    }
    Ok(Some(report.version))
}
