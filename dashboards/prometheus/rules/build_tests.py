# Writes pantau.rules.test.yml from the cases below: per alert, series that fire and series that
# stay quiet. The expected annotations are taken from promtool itself (the rendered templates).
# Run from this directory after changing the rules: python3 build_tests.py (needs python3-yaml).
import os, subprocess, tempfile, yaml, re, json, sys
RULES = "pantau.rules.yml"
S = lambda name, labels, values: {"series": name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}", "values": values}
cases = []
def case(alert, at, series, fires):
    cases.append((alert, at, series, fires))

dc = {"site": "dc"}
case("PantauCollectorDown", "3m",
     [S("up", {"job": "pantau", "instance": "collector-a:9810"}, "0x5"),
      S("up", {"job": "pantau", "instance": "collector-b:9810"}, "1x5")],
     [{"job": "pantau", "instance": "collector-a:9810"}])
case("PantauAgentDown", "4m",
     [S("pantau_agent_up", {"instance": "srv-1", **dc}, "0x6"),
      S("pantau_agent_up", {"instance": "srv-2", **dc}, "1x6")],
     [{"instance": "srv-1", **dc}])
case("PantauLinkAgentDown", "4m",
     [S("pantau_agent_up", {"instance": "gor-link", "site": "gor"}, "0x6"),
      S("pantau_link_info", {"instance": "gor-link", "site": "gor", "link": "gor", "interface": "eth1"}, "1 _x5"),
      S("pantau_agent_up", {"instance": "srv-1", **dc}, "0x6")],
     [{"instance": "gor-link", "site": "gor"}])
case("PantauMessagesMissed", "10m",
     [S("pantau_agent_missed_messages_total", {"instance": "srv-1", **dc}, "0 0 3 3 3 3 3 3 3 3 3"),
      S("pantau_agent_missed_messages_total", {"instance": "srv-2", **dc}, "5x10")],
     [{"instance": "srv-1", **dc}])
case("PantauOutboxFilling", "30m",
     [S("pantau_agent_outbox_messages", {"instance": "gor-link", "site": "gor"}, "600x30"),
      S("pantau_agent_outbox_oldest_message_timestamp_seconds", {"instance": "gor-link", "site": "gor"}, "0x30"),
      S("pantau_agent_outbox_messages", {"instance": "srv-1", **dc}, "0x30"),
      S("pantau_agent_outbox_oldest_message_timestamp_seconds", {"instance": "srv-1", **dc}, "0+60x30")],
     [{"instance": "gor-link", "site": "gor"}])
case("PantauOutboxDropping", "10m",
     [S("pantau_agent_outbox_dropped_messages_total", {"instance": "gor-link", "site": "gor"}, "0 0 0 10 20 30 40 50 60 70 80"),
      S("pantau_agent_outbox_dropped_messages_total", {"instance": "srv-1", **dc}, "0x10")],
     [{"instance": "gor-link", "site": "gor"}])
case("PantauCollectorRejectingMessages", "15m",
     [S("pantau_collector_rejected_messages_total", {"job": "pantau", "instance": "c:9810", "reason": "invalid_json"}, "0+10x15"),
      S("pantau_collector_rejected_messages_total", {"job": "pantau", "instance": "c:9810", "reason": "oversized"}, "0x15")],
     [{"reason": "invalid_json"}])
case("PantauCertificateExpiresSoon", "2h",
     [S("pantau_collector_tls_certificate_expiry_timestamp_seconds", {"job": "pantau", "instance": "c:9810", "certificate": "http"}, "871200x150"),
      S("pantau_collector_tls_certificate_expiry_timestamp_seconds", {"job": "pantau", "instance": "d:9810", "certificate": "http"}, "5191200x150")],
     [{"job": "pantau", "instance": "c:9810", "certificate": "http"}])
case("HostHighCpu", "25m",
     [S("node_cpu_seconds_total", {"instance": "srv-1", **dc, "cpu": "0", "mode": "idle"}, "0+3x25"),
      S("node_cpu_seconds_total", {"instance": "srv-2", **dc, "cpu": "0", "mode": "idle"}, "0+50x25")],
     [{"instance": "srv-1", **dc}])
case("HostMemoryPressure", "15m",
     [S("node_memory_MemAvailable_bytes", {"instance": "srv-1", **dc}, "50x15"),
      S("node_memory_MemTotal_bytes", {"instance": "srv-1", **dc}, "1000x15"),
      S("node_memory_MemAvailable_bytes", {"instance": "srv-2", **dc}, "500x15"),
      S("node_memory_MemTotal_bytes", {"instance": "srv-2", **dc}, "1000x15")],
     [{"instance": "srv-1", **dc}])
