"""MQTT connection helpers (paho-mqtt 2, MQTT 5): broker URLs, clients that reconnect on their own.

Topics used by the twin:

* ``v1.1/Datastreams(ID)/Observations`` - one SensorThings observation (or a list) for datastream ID
* ``v1.1/Observations`` - observations naming their Datastream
* ``citytwin/ingest/batch`` - compact batches ``[[datastream_id, time, result], ...]`` (high rate)
* ``citytwin/cmd/{thing}`` - commands to a device (QoS 1); ``citytwin/cmd/{thing}/ack`` - its answers
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from citytwin.errors import ConfigurationError

log = logging.getLogger("citytwin.telemetry.mqtt")
CMD_PREFIX = "citytwin/cmd"
ACK_SUBSCRIPTION = f"{CMD_PREFIX}/+/ack"
OBSERVATION_SUBSCRIPTIONS = ("v1.1/+/Observations", "v1.1/Observations")


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_mqtt_url(url: str) -> BrokerAddress:
    """``mqtt://[user:pass@]host[:1883]`` or ``mqtts://...`` (TLS, default port 8883)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
        raise ConfigurationError(f"MQTT URL must look like mqtt://host:1883, got {url!r}")
    tls = parts.scheme in ("mqtts", "ssl")
    port = parts.port or (8883 if tls else 1883)
    return BrokerAddress(parts.hostname, port, parts.username, parts.password, tls)


def connect_client(url: str, client_id: str, *, clean: bool, receive_maximum: int | None = 1000,
                   max_inflight: int = 100, manual_ack: bool = False,
                   on_connect: Callable[[object], None] | None = None, session_expiry_s: int = 7 * 86400,
                   start: bool = True):
    """A paho client connected asynchronously (it keeps retrying while the broker is down).

    ``clean=False`` keeps the session on the broker (subscriptions and QoS 1 messages queued while we are
    away) for ``session_expiry_s``; ``receive_maximum`` is how many unacknowledged QoS 1 messages the
    broker may have in flight to us (MQTT 5). ``on_connect(client)`` runs after every (re)connection.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    address = parse_mqtt_url(url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                         manual_ack=manual_ack)
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(min_delay=1, max_delay=4)
    if address.username:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        client.tls_set()
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0 if clean else session_expiry_s
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum

    def _connected(c, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("MQTT connection to %s:%s refused: %s", address.host, address.port, reason_code)
            return
        log.info("MQTT connected to %s:%s (session present: %s)", address.host, address.port,
                 flags.session_present)
        if on_connect is not None:
            on_connect(c)

    client.on_connect = _connected
    client.connect_async(address.host, address.port, keepalive=30, clean_start=clean, properties=props)
    if start:
        client.loop_start()
    return client
