"""Publishing decided events: a durable SQLite spool in front of an MQTT client (paho-mqtt 2.x)."""