fs1 = {"instance": "srv-1", **dc, "device": "/dev/sda1", "fstype": "ext4", "mountpoint": "/var"}
fs2 = {"instance": "srv-2", **dc, "device": "/dev/sda1", "fstype": "ext4", "mountpoint": "/var"}
case("HostFilesystemPredictedFull", "8h",
     [S("node_filesystem_avail_bytes", fs1, "1000000-2000x480"),
      S("node_filesystem_size_bytes", fs1, "4000000x480"),
      S("node_filesystem_readonly", fs1, "0x480"),
      S("node_filesystem_avail_bytes", fs2, "3000000x480"),
      S("node_filesystem_size_bytes", fs2, "4000000x480"),
      S("node_filesystem_readonly", fs2, "0x480")],
     [fs1])
case("HostFilesystemDeviceError", "10m",
     [S("node_filesystem_device_error", fs1, "1x10"),
      S("node_filesystem_device_error", fs2, "0x10")],
     [fs1])
case("HostClockNotSynchronised", "20m",
     [S("node_timex_sync_status", {"instance": "srv-1", **dc}, "0x20"),
      S("node_timex_maxerror_seconds", {"instance": "srv-1", **dc}, "16x20"),
      S("node_timex_sync_status", {"instance": "srv-2", **dc}, "1x20"),
      S("node_timex_maxerror_seconds", {"instance": "srv-2", **dc}, "0.1x20")],
     [{"instance": "srv-1", **dc}])
case("HostClockSkew", "15m",
     [S("node_timex_offset_seconds", {"instance": "srv-1", **dc}, "-0.2x15"),
      S("node_timex_offset_seconds", {"instance": "srv-2", **dc}, "0.001x15")],
     [{"instance": "srv-1", **dc}])
p = lambda inst, link, probe, target, site="dc": {"instance": inst, "site": site, "link": link, "probe": probe, "target": target}
case("LinkDown", "3m",
     [S("probe_success", p("dc-probe", "gor", "gor-ping", "10.20.0.1"), "0x5"),
      S("probe_success", p("dc-probe", "gor", "gor-http", "http://10.20.0.1/"), "0x5"),
      S("probe_success", p("dc-probe", "isp", "isp-ping", "10.30.0.1"), "0 1 1 1 1 1"),
      S("probe_success", p("dc-probe", "isp", "isp-dns", "10.30.0.2"), "0x5")],
     [{"link": "gor"}])
case("LinkPacketLoss", "10m",
     [S("pantau_probe_icmp_packet_loss_ratio", p("dc-probe", "gor", "gor-ping", "10.20.0.1"), "0.2x10"),
      S("pantau_probe_icmp_packet_loss_ratio", p("dc-probe", "isp", "isp-ping", "10.30.0.1"), "0.01x10")],
     [p("dc-probe", "gor", "gor-ping", "10.20.0.1")])
case("LinkHighLatency", "15m",
     [S("pantau_probe_icmp_rtt_avg_seconds", p("dc-probe", "gor", "gor-ping", "10.20.0.1"), "0.4x15"),
      S("pantau_probe_icmp_rtt_avg_seconds", p("dc-probe", "isp", "isp-ping", "10.30.0.1"), "0.02x15")],
     [p("dc-probe", "gor", "gor-ping", "10.20.0.1")])
h1 = p("dc-probe", "isp", "portal", "https://portal.example.id/")
h2 = p("dc-probe", "isp", "intranet", "http://intranet.lan/")
i1 = p("dc-probe", "isp", "isp-ping", "10.30.0.1")
case("HttpTargetFailing", "5m",
     [S("probe_success", h1, "0x5"),
      S("probe_http_duration_seconds", {**h1, "phase": "connect"}, "0.1x5"),
      S("probe_success", h2, "1x5"),
      S("probe_http_duration_seconds", {**h2, "phase": "connect"}, "0.1x5"),
      S("probe_success", i1, "0x5")],
     [h1])
case("CertificateExpiringSoon", "1m",
     [S("probe_ssl_earliest_cert_expiry", h1, f"{7*86400}x2"),
      S("probe_ssl_earliest_cert_expiry", h2, f"{60*86400}x2")],
     [h1])
case("SoundDeviceDown", "3m",
     [S("pantau_sound_device_up", {"instance": "spk-lobby", **dc}, "0x5"),
      S("pantau_sound_device_up", {"instance": "spk-hall", **dc}, "1x5")],
     [{"instance": "spk-lobby", **dc}])
case("AnnouncementFailed", "5m",
     [S("pantau_sound_announcements_total", {"instance": "spk-lobby", **dc, "priority": "alert", "outcome": "failed"}, "0 0 1 1 1 1"),
      S("pantau_sound_announcements_total", {"instance": "spk-hall", **dc, "priority": "alert", "outcome": "failed"}, "0x5")],
     [{"instance": "spk-lobby", **dc, "priority": "alert", "outcome": "failed"}])
case("SoundScheduleOutdated", "15m",
     [S("pantau_collector_sound_schedule_version", {"job": "pantau", "instance": "spk-lobby", "state": "published"}, "3x15"),
      S("pantau_collector_sound_schedule_version", {"job": "pantau", "instance": "spk-lobby", "state": "applied"}, "2x15"),
      S("pantau_collector_sound_schedule_version", {"job": "pantau", "instance": "spk-hall", "state": "published"}, "3x15"),
      S("pantau_collector_sound_schedule_version", {"job": "pantau", "instance": "spk-hall", "state": "applied"}, "3x15")],
     [{"instance": "spk-lobby"}])

