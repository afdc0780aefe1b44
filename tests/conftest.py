"""Shared pytest fixtures. MQTT fixtures (``mqtt_*``) start a real Mosquitto (tests/broker.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from broker import MOSQUITTO, SKIP_REASON, Broker, BrokerOptions, Subscriber


@pytest.fixture
def mqtt_broker_factory(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Start brokers with options (persistence, password file, TLS); all killed at teardown."""
    if MOSQUITTO is None:
        if os.environ.get("CI"):
            # CI installs Mosquitto (scripts/test.sh); a skip there would hide a broken install.
            pytest.fail(SKIP_REASON)
        pytest.skip(SKIP_REASON)
    brokers: list[Broker] = []

    def make(options: BrokerOptions | None = None) -> Broker:
        workdir = tmp_path / f"broker{len(brokers)}"
        workdir.mkdir()
        broker = Broker(workdir, options)
        brokers.append(broker)
        return broker.start()

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def mqtt_broker(mqtt_broker_factory: Callable[..., Broker]) -> Broker:
    """A plain anonymous mosquitto on a free port."""
    return mqtt_broker_factory()


@pytest.fixture
def mqtt_subscriber_factory() -> Iterator[Callable[..., Subscriber]]:
    """Independent subscribers (persistent sessions); disconnected at teardown."""
    subscribers: list[Subscriber] = []

    def make(broker: Broker, topics: list[str], **kwargs: Any) -> Subscriber:
        subscriber = Subscriber(broker, topics, **kwargs)
        subscribers.append(subscriber)
        return subscriber

    yield make
    for subscriber in subscribers:
        subscriber.close()


# ---------------------------------------------------------------- edge runtime (prefix runtime_)

from runtime_support import build_tiny_bundle  # noqa: E402


@pytest.fixture(scope="session")
def runtime_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real int8 TFLite bundle (tiny pooling autoencoder, batch 1 and 4), built once."""
    return build_tiny_bundle(tmp_path_factory.mktemp("runtime-bundle") / "tiny-wells")


# ---------------------------------------------------------------- trainer (prefix trainer_)

# Importing the trainer package sets TensorFlow's log level before any test imports TensorFlow;
# it does not load TF itself.
from trainer_support import write_mvtec  # noqa: E402

import trainer  # noqa: E402, F401

# Small enough for the suite's time budget, long enough for the blobs-vs-squares task (~10 s).
TRAINER_TEST_STEPS = 300
TRAINER_TEST_SIZE_PX = 16


@pytest.fixture(scope="session")
def trainer_mvtec_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real PNG files in the MVTec layout: 200 train normals, 30 test normals, 20 anomalies."""
    return write_mvtec(tmp_path_factory.mktemp("trainer-data") / "line")


@pytest.fixture(scope="session")
def trainer_bundle(trainer_mvtec_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One bundle trained once by the real trainer (int8 b1 + b16, float model kept)."""
    from trainer import fit_bundle

    return fit_bundle(trainer_mvtec_dir, tmp_path_factory.mktemp("trainer-models") / "line",
                      size=TRAINER_TEST_SIZE_PX, steps=TRAINER_TEST_STEPS, keep_float=True,
                      seed=0, progress=False, report=lambda message: None)
