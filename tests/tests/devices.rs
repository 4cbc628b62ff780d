//! Devices that cannot run an agent, polled by one that can: a UPS simulated by Debian's
//! Network UPS Tools (`dummy-ups` behind a real `upsd`) reaches the collector's /metrics under
//! nut_exporter's names, its status change is an event at once, and a wrong password is
//! reported as a login failure.

use std::time::Duration;

use pantau_tests::{Agent, Collector, Nut, TestDir};

const WAIT: Duration = Duration::from_secs(30);
const UPS: &str = "dc-ups";

const ON_LINE: &str = "battery.charge: 100\nbattery.runtime: 3600\nups.load: 20\n\
input.voltage: 230.5\nups.status: OL CHRG\ndevice.model: Test UPS 1500\ndevice.mfr: Pantau\n";
const ON_BATTERY_LOW: &str = "battery.charge: 9\nbattery.runtime: 120\nups.load: 20\n\
input.voltage: 0\nups.status: OB LB\ndevice.model: Test UPS 1500\ndevice.mfr: Pantau\n";

fn agent(dir: &TestDir, collector: &Collector, id: &str, nut: &Nut, password: &str) -> Agent {
    let password_file = dir.write(format!("{id}.password"), format!("{password}\n"));
    let config = dir.write(
        format!("{id}.toml"),
        format!(
            "[agent]\nid = \"{id}\"\nsite = \"dc\"\n\n[[ups]]\naddress = \"{address}\"\n\
             name = \"{UPS}\"\nusername = \"monitor\"\npassword_file = \"{password}\"\n\
             timeout_seconds = 3\n",
            address = nut.address(),
            password = password_file.display(),
        ),
    );
    Agent::start_config(
        dir,
        &config.display().to_string(),
        id,
        "dc",
        &collector.broker_url(),
        1,
        &[],
    )
}

#[test]
fn a_ups_reaches_metrics_and_its_status_change_is_an_event() {
    let dir = TestDir::new();
    let nut = Nut::start(UPS, ON_LINE, &[("monitor", "rahasia")]);
    let collector = Collector::embedded(&dir);
    let _agent = agent(&dir, &collector, "dc-power", &nut, "rahasia");

    let series = |name: &str, extra: &str| {
        format!(r#"{name}{{{extra}instance="dc-power",site="dc",ups="{UPS}"}}"#)
    };
    collector.wait_for_sample(&series("network_ups_tools_battery_charge", ""), WAIT, |v| {
        v == 100.0
    });
    let text = collector.metrics();
    for (name, expected) in [
        ("network_ups_tools_battery_runtime", 3600.0),
        ("network_ups_tools_ups_load", 20.0),
        ("network_ups_tools_input_voltage", 230.5),
    ] {
        assert_eq!(
            pantau_tests::sample(&text, &series(name, "")),
            Some(expected),
            "{name}\n{text}"
        );
    }
    assert_eq!(
        pantau_tests::sample(
            &text,
            &series("network_ups_tools_ups_status", r#"flag="OL","#)
        ),
        Some(1.0)
    );
    assert_eq!(
        pantau_tests::sample(
            &text,
            &series("network_ups_tools_ups_status", r#"flag="OB","#)
        ),
        Some(0.0)
    );
    // dummy-ups reports its own device.mfr and device.model ("Dummy ..."), whatever the file says.
    assert!(
        text.lines().any(|line| line
            .starts_with(r#"network_ups_tools_device_info{instance="dc-power",mfr=""#)
            && line.contains(r#"type="ups",ups="dc-ups"} 1"#)),
        "{text}"
    );
    assert_eq!(
        pantau_tests::sample(
            &text,
            r#"pantau_device_up{device="dc-ups",instance="dc-power",kind="ups",site="dc"}"#
        ),
        Some(1.0)
    );

    nut.set(ON_BATTERY_LOW);
    collector.wait_for_sample(
        &series("network_ups_tools_ups_status", r#"flag="LB","#),
        WAIT,
        |v| v == 1.0,
    );
    let text = collector.metrics();
    assert_eq!(
        pantau_tests::sample(
            &text,
            &series("network_ups_tools_ups_status", r#"flag="OB","#)
        ),
        Some(1.0)
    );
    assert_eq!(
        pantau_tests::sample(
            &text,
            &series("network_ups_tools_ups_status", r#"flag="OL","#)
        ),
        Some(0.0)
    );
    assert_eq!(
        pantau_tests::sample(&text, &series("network_ups_tools_battery_charge", "")),
        Some(9.0)
    );
    let body = collector.wait_for_api("/api/v1/agents/dc-power/events", 200, WAIT, |body| {
        body.to_string().contains("ups_low_battery")
    });
    let text = body.to_string();
    assert!(text.contains("ups_on_battery"), "{text}");
    assert!(text.contains("UPS dc-ups has a low battery"), "{text}");
}

#[test]
fn a_wrong_password_is_reported_as_a_login_failure() {
    let dir = TestDir::new();
    let nut = Nut::start(UPS, ON_LINE, &[("monitor", "rahasia")]);
    let collector = Collector::embedded(&dir);
    let mut agent = agent(&dir, &collector, "dc-power-2", &nut, "salah");
    collector.wait_for_sample(
        r#"pantau_device_poll_errors_total{device="dc-ups",instance="dc-power-2",kind="ups",reason="login",site="dc"}"#,
        WAIT,
        |v| v >= 1.0,
    );
    assert_eq!(
        collector.sample(
            r#"pantau_device_up{device="dc-ups",instance="dc-power-2",kind="ups",site="dc"}"#
        ),
        Some(0.0)
    );
    assert!(
        !collector
            .metrics()
            .contains("network_ups_tools_battery_charge"),
        "no values without a login"
    );
    agent
        .guard()
        .wait_for_log("refused the login of user 'monitor'", WAIT);
    drop(nut);
}
