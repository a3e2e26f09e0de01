#!/usr/bin/env python3
"""A minimal Herald WebSocket client for scripts/check-compose (websocket-client library).

Connects to a node, sends `connect` with a token and `subscribe` to a channel, prints the
results as JSON lines on stdout, then holds the connection for --hold seconds, printing
every server message (pushes such as the `unsubscribe` a lost gap causes), or, with
--no-read, reading nothing more (a consumer too slow for what it is sent).

    ws_probe.py --url ws://127.0.0.1:18081/ws --token T --channel user:probe --hold 8
"""
import argparse
import json
import struct
import sys
import time

import websocket


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--channel", required=True)
    ap.add_argument("--hold", type=float, default=5.0)
    ap.add_argument("--no-read", action="store_true",
                    help="after the subscribe result, hold without reading (a slow consumer)")
    args = ap.parse_args()

    try:
        # No Origin header: the probe is a backend-style client, not a page of another site.
        ws = websocket.create_connection(args.url, timeout=10, suppress_origin=True,
                                         subprotocols=["herald.v1.json"])
    except websocket.WebSocketBadStatusException as e:
        sys.exit(f"upgrade refused: HTTP {e.status_code}")

    ws.send(json.dumps({"id": 1, "connect": {"token": args.token}}))
    ws.send(json.dumps({"id": 2, "subscribe": {"channel": args.channel}}))
    deadline = time.monotonic() + args.hold
    answered = set()
    while True:
        left = deadline - time.monotonic()
        if len(answered) == 2 and args.no_read:
            time.sleep(max(left, 0))
            break
        if left <= 0 and len(answered) == 2:
            break
        ws.settimeout(max(left, 0.1) if len(answered) == 2 else 10)
        try:
            # Answers pings with pongs itself; returns text, binary and close frames.
            opcode, payload = ws.recv_data()
        except websocket.WebSocketTimeoutException:
            if len(answered) < 2:
                sys.exit("no reply to connect/subscribe within 10 s")
            break
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 0
            print(json.dumps({"closed": code}), flush=True)
            sys.exit(0 if len(answered) == 2 else 1)
        if opcode != websocket.ABNF.OPCODE_TEXT:
            continue
        # One frame may carry several messages, newline-separated.
        for line in payload.decode().splitlines():
            message = json.loads(line)
            if message.get("id") in (1, 2):
                answered.add(message["id"])
                if "error" in message:
                    print(line, flush=True)
                    sys.exit(f"command {message['id']} failed")
            print(line, flush=True)
    # Drop the TCP connection without a close handshake, as a vanished client does.
    ws.shutdown()


if __name__ == "__main__":
    main()
