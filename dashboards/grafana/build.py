#!/usr/bin/env python3
"""Writes Pantau's Grafana dashboards (dashboards/grafana/*.json) from the definitions below.

Run it after editing: `python3 dashboards/grafana/build.py`. The test suite checks the JSON
(schema, unique ids, datasource variable, units, descriptions, queries) and runs every query
against a real Prometheus scraping a live collector. Queries use the labels the collector
exposes: `instance` is the agent id, `site` its site; probes add `link`, `probe`, `target`.
"""
import json
import pathlib

SCHEMA_VERSION = 39
DS = {"type": "prometheus", "uid": "${datasource}"}
HERE = pathlib.Path(__file__).parent


def target(expr, legend="", ref="A", instant=False):
    t = {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref}
    if instant:
        t.update(instant=True, range=False, format="table")
    return t


class Board:
    def __init__(self, uid, title, description):
        self.uid, self.title, self.description = uid, title, description
        self.panels, self.variables, self.annotations = [], [], []
        self.next_id, self.y = 1, 0
        self.row_x, self.row_h = 0, 0

    def variable(self, name, label, query, multi=True, include_all=True):
        self.variables.append({
            "name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": f"{name}-var"}, "definition": query,
            "refresh": 2, "multi": multi, "includeAll": include_all, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]} if include_all else {},
            "sort": 1, "options": [],
        })

    def row(self, title):
        self.newline()
        self.panels.append({"id": self._id(), "type": "row", "title": title, "collapsed": False,
                            "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}, "panels": []})
        self.y += 1

    def newline(self):
        if self.row_x:
            self.y += self.row_h
            self.row_x, self.row_h = 0, 0

    def panel(self, kind, title, description, unit, targets, w=12, h=8, **extra):
        if self.row_x + w > 24:
            self.newline()
        panel = {
            "id": self._id(), "type": kind, "title": title, "description": description,
            "datasource": DS, "targets": [dict(t, refId=chr(ord("A") + i)) for i, t in enumerate(targets)],
            "gridPos": {"x": self.row_x, "y": self.y, "w": w, "h": h},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {},
        }
        for key, value in extra.items():
            if key == "defaults":
                panel["fieldConfig"]["defaults"].update(value)
            elif key == "overrides":
                panel["fieldConfig"]["overrides"] = value
            else:
                panel[key] = value
        self.panels.append(panel)
        self.row_x += w
        self.row_h = max(self.row_h, h)
        return panel

    def _id(self):
        self.next_id += 1
        return self.next_id - 1

    def json(self):
        return {
            "uid": self.uid, "title": self.title, "description": self.description,
            "tags": ["pantau"], "timezone": "browser", "editable": True, "graphTooltip": 1,
            "schemaVersion": SCHEMA_VERSION, "version": 1, "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"},
            "links": [{"type": "dashboards", "tags": ["pantau"], "asDropdown": True,
                       "title": "Pantau", "includeVars": False, "keepTime": True}],
            "templating": {"list": [{
                "name": "datasource", "label": "Data source", "type": "datasource",
                "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "options": [],
            }] + self.variables},
            "annotations": {"list": [{
                "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                "name": "Annotations & Alerts", "type": "dashboard",
            }] + self.annotations},
            "panels": self.panels,
        }


def overview():
    b = Board("pantau-overview", "Pantau / Overview",
              "Every site and agent: up or down, last seen, open alerts, missed messages.")
    b.variable("site", "Site", "label_values(pantau_agent_up, site)")
    b.panel("stat", "Agents up", "Agents reporting now.", "none",
            [target('sum(pantau_agent_up{site=~"$site"})')], w=6, h=4)
    b.panel("stat", "Agents down", "Agents offline or silent past their interval.", "none",
            [target('count(pantau_agent_up{site=~"$site"} == 0) or vector(0)')], w=6, h=4,
            defaults={"thresholds": {"mode": "absolute", "steps": [
                {"color": "green", "value": None}, {"color": "red", "value": 1}]}})
    b.panel("stat", "Open alerts", "Alerts firing now in Prometheus.", "none",
            [target('count(ALERTS{alertstate="firing"}) or vector(0)')], w=6, h=4)
    b.panel("stat", "Missed messages", "Messages lost between agents and the collector over the range.", "none",
            [target('sum(increase(pantau_agent_missed_messages_total{site=~"$site"}[$__range])) or vector(0)')], w=6, h=4)
    b.panel("table", "Agents", "Each agent: up (1) or down (0), seconds since last seen, missed messages over the range.", "none",
            [target('pantau_agent_up{site=~"$site"}', instant=True),
             target('time() - pantau_agent_last_seen_timestamp_seconds{site=~"$site"}', instant=True),
             target('increase(pantau_agent_missed_messages_total{site=~"$site"}[$__range])', instant=True)],
            w=24, h=9, transformations=[{"id": "merge", "options": {}}],
            overrides=[{"matcher": {"id": "byName", "options": "Value #B"},
                        "properties": [{"id": "unit", "value": "s"}, {"id": "displayName", "value": "Last seen (ago)"}]},
                       {"matcher": {"id": "byName", "options": "Value #A"},
                        "properties": [{"id": "displayName", "value": "Up"}]},
                       {"matcher": {"id": "byName", "options": "Value #C"},
                        "properties": [{"id": "displayName", "value": "Missed"}]}])
    b.panel("state-timeline", "Agent up/down", "When each agent was up (1) or down (0).", "bool_on_off",
            [target('pantau_agent_up{site=~"$site"}', "{{site}}/{{instance}}")], w=24, h=8)
    b.panel("table", "Firing alerts", "Alerts firing now, with severity.", "none",
            [target('ALERTS{alertstate="firing"}', instant=True)], w=12, h=8)
    b.panel("timeseries", "Missed messages per agent", "Sequence gaps that stayed open, per 5 minutes.", "none",
            [target('increase(pantau_agent_missed_messages_total{site=~"$site"}[5m])', "{{instance}}")], w=12, h=8)
    return b


def servers():
    b = Board("pantau-servers", "Pantau / Servers",
              "Host health under node_exporter's names, per instance. Community node_exporter boards work too.")
    b.variable("instance", "Host", "label_values(node_uname_info, instance)")
    i = 'instance=~"$instance"'
    b.row("CPU and memory")
    b.panel("timeseries", "CPU busy", "Share of CPU time not idle, averaged over cores.", "percentunit",
            [target(f'1 - avg by (instance) (rate(node_cpu_seconds_total{{mode="idle",{i}}}[$__rate_interval]))', "{{instance}}")])
    b.panel("timeseries", "Load average (1 m)", "Runnable and waiting tasks, per core.", "short",
            [target(f'node_load1{{{i}}} / on (instance) count by (instance) (node_cpu_seconds_total{{mode="idle",{i}}})', "{{instance}}")])
    b.panel("timeseries", "Memory available", "MemAvailable as a share of MemTotal.", "percentunit",
            [target(f'node_memory_MemAvailable_bytes{{{i}}} / node_memory_MemTotal_bytes{{{i}}}', "{{instance}}")])
    b.panel("timeseries", "Memory pressure (PSI)", "Share of time some task waited for memory; empty on kernels without PSI.", "percentunit",
            [target(f'rate(node_pressure_memory_waiting_seconds_total{{{i}}}[$__rate_interval])', "{{instance}}")])
    b.row("File systems and disks")
    fs = f'fstype!~"tmpfs|ramfs",{i}'
    b.panel("timeseries", "File system used", "Used share of each mounted file system.", "percentunit",
            [target(f'1 - node_filesystem_avail_bytes{{{fs}}} / node_filesystem_size_bytes{{{fs}}}', "{{instance}} {{mountpoint}}")])
    b.panel("table", "Predicted time to full", "Seconds until full at the rate of the last 6 hours; only file systems that are filling.", "s",
            [target(f'(node_filesystem_avail_bytes{{{fs}}} / -deriv(node_filesystem_avail_bytes{{{fs}}}[6h])) > 0', instant=True)])
    b.panel("timeseries", "Disk throughput", "Bytes read (+) and written (-) per second.", "Bps",
            [target(f'rate(node_disk_read_bytes_total{{{i}}}[$__rate_interval])', "{{instance}} {{device}} read"),
             target(f'-rate(node_disk_written_bytes_total{{{i}}}[$__rate_interval])', "{{instance}} {{device}} write")])
    b.panel("timeseries", "Disk busy", "Share of time the disk had I/O in flight.", "percentunit",
            [target(f'rate(node_disk_io_time_seconds_total{{{i}}}[$__rate_interval])', "{{instance}} {{device}}")])
    b.row("Network, temperature, processes, clock")
    b.panel("timeseries", "Network traffic", "Bits per second received (+) and sent (-) per interface.", "bps",
            [target(f'rate(node_network_receive_bytes_total{{device!="lo",{i}}}[$__rate_interval]) * 8', "{{instance}} {{device}} in"),
             target(f'-rate(node_network_transmit_bytes_total{{device!="lo",{i}}}[$__rate_interval]) * 8', "{{instance}} {{device}} out")])
    b.panel("timeseries", "Temperatures", "hwmon sensors and thermal zones; empty on machines without them.", "celsius",
            [target(f'node_hwmon_temp_celsius{{{i}}}', "{{instance}} {{chip}} {{sensor}}"),
             target(f'node_thermal_zone_temp{{{i}}}', "{{instance}} {{type}}")])
    b.panel("timeseries", "Watched processes", "Processes running per watched group ([[host.processes]]).", "none",
            [target(f'namedprocess_namegroup_num_procs{{{i}}}', "{{instance}} {{groupname}}")])
    b.panel("timeseries", "Clock offset", "Kernel clock offset to its time source (timex); signed commands depend on it.", "s",
            [target(f'node_timex_offset_seconds{{{i}}}', "{{instance}}")])
    b.row("Power (UPS over NUT)")
    b.panel("timeseries", "UPS battery charge", "Battery charge of each UPS polled by these hosts.", "percent",
            [target(f'network_ups_tools_battery_charge{{{i}}}', "{{ups}}")], w=8)
    b.panel("timeseries", "UPS runtime left", "Seconds the battery would last at the current load.", "s",
            [target(f'network_ups_tools_battery_runtime{{{i}}}', "{{ups}}")], w=8)
    b.panel("timeseries", "UPS load and input voltage", "Load in percent of capacity and mains voltage.", "short",
            [target(f'network_ups_tools_ups_load{{{i}}}', "{{ups}} load %"),
             target(f'network_ups_tools_input_voltage{{{i}}}', "{{ups}} input V")], w=8)
    b.panel("state-timeline", "UPS on battery / low battery", "1 while the UPS runs on battery (OB) or its battery is low (LB).", "bool_on_off",
            [target(f'network_ups_tools_ups_status{{flag=~"OB|LB",{i}}}', "{{ups}} {{flag}}")], w=16)
    b.panel("stat", "Devices readable", "Devices (UPS, ...) that answered their last poll, of all polled.", "none",
            [target(f'sum(pantau_device_up{{{i}}}) or vector(0)', "up"),
             target(f'count(pantau_device_up{{{i}}}) or vector(0)', "polled")], w=8)
    b.row("Rooms (sensors on MQTT)")
    b.panel("timeseries", "Room temperature", "Temperature per room and sensor ([[sensors]] rules of the collector).", "celsius",
            [target('pantau_sensor_temperature_celsius', "{{room}} {{device}}")], w=8)
    b.panel("timeseries", "Room humidity", "Relative humidity per room and sensor.", "percentunit",
            [target('pantau_sensor_humidity_ratio', "{{room}} {{device}}")], w=8)
    b.panel("state-timeline", "Room sensors reporting", "1 while a sensor reports within its rule's timeout.", "bool_on_off",
            [target('pantau_sensor_up', "{{room}} {{device}}")], w=8)
    return b


def links():
    b = Board("pantau-links", "Pantau / Network links",
              "Per link: success, loss, round trip with jitter, RTT heatmap, throughput against capacity, availability.")
    b.variable("link", "Link", "label_values(probe_success, link)")
    l = 'link=~"$link"'
    b.annotations.append({
        "name": "Carrier changes", "datasource": DS, "enable": True, "iconColor": "orange",
        "expr": f'changes(pantau_link_carrier{{{l}}}[2m]) > 0', "step": "60s",
        "titleFormat": "Carrier changed on {{link}}", "textFormat": "{{instance}}",
    })
    b.panel("stat", "Availability over the range", "Share of probe rounds that succeeded over the selected range (e.g. 30 days, for the provider's contract).", "percentunit",
            [target(f'avg by (link) (avg_over_time(probe_success{{{l}}}[$__range]))', "{{link}}")], w=8, h=6,
            defaults={"decimals": 3})
    b.panel("timeseries", "Probe success", "1 when the probe succeeded, per probe.", "percentunit",
            [target(f'probe_success{{{l}}}', "{{link}} {{probe}}")], w=16, h=6)
    b.panel("timeseries", "Packet loss", "Share of ICMP echoes lost per round.", "percentunit",
            [target(f'pantau_probe_icmp_packet_loss_ratio{{{l}}}', "{{link}} {{target}}")])
    b.panel("timeseries", "Round trip with jitter band", "Average RTT, with the band of average ± jitter.", "s",
            [target(f'pantau_probe_icmp_rtt_avg_seconds{{{l}}}', "{{target}} rtt"),
             target(f'pantau_probe_icmp_rtt_avg_seconds{{{l}}} + pantau_probe_icmp_jitter_seconds{{{l}}}', "{{target}} +jitter"),
             target(f'clamp_min(pantau_probe_icmp_rtt_avg_seconds{{{l}}} - pantau_probe_icmp_jitter_seconds{{{l}}}, 0)', "{{target}} -jitter")],
            overrides=[{"matcher": {"id": "byRegexp", "options": ".*jitter"},
                        "properties": [{"id": "custom.lineWidth", "value": 0},
                                       {"id": "custom.fillOpacity", "value": 15}]}])
    b.panel("heatmap", "RTT heatmap", "Distribution of ICMP round trips (smokeping_prober's histogram).", "s",
            [dict(target(f'sum by (le) (increase(smokeping_response_duration_seconds_bucket{{{l}}}[$__rate_interval]))', "{{le}}"), format="heatmap")],
            options={"calculate": False, "yAxis": {"unit": "s"}, "cellGap": 1})
    b.panel("timeseries", "Throughput against capacity", "Bits per second in and out of the link's interface, and its configured capacity.", "bps",
            [target(f'pantau_link_receive_bytes_per_second{{{l}}} * 8', "{{link}} in"),
             target(f'pantau_link_transmit_bytes_per_second{{{l}}} * 8', "{{link}} out"),
             target(f'pantau_link_capacity_bytes_per_second{{{l}}} * 8', "{{link}} capacity")])
    b.panel("state-timeline", "Carrier", "Physical link state: 1 carrier, 0 none.", "bool_on_off",
            [target(f'pantau_link_carrier{{{l}}}', "{{link}}")])
    b.panel("timeseries", "HTTP and DNS duration", "Total time of HTTP and DNS probes.", "s",
            [target(f'probe_duration_seconds{{{l}}}', "{{probe}}")])
    # Series under snmp_exporter's if_mib names, with the [[snmp]] table's name as `device`.
    b.row("Switches and routers (SNMP)")
    b.panel("timeseries", "Interface traffic (SNMP)", "Bits per second in and out of each watched interface of the SNMP devices (ifHCInOctets, ifHCOutOctets), against its speed (ifHighSpeed).", "bps",
            [target('rate(ifHCInOctets[$__rate_interval]) * 8', "{{device}} {{ifName}} in"),
             target('rate(ifHCOutOctets[$__rate_interval]) * 8', "{{device}} {{ifName}} out"),
             target('ifHighSpeed * 1e6', "{{device}} {{ifName}} speed")], w=12)
    b.panel("state-timeline", "Interface state (SNMP)", "ifOperStatus of each watched interface: up, down, lowerLayerDown, ...", "none",
            [target('ifOperStatus', "{{device}} {{ifName}}")], w=12,
            defaults={"mappings": [{"type": "value", "options": {
                "1": {"text": "up", "color": "green"}, "2": {"text": "down", "color": "red"},
                "3": {"text": "testing", "color": "blue"}, "4": {"text": "unknown", "color": "orange"},
                "5": {"text": "dormant", "color": "blue"}, "6": {"text": "notPresent", "color": "orange"},
                "7": {"text": "lowerLayerDown", "color": "red"}}}]})
    b.panel("timeseries", "Interface errors (SNMP)", "Packets per second that arrived damaged (ifInErrors) or could not be sent (ifOutErrors).", "pps",
            [target('rate(ifInErrors[$__rate_interval])', "{{device}} {{ifName}} in"),
             target('rate(ifOutErrors[$__rate_interval])', "{{device}} {{ifName}} out")], w=12)
    b.panel("stat", "SNMP devices answering", "SNMP devices that answered their last poll, of all polled; pantau_device_poll_errors_total{kind=\"snmp\"} has the reasons of failed polls.", "none",
            [target('sum(pantau_device_up{kind="snmp"}) or vector(0)', "up"),
             target('count(pantau_device_up{kind="snmp"}) or vector(0)', "polled")], w=12)
    return b


def sound():
    b = Board("pantau-sound", "Pantau / Sound system",
              "Speakers: device up, queue, playing, announcements by priority and outcome, schedules.")
    b.variable("instance", "Speaker", "label_values(pantau_sound_device_up, instance)")
    i = 'instance=~"$instance"'
    b.panel("state-timeline", "Device up", "1 when the audio device opens.", "bool_on_off",
            [target(f'pantau_sound_device_up{{{i}}}', "{{instance}}")], w=12, h=6)
    b.panel("timeseries", "Queue and playing", "Announcements waiting, and 1 while one plays.", "none",
            [target(f'pantau_sound_queue_length{{{i}}}', "{{instance}} queued"),
             target(f'pantau_sound_playing{{{i}}}', "{{instance}} playing")], w=12, h=6)
    b.panel("timeseries", "Announcements by priority and outcome", "Announcements ended per hour, by priority and outcome.", "none",
            [target(f'sum by (priority, outcome) (increase(pantau_sound_announcements_total{{{i}}}[1h]))', "{{priority}} {{outcome}}")], w=24)
    b.panel("table", "Last success and next scheduled", "When each speaker last finished an announcement and when its next scheduled one is due.", "dateTimeAsIso",
            [target(f'pantau_sound_last_success_timestamp_seconds{{{i}}} * 1000', instant=True),
             target(f'pantau_sound_next_scheduled_timestamp_seconds{{{i}}} * 1000', instant=True)],
            transformations=[{"id": "merge", "options": {}}])
    b.panel("table", "Schedule version per speaker", "The schedule version the collector published and the one each agent applied.", "none",
            [target('pantau_collector_sound_schedule_version', instant=True)])
    return b


def pantau():
    b = Board("pantau-self", "Pantau / Pantau itself",
              "The monitoring system's own health: ingest, rejections, outboxes, broker, remote write.")
    b.panel("timeseries", "Ingest rate", "Messages received per second by the collector.", "reqps",
            [target('rate(pantau_collector_received_messages_total[$__rate_interval])', "received")])
    b.panel("timeseries", "Rejected messages by reason", "Messages refused per second: malformed, out of range, spoofed.", "reqps",
            [target('sum by (reason) (rate(pantau_collector_rejected_messages_total[$__rate_interval]))', "{{reason}}")])
    b.panel("timeseries", "Outbox depth per agent", "Messages each agent holds unsent (broker or link out).", "none",
            [target('pantau_agent_outbox_messages', "{{instance}}")])
    b.panel("timeseries", "Outbox drops", "Messages dropped from full or expired outboxes, per 5 minutes.", "none",
            [target('increase(pantau_agent_outbox_dropped_messages_total[5m])', "{{instance}}")])
    b.panel("timeseries", "Broker connection", "1 while the collector is connected to the broker; connects per hour.", "none",
            [target('pantau_collector_mqtt_connected', "connected"),
             target('increase(pantau_collector_mqtt_connections_total[1h])', "connects per hour")])
    b.panel("timeseries", "Agent connection errors", "Failed connection attempts per agent and reason, per 5 minutes.", "none",
            [target('increase(pantau_agent_mqtt_connection_errors_total[5m])', "{{instance}} {{reason}}")])
    b.panel("timeseries", "Collector memory", "Resident memory of the collector process.", "bytes",
            [target('process_resident_memory_bytes{job="pantau"}', "{{instance}}")])
    b.panel("timeseries", "API authentication failures", "401 and 403 answers per 5 minutes.", "none",
            [target('increase(pantau_collector_api_auth_failures_total[5m])', "{{reason}}")])
    b.panel("timeseries", "Remote-write backlog", "History waiting on disk for the remote-write endpoint, and the age of its oldest sample.", "bytes",
            [target('pantau_collector_backfill_queue_bytes', "queued bytes"),
             target('pantau_collector_backfill_queue_oldest_sample_age_seconds', "oldest sample age (s)")],
            overrides=[{"matcher": {"id": "byName", "options": "oldest sample age (s)"},
                        "properties": [{"id": "unit", "value": "s"}]}])
    b.panel("timeseries", "Remote-write traffic", "History samples sent, failed (retried) and dropped by reason, per 5 minutes.", "none",
            [target('increase(pantau_collector_backfill_sent_samples_total[5m])', "sent"),
             target('increase(pantau_collector_backfill_failed_samples_total[5m])', "failed (retried)"),
             target('sum by (reason) (increase(pantau_collector_backfill_dropped_samples_total[5m]))', "dropped {{reason}}")])
    return b


BOARDS = [overview, servers, links, sound, pantau]

if __name__ == "__main__":
    for make in BOARDS:
        board = make()
        path = HERE / f"{board.uid}.json"
        path.write_text(json.dumps(board.json(), indent=2, ensure_ascii=False) + "\n")
        print(path)
