//! The host role on the role seam: collects on the blocking pool with one long-lived `Host`
//! moved in and out, and claims `host/collect` (collect and report now, Zabbix's "execute
//! now").

use pantau_protocol::{Command, CommandRejectReason, CommandRejection, Family};
use pantau_runtime::supervise::Supervisor;
use tracing::error;

use super::{Host, HostConfig};
use crate::role::{EventSender, ReportTrigger, RoleContext};

/// Host metrics as a role.
pub struct HostRole {
    /// `None` only while a collection runs on the blocking pool, or after it panicked.
    host: Option<Host>,
    report_now: Option<ReportTrigger>,
    /// Collector failures and recoveries are published as events.
    events: Option<EventSender>,
}

impl HostRole {
    /// `host/collect`: run every collector now and publish a metrics message at once.
    pub const COMMANDS: &'static [&'static str] = &["host/collect"];

    pub fn new(config: &HostConfig) -> Self {
        Self {
            host: Some(Host::new(config)),
            report_now: None,
            events: None,
        }
    }

    pub fn start(&mut self, context: &RoleContext, _supervisor: &mut Supervisor) {
        self.report_now = Some(context.report_now.clone());
        self.events = Some(context.events.clone());
    }

    pub async fn collect(&mut self) -> Vec<Family> {
        let Some(mut host) = self.host.take() else {
            return Vec::new();
        };
        match tokio::task::spawn_blocking(move || {
            let families = host.collect();
            (host, families)
        })
        .await
        {
            Ok((mut host, families)) => {
                if let Some(events) = &self.events {
                    for event in host.take_events() {
                        events.emit(event);
                    }
                }
                self.host = Some(host);
                families
            }
            Err(error) => {
                error!(%error, "host collection panicked; host metrics disabled");
                Vec::new()
            }
        }
    }

    pub fn handle(&mut self, command: &Command) -> Result<String, CommandRejection> {
        match (command.name.as_str(), &self.report_now) {
            ("host/collect", Some(trigger)) => {
                if let Some(key) = command
                    .message
                    .args
                    .as_object()
                    .and_then(|a| a.keys().next())
                {
                    return Err(CommandRejection::of(
                        command,
                        CommandRejectReason::InvalidArguments,
                        format!("host/collect takes no arguments, got '{key}'"),
                    ));
                }
                trigger.request();
                Ok("collecting now; the metrics message follows".to_owned())
            }
            _ => Err(CommandRejection::of(
                command,
                CommandRejectReason::Failed,
                "the host role is not started",
            )),
        }
    }
}
