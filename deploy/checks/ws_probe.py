#!/usr/bin/env python3
"""A minimal Herald WebSocket client (standard library only) for scripts/check-compose.

Connects to a node, sends `connect` with a token and `subscribe` to a channel, prints the
results as JSON lines on stdout, then holds the connection for --hold seconds, printing
every server message (pushes such as the `unsubscribe` a lost gap causes), or, with
--no-read, reading nothing more (a consumer too slow for what it is sent).

    ws_probe.py --url ws://127.0.0.1:18081/ws --token T --channel user:probe --hold 8
"""
import argparse
import base64
import json
import os
import socket
import struct
import sys
import time
import urllib.parse


def send_text(sock, text):
    payload = text.encode()
    mask = os.urandom(4)
    header = bytes([0x81])
    n = len(payload)
    if n < 126:
        header += bytes([0x80 | n])
    elif n < 65536:
        header += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        header += bytes([0x80 | 127]) + struct.pack("!Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(header + mask + masked)


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed by the server")
        data += chunk
    return data


def recv_frame(sock):
    """Returns (opcode, payload)."""
    b0, b1 = recv_exact(sock, 2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", recv_exact(sock, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", recv_exact(sock, 8))[0]
    return b0 & 0x0F, recv_exact(sock, n)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--channel", required=True)
    ap.add_argument("--hold", type=float, default=5.0)
    ap.add_argument("--no-read", action="store_true",
                    help="after the subscribe result, hold without reading (a slow consumer)")
    args = ap.parse_args()

    url = urllib.parse.urlparse(args.url)
    sock = socket.create_connection((url.hostname, url.port or 80), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {url.path or '/'} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: herald.v1.json\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += recv_exact(sock, 1)
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        sys.exit(f"upgrade refused: {head.decode(errors='replace').splitlines()[0]}")

    send_text(sock, json.dumps({"id": 1, "connect": {"token": args.token}}))
    send_text(sock, json.dumps({"id": 2, "subscribe": {"channel": args.channel}}))
    deadline = time.monotonic() + args.hold
    answered = set()
    while True:
        left = deadline - time.monotonic()
        if len(answered) == 2 and args.no_read:
            time.sleep(max(left, 0))
            break
        if left <= 0 and len(answered) == 2:
            break
        sock.settimeout(max(left, 0.1) if len(answered) == 2 else 10)
        try:
            opcode, payload = recv_frame(sock)
        except socket.timeout:
            if len(answered) < 2:
                sys.exit("no reply to connect/subscribe within 10 s")
            break
        if opcode == 0x8:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 0
            print(json.dumps({"closed": code}), flush=True)
            sys.exit(0 if len(answered) == 2 else 1)
        if opcode == 0x9:  # ping: answer with a pong (masked, same payload)
            mask = os.urandom(4)
            sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + mask
                         + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
            continue
        if opcode != 0x1:
            continue
        for line in payload.decode().splitlines():
            message = json.loads(line)
            if message.get("id") in (1, 2):
                answered.add(message["id"])
                if "error" in message:
                    print(line, flush=True)
                    sys.exit(f"command {message['id']} failed")
            print(line, flush=True)
    sock.close()


if __name__ == "__main__":
    main()
