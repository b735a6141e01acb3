//! A turn whose agent is a remote A2A agent (`driver = "a2a"`): the message goes to it as one
//! task (`SendMessage`), the task is followed to its end (`SubscribeToTask` where the card says
//! it streams, else `GetTask` on a backoff), and each artifact becomes one reply of the turn,
//! through the same checks as a reply an agent sends to `/send` with its token.
//!
//! The remote task is recorded (`Store::put_remote_task`, key `turn:<message id>`) before the
//! send, with the `messageId` it is sent with, and again with each artifact taken. So a turn that
//! a stop interrupted resumes the recorded task when it runs again (never sends it twice), and
//! takes no artifact twice: an artifact's reply has an id derived from the task and the artifact,
//! so one committed just before a crash is found, not sent again.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::a2a::json::TaskState;
use crate::a2a::remote::{self, Chunks, Outgoing, RemoteArtifact, RemoteState, StreamEvent};
use crate::a2a_client::{CallError, Remote};
use crate::agent_process::{Ending, Outcome, RunError};
use crate::config::A2aAgent;
use crate::model::{Message, RemoteKind, RemoteTask, derived_id, now_ms};

use super::{DriverReply, ReplyRefused, Turns};

/// Longest wait between two polls of a task (the remote's budget may make it longer).
const MAX_POLL: Duration = Duration::from_secs(10);
/// Longest wait before a failed send or poll is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// How long a `CancelTask` may take after a timeout or a cancel.
const CANCEL_WAIT: Duration = Duration::from_secs(5);
/// Characters of the remote's words kept in the turn's error.
const MAX_WORDS: usize = 500;

/// One turn, as the driver gets it.
pub(super) struct RemoteTurn<'a> {
    pub turns: &'a Turns,
    pub agent: &'a A2aAgent,
    pub route: &'a str,
    pub message: &'a Message,
    /// The claim's generation: the `messageId` of a first send names it.
    pub attempt: u32,
    /// The turn's reply token: each artifact is a reply under it.
    pub token: &'a str,
    pub timeout: Duration,
    pub cancel: Arc<Notify>,
    /// Whether the stop was the inbox stopping (the remote task is then left to resume).
    pub interrupted: &'a (dyn Fn() -> bool + Sync),
}

/// How the following ended, before it becomes an [`Outcome`].
enum End {
    Done,
    Failed(&'static str, String),
    TimedOut,
    Canceled,
    /// The inbox is stopping: the task is left running at the remote, to be resumed.
    Interrupted,
}

/// Runs the turn; the outcome as a subprocess's would be.
pub(super) async fn run(t: RemoteTurn<'_>) -> Outcome {
    let started = Instant::now();
    let deadline = started + t.timeout;
    let label = format!("route:{}", t.route);
    let mut f = Follower {
        t: &t,
        remote: Remote {
            config: &t.agent.remote,
            label: &label,
        },
        record: None,
        notes: Vec::new(),
        deadline,
    };
    let mut canceled = std::pin::pin!(t.cancel.notified());
    let stopped = || {
        if (t.interrupted)() {
            End::Interrupted
        } else {
            End::Canceled
        }
    };
    // A cancel that comes while the message is on its way lets the send finish (briefly), so
    // that the task it makes at the remote is cancelled too instead of left running there.
    let sent = {
        let mut start = std::pin::pin!(f.start());
        tokio::select! {
            r = tokio::time::timeout_at(deadline, &mut start) => r.unwrap_or(Err(End::TimedOut)),
            () = &mut canceled => match stopped() {
                End::Canceled => {
                    let _ = tokio::time::timeout(CANCEL_WAIT, &mut start).await;
                    Err(End::Canceled)
                }
                end => Err(end),
            },
        }
    };
    let end = match sent {
        Err(end) => end,
        Ok(()) => tokio::select! {
            end = tokio::time::timeout_at(deadline, f.follow()) => {
                end.unwrap_or(End::TimedOut)
            }
            () = &mut canceled => stopped(),
        },
    };
    if matches!(end, End::TimedOut | End::Canceled) {
        f.cancel_remote().await;
    }
    f.outcome(end, started)
}

struct Follower<'a> {
    t: &'a RemoteTurn<'a>,
    remote: Remote<'a>,
    /// The task as recorded, once it is.
    record: Option<RemoteTask>,
    /// What happened on the way, for the turn's record (its stdout).
    notes: Vec<String>,
    deadline: Instant,
}

