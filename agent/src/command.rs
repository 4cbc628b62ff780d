//! Commands from the collector: decoded like any other protocol message, routed to the role
//! that claimed the name, and always answered by an event (`command_completed` or
//! `command_rejected` with the reason), so the sender learns what happened within a second
//! whatever the reporting interval.
//!
//! A repeated command id is not carried out again: the first answer is sent again instead, so
//! the collector may resend until it sees an answer. Rejections are counted by reason; their
//! answers are rate-limited, because anyone who can publish on the broker can send commands.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pantau_protocol::{
    COMMAND_COMPLETED, COMMAND_REJECTED, Command, CommandRejectReason, CommandRejection, Event,
    Limits, Severity, decode_command,
};
use pantau_runtime::ratelimit::{LogLimiter, Verdict};
use tokio::time::Instant;
use tracing::{debug, info};

use crate::link::Incoming;
use crate::message::unix_millis;
use crate::role::Role;
use crate::telemetry::Telemetry;

/// Largest command payload the agent reads.
const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Command ids remembered for answering repeats.
const REMEMBERED_IDS: usize = 256;
/// At most this many rejections are answered per `ANSWER_PERIOD`; the rest are only counted.
const MAX_REJECTION_ANSWERS: u32 = 20;
const ANSWER_PERIOD: Duration = Duration::from_secs(10);

/// Decodes, routes and answers commands.
pub struct Dispatcher {
    prefix: String,
    telemetry: Arc<Telemetry>,
    /// Answers by command id, oldest first, for repeats.
    answered: HashMap<String, Event>,
    answered_order: VecDeque<String>,
    window_start: Instant,
    rejections_in_window: u32,
    log: LogLimiter,
}

impl Dispatcher {
    pub fn new(prefix: String, telemetry: Arc<Telemetry>) -> Self {
        Self {
            prefix,
            telemetry,
            answered: HashMap::new(),
            answered_order: VecDeque::new(),
            window_start: Instant::now(),
            rejections_in_window: 0,
            log: LogLimiter::new(Duration::from_secs(10)),
        }
    }

    /// Handles one received command; returns the answering event, if it is to be sent.
    pub async fn dispatch(&mut self, incoming: Incoming, roles: &mut [Role]) -> Option<Event> {
        let limits = Limits {
            max_payload_bytes: MAX_COMMAND_BYTES,
            ..Limits::default()
        };
        let now_ms = unix_millis(SystemTime::now());
        let command = match decode_command(
            &self.prefix,
            &incoming.topic,
            &incoming.payload,
            &limits,
            now_ms,
        ) {
            Ok(command) => command,
            Err(rejection) => return self.reject(rejection),
        };
        let role = roles
            .iter_mut()
            .find(|role| role.kind().commands().contains(&command.name.as_str()));
        let checks_replays = role
            .as_ref()
            .is_some_and(|role| role.kind().checks_replays());
        if !checks_replays && let Some(answer) = self.answered.get(&command.message.id) {
            debug!(id = %command.message.id, "repeated command, answering again");
            return Some(answer.clone());
        }
        let Some(role) = role else {
            return self.reject(CommandRejection::of(
                &command,
                CommandRejectReason::UnknownCommand,
                format!("no role of this agent handles '{}'", command.name),
            ));
        };
        let result = role.handle(&command).await;
        let answer = match result {
            Ok(detail) => {
                info!(command = %command.name, id = %command.message.id, "command carried out");
                Some(completed(&command, detail))
            }
            Err(rejection) => self.reject(rejection),
        };
        // Only commands that reached a role are remembered, so a flood of unknown ones cannot
        // push a real command's id out of memory.
        if let Some(answer) = &answer {
            self.remember(&command.message.id, answer.clone());
        }
        answer
    }

    fn reject(&mut self, rejection: CommandRejection) -> Option<Event> {
        let reason = rejection.reason.as_str();
        self.telemetry.rejected_command(rejection.reason);
        if let Verdict::Log { suppressed } = self.log.check(reason) {
            info!(
                reason,
                command = rejection.command.as_deref().unwrap_or("?"),
                detail = %rejection.detail.escape_debug(),
                suppressed,
                "refused a command"
            );
        }
        let now = Instant::now();
        if now.duration_since(self.window_start) >= ANSWER_PERIOD {
            self.window_start = now;
            self.rejections_in_window = 0;
        }
        self.rejections_in_window += 1;
        (self.rejections_in_window <= MAX_REJECTION_ANSWERS).then(|| rejected(&rejection))
    }

    fn remember(&mut self, id: &str, answer: Event) {
        if self.answered_order.len() >= REMEMBERED_IDS
            && let Some(oldest) = self.answered_order.pop_front()
        {
            self.answered.remove(&oldest);
        }
        self.answered_order.push_back(id.to_owned());
        self.answered.insert(id.to_owned(), answer);
    }
}

fn completed(command: &Command, detail: String) -> Event {
    Event {
        kind: COMMAND_COMPLETED.to_owned(),
        severity: Severity::Info,
        message: format!("{}: {detail}", command.name),
        labels: [
            ("command".to_owned(), command.name.clone()),
            ("command_id".to_owned(), command.message.id.clone()),
        ]
        .into(),
    }
}

