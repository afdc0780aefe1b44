"""MQTT publisher: durable, ordered, at-least-once delivery of events (paho-mqtt 2.x).

Delivery design (docs/mqtt.md):

* ``submit_events`` commits a frame's events to the SQLite spool in one transaction, then wakes
  the sender thread; it never waits for the network.
* The sender thread is the only code that publishes events. It reads the spool in seq order and
  keeps at most ``max_inflight`` events unacknowledged; an event leaves the spool only on its
  PUBACK (``on_publish`` with its mid).
* After a reconnect paho re-sends its in-memory copies and the spool re-sends too: the window
  twice. On every CONNACK we drop paho's copies (``drop_out_messages``), so the spool is the one
  ordered source, from its lowest unacked seq. A connection "epoch" under ``_send_lock`` keeps a
  publish of the old pass off the new connection ahead of that restart (it would overtake).
* Result: at-least-once, in seq order, duplicates possible (a PUBACK lost in a broker crash);
  subscribers drop duplicates by ``event_id``.
* MQTT v5, because MQTT 3.1.1 cannot say "no": Mosquitto PUBACKs a publish its ACL denies and
  drops it. Under v5 the PUBACK carries 0x87 (Not authorized); such an event is NOT acked, stays
  in the spool, and the pass restarts from the lowest unacked seq after ``reconnect_max_s``.
* Every paho callback is guarded: an exception escaping one would kill paho's network thread
  while the publisher still looked connected.
"""

from __future__ import annotations

import functools
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge.errors import PublishError
from edge.publish import payloads
from edge.publish.settings import MqttConfig
from edge.publish.spool import DROP_UNREADABLE, DropReport, Spool
from edge.types import Event, utc_iso

log = logging.getLogger(__name__)

EVENT_QOS = 1
STATUS_QOS = 1
STATS_QOS = 0
# paho's own window also carries the retained state/status messages next to our event window.
PAHO_INFLIGHT_HEADROOM = 50
# The sender wakes this often even without news, to re-check limits and connection state.
SENDER_POLL_S = 0.5
# How often the sender applies the spool's max_age_s while idle.
LIMITS_CHECK_INTERVAL_S = 60.0
# After an unexpected error in the sender (e.g. the disk failed), wait before trying again.
SENDER_ERROR_BACKOFF_S = 5.0
# How long close() waits for the "offline" status to be acknowledged.
CLOSE_TIMEOUT_S = 3.0
# on_disconnect waits at most this long for the sender to finish one publish call. Bounded
# because paho can report a failed write from inside its CONNACK handling while it holds the
# out-message lock the sender's publish() waits for; then we go on without our lock.
SEND_LOCK_TIMEOUT_S = 5.0

_CONNECTED = "connected"
_CONNECTING = "connecting"
_REFUSED = "refused"
_DENIED = "denied"  # connected, but the broker refuses our publishes (ACL); nothing is delivered
_DISCONNECTED = "disconnected"
_CLOSED = "closed"


def _guarded(callback: Callable[..., None]) -> Callable[..., None]:
    """Keep an exception in a paho callback from killing paho's network thread: log it, record
    it in ``last_error``; delivery goes on (the spool still has every event)."""

    @functools.wraps(callback)
    def guarded(self: MqttPublisher, *args: Any) -> None:
        try:
            callback(self, *args)
        except Exception as err:
            self.last_error = f"internal error in MQTT callback {callback.__name__}: {err}"
            log.exception("MQTT callback %s failed; the connection goes on",
                          callback.__name__)

    return guarded


