#!/usr/bin/env python3
"""A native-messaging host written in Python around the library's dispatcher (what the
seeds' native_host.py becomes): frames from the browser on stdin go to
``tabagent.Host.post``; every message the dispatcher sends is framed onto stdout.

    native_host.py [ORIGIN]     (a browser starts it; config: $TABAGENT_HOST_CONFIG JSON)
"""
import json
import os
import struct
import sys
import threading

import tabagent

out = sys.stdout.buffer
lock = threading.Lock()


def send(msg: dict) -> None:
    body = json.dumps(msg, ensure_ascii=False).encode()
    with lock:
        out.write(struct.pack("=I", len(body)) + body)
        out.flush()


def main() -> int:
    cfg_path = os.environ.get("TABAGENT_HOST_CONFIG")
    config = json.load(open(cfg_path)) if cfg_path and os.path.exists(cfg_path) else None
    host = tabagent.Host(send, config)
    stdin = sys.stdin.buffer
    try:
        while True:
            head = stdin.read(4)
            if len(head) < 4:
                break
            n = struct.unpack("=I", head)[0]
            if n > 4 << 20:
                break  # an absurd length: the framing cannot be trusted any more
            body = stdin.read(n)
            if len(body) < n:
                break
            host.post(body)
    finally:
        host.close()  # cancels running work; every request still gets its final message
    return 0


if __name__ == "__main__":
    sys.exit(main())