fn rejected(rejection: &CommandRejection) -> Event {
    let mut labels: std::collections::BTreeMap<String, String> =
        [("reason".to_owned(), rejection.reason.as_str().to_owned())].into();
    if let Some(command) = &rejection.command {
        labels.insert("command".to_owned(), command.clone());
    }
    if let Some(id) = &rejection.id {
        labels.insert("command_id".to_owned(), id.clone());
    }
    Event {
        kind: COMMAND_REJECTED.to_owned(),
        severity: Severity::Warning,
        message: format!(
            "command {} refused: {}",
            rejection.command.as_deref().unwrap_or("(unreadable topic)"),
            rejection.detail
        ),
        labels,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use pantau_runtime::supervise::Supervisor;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::host::{HostConfig, HostRole};
    use crate::role::{EventSender, ReportTrigger, RoleContext};

    const PREFIX: &str = "pantau/v1/dc/srv-01/cmd/";

    fn incoming(name: &str, payload: serde_json::Value) -> Incoming {
        Incoming {
            topic: format!("{PREFIX}{name}"),
            payload: serde_json::to_vec(&payload).unwrap(),
        }
    }

    fn command(id: &str) -> serde_json::Value {
        serde_json::json!({"schema": 1, "agent": "srv-01", "site": "dc", "id": id,
                           "timestamp_ms": 1})
    }

    fn host_role(trigger: &ReportTrigger) -> Vec<Role> {
        let config: HostConfig = serde_json::from_value(serde_json::json!({})).unwrap();
        let mut role = Role::Host(HostRole::new(&config));
        let (events, _) = mpsc::channel(1);
        let context = RoleContext {
            events: EventSender::new(events),
            report_now: trigger.clone(),
        };
        role.start(&context, &mut Supervisor::new(CancellationToken::new()));
        vec![role]
    }

    fn dispatcher() -> Dispatcher {
        Dispatcher::new("pantau".to_owned(), Arc::new(Telemetry::default()))
    }

    #[tokio::test]
    async fn a_claimed_command_reaches_its_role_and_is_answered() {
        let trigger = ReportTrigger::default();
        let mut roles = host_role(&trigger);
        let mut dispatcher = dispatcher();
        let answer = dispatcher
            .dispatch(incoming("host/collect", command("c1")), &mut roles)
            .await
            .unwrap();
        assert_eq!(answer.kind, COMMAND_COMPLETED);
        assert_eq!(answer.labels["command_id"], "c1");
        // The role asked for a report now.
        tokio::time::timeout(Duration::from_secs(1), trigger.requested())
            .await
            .expect("report requested");
    }

    #[tokio::test]
    async fn unknown_and_malformed_commands_are_answered_with_the_reason() {
        let trigger = ReportTrigger::default();
        let mut roles = host_role(&trigger);
        let mut dispatcher = dispatcher();
        let unknown = dispatcher
            .dispatch(incoming("sound/play", command("c2")), &mut roles)
            .await
            .unwrap();
        assert_eq!(unknown.kind, COMMAND_REJECTED);
        assert_eq!(unknown.labels["reason"], "unknown_command");
        assert_eq!(unknown.labels["command"], "sound/play");

        let malformed = Incoming {
            topic: format!("{PREFIX}host/collect"),
            payload: b"{not json".to_vec(),
        };
        let answer = dispatcher.dispatch(malformed, &mut roles).await.unwrap();
        assert_eq!(answer.labels["reason"], "invalid_json");

        let mut with_args = command("c3");
        with_args["args"] = serde_json::json!({"now": true});
        let answer = dispatcher
            .dispatch(incoming("host/collect", with_args), &mut roles)
            .await
            .unwrap();
        assert_eq!(answer.labels["reason"], "invalid_arguments");

        let telemetry = &dispatcher.telemetry;
        let families = telemetry.families();
        let rejected = families
            .iter()
            .find(|f| f.name == "pantau_agent_rejected_commands_total")
            .unwrap();
        let total: f64 = rejected.samples.iter().map(|s| s.value).sum();
        assert_eq!(total, 3.0);
        assert_eq!(telemetry.received_commands.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_repeated_id_is_answered_but_not_carried_out_again() {
        let trigger = ReportTrigger::default();
        let mut roles = host_role(&trigger);
        let mut dispatcher = dispatcher();
        let first = dispatcher
            .dispatch(incoming("host/collect", command("same")), &mut roles)
            .await;
        trigger.requested().await;
        let again = dispatcher
            .dispatch(incoming("host/collect", command("same")), &mut roles)
            .await;
        assert_eq!(first, again);
        let second_request =
            tokio::time::timeout(Duration::from_millis(50), trigger.requested()).await;
        assert!(second_request.is_err(), "the repeat must not collect again");
    }

    #[tokio::test(start_paused = true)]
    async fn rejection_answers_are_rate_limited_but_all_counted() {
        let mut roles = host_role(&ReportTrigger::default());
        let mut dispatcher = dispatcher();
        let mut answered = 0;
        for n in 0..50 {
            let answer = dispatcher
                .dispatch(incoming("nope", command(&format!("x{n}"))), &mut roles)
                .await;
            answered += usize::from(answer.is_some());
        }
        assert_eq!(answered, MAX_REJECTION_ANSWERS as usize);
        tokio::time::advance(ANSWER_PERIOD).await;
        let answer = dispatcher
            .dispatch(incoming("nope", command("later")), &mut roles)
            .await;
        assert!(answer.is_some());
    }
}
