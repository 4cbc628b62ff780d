//! Room sensors that speak MQTT themselves, read by the collector through `[[sensors]]` rules:
//! a payload in each documented format, published with a real mosquitto_pub to a real
//! Mosquitto, becomes its mapped series with `room` and `device`; a malformed one is counted;
//! a silent sensor goes down.

use std::time::Duration;

use pantau_tests::{Collector, Mosquitto, TestDir, example_config};

const WAIT: Duration = Duration::from_secs(20);

const RULES: &str = r#"
[[sensors]]
topic = "tele/+/SENSOR"
format = "tasmota"
room = "server-room"
timeout_seconds = 3
fields = [
  { path = "AM2301.Temperature", metric = "temperature_celsius" },
  { path = "AM2301.Humidity", metric = "humidity_ratio", scale = 0.01 },
]

[[sensors]]
topic = "zigbee2mqtt/+"
format = "zigbee2mqtt"
room = "meeting-room"
fields = [
  { path = "temperature", metric = "temperature_celsius" },
  { path = "humidity", metric = "humidity_ratio", scale = 0.01 },
]

[[sensors]]
topic = "+/sensor/+/state"
format = "esphome"
room = "ups-room"
fields = [{ path = "suhu", metric = "temperature_celsius" }]

[[sensors]]
topic = "rooms/+/co2"
format = "number"
room = "lobby"
fields = [{ path = "value", metric = "co2_ppm" }]
"#;

#[test]
fn every_format_maps_malformed_is_counted_and_a_silent_sensor_goes_down() {
    let dir = TestDir::new();
    let broker = Mosquitto::start();
    let config = std::fs::read_to_string(example_config("collector.toml"))
        .expect("collector example")
        + RULES;
    let config = dir.write("collector.toml", config);
    let collector = Collector::with_config(&dir, &broker, &config, &[]);

    broker.mosquitto_pub(
        "tele/th-rack1/SENSOR",
        br#"{"Time":"2026-11-28T10:00:00","AM2301":{"Temperature":24.5,"Humidity":61},"TempUnit":"C"}"#,
        false,
    );
    broker.mosquitto_pub(
        "zigbee2mqtt/ruang-rapat",
        br#"{"temperature":26.2,"humidity":55,"battery":90,"linkquality":120}"#,
        false,
    );
    broker.mosquitto_pub("esp-ups/sensor/suhu/state", b"29.75", false);
    broker.mosquitto_pub("rooms/lobby-1/co2", b"612", false);

    for (series, expected) in [
        (
            r#"pantau_sensor_temperature_celsius{device="th-rack1",room="server-room"}"#,
            24.5,
        ),
        (
            r#"pantau_sensor_humidity_ratio{device="th-rack1",room="server-room"}"#,
            0.61,
        ),
        (
            r#"pantau_sensor_temperature_celsius{device="ruang-rapat",room="meeting-room"}"#,
            26.2,
        ),
        (
            r#"pantau_sensor_humidity_ratio{device="ruang-rapat",room="meeting-room"}"#,
            0.55,
        ),
        (
            r#"pantau_sensor_temperature_celsius{device="esp-ups",room="ups-room"}"#,
            29.75,
        ),
        (
            r#"pantau_sensor_co2_ppm{device="lobby-1",room="lobby"}"#,
            612.0,
        ),
        (
            r#"pantau_sensor_up{device="th-rack1",room="server-room"}"#,
            1.0,
        ),
    ] {
        collector.wait_for_sample(series, WAIT, |v| (v - expected).abs() < 1e-9);
    }

    // Malformed: not JSON, and a number that is not one. Counted, the rest untouched.
    broker.mosquitto_pub("zigbee2mqtt/ruang-rapat", b"{temperature: hot", false);
    broker.mosquitto_pub("rooms/lobby-1/co2", b"lots", false);
    collector.wait_for_sample(
        r#"pantau_sensor_rejected_messages_total{reason="invalid_json"}"#,
        WAIT,
        |v| v == 1.0,
    );
    collector.wait_for_sample(
        r#"pantau_sensor_rejected_messages_total{reason="not_a_number"}"#,
        WAIT,
        |v| v == 1.0,
    );
    assert_eq!(
        collector.sample(r#"pantau_sensor_co2_ppm{device="lobby-1",room="lobby"}"#),
        Some(612.0)
    );

    // The Tasmota rule's timeout is 3 s: silent since, th-rack1 goes down and its readings go.
    collector.wait_for_sample(
        r#"pantau_sensor_up{device="th-rack1",room="server-room"}"#,
        WAIT,
        |v| v == 0.0,
    );
    assert_eq!(
        collector
            .sample(r#"pantau_sensor_temperature_celsius{device="th-rack1",room="server-room"}"#),
        None
    );
    // A sensor topic never becomes an agent.
    let (_, agents) = collector.api("/api/v1/agents");
    assert_eq!(
        agents["agents"].as_array().map(Vec::len),
        Some(0),
        "{agents}"
    );
}
