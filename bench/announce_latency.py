"""API call -> first non-silent frame, for an emergency text announcement through the collector.

Run by bench/announce-latency.sh. The whole path a staff member's urgent message takes: an
HTTP `POST /api/v1/announcements` to a release pantau-collector (token auth, SQLite history,
signing), Mosquitto, a release pantau-agent with the sound role (verification, speech
synthesis, rodio) and ALSA's file plugin into the capture reader shared with
bench/sound-latency.sh (a FIFO paced like a sound card, a timestamp per 20 ms chunk). t0 is
taken just before the HTTP request; the result is the first chunk louder than the threshold
after t0. The peer is the same text with `espeak-ng --stdout | aplay` into the same device,
started at the same kind of moment.
"""
import json, os, shutil, statistics, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sound_latency import (KEY, READER, TEXT, first_loud_after, free_port, percentile,  # noqa: E402
                           wait_quiet)

RUNS = int(os.environ.get("RUNS", "50"))
TOKEN = "benchmark-token-0123456789"
AGENT = "bench-sound"


def post(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Content-Type": "application/json", "Authorization": "Bearer " + TOKEN})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def get(url):
    # Reads need a login too; the operator token may read.
    request = urllib.request.Request(url, headers={"Authorization": "Bearer " + TOKEN})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def wait_for(what, check, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = check()
            if value:
                return value
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("timed out waiting for " + what)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bins = os.environ.get("PANTAU_BIN_DIR", os.path.join(root, "target/release"))
    tmp = tempfile.mkdtemp(prefix="pantau-bench-announce-")
    procs = []
    try:
        port = free_port()
        conf = os.path.join(tmp, "mosquitto.conf")
        open(conf, "w").write("listener %d 127.0.0.1\nallow_anonymous true\nuser root\n" % port)
        procs.append(subprocess.Popen(["mosquitto", "-c", conf], stderr=subprocess.DEVNULL))
        fifo = os.path.join(tmp, "played.fifo")
        os.mkfifo(fifo)
        log = os.path.join(tmp, "played.log")
        reader = os.path.join(tmp, "reader.py")
        open(reader, "w").write(READER)
        reader = subprocess.Popen([sys.executable, reader, fifo, os.path.join(tmp, "played.raw"), log],
                                  stdout=subprocess.PIPE, text=True)
        procs.append(reader)
        # The pipe can be shrunk only while empty: nothing may open the device before this.
        if reader.stdout.readline().strip() != "reader ready":
            raise SystemExit("the capture reader did not start")
        os.makedirs(os.path.join(tmp, "xdg/alsa"))
        open(os.path.join(tmp, "xdg/alsa/asoundrc"), "w").write(
            'pcm.!default {\n type plug\n slave { pcm "capture"; format S16_LE; rate 48000; channels 2 }\n}\n'
            'pcm.capture {\n type file\n slave.pcm "null"\n file "%s"\n format "raw"\n}\n' % fifo)
        open(os.path.join(tmp, "key"), "wb").write(KEY)
        open(os.path.join(tmp, "tokens"), "w").write(TOKEN + "\n")
        mqtt = "mqtt://127.0.0.1:%d" % port
        http_port = free_port()
        collector_env = dict(os.environ, PANTAU_BROKER__EMBEDDED="false", PANTAU_MQTT__URL=mqtt,
                             PANTAU_HTTP__LISTEN="127.0.0.1:%d" % http_port,
                             PANTAU_ANNOUNCEMENTS__KEY_FILE=os.path.join(tmp, "key"),
                             PANTAU_API__TOKEN_FILE=os.path.join(tmp, "tokens"),
                             PANTAU_STORAGE__DIR=os.path.join(tmp, "storage"), PANTAU_LOG="warn")
        procs.append(subprocess.Popen([os.path.join(bins, "pantau-collector"), "--config",
                                       os.path.join(root, "configs/collector.toml")],
                                      env=collector_env,
                                      stderr=open(os.path.join(tmp, "collector.log"), "w")))
        agent_env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(tmp, "xdg"),
                         PANTAU_AGENT__ID=AGENT, PANTAU_AGENT__SITE="office",
                         PANTAU_AGENT__STATE_DIR=os.path.join(tmp, "state"),
                         PANTAU_MQTT__URL=mqtt,
                         PANTAU_SOUND__KEY_FILE=os.path.join(tmp, "key"),
                         PANTAU_SOUND__CLIPS_DIR=os.path.join(tmp, "clips"),
                         PANTAU_SOUND__QUIET_HOURS="", PANTAU_LOG="warn")
        procs.append(subprocess.Popen([os.path.join(bins, "pantau-agent"), "--config",
                                       os.path.join(root, "configs/agent-sound.toml")],
                                      env=agent_env,
                                      stderr=open(os.path.join(tmp, "agent.log"), "w")))
        api = "http://127.0.0.1:%d/api/v1" % http_port
        wait_for("the collector to know the agent",
                 lambda: get("%s/agents/%s" % (api, AGENT)).get("online") is True)
        body = {"text": TEXT, "targets": [AGENT], "priority": "emergency", "chime": False}
        # One warm-up (first device open, first speech synthesis), not counted.
        wait_for("the collector to take an announcement for the agent",
                 lambda: post(api + "/announcements", body)[0] == 201)
        first_loud_after(log, 0)
        pantau, peer = [], []
        for _ in range(RUNS):
            wait_quiet(log)
            t0 = time.time()
            status, answer = post(api + "/announcements", body)
            assert status == 201, answer
            pantau.append(first_loud_after(log, t0) - t0)
            wait_quiet(log)
            t0 = time.time()
            subprocess.run("espeak-ng -v id -s 160 --stdout '%s' | aplay -q" % TEXT, shell=True,
                           env=agent_env, check=True)
            peer.append(first_loud_after(log, t0) - t0)
        history = get(api + "/announcements?outcome=finished&limit=1000")["announcements"]
        for name, values in (("collector API -> agent", pantau), ("espeak-ng | aplay", peer)):
            print("%-24s median %6.1f ms  p99 %6.1f ms  min %6.1f  max %6.1f  over 300 ms: %d  (n=%d)" % (
                name, statistics.median(values) * 1000, percentile(values, 0.99) * 1000,
                min(values) * 1000, max(values) * 1000, sum(v > 0.3 for v in values), len(values)))
        print("history: %d announcements finished (of %d sent)" % (len(history), RUNS + 1))
        print("load average at the end: %s" % open("/proc/loadavg").read().split()[:3])
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
