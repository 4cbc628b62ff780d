#!/usr/bin/env python3
"""Responders for the probe tests, run inside a test's own network namespace.

  responder.py tcp  PORT DELAY          accept, wait DELAY s, send "ready\n", close
  responder.py http PORT DELAY [CERT KEY]  HTTP(S) GET: wait DELAY s, answer 200 "pantau ok"
  responder.py dns  PORT                UDP DNS: A record 127.0.0.1 for names starting with
                                         "ok.", NXDOMAIN for everything else
  responder.py icmp DELAY               raw ICMPv4 socket: answer echo requests after DELAY s
                                         (set net.ipv4.icmp_echo_ignore_all=1 first)

Prints "listening" once ready.
"""
import http.server
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time


def tcp(port, delay):
    server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("::", port))
    server.listen(128)
    print("listening", flush=True)

    def serve(conn):
        time.sleep(delay)
        try:
            conn.sendall(b"ready\n")
        finally:
            conn.close()

    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def http_server(port, delay, cert=None, key=None):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            time.sleep(delay)
            body = b"pantau ok\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        address_family = socket.AF_INET

    server = Server(("0.0.0.0", port), Handler)
    if cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print("listening", flush=True)
    server.serve_forever()


def dns(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    print("listening", flush=True)
    while True:
        data, peer = sock.recvfrom(4096)
        if len(data) < 12:
            continue
        ident, _flags, qdcount = struct.unpack("!HHH", data[:6])
        # The question: labels up to the zero byte, then type and class.
        end = 12
        labels = []
        while data[end] != 0:
            length = data[end]
            labels.append(data[end + 1:end + 1 + length].decode())
            end += 1 + length
        question = data[12:end + 5]
        qtype = struct.unpack("!H", data[end + 1:end + 3])[0]
        name = ".".join(labels)
        found = name.startswith("ok.")
        rcode = 0 if found else 3
        answers = 1 if found and qtype == 1 else 0
        header = struct.pack("!HHHHHH", ident, 0x8180 | rcode, 1, answers, 0, 0)
        answer = b""
        if answers:
            answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([127, 0, 0, 1])
        sock.sendto(header + question + answer, peer)


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def icmp(delay):
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    print("listening", flush=True)

    def reply(packet, peer):
        time.sleep(delay)
        sock.sendto(packet, (peer, 0))

    while True:
        data, (peer, _) = sock.recvfrom(65535)
        header_length = (data[0] & 0x0F) * 4
        message = data[header_length:]
        if len(message) < 8 or message[0] != 8:
            continue
        body = b"\x00\x00\x00\x00" + message[4:]
        packet = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
        threading.Thread(target=reply, args=(packet, peer), daemon=True).start()


def main():
    mode = sys.argv[1]
    if mode == "tcp":
        tcp(int(sys.argv[2]), float(sys.argv[3]))
    elif mode == "http":
        cert, key = (sys.argv[4], sys.argv[5]) if len(sys.argv) > 5 else (None, None)
        http_server(int(sys.argv[2]), float(sys.argv[3]), cert, key)
    elif mode == "dns":
        dns(int(sys.argv[2]))
    elif mode == "icmp":
        icmp(float(sys.argv[2]))
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