impl Follower<'_> {
    /// Sends (unless a recorded task resumes): the task is then recorded with its remote id.
    async fn start(&mut self) -> Result<(), End> {
        let key = format!("turn:{}", self.t.message.id);
        let store = &self.t.turns.store;
        let record = match store.remote_task(&key).await {
            Ok(Some(r)) => {
                self.note(format!(
                    "resuming remote task {} ({})",
                    r.remote_id.as_deref().unwrap_or("not yet answered"),
                    r.state
                ));
                r
            }
            Ok(None) => self.new_record(key).await?,
            Err(e) => return Err(store_failed(e)),
        };
        self.record = Some(record);
        if self.rec().remote_id.is_none() {
            self.send().await?;
        }
        Ok(())
    }

    /// Follows the task to its end; how the turn ends.
    async fn follow(&mut self) -> End {
        let streaming = match self.t.turns.a2a.endpoint(&self.remote, self.deadline).await {
            Ok(e) => e.streaming,
            Err(_) => false,
        };
        let mut chunks = Chunks::default();
        if streaming
            && !self.rec_state().is_terminal()
            && !self.rec_state().is_interrupted()
            && let Err(end) = self.stream(&mut chunks).await
        {
            return end;
        }
        match self.poll(chunks).await {
            Ok(end) | Err(end) => end,
        }
    }

    /// The record of a task about to be sent, stored before the send, so that a restart finds
    /// the `messageId` it went with.
    async fn new_record(&mut self, key: String) -> Result<RemoteTask, End> {
        let m = self.t.message;
        let now = now_ms();
        let r = RemoteTask {
            key,
            kind: RemoteKind::Turn,
            target: self.t.route.to_owned(),
            thread_id: m.thread_id.clone(),
            origin: m.id.clone(),
            message_ref: format!("{}.{}", m.id, self.t.attempt),
            remote_id: None,
            context_id: None,
            state: "sending".into(),
            seen: Vec::new(),
            follow_until: now + self.t.timeout.as_millis() as i64,
            done: false,
            created_at: now,
            updated_at: now,
        };
        self.t
            .turns
            .store
            .put_remote_task(r.clone())
            .await
            .map_err(store_failed)?;
        Ok(r)
    }

    /// `SendMessage`, retried while the remote is away or asks to wait (the same `messageId`
    /// each time); continues the thread's remote task that waits for input, and its context.
    async fn send(&mut self) -> Result<(), End> {
        let m = self.t.message;
        let before = self
            .t
            .turns
            .store
            .latest_remote_task(&m.thread_id, RemoteKind::Turn, self.t.route)
            .await
            .map_err(store_failed)?;
        let (task_id, context_id) = match &before {
            Some(p) if RemoteState::parse(&p.state).is_interrupted() => {
                // The same task: what earlier turns took from it (its artifacts, the question
                // it asked) is not this turn's answer.
                let earlier: Vec<String> = p
                    .artifacts_taken()
                    .filter(|s| !self.rec().seen.contains(s))
                    .cloned()
                    .collect();
                self.rec_mut().seen.extend(earlier);
                (p.remote_id.clone(), p.context_id.clone())
            }
            Some(p) => (None, p.context_id.clone()),
            None => (None, None),
        };
        let payload: Value = serde_json::from_str(&m.payload).unwrap_or(Value::Null);
        let text = remote::text_for(&payload);
        let message_ref = self.rec().message_ref.clone();
        let params = remote::send_params(&Outgoing {
            message_id: &message_ref,
            text: &text,
            msg_type: &m.msg_type,
            payload: &payload,
            task_id: task_id.as_deref(),
            context_id: context_id.as_deref(),
            skill: self.t.agent.skill.as_deref(),
            return_immediately: true,
        });
        let client = self.t.turns.a2a.clone();
        let mut backoff = Duration::from_secs(1);
        let task = loop {
            match client
                .send_message(&self.remote, params.clone(), self.deadline)
                .await
            {
                Ok(task) => break task,
                Err(e) if e.is_transient() => {
                    self.note(format!("send: {e}; trying again"));
                    backoff = self.wait(backoff).await?;
                }
                Err(e) => return Err(remote_failed("remote_refused", &e)),
            }
        };
        if task.id.is_empty() {
            // A direct answer with no task: nothing to follow; its one artifact is the answer.
            let rec = self.rec_mut();
            rec.remote_id = Some(format!("message:{}", message_ref));
            rec.context_id = Some(task.context_id.clone());
        } else {
            let rec = self.rec_mut();
            rec.remote_id = Some(task.id.clone());
            rec.context_id = Some(task.context_id.clone());
        }
        self.note(format!(
            "sent as {message_ref}; remote task {} in context {}",
            self.rec().remote_id.as_deref().unwrap_or(""),
            task.context_id
        ));
        self.update_state(&task.state).await?;
        if task.id.is_empty() || task.state.is_terminal() {
            self.take_all(&task.artifacts).await?;
        }
        Ok(())
    }

    /// Follows the task's stream: takes each artifact once it is whole. Returns when the stream
    /// ends or fails (the poll that follows reads the task as it stands).
    async fn stream(&mut self, chunks: &mut Chunks) -> Result<(), End> {
        let Some(id) = self.rec().remote_id.clone() else {
            return Ok(());
        };
        let client = self.t.turns.a2a.clone();
        let mut events = match client.subscribe(&self.remote, &id, self.deadline).await {
            Ok(ev) => ev,
            Err(CallError::TaskNotFound(_)) => return Err(self.forgotten()),
            Err(e) => {
                self.note(format!("subscribe: {e}; polling instead"));
                return Ok(());
            }
        };
        while let Some(ev) = events.next().await {
            match ev {
                Ok(StreamEvent::Artifact {
                    artifact,
                    append,
                    last_chunk,
                }) => {
                    if let Some(whole) = chunks.add(artifact, append, last_chunk) {
                        self.take(&whole).await?;
                    }
                }
                Ok(StreamEvent::Status { state, .. }) => {
                    self.update_state(&state).await?;
                    if state.is_terminal() || state.is_interrupted() {
                        break;
                    }
                }
                Ok(StreamEvent::Task(task)) => {
                    self.update_state(&task.state).await?;
                    if task.state.is_terminal() || task.state.is_interrupted() {
                        break;
                    }
                }
                Err(e) => {
                    self.note(format!("stream: {e}; polling instead"));
                    break;
                }
            }
        }
        Ok(())
    }

    /// Polls the task until it ends or waits for input, then takes every artifact not taken
    /// yet (whole, as the task holds them) and says how the turn ends.
    async fn poll(&mut self, mut chunks: Chunks) -> Result<End, End> {
        let Some(id) = self.rec().remote_id.clone() else {
            return Err(End::Failed("remote_refused", "no remote task".into()));
        };
        if id.starts_with("message:") {
            // A direct answer, taken at the send.
            return self.ended(None).await;
        }
        let client = self.t.turns.a2a.clone();
        let mut every = Duration::from_millis(500);
        let mut backoff = Duration::from_secs(1);
        loop {
            let task = match client.get_task(&self.remote, &id, self.deadline).await {
                Ok(task) => task,
                Err(CallError::TaskNotFound(_)) => return Err(self.forgotten()),
                Err(e) if e.is_transient() => {
                    self.note(format!("poll: {e}; trying again"));
                    backoff = self.wait(backoff).await?;
                    continue;
                }
                Err(e) => return Err(remote_failed("remote_refused", &e)),
            };
            if self.stale_question(&task) {
                every = self.wait(every).await?.min(MAX_POLL);
                continue;
            }
            self.update_state(&task.state).await?;
            if task.state.is_terminal() || task.state.is_interrupted() {
                // Chunks a stream left unfinished are whole in the task now.
                drop(chunks.rest());
                self.take_all(&task.artifacts).await?;
                return self.ended(Some(&task)).await;
            }
            every = self.wait(every).await?.min(MAX_POLL);
        }
    }

    /// How the turn ends, by the task's final (or resting) state.
    async fn ended(&mut self, task: Option<&remote::RemoteTask>) -> Result<End, End> {
        let Some(task) = task else {
            self.finish().await?;
            return Ok(End::Done);
        };
        let words = || {
            let w = task.status_text(MAX_WORDS);
            if w.is_empty() {
                "no reason given".to_owned()
            } else {
                w
            }
        };
        let end = match &task.state {
            RemoteState::Known(TaskState::Completed) => End::Done,
            RemoteState::Known(TaskState::InputRequired) => {
                self.question(task).await?;
                End::Done
            }
            RemoteState::AuthRequired => End::Failed(
                "remote_auth_required",
                format!(
                    "the remote agent wants credentials the inbox cannot give: {}",
                    words()
                ),
            ),
            RemoteState::Known(TaskState::Rejected) => End::Failed(
                "remote_rejected",
                format!("the remote agent rejected the task: {}", words()),
            ),
            RemoteState::Known(TaskState::Canceled) => End::Failed(
                "remote_canceled",
                format!("the remote agent cancelled the task: {}", words()),
            ),
            _ => End::Failed(
                "remote_failed",
                format!("the remote agent's task failed: {}", words()),
            ),
        };
        if !task.state.is_interrupted() {
            self.finish().await?;
        }
        Ok(end)
    }

    /// The remote asks a question: it becomes a reply of the question type, once per turn.
    async fn question(&mut self, task: &remote::RemoteTask) -> Result<(), End> {
        let text = task.status_text(100_000);
        let payload = serde_json::json!({ "text": text, "parts": task.status_parts }).to_string();
        let also_artifact = task
            .status_message_id
            .as_ref()
            .is_some_and(|id| self.rec().seen.contains(id));
        if !also_artifact && !self.asked() {
            let id = derived_id(&format!(
                "{}/{}",
                self.rec().key,
                RemoteTask::QUESTION_TAKEN
            ));
            self.reply(id, self.t.agent.question_type.clone(), payload)
                .await?;
        }
        let rec = self.rec_mut();
        rec.seen.push(RemoteTask::QUESTION_TAKEN.to_owned());
        if let Some(id) = &task.status_message_id
            && !rec.seen.contains(id)
        {
            rec.seen.push(id.clone());
        }
        self.save().await
    }

    /// This turn has taken the remote's question already.
    fn asked(&self) -> bool {
        self.rec().asked()
    }

    /// A question the remote asked before this turn's message reached it: the task's state
    /// has not moved on yet (an earlier turn took that question).
    fn stale_question(&self, task: &remote::RemoteTask) -> bool {
        task.state.is_interrupted()
            && !self.asked()
            && task
                .status_message_id
                .as_ref()
                .is_some_and(|id| self.rec().seen.contains(id))
    }

    async fn take_all(&mut self, artifacts: &[RemoteArtifact]) -> Result<(), End> {
        for a in artifacts {
            self.take(a).await?;
        }
        Ok(())
    }

    /// Takes one whole artifact as a reply, unless it was taken already.
    async fn take(&mut self, a: &RemoteArtifact) -> Result<(), End> {
        if self.rec().seen.contains(&a.artifact_id) {
            return Ok(());
        }
        let (msg_type, payload) = remote::typed(&a.parts, &self.t.agent.reply_type);
        let id = derived_id(&format!("{}/{}", self.rec().key, a.artifact_id));
        self.reply(id, msg_type, payload).await?;
        self.rec_mut().seen.push(a.artifact_id.clone());
        self.save().await
    }

    /// One reply through the inbox's checks; one committed before a crash is not sent again.
    async fn reply(&mut self, id: String, msg_type: String, payload: String) -> Result<(), End> {
        let turns = self.t.turns;
        match turns.store.outbound(&id).await {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {}
            Err(e) => return Err(store_failed(e)),
        }
        let Some(replies) = turns.replies.get().and_then(std::sync::Weak::upgrade) else {
            return Err(End::Failed(
                "remote_refused",
                "the inbox is not taking replies".into(),
            ));
        };
        let reply = DriverReply {
            id,
            msg_type: msg_type.clone(),
            payload,
        };
        match replies.reply(self.t.token, reply).await {
            Ok(()) => Ok(()),
            Err(ReplyRefused::Superseded) => Err(End::Failed(
                "superseded",
                "another attempt of this turn took over".into(),
            )),
            Err(ReplyRefused::Refused(why)) => {
                // A reply the route does not take is the remote's mistake, not the turn's end.
                tracing::warn!(message_id = %self.t.message.id, route = %self.t.route, msg_type = %msg_type, reason = %why, "a remote agent's answer was refused");
                self.note(format!("an answer of type {msg_type} was refused: {why}"));
                Ok(())
            }
            Err(ReplyRefused::Store(e)) => Err(store_failed(e)),
        }
    }

    /// The remote no longer knows the task (a restart of an in-memory task store).
    fn forgotten(&mut self) -> End {
        let id = self.rec().remote_id.clone().unwrap_or_default();
        End::Failed(
            "remote_task_lost",
            format!(
                "the remote agent no longer knows task {id} (it may have restarted and lost its tasks)"
            ),
        )
    }

    /// Waits `d` (a backoff step), unless the deadline comes first; the next step.
    async fn wait(&self, d: Duration) -> Result<Duration, End> {
        if Instant::now() + d >= self.deadline {
            return Err(End::TimedOut);
        }
        tokio::time::sleep(d).await;
        Ok((d * 2).min(MAX_BACKOFF))
    }

    async fn update_state(&mut self, state: &RemoteState) -> Result<(), End> {
        if self.rec().state != state.as_str() {
            self.rec_mut().state = state.as_str().to_owned();
            self.save().await?;
        }
        Ok(())
    }

    /// Nothing more to follow.
    async fn finish(&mut self) -> Result<(), End> {
        self.rec_mut().done = true;
        self.save().await
    }

    async fn save(&mut self) -> Result<(), End> {
        self.rec_mut().updated_at = now_ms();
        let r = self.rec().clone();
        self.t
            .turns
            .store
            .put_remote_task(r)
            .await
            .map_err(store_failed)
    }

    /// Asks the remote to cancel (after a timeout or a cancel); a refusal is only logged.
    async fn cancel_remote(&mut self) {
        let Some(id) = self.record.as_ref().and_then(|r| r.remote_id.clone()) else {
            return;
        };
        if id.starts_with("message:") {
            return;
        }
        let until = Instant::now() + CANCEL_WAIT;
        match self.t.turns.a2a.cancel_task(&self.remote, &id, until).await {
            Ok(task) => {
                self.note(format!(
                    "remote task {id} cancelled ({})",
                    task.state.as_str()
                ));
                if let Some(r) = self.record.as_mut() {
                    r.state = task.state.as_str().to_owned();
                }
            }
            Err(e) => {
                tracing::info!(message_id = %self.t.message.id, remote_task = %id, error = %e, "the remote agent did not cancel its task");
                self.note(format!("CancelTask refused: {e}"));
            }
        }
        if let Some(r) = self.record.as_mut() {
            r.done = true;
        }
        let _ = self.save().await;
    }

    fn note(&mut self, s: String) {
        self.notes.push(s);
    }

    fn rec(&self) -> &RemoteTask {
        self.record.as_ref().expect("recorded before use")
    }

    fn rec_mut(&mut self) -> &mut RemoteTask {
        self.record.as_mut().expect("recorded before use")
    }

    fn rec_state(&self) -> RemoteState {
        RemoteState::parse(&self.rec().state)
    }

    fn outcome(self, end: End, started: Instant) -> Outcome {
        let (ending, error) = match end {
            End::Done => (Ending::Done, None),
            End::Failed(code, detail) => (Ending::Failed, Some(RunError::Remote { code, detail })),
            End::TimedOut => (Ending::TimedOut, Some(RunError::TimedOut(self.t.timeout))),
            End::Canceled | End::Interrupted => (Ending::Canceled, Some(RunError::Canceled)),
        };
        let mut summary = match &self.record {
            Some(r) => format!(
                "remote task {} (context {}): {}, {} answer(s) taken",
                r.remote_id.as_deref().unwrap_or("-"),
                r.context_id.as_deref().unwrap_or("-"),
                r.state,
                r.seen.len()
            ),
            None => "no remote task".into(),
        };
        for n in &self.notes {
            summary.push('\n');
            summary.push_str(n);
        }
        Outcome {
            ending,
            exit_code: None,
            signal: None,
            duration: started.elapsed(),
            stdout_tail: summary.chars().take(4096).collect(),
            stderr_tail: String::new(),
            error,
        }
    }
}

fn store_failed(e: crate::store::StoreError) -> End {
    End::Failed("store_failed", e.to_string())
}

fn remote_failed(code: &'static str, e: &CallError) -> End {
    End::Failed(code, e.to_string().chars().take(MAX_WORDS).collect())
}
