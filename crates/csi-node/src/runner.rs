//! Host commands behind one seam: the real runner spawns them with a timeout and puts their
//! stderr into the error; the recording runner (tests) keeps the exact argv and answers from a
//! script, so the NFS/SMB/NVMe-oF/iSCSI steps can be checked where those kernels are missing.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::NodeError;

/// What a command printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit status; 0 is success.
    pub status: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs host commands.
#[tonic::async_trait]
pub trait Runner: Send + Sync {
    /// Runs `program args…` within `timeout`; a non-zero exit is returned, not an error.
    async fn run(
        &self,
        program: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<Output, NodeError>;
}

/// Runs a command and fails unless it exits 0, naming it and its stderr.
pub async fn check(
    runner: &dyn Runner,
    program: &str,
    args: &[String],
    timeout: Duration,
) -> Result<Output, NodeError> {
    let output = runner.run(program, args, timeout).await?;
    if output.status != 0 {
        return Err(NodeError::Command {
            command: format!("{program} {}", args.join(" ")),
            status: output.status,
            stderr: output.stderr.trim().to_owned(),
        });
    }
    Ok(output)
}

/// The real runner.
#[derive(Debug, Default, Clone)]
pub struct SystemRunner;

#[tonic::async_trait]
impl Runner for SystemRunner {
    async fn run(
        &self,
        program: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<Output, NodeError> {
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null());
        if std::env::var_os("PATH").is_none() {
            // mount helpers live in sbin; a container started without PATH still finds them.
            command.env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            );
        }
        let child = command.output();
        match tokio::time::timeout(timeout, child).await {
            Err(_) => Err(NodeError::Timeout {
                command: format!("{program} {}", args.join(" ")),
                after: timeout,
            }),
            Ok(Err(err)) => Err(NodeError::Spawn {
                program: program.to_owned(),
                reason: err.to_string(),
            }),
            Ok(Ok(out)) => Ok(Output {
                status: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }),
        }
    }
}

/// A scripted answer of the recording runner.
#[derive(Debug, Clone)]
pub enum Scripted {
    /// Exit with this output.
    Exit(Output),
    /// Never finish (the runner's timeout fires).
    Hang,
}

/// Answers queued per command prefix.
type Script = Vec<(String, VecDeque<Scripted>)>;

/// Records every command; answers from a script (default: exit 0, no output).
#[derive(Debug, Clone, Default)]
pub struct RecordingRunner {
    calls: Arc<Mutex<Vec<String>>>,
    script: Arc<Mutex<Script>>,
}

impl RecordingRunner {
    /// The command lines run so far, `program arg arg…`.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The next command starting with `prefix` answers `answer` (queued per prefix).
    pub fn answer(&self, prefix: &str, answer: Scripted) {
        let mut script = self.script.lock().unwrap_or_else(|e| e.into_inner());
        match script.iter_mut().find(|(p, _)| p == prefix) {
            Some((_, queue)) => queue.push_back(answer),
            None => script.push((prefix.to_owned(), VecDeque::from([answer]))),
        }
    }
}

#[tonic::async_trait]
impl Runner for RecordingRunner {
    async fn run(
        &self,
        program: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<Output, NodeError> {
        let line = format!("{program} {}", args.join(" "));
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line.clone());
        let answer = {
            let mut script = self.script.lock().unwrap_or_else(|e| e.into_inner());
            script
                .iter_mut()
                .find(|(prefix, queue)| line.starts_with(prefix.as_str()) && !queue.is_empty())
                .and_then(|(_, queue)| queue.pop_front())
        };
        match answer {
            None => Ok(Output::default()),
            Some(Scripted::Exit(output)) => Ok(output),
            Some(Scripted::Hang) => {
                tokio::time::sleep(timeout).await;
                Err(NodeError::Timeout {
                    command: line,
                    after: timeout,
                })
            }
        }
    }
}