class MqttPublisher:
    """Publishes events, crop states, stats and status of one device to one broker."""

    def __init__(self, config: MqttConfig, device_id: str, bundle_info: dict[str, str],
                 base_dir: Path) -> None:
        self.config = config
        self.device_id = device_id
        self.bundle_info = dict(bundle_info)
        self.base_dir = Path(base_dir)
        self.topics = payloads.Topics(config.prefix, device_id)
        spool_path = config.spool.path
        self.spool = Spool(spool_path if spool_path.is_absolute() else self.base_dir / spool_path,
                           config.spool)
        #: Human-readable reason why the publisher cannot deliver right now; None when healthy.
        self.last_error: str | None = None
        #: "connecting" | "connected" | "denied" | "refused" | "disconnected" | "closed"
        self.connection_state = _CONNECTING
        self.rejected_total = 0
        # v5: a denied publish gets a PUBACK with a failure reason code (3.1.1 acks it as if
        # delivered). clean_start (at connect): the spool, not the broker session, holds what
        # we owe.
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=payloads.client_id_for(config, device_id),
            protocol=mqtt.MQTTv5,
        )
        # Second line of defence behind @_guarded: paho logs and swallows a callback exception
        # instead of ending its network thread.
        self._client.suppress_exceptions = True
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._send_lock = threading.Lock()
        self._epoch = 0
        self._connected = False
        self._inbox: queue.Queue[tuple[str, int]] = queue.Queue()
        self._acked = threading.Condition()
        self._status: tuple[str, str | None] = (payloads.STATUS_ONLINE, None)
        self._states: dict[str, bytes] = {}
        self._drops_lock = threading.Lock()
        # The spool_overflow / spool_unreadable warning awaiting its PUBACK (mid, report): drops
        # count as announced only once the broker has the warning.
        self._warning_inflight: tuple[int, DropReport] | None = None
        self._refusals = 0
        # The first failed connect of an outage says why at WARNING; later retries at DEBUG.
        self._outage_cause_logged = False
        self._denials = 0  # denied publishes since the broker last accepted an event
        self._denied_reason = ""  # reason code text of the latest denied publish
        self._stopping = threading.Event()
        self._sender_state = _SenderState()  # the sender thread's; close() uses it after the join
        self._sender_failing: str | None = None  # why the sender's last pass failed, if it did
        self._sender = threading.Thread(target=self._sender_main, name="mqtt-sender", daemon=True)
        self._started = False

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Configure auth, TLS and the Last Will, then connect in the background."""
        cfg = self.config
        payloads.configure_security(self._client, cfg, self.base_dir)
        will = payloads.status_payload(self.device_id, payloads.STATUS_OFFLINE,
                                       "connection lost (last will)", self.bundle_info)
        self._client.will_set(self.topics.status, payloads.encode(will), STATUS_QOS, retain=True)
        self._set_backoff(cfg.reconnect_min_s, cfg.reconnect_max_s)
        self._client.max_inflight_messages_set(cfg.max_inflight + PAHO_INFLIGHT_HEADROOM)
        self._client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s,
                                   clean_start=True)
        self._client.loop_start()
        self._sender.start()
        self._started = True
        log.info("MQTT publisher for %s → %s:%d (spool %s, %d events waiting)",
                 self.device_id, cfg.host, cfg.port, self.spool.path, self.spool.depth())

    def _set_backoff(self, min_s: float, max_s: float) -> None:
        # paho annotates int but sleeps on floats; sub-second minimums matter on a LAN.
        self._client.reconnect_delay_set(min_s, max_s)  # type: ignore[arg-type]

    def close(self) -> None:
        """Publish ``offline``, disconnect cleanly (no Last Will), stop threads, close the spool."""
        if self.connection_state == _CLOSED:
            return
        self._stopping.set()
        self._inbox.put(("stop", 0))
        if self._started:
            self._sender.join()
            if self._connected:
                body = payloads.status_payload(self.device_id, payloads.STATUS_OFFLINE,
                                               "shutdown", self.bundle_info)
                info = self._client.publish(self.topics.status, payloads.encode(body),
                                            qos=STATUS_QOS, retain=True)
                try:
                    info.wait_for_publish(CLOSE_TIMEOUT_S)
                except (RuntimeError, ValueError):
                    log.warning("could not publish the offline status before disconnecting")
            self._client.disconnect()
            self._client.loop_stop()
            # PUBACKs that came in after the sender stopped (up to max_inflight events): delete
            # those events now, or the next start would send them a second time.
            try:
                self._drain_inbox(self._sender_state, block=False)
            except PublishError as err:
                log.warning("MQTT could not mark the last acknowledged events as sent (%s); they "
                            "will be sent again at the next start (duplicates)", err)
        self.connection_state = _CLOSED
        self.spool.close()

    # ----------------------------------------------------------------- public API

    def submit_event(self, **fields: Any) -> Event:
        """One event through :meth:`submit_events`; its PublishError is raised, not returned."""
        result = self.submit_events([fields])[0]
        if isinstance(result, PublishError):
            raise result
        return result

    def submit_events(self, batch: Sequence[dict[str, Any]]) -> list[Event | PublishError]:
        """Store a frame's events durably in ONE spool transaction and queue them for delivery.

        Returns, in order, each stored Event or the PublishError that kept that one event out
        (not encodable, or too large: kept in the ``rejected`` table). Raises PublishError when
        the spool cannot be written at all (then none of the events is stored).
        """
        limit = self.config.max_payload_bytes
        problems: list[PublishError | None] = []
        for fields in batch:
            problem, size = payloads.event_problem(fields, limit, self.spool.path)
            if size > limit:  # kept for inspection, never sent
                self.spool.reject(fields, f"payload {size} bytes > max_payload_bytes")
                self.rejected_total += 1
            problems.append(None if problem is None else PublishError(problem))
        stored = iter(self.spool.append_many(
            [fields for fields, problem in zip(batch, problems, strict=True) if problem is None]))
        if None in problems:
            self._enforce_limits()
            self._inbox.put(("wake", 0))
        return [problem if problem is not None else next(stored) for problem in problems]

    def _enforce_limits(self) -> None:
        """Apply the spool limits and announce drops; a failure here is logged, not raised.

        The events are committed before this runs, so a caller told "not stored" would be told
        a lie (they are stored and will be sent). The limits are applied again at the next
        submission and every LIMITS_CHECK_INTERVAL_S by the sender.
        """
        try:
            if self.spool.enforce_limits() is not None:
                self._report_drops()
        except PublishError as err:
            self.last_error = f"could not apply the spool limits (events are stored): {err}"
            log.error("MQTT %s", self.last_error)

    def publish_state(self, crop: str, payload: dict[str, Any]) -> None:
        """Retained state of one crop (QoS ``state_qos``); re-published after every reconnect."""
        body = payloads.encode_lenient(payloads.state_payload(self.device_id, crop, payload))
        topic = self.topics.crop_state(crop)
        with self._send_lock:
            self._states[crop] = body
            if self._connected:
                self._client.publish(topic, body, qos=self.config.state_qos, retain=True)

    def publish_stats(self, stats: dict[str, Any]) -> None:
        """QoS 0, not retained; adds spool and connection figures. Skipped while offline."""
        try:
            spool_figures: dict[str, Any] = {
                "spool_depth": self.spool.depth(),
                "spool_oldest_age_s": round(self.spool.oldest_age_s(), 3),
                "spool_dropped_total": self.spool.dropped_total()}
        except PublishError as err:  # unknown is the truth; the stats still go out
            self.last_error = str(err)
            log.error("MQTT stats without spool figures: %s", err)
            spool_figures = dict.fromkeys(
                ("spool_depth", "spool_oldest_age_s", "spool_dropped_total"))
        body = {"schema": payloads.STATS_SCHEMA, "device_id": self.device_id,
                "timestamp": utc_iso(time.time()), **stats, **spool_figures,
                "events_rejected_total": self.rejected_total,
                "mqtt_state": self.connection_state, "mqtt_last_error": self.last_error}
        if self._connected:
            self._client.publish(self.topics.stats, payloads.encode_lenient(body), qos=STATS_QOS)

    def set_status(self, status: str, reason: str | None = None) -> None:
        """Retained device status (online / degraded / offline); re-published after reconnects."""
        body = payloads.encode(payloads.status_payload(self.device_id, status, reason,
                                                       self.bundle_info))
        with self._send_lock:
            self._status = (status, reason)
            if self._connected:
                self._client.publish(self.topics.status, body, qos=STATUS_QOS, retain=True)

    def spool_depth(self) -> int:
        """Events stored but not yet acknowledged by the broker (PublishError if unreadable)."""
        return self.spool.depth()

    def delivery_problem(self) -> str | None:
        """Why events cannot be delivered until someone fixes the setup — the broker's ACL denies
        them, it refuses the credentials, or the sender keeps failing (e.g. the spool cannot be
        read) — else None; the runtime reports it as ``degraded``. A broker that is merely down
        is not one: its Last Will says ``offline``."""
        if self._sender_failing is not None:
            return self._sender_failing
        return self.last_error if self.connection_state in (_DENIED, _REFUSED) else None

    def flush(self, timeout_s: float) -> bool:
        """Wait until every spooled event is acknowledged; False on timeout."""
        with self._acked:
            return self._acked.wait_for(lambda: self.spool.depth() == 0, timeout=timeout_s)

    # ----------------------------------------------------------------- paho callbacks
    # They run on paho's network thread and must not block on anything the sender holds while
    # it calls into paho (hence the inbox queue for acks). Each is @_guarded.

    @_guarded
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            self._on_refused(reason)
            return
        with self._send_lock:
            dropped = client.drop_out_messages()  # the spool re-sends them, in order
            with self._drops_lock:
                # Dropped with paho's queue: announce again. Cleared before _connected is set,
                # so that a warning the sender publishes from here on is not sent twice.
                self._warning_inflight = None
            self._epoch += 1
            self._connected = True
            self._inbox.put(("connected", self._epoch))
            self._republish_retained_locked()
        if self._refusals:
            # Back to the configured back-off after a slow retry against a refusing broker.
            self._set_backoff(self.config.reconnect_min_s, self.config.reconnect_max_s)
            self._refusals = 0
        self.connection_state, self.last_error = _CONNECTED, None
        self._outage_cause_logged = False
        log.info("MQTT connected to %s:%d; %d messages in flight on the previous connection "
                 "dropped, unacked events are re-sent from the spool in seq order",
                 self.config.host, self.config.port, len(dropped))
        self._report_drops()

    def _on_refused(self, reason: Any) -> None:
        self._refusals += 1
        self.connection_state = _REFUSED
        self.last_error = (
            f"broker {self.config.host}:{self.config.port} refused the connection: {reason}. "
            "Check [mqtt.auth] username/password and the broker's ACL for this client id; "
            f"retrying every {self.config.reconnect_max_s:g} s."
        )
        if self._refusals == 1:
            log.error("MQTT %s", self.last_error)
            # A refusal will not fix itself in a second: retry slowly, not in a storm.
            self._set_backoff(self.config.reconnect_max_s, self.config.reconnect_max_s)
        else:
            log.debug("MQTT connection refused again (%d times): %s", self._refusals, reason)

    def _republish_retained_locked(self) -> None:
        """Status and every crop state again (after a connect or a denial); holds _send_lock."""
        status, why = self._status
        body = payloads.status_payload(self.device_id, status, why, self.bundle_info)
        self._client.publish(self.topics.status, payloads.encode(body), qos=STATUS_QOS,
                             retain=True)
        for crop, state in self._states.items():
            self._client.publish(self.topics.crop_state(crop), state, qos=self.config.state_qos,
                                 retain=True)

    @_guarded
    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if self.connection_state != _REFUSED:
            first = not self._outage_cause_logged
            self._outage_cause_logged = True
            # paho calls this from its except block: the OSError (refused, DNS, TLS) is still set.
            cause = sys.exc_info()[1]
            because = f" ({cause!r})" if cause is not None else ""
            tls_hint = (" or the TLS handshake failed (check that [mqtt.tls] ca_file signed the "
                        "broker's certificate and that host matches it)") if self.config.tls else ""
            self.last_error = (f"cannot reach MQTT broker {self.config.host}:{self.config.port}"
                               f"{because}{tls_hint}; events are kept in the spool and sent when "
                               "it is back")
            self.connection_state = _DISCONNECTED
            (log.warning if first else log.debug)("MQTT %s", self.last_error)

    @_guarded
    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        # Taken so that no publish of the sender can slip onto the next connection before its
        # CONNACK restarts the pass from the spool (see module docstring).
        locked = self._send_lock.acquire(timeout=SEND_LOCK_TIMEOUT_S)
        try:
            was_connected, self._connected = self._connected, False
        finally:
            if locked:
                self._send_lock.release()
        if self._stopping.is_set() or not was_connected:
            return
        self.connection_state = _DISCONNECTED
        self.last_error = (f"lost the connection to {self.config.host}:{self.config.port} "
                           f"({reason}); events are kept in the spool")
        log.warning("MQTT %s", self.last_error)

    @_guarded
    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        # Nothing here may raise before the put: a lost answer would hold its window slot until
        # the next reconnect.
        if getattr(reason, "is_failure", False):  # v5 PUBACK, e.g. 0x87 Not authorized
            self._denied_reason = f"{reason} (reason code 0x{getattr(reason, 'value', 0):02X})"
            self._inbox.put(("denied", mid))  # NOT delivered: the event stays in the spool
        else:
            self._inbox.put(("ack", mid))

    # ----------------------------------------------------------------- sender thread

    def _report_drops(self) -> None:
        """Announce spool drops on ``…/warnings`` once connected (they are logged when made)."""
        with self._drops_lock:
            if not self._connected or self._warning_inflight is not None:
                return
            try:
                drop = self.spool.unreported_drops()
            except PublishError as err:  # announced later: next drop, connect or limits check
                self.last_error = f"could not read the spool's unannounced drops: {err}"
                log.error("MQTT %s", self.last_error)
                return
            if drop is None:
                return
            body = payloads.drop_warning(self.device_id, drop.reason == DROP_UNREADABLE,
                                         drop.count, drop.first_seq, drop.last_seq,
                                         str(self.spool.path))
            info = self._client.publish(self.topics.warnings, payloads.encode(body),
                                        qos=EVENT_QOS)
            self._warning_inflight = (info.mid, drop)

    def _warning_acked(self, mid: int) -> bool:
        with self._drops_lock:
            if self._warning_inflight is None or self._warning_inflight[0] != mid:
                return False
            drop, self._warning_inflight = self._warning_inflight[1], None
        self.spool.mark_reported(drop)
        self._report_drops()  # drops made while the warning was in flight
        return True

    def _warning_denied(self, mid: int) -> bool:
        with self._drops_lock:
            if self._warning_inflight is None or self._warning_inflight[0] != mid:
                return False
            self._warning_inflight = None  # still unannounced; sent again after the pause
        return True

    def _publish_denied(self, sender: _SenderState, mid: int) -> None:
        """The broker refused a publish (v5 PUBACK failure code): keep the event, say why."""
        seq = sender.inflight.pop(mid, None)
        if seq is not None:
            what = f"event seq {seq} on '{self.topics.events}'"
            if sender.paused_until is None:  # retry after a pause, never in a tight loop
                sender.paused_until = time.monotonic() + self.config.reconnect_max_s
        elif self._warning_denied(mid):
            what = f"the spool warning on '{self.topics.warnings}'"
        else:
            what = f"a status or crop state message under '{self.topics.base}/'"
        self._denials += 1
        self.connection_state = _DENIED
        self.last_error = (
            f"broker {self.config.host}:{self.config.port} refused {what}: "
            f"{self._denied_reason}. Events are kept in the spool and re-sent every "
            f"{self.config.reconnect_max_s:g} s. The broker's ACL must let this client's "
            f"username write '{self.topics.base}/#'; with 'pattern write <prefix>/%u/#' the "
            f"username must equal the device_id '{self.device_id}' (docs/security.md)."
        )
        (log.error if self._denials == 1 else log.debug)("MQTT %s", self.last_error)

    def _denial_over(self) -> None:
        self._denials = 0
        self.connection_state, self.last_error = _CONNECTED, None
        self._outage_cause_logged = False
        log.info("MQTT broker %s:%d accepts events again; delivery resumed",
                 self.config.host, self.config.port)

    def _resume_after_denial(self, sender: _SenderState) -> bool:
        """False while paused after a denied event; once the pause is over and every publish of
        the old pass is answered, restart the pass from the lowest unacked seq (in order)."""
        if sender.paused_until is None:
            return True
        if time.monotonic() < sender.paused_until or sender.inflight:
            return False
        sender.paused_until, sender.sent_upto, sender.more_pending = None, 0, True
        log.debug("MQTT re-sending denied events from the lowest unacked seq")
        with self._send_lock:
            if self._connected:
                self._republish_retained_locked()
        self._report_drops()
        return True

    def _sender_main(self) -> None:
        sender = self._sender_state
        next_limits_check = time.monotonic() + LIMITS_CHECK_INTERVAL_S
        while not self._stopping.is_set():
            sender.spool_worked = False
            try:
                self._drain_inbox(sender, block=not self._can_send(sender))
                if self._stopping.is_set():
                    break
                self._send_window(sender)
                if time.monotonic() >= next_limits_check:
                    next_limits_check = time.monotonic() + LIMITS_CHECK_INTERVAL_S
                    self._enforce_limits()
                    self._report_drops()  # also drops whose announcement failed earlier
                # Cleared only by a pass that read or wrote the spool: an idle pass proves nothing.
                if self._sender_failing is not None and sender.spool_worked:
                    log.info("MQTT event sender works again")
                    self._sender_failing = None
            except Exception as err:  # the sender must survive a failing disk; it says so loudly
                self._sender_failing = self.last_error = (
                    f"event sender failed: {err}; events wait in the spool {self.spool.path}, "
                    f"retried every {SENDER_ERROR_BACKOFF_S:g} s")
                log.exception("MQTT event sender failed; retrying in %g s", SENDER_ERROR_BACKOFF_S)
                sender.more_pending = True  # the failed pass may not have sent what it read
                self._stopping.wait(SENDER_ERROR_BACKOFF_S)

    def _can_send(self, sender: _SenderState) -> bool:
        paused = sender.paused_until is not None and (
            time.monotonic() < sender.paused_until or bool(sender.inflight))
        return (self._connected and sender.epoch == self._epoch and not paused
                and len(sender.inflight) < self.config.max_inflight and sender.more_pending)

    def _drain_inbox(self, sender: _SenderState, block: bool) -> None:
        try:
            item = self._inbox.get(timeout=SENDER_POLL_S) if block else self._inbox.get_nowait()
        except queue.Empty:
            sender.more_pending = True  # periodic re-check of the spool
            return
        acked: list[int] = []  # deleted in one spool transaction below, not one each
        while True:
            kind, value = item
            if kind == "ack":
                seq = sender.inflight.pop(value, None)
                if seq is None:
                    self._warning_acked(value)
                else:
                    acked.append(seq)
                    # Also after a reconnect (state "connected"): the next denial is news again.
                    if self._denials and sender.paused_until is None:
                        self._denial_over()
            elif kind == "denied":
                self._publish_denied(sender, value)
            elif kind == "connected":
                sender.epoch, sender.sent_upto = value, 0
                sender.inflight.clear()
                sender.more_pending = True
                sender.paused_until = None
            elif kind == "wake":
                sender.more_pending = True
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
        if acked:
            self.spool.ack_many(acked)
            sender.spool_worked = True
            with self._acked:
                self._acked.notify_all()

    def _send_window(self, sender: _SenderState) -> None:
        if not self._resume_after_denial(sender):
            return
        room = self.config.max_inflight - len(sender.inflight)
        # more_pending is False only after a query read fewer rows than it asked for;
        # submissions, connects and the periodic re-check set it again. paho reports QoS 0 sends
        # (crop states, stats) through on_publish too: those wake the sender and must not cost a
        # spool query each.
        if (room <= 0 or not sender.more_pending or not self._connected
                or sender.epoch != self._epoch):
            return
        pending = self.spool.pending_rows(after_seq=sender.sent_upto, limit=room)
        sender.spool_worked = True
        # Rows, not events: unreadable rows were set aside.
        sender.more_pending = pending.rows == room
        if len(pending.events) < pending.rows:
            self._report_drops()  # the gap the set-aside rows leave (spool_unreadable)
        for event, body in zip(pending.events, pending.bodies, strict=True):
            with self._send_lock:
                if not self._connected or sender.epoch != self._epoch:
                    return
                info = self._client.publish(self.topics.events, body, qos=EVENT_QOS)
            if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
                return  # kept in the spool; the next CONNACK restarts the pass
            sender.inflight[info.mid] = event.seq
            sender.sent_upto = event.seq
        # Past rows that could be neither read nor set aside (a failing disk) too: read again
        # at once they would spin this loop and hold back every event after them. The next
        # pass (a reconnect) tries them again.
        sender.sent_upto = max(sender.sent_upto, pending.last_seq)


class _SenderState:
    """What the sender thread alone knows about the current pass over the spool."""

    def __init__(self) -> None:
        self.epoch = 0
        self.sent_upto = 0  # highest seq handed to paho in this connection epoch
        self.inflight: dict[int, int] = {}  # paho mid → event seq, awaiting PUBACK
        self.more_pending = True
        self.spool_worked = False  # this pass read or wrote the spool without an error
        self.paused_until: float | None = None  # monotonic; set when the broker denied an event
