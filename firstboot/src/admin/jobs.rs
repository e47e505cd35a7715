//! Changes that outlive the request that asked for them: a new domain restarts the web server the
//! request came through, a factory reset ends in a restart. The helper runs them on a thread of its
//! own, one at a time, and keeps each one's outcome in a record the pages show.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::admin::actions::Reply;
use crate::apply::{FileSpec, Owner, Root};
use crate::clock;
use crate::layout;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// What the owner asked for, e.g. "Domain change to meet.example.org".
    pub what: String,
    pub started: i64,
    /// None while it runs.
    pub finished: Option<i64>,
    pub ok: bool,
    /// The outcome in the owner's words (the reason, when it failed).
    pub message: String,
}

static RUNNING: AtomicBool = AtomicBool::new(false);

/// Starts `work` unless another change runs; the reply says which.
pub fn start(
    root: &Root,
    what: String,
    work: impl FnOnce(&Root) -> Result<String> + Send + 'static,
) -> Result<Reply> {
    if RUNNING.swap(true, Ordering::SeqCst) {
        return Ok(Reply::Refused(
            "Another change is still running; wait for it to finish (the page shows when it has)."
                .into(),
        ));
    }
    let job = Job {
        what: what.clone(),
        started: clock::now(),
        finished: None,
        ok: false,
        message: "Running…".into(),
    };
    if let Err(error) = save(root, &job) {
        RUNNING.store(false, Ordering::SeqCst);
        return Err(error);
    }
    let root = root.clone();
    std::thread::spawn(move || {
        let outcome = work(&root);
        let job = Job {
            finished: Some(clock::now()),
            ok: outcome.is_ok(),
            message: match outcome {
                Ok(message) => message,
                Err(error) => format!("{error:#}"),
            },
            ..job
        };
        eprintln!(
            "meetbox-admin helper: {}: {}",
            job.what,
            if job.ok { "done" } else { "failed" }
        );
        // A factory reset erases the record itself: then nothing is kept.
        if root.exists(layout::ADMIN_JOB_FILE) {
            let _ = save(&root, &job);
        }
        RUNNING.store(false, Ordering::SeqCst);
    });
    Ok(Reply::Done(format!("{what}: started.")))
}

/// True while a change started here runs.
pub fn running() -> bool {
    RUNNING.load(Ordering::SeqCst)
}

/// The last change's record, if any.
pub fn last(root: &Root) -> Result<Option<Job>> {
    root.read_record(
        layout::ADMIN_JOB_FILE,
        "the admin's record of its last change",
        "remove it; it only shows the last change's outcome",
    )
}

fn save(root: &Root, job: &Job) -> Result<()> {
    let json = serde_json::to_string_pretty(job)?;
    root.write(&FileSpec::new(
        layout::ADMIN_JOB_FILE,
        json + "\n",
        0o600,
        Owner::ROOT,
    ))
}
