"""Signed bundles: with a public key configured, only bundles signed by its owner run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.bundle import load_bundle
from edge.errors import BundleError, ConfigError
from edge.signing import SIGNATURE_FILE, generate_keypair, sign_bundle

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "models" / "demo-wells"


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for owner in ("ours", "theirs"):
        paths[owner] = tmp_path / f"{owner}.pem"
        paths[f"{owner}_pub"] = tmp_path / f"{owner}.pub.pem"
        generate_keypair(paths[owner], paths[f"{owner}_pub"])
    return paths


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return Path(shutil.copytree(EXAMPLE, tmp_path / "bundle"))


def test_private_key_file_is_owner_only(keys: dict[str, Path]) -> None:
    assert keys["ours"].stat().st_mode & 0o077 == 0


def test_signed_bundle_loads_with_its_public_key(bundle: Path, keys: dict[str, Path]) -> None:
    sign_bundle(bundle, keys["ours"])
    assert load_bundle(bundle, public_key=keys["ours_pub"]).name == "demo-wells"


def test_unsigned_bundle_is_refused_when_a_key_is_configured(bundle: Path,
                                                             keys: dict[str, Path]) -> None:
    with pytest.raises(BundleError, match="not signed"):
        load_bundle(bundle, public_key=keys["ours_pub"])


def test_bundle_signed_by_another_key_is_refused(bundle: Path, keys: dict[str, Path]) -> None:
    sign_bundle(bundle, keys["theirs"])
    with pytest.raises(BundleError, match="does not match"):
        load_bundle(bundle, public_key=keys["ours_pub"])


def test_bundle_edited_after_signing_is_refused(bundle: Path, keys: dict[str, Path]) -> None:
    sign_bundle(bundle, keys["ours"])
    document = json.loads((bundle / "bundle.json").read_text())
    document["threshold"]["high"] *= 10  # a looser threshold would hide anomalies
    (bundle / "bundle.json").write_text(json.dumps(document))
    with pytest.raises(BundleError, match="changed after signing"):
        load_bundle(bundle, public_key=keys["ours_pub"])


def test_another_json_file_beside_a_signed_bundle_is_refused(bundle: Path,
                                                            keys: dict[str, Path]) -> None:
    # bundle.json is signed; a config naming a look-alike file must not borrow that signature.
    sign_bundle(bundle, keys["ours"])
    document = json.loads((bundle / "bundle.json").read_text())
    document["threshold"]["high"] *= 10
    (bundle / "other.json").write_text(json.dumps(document))
    with pytest.raises(BundleError, match="changed after signing"):
        load_bundle(bundle / "other.json", public_key=keys["ours_pub"])
    assert load_bundle(bundle / "bundle.json", public_key=keys["ours_pub"]).name == "demo-wells"


def test_a_key_without_the_cryptography_package_says_how_to_install_it(
        bundle: Path, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    sign_bundle(bundle, keys["ours"])
    for name in [m for m in sys.modules if m == "cryptography" or m.startswith("cryptography.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cryptography", None)  # as on a device without [signing]
    with pytest.raises(ConfigError, match=r"pip install 'edge-anomaly\[signing\]'"):
        load_bundle(bundle, public_key=keys["ours_pub"])


def test_garbage_signature_and_wrong_key_type_are_clear_errors(bundle: Path, tmp_path: Path,
                                                               keys: dict[str, Path]) -> None:
    (bundle / SIGNATURE_FILE).write_text("not base64 !!\n")
    with pytest.raises(BundleError, match="not a base64 signature"):
        load_bundle(bundle, public_key=keys["ours_pub"])
    not_a_key = tmp_path / "junk.pem"
    not_a_key.write_text("hello")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_bundle(bundle, public_key=not_a_key)


def test_validate_config_refuses_an_unsigned_bundle(bundle: Path, tmp_path: Path,
                                                    keys: dict[str, Path]) -> None:
    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    Image.new("L", (280, 200), 128).save(frames / "frame_0.png")  # a tray-sized frame to replay
    config = tmp_path / "device.toml"
    config.write_text(
        f'device_id = "signed-1"\nbundle = "{bundle}"\n'
        f'bundle_public_key = "{keys["ours_pub"]}"\n'
        f'[source]\nkind = "folder"\npath = "{frames}"\n'
        "[layout.grid]\nregion = [20, 20, 240, 160]\nrows = 4\ncols = 6\n")
    command = [sys.executable, "-m", "edge", "run", "--config", str(config), "--validate-config"]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert "not signed" in refused.stdout + refused.stderr
    sign_bundle(bundle, keys["ours"])
    accepted = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr


def test_trainer_keygen_and_sign_then_edge_score_with_the_key(bundle: Path,
                                                               tmp_path: Path) -> None:
    def run(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True,
                              timeout=120)

    prefix = tmp_path / "keys" / "line"
    assert run("trainer", "keygen", "--out", str(prefix)).returncode == 0
    again = run("trainer", "keygen", "--out", str(prefix))
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
    crop = tmp_path / "crop.png"
    from PIL import Image

    Image.new("L", (40, 40), 128).save(crop)
    public = f"{prefix}.pub.pem"
    unsigned = run("edge", "score", str(bundle), str(crop), "--public-key", public)
    assert unsigned.returncode == 3 and "not signed" in unsigned.stderr
    assert run("trainer", "sign", str(bundle), "--key", f"{prefix}.pem").returncode == 0
    signed = run("edge", "score", str(bundle), str(crop), "--public-key", public)
    assert signed.returncode == 0, signed.stderr
    assert signed.stdout.startswith(str(crop))
