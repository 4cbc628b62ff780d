"""Command arrival -> first non-silent frame, for an emergency text announcement.

Run by bench/sound-latency.sh. Starts its own Mosquitto, a capture reader on a FIFO (the
same recipe as the end-to-end tests: ALSA's file plugin, a one-page pipe, a reader paced like
a sound card that timestamps every 20 ms chunk) and a release pantau-agent with the sound
role; then, RUNS times, publishes a signed `announce` and finds the first chunk louder than
the threshold after the publish. The peer is what a shell script would do on the same
command: `espeak-ng --stdout TEXT | aplay`, started at the same moment.
"""
import hashlib, hmac, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time

RUNS = int(os.environ.get("RUNS", "50"))
TEXT = "Perhatian, mohon segera menuju pintu keluar"
KEY = b"benchmark-key-0123456789abcdef"
LOUD = 1000
READER = open(os.path.join(os.path.dirname(__file__), "capture_reader.py")).read()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def signed(agent, cid, args, valid_ms):
    now = int(time.time() * 1000)
    # The bytes Rust's serde writes for CommandMessage: declaration order, compact, args sorted.
    body = ('{"schema":1,"agent":%s,"site":"office","id":%s,"timestamp_ms":%d,"expires_ms":%d,"args":%s}'
            % (json.dumps(agent), json.dumps(cid), now, now + valid_ms,
               json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)))
    tag = hmac.new(KEY, body.encode(), hashlib.sha256).hexdigest()
    return body[:-1] + ',"hmac":"%s"}' % tag


def chunks(log):
    out = []
    with open(log) as f:
        for line in f:
            t, total, peak = line.split()
            out.append((float(t), int(total), int(peak)))
    return out


def first_loud_after(log, t0, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for t, _, peak in chunks(log):
            if t > t0 and peak >= LOUD:
                return t
        time.sleep(0.02)
    raise SystemExit("no sound within %.0f s" % timeout)


def wait_quiet(log, seconds=0.5):
    """Until the last `seconds` of capture are silent."""
    deadline = time.time() + 30
    while time.time() < deadline:
        recent = [c for c in chunks(log) if c[0] > time.time() - seconds]
        if recent and all(p < LOUD for _, _, p in recent):
            return
        time.sleep(0.05)


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tmp = tempfile.mkdtemp(prefix="pantau-bench-sound-")
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
        procs.append(subprocess.Popen([sys.executable, reader, fifo, os.path.join(tmp, "played.raw"), log],
                                      stdout=subprocess.DEVNULL))
        os.makedirs(os.path.join(tmp, "xdg/alsa"))
        open(os.path.join(tmp, "xdg/alsa/asoundrc"), "w").write(
            'pcm.!default {\n type plug\n slave { pcm "capture"; format S16_LE; rate 48000; channels 2 }\n}\n'
            'pcm.capture {\n type file\n slave.pcm "null"\n file "%s"\n format "raw"\n}\n' % fifo)
        open(os.path.join(tmp, "key"), "wb").write(KEY)
        env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(tmp, "xdg"),
                   PANTAU_AGENT__ID="bench-sound", PANTAU_AGENT__SITE="office",
                   PANTAU_AGENT__STATE_DIR=os.path.join(tmp, "state"),
                   PANTAU_MQTT__URL="mqtt://127.0.0.1:%d" % port,
                   PANTAU_SOUND__KEY_FILE=os.path.join(tmp, "key"),
                   PANTAU_SOUND__CLIPS_DIR=os.path.join(tmp, "clips"),
                   PANTAU_SOUND__QUIET_HOURS="", PANTAU_LOG="warn")
        agent_log = open(os.path.join(tmp, "agent.log"), "w")
        binary = os.path.join(os.environ.get("PANTAU_BIN_DIR", os.path.join(root, "target/release")),
                              "pantau-agent")
        procs.append(subprocess.Popen([binary, "--config",
                                       os.path.join(root, "configs/agent-sound.toml")],
                                      env=env, stderr=agent_log))
        time.sleep(2)
        topic = "pantau/v1/office/bench-sound/cmd/announce"
        pantau, peer = [], []
        for run in range(RUNS):
            wait_quiet(log)
            payload = signed("bench-sound", "bench-%d" % run,
                             {"text": TEXT, "priority": "emergency", "chime": False}, 60000)
            t0 = time.time()
            subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1",
                            "-t", topic, "-m", payload], check=True)
            pantau.append(first_loud_after(log, t0) - t0)
            wait_quiet(log)
            t0 = time.time()
            subprocess.run("espeak-ng -v id -s 160 --stdout '%s' | aplay -q" % TEXT, shell=True,
                           env=env, check=True)
            peer.append(first_loud_after(log, t0) - t0)
        for name, values in (("pantau-agent", pantau), ("espeak-ng | aplay", peer)):
            print("%-20s median %6.1f ms  p99 %6.1f ms  min %6.1f  max %6.1f  (n=%d)" % (
                name, statistics.median(values) * 1000, percentile(values, 0.99) * 1000,
                min(values) * 1000, max(values) * 1000, len(values)))
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