u1 = {"instance": "dc-power", **dc, "ups": "dc-ups"}
u2 = {"instance": "dc-power", **dc, "ups": "net-ups"}
case("UpsOnBattery", "3m",
     [S("network_ups_tools_ups_status", {**u1, "flag": "OB"}, "1x5"),
      S("network_ups_tools_ups_status", {**u2, "flag": "OB"}, "0x5")],
     [{**u1, "flag": "OB"}])
case("UpsLowBattery", "1m",
     [S("network_ups_tools_ups_status", {**u1, "flag": "LB"}, "1x5"),
      S("network_ups_tools_ups_status", {**u2, "flag": "LB"}, "0x5")],
     [{**u1, "flag": "LB"}])
d1 = {"instance": "dc-power", **dc, "kind": "ups", "device": "dc-ups"}
d2 = {"instance": "dc-power", **dc, "kind": "ups", "device": "net-ups"}
case("DeviceDown", "10m",
     [S("pantau_device_up", d1, "0x10"),
      S("pantau_device_up", d2, "1x10")],
     [d1])
i1 = {"instance": "gor-link", "site": "gor", "device": "gor-satria-sw1", "ifIndex": "2", "ifName": "Gi0/1", "ifDescr": "GigabitEthernet0/1", "ifAlias": "uplink"}
i2 = {**i1, "ifIndex": "3", "ifName": "Gi0/2", "ifDescr": "GigabitEthernet0/2", "ifAlias": ""}
i3 = {**i1, "ifIndex": "4", "ifName": "Gi0/3", "ifDescr": "GigabitEthernet0/3", "ifAlias": "spare"}
case("SnmpInterfaceDown", "5m",
     [S("ifOperStatus", i1, "1 1 2x4"), S("ifAdminStatus", i1, "1x6"),
      S("ifOperStatus", i2, "1x6"), S("ifAdminStatus", i2, "1x6"),
      S("ifOperStatus", i3, "2x6"), S("ifAdminStatus", i3, "2x6")],
     [i1])

r1 = {"room": "server-room", "device": "th-rack1"}
r2 = {"room": "meeting-room", "device": "ruang-rapat"}
case("RoomTemperatureHigh", "15m",
     [S("pantau_sensor_temperature_celsius", r1, "33x15"),
      S("pantau_sensor_temperature_celsius", r2, "24x15")],
     [r1])
case("RoomHumidityOutOfRange", "40m",
     [S("pantau_sensor_humidity_ratio", r1, "0.9x40"),
      S("pantau_sensor_humidity_ratio", r2, "0.55x40")],
     [r1])
case("RoomSensorDown", "15m",
     [S("pantau_sensor_up", r1, "0x15"),
      S("pantau_sensor_up", r2, "1x15")],
     [r1])

rules = yaml.safe_load(open(RULES))
severity = {r["alert"]: r["labels"]["severity"] for g in rules["groups"] for r in g["rules"]}
assert set(severity) == {c[0] for c in cases}, set(severity) ^ {c[0] for c in cases}

probe_path = os.path.join(tempfile.mkdtemp(), "probe.yml")

def annotations(alert, at, series, labels):
    """Asks promtool what the alert's annotations render to (templates with $value)."""
    doc = {"rule_files": [os.path.abspath(RULES)], "evaluation_interval": "1m", "tests": [{"interval": "1m", "input_series": series,
           "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": [{"exp_labels": {**labels, "severity": severity[alert]}}]}]}]}
    open(probe_path, "w").write(yaml.safe_dump(doc, sort_keys=False))
    out = subprocess.run(["promtool", "test", "rules", probe_path], capture_output=True, text=True); out = out.stdout + out.stderr
    got = out.split("got:[", 1)[1]
    m = re.search(r"Annotations:\{(.*)\}", got)
    if not m:
        sys.exit(f"{alert}: did not fire:\n{out}")
    return dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1)))

tests = []
for alert, at, series, fires in cases:
    exp = []
    for labels in fires:
        ann = {k: re.sub(r"\\(.)", r"\1", v) for k, v in annotations(alert, at, series, labels).items()}
        exp.append({"exp_labels": {**labels, "severity": severity[alert]}, "exp_annotations": ann})
    tests.append({"name": f"{alert}: fires for the first series, stays quiet for the other", "interval": "1m",
                  "input_series": series, "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": exp}]})
head = ("# promtool test rules pantau.rules.test.yml (run by the test suite). Per alert: series that make\n"
        "# it fire and series that must stay quiet at the same time; the expected annotations are the\n"
        "# rendered English and Indonesian summaries. Written by build_tests.py: add a case there.\n")
doc = {"rule_files": ["pantau.rules.yml"], "evaluation_interval": "1m", "tests": tests}
open("pantau.rules.test.yml", "w").write(head + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=120))
