"""Ed25519 signatures over a bundle, so a device runs only models its owner released.

``bundle.json`` lists the sha256 of every model file, so one signature over the exact bytes of
``bundle.json`` covers the whole bundle: the signature goes to ``bundle.sig`` (base64) beside it.
The device config names a public key (``bundle_public_key``); with one configured, an unsigned or
wrongly signed bundle is refused. Keys are PEM files (PKCS#8 private, SubjectPublicKeyInfo public).

Needs the ``cryptography`` package (``pip install 'edge-anomaly[signing]'``), imported only when a
key is used, so a device without signing does not need it.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

from edge.bundle import BUNDLE_FILE
from edge.errors import BundleError, ConfigError

SIGNATURE_FILE = "bundle.sig"


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise ConfigError(
            "bundle signing needs the 'cryptography' package, which is not installed; "
            "pip install 'edge-anomaly[signing]' or remove bundle_public_key from the config."
        ) from exc
    return serialization, ed25519


def generate_keypair(private_path: Path, public_path: Path) -> None:
    """Write a new Ed25519 key pair as PEM files (the private one readable by the owner only)."""
    serialization, ed25519 = _crypto()
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    private_path.touch(mode=0o600)
    private_path.write_bytes(private_pem)
    public_path.write_bytes(public_pem)


def sign_bundle(bundle_dir: Path, private_key_path: Path) -> Path:
    """Sign ``bundle_dir/bundle.json`` with the private key; returns the signature file."""
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_private_key(private_key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read the private key {private_key_path} ({exc}); expected an "
                          "unencrypted PKCS#8 PEM Ed25519 key (see 'trainer keygen').") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{private_key_path} is a {type(key).__name__}, not an Ed25519 key.")
    signature = key.sign((bundle_dir / BUNDLE_FILE).read_bytes())
    target = bundle_dir / SIGNATURE_FILE
    target.write_text(base64.b64encode(signature).decode("ascii") + "\n", encoding="ascii")
    return target


def load_public_key(path: Path) -> Any:
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"bundle_public_key {path} cannot be read ({exc}); expected a PEM "
                          "Ed25519 public key (see 'trainer keygen').") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigError(f"bundle_public_key {path} is a {type(key).__name__}, not Ed25519.")
    return key


def verify_bundle(bundle_dir: Path, public_key_path: Path, content: bytes | None = None) -> None:
    """Raise BundleError unless ``bundle.sig`` is a valid signature of ``content`` (the bytes of
    ``bundle.json`` the caller read and will trust; read here when not given)."""
    key = load_public_key(public_key_path)  # first: it says how to install cryptography
    from cryptography.exceptions import InvalidSignature

    signature_path = bundle_dir / SIGNATURE_FILE
    if not signature_path.is_file():
        raise BundleError(
            f"{bundle_dir} is not signed (no {SIGNATURE_FILE}) but the config requires bundles "
            f"signed for {public_key_path}; sign it with 'trainer sign {bundle_dir} --key "
            "PRIVATE.pem' or remove bundle_public_key."
        )
    try:
        signature = base64.b64decode(signature_path.read_text(encoding="ascii").strip(),
                                     validate=True)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{signature_path} is not a base64 signature ({exc}).") from exc
    try:
        key.verify(signature, content if content is not None
                   else (bundle_dir / BUNDLE_FILE).read_bytes())
    except InvalidSignature as exc:
        raise BundleError(
            f"{signature_path} does not match {bundle_dir / BUNDLE_FILE} for the public key "
            f"{public_key_path}: the bundle was changed after signing or signed with another "
            "key. Refusing to run it."
        ) from exc
