"""A publisher in its own process, for tests that SIGKILL it (Last Will, restart on the same spool).

Prints one line per stored event, ``STORED <seq> <event_id>``, after ``submit_event`` returned
(i.e. after the spool commit), ``READY`` once connected, ``FLUSHED <bool>`` at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from broker import event_fields

from edge.publish.mqtt import MqttPublisher
from edge.publish.settings import MqttConfig, SpoolConfig

CONNECT_TIMEOUT_S = 10.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--spool", type=Path, required=True)
    parser.add_argument("--device", default="dev1")
    parser.add_argument("--count", type=int, default=0, help="events to submit")
    parser.add_argument("--first-index", type=int, default=0)
    parser.add_argument("--interval-s", type=float, default=0.005)
    parser.add_argument("--flush-s", type=float, default=0.0, help="flush, then close cleanly")
    parser.add_argument("--hold-s", type=float, default=60.0, help="stay alive after submitting")
    args = parser.parse_args()

    config = MqttConfig(host="127.0.0.1", port=args.port, reconnect_min_s=0.2,
                        reconnect_max_s=1.0, keepalive_s=5,
                        spool=SpoolConfig(path=args.spool))
    publisher = MqttPublisher(config, args.device, {"name": "caps-v1", "sha256": "ab" * 32},
                              base_dir=args.spool.parent)
    publisher.start()
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while publisher.connection_state != "connected" and time.monotonic() < deadline:
        time.sleep(0.01)
    print("READY", flush=True)
    for index in range(args.first_index, args.first_index + args.count):
        event = publisher.submit_event(**event_fields(index, args.device))
        print(f"STORED {event.seq} {event.event_id}", flush=True)
        time.sleep(args.interval_s)
    if args.flush_s > 0:
        print(f"FLUSHED {publisher.flush(args.flush_s)}", flush=True)
        publisher.close()
        return 0
    time.sleep(args.hold_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
