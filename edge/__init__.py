"""Edge runtime of the anomaly detector.

Runs on the device: loads an exported bundle (int8 TFLite model + bundle.json), cuts frames into
crops, scores the reconstruction MSE per crop and publishes decisions over MQTT.

This package must never import TensorFlow, Keras or the trainer (tests/test_edge_is_light.py).
"""

__version__ = "0.1.0"
