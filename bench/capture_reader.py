import array, fcntl, os, sys, time
fifo, raw, log_path = sys.argv[1:4]
# Read and write ends in one process: the pipe outlives every writer, never reports EOF, and
# is shrunk while still empty.
fd = os.open(fifo, os.O_RDWR)
fcntl.fcntl(fd, 1031, 4096)  # F_SETPIPE_SZ: one page, about 21 ms of audio
out = open(raw, "ab")
log = open(log_path, "a")
print("reader ready", flush=True)
due = 0.0
total = 0
while True:
    chunk = os.read(fd, 3840)
    if len(chunk) % 2:
        chunk += os.read(fd, 1)
    out.write(chunk)
    out.flush()
    total += len(chunk)
    samples = array.array("h", chunk)
    peak = max(max(samples), -min(samples)) if samples else 0
    now = time.time()
    log.write("%.6f %d %d\n" % (now, total, peak))
    log.flush()
    # A sound card's clock: one chunk's playing time after the previous one, restarting
    # after a pause in the stream.
    due = max(due, now) + len(chunk) / 192000.0
    if due > now:
        time.sleep(due - now)
