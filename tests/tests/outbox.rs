//! The agent's outbox on disk: messages written during a broker outage survive the agent being
//! SIGKILLed again and again, and all of them reach the collector once the broker is back.

use std::time::Duration;

use pantau_tests::{Agent, Collector, Mosquitto, Signal, TestDir, wait_until};

const WAIT: Duration = Duration::from_secs(30);

fn series(name: &str, id: &str) -> String {
    format!(r#"{name}{{instance="{id}",site="dc"}}"#)
}

#[test]
fn sigkills_during_an_outage_lose_nothing() {
    let dir = TestDir::new();
    // Persistence keeps the collector's session across the broker restart.
    let mut broker = Mosquitto::builder().persistence(true).start();
    let collector = Collector::with_broker(&dir, &broker);
    let id = "dc-srv-outbox";
    let mut agent = Agent::start(&dir, id, "dc", &broker.url(), 1);
    collector.wait_for_sample(&series("pantau_agent_up", id), WAIT, |v| v == 1.0);
    let before =
        collector.wait_for_sample(&series("pantau_agent_messages_total", id), WAIT, |_| true);

    broker.kill();
    // The agent keeps reporting into its outbox, and is killed mid-stride five times.
    for _ in 0..5 {
        let outbox = agent.state_dir.join("outbox");
        wait_until("messages in the outbox", WAIT, || {
            let files = std::fs::read_dir(&outbox).ok()?.count();
            (files > 0).then_some(())
        });
        std::thread::sleep(Duration::from_millis(1300));
        agent.guard().kill_with(Signal::KILL);
        agent.guard().wait_exit(Duration::from_secs(10));
        agent = Agent::start(&dir, id, "dc", &broker.url(), 1);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let on_disk: u64 = std::fs::read_to_string(agent.state_dir.join("sequence"))
        .expect("the sequence file")
        .trim()
        .parse()
        .expect("a number");

    broker.restart();
    // Everything numbered before the outage ended arrives, and nothing is missing.
    let (_, view) = wait_until("the backlog at the collector", WAIT, || {
        let (status, view) = collector.api(&format!("/api/v1/agents/{id}"));
        let last = view["last_sequence"].as_u64()?;
        (status == 200 && last + 1 >= on_disk).then_some((status, view))
    });
    let messages =
        collector.wait_for_sample(&series("pantau_agent_messages_total", id), WAIT, |v| {
            v >= before + 5.0
        });
    assert_eq!(view["missed_messages_total"], 0, "{view}\n{}", agent.logs());
    wait_until("no open sequence gap", WAIT, || {
        collector
            .sample(&series("pantau_agent_sequence_gaps", id))
            .filter(|v| *v == 0.0)
    });
    // A SIGKILL during a write (a 45 KB record can be cut between pages) can leave a torn tail,
    // which the restart cuts off and counts; seen once in about ten runs under load. Nothing
    // is missing for it (no gap and 0 missed, checked above). More than one per kill would
    // mean records damaged some other way.
    // The agent's own counters come in its live messages: the backlog is history (kept for
    // backfill, not shown), and the agent's families went when the sweep saw it down during
    // the outage, so wait for the first live report rather than read at once.
    let corrupt = collector.wait_for_sample(
        &series("pantau_agent_outbox_corrupt_records_total", id),
        WAIT,
        |_| true,
    );
    assert!(corrupt <= 5.0, "{corrupt} corrupt records after 5 kills");
    collector.wait_for_sample(&series("pantau_agent_outbox_on_disk", id), WAIT, |v| {
        v == 1.0
    });
    eprintln!("{messages} messages, sequence {on_disk} before the broker came back");
}
