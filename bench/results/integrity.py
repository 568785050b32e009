"""Tamper-evident result sets: a SHA-256 of every file, sealed into the manifest, and optional
Ed25519 signatures so a buyer can check a result set a vendor produced.

The seal lives in `manifest.json` under `integrity`: the hash of every other file of the result
set, the hashes of the model weight files the cells loaded, and the hash of the manifest itself
(computed with that one field blank). `verify` recomputes all of it: any changed, missing or added
file is reported. Without a signature this catches accidents and careless edits; with one (the
organisation's Ed25519 key, `manifest.json.sig`) it also catches deliberate changes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.atomic import write_json, write_text
from bench.errors import BenchError, ResultSetError
from bench.results.upgrade import SCHEMA_VERSION, check_version

MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"
_UNSEALED = {MANIFEST, SIGNATURE}
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(root: Path) -> dict[str, Path]:
    """Every regular file under the result set, by its relative path, bar the manifest and signature."""
    found = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and relative not in _UNSEALED and not path.name.startswith(f".{MANIFEST}.tmp"):
            found[relative] = path
    return found


def manifest_digest(manifest: dict[str, Any]) -> str:
    """Hash of the manifest as JSON with its own `integrity.manifest_sha256` left blank."""
    blank = json.loads(json.dumps(manifest))
    blank.setdefault("integrity", {})["manifest_sha256"] = ""
    return hashlib.sha256(json.dumps(blank, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def model_weight_hashes(model_dir: Path) -> dict[str, str]:
    """SHA-256 of a model's weight files. A synthetic model's marker already holds them."""
    from bench.models import read_marker

    marker = read_marker(model_dir)
    if marker and marker.get("weight_files"):
        return {name: entry["sha256"] for name, entry in sorted(marker["weight_files"].items())}
    weights = sorted(p for p in model_dir.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".gguf"))
    return {p.name: sha256_file(p) for p in weights}


def seal(root: Path, manifest: dict[str, Any], models: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Record the hash of every file (and of the models' weights) in the manifest and write it."""
    manifest["integrity"] = {
        "algorithm": "sha256",
        "files": {relative: sha256_file(path) for relative, path in _files(root).items()},
        "model_weights": models,
        "manifest_sha256": "",
    }
    manifest["integrity"]["manifest_sha256"] = manifest_digest(manifest)
    write_json(root / MANIFEST, manifest)
    (root / SIGNATURE).unlink(missing_ok=True)  # a signature over the old manifest no longer holds
    return manifest


@dataclass
class Verification:
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    signature: str = "absent"  # absent | valid | invalid | not checked (no public key given)
    files_checked: int = 0
    upgraded_from: int | None = None  # an older schema version: readers upgrade it in memory, the files stay

    @property
    def ok(self) -> bool:
        return not (self.changed or self.missing or self.added or self.problems) and self.signature != "invalid"


def verify(root: Path, public_key: Path | None = None) -> Verification:
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise ResultSetError(f"{root}: not a result set (no {MANIFEST})")
    result = Verification()
    raw = manifest_path.read_bytes()
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as exc:
        result.problems.append(f"{MANIFEST}: not valid JSON ({exc})")
        return result
    try:  # the seal's meaning belongs to a schema version: a newer one than this code cannot be judged
        version = check_version(manifest, str(manifest_path))
    except ResultSetError as exc:
        result.problems.append(str(exc))
        return result
    result.upgraded_from = version if version < SCHEMA_VERSION else None
    integrity = manifest.get("integrity")
    if not isinstance(integrity, dict) or "files" not in integrity:
        result.problems.append(f"{MANIFEST}: not sealed (no integrity section; the run did not finish?)")
        return result
    if manifest_digest(manifest) != integrity.get("manifest_sha256"):
        result.changed.append(MANIFEST)
    recorded: dict[str, str] = integrity["files"]
    present = _files(root)
    for relative, expected in sorted(recorded.items()):
        if relative not in present:
            result.missing.append(relative)
        elif sha256_file(present[relative]) != expected:
            result.changed.append(relative)
    result.added = sorted(set(present) - set(recorded))
    result.files_checked = len(recorded) + 1
    signature_path = root / SIGNATURE
    if signature_path.exists():
        if public_key is None:
            result.signature = "not checked (no public key given)"
        else:
            result.signature = "valid" if _signature_holds(raw, signature_path, public_key) else "invalid"
    elif public_key is not None:
        result.problems.append(f"a public key was given but {SIGNATURE} is absent: the result set is not signed")
    return result


# --- Ed25519 signing ----------------------------------------------------------------------------


def generate_keypair(private_path: Path, public_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if private_path.exists() or public_path.exists():
        raise BenchError(f"{private_path} or {public_path} exists already; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    private_path.touch(mode=0o600)
    private_path.write_bytes(private_pem)
    public_path.write_bytes(public_pem)


def _load_key(path: Path, private: bool) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    try:
        data = path.read_bytes()
        key = (serialization.load_pem_private_key(data, password=None) if private
               else serialization.load_pem_public_key(data))
    except FileNotFoundError:
        raise BenchError(f"{path}: key file not found") from None
    except (ValueError, TypeError) as exc:
        raise BenchError(f"{path}: not a PEM {'private' if private else 'public'} key ({exc})") from None
    expected = Ed25519PrivateKey if private else Ed25519PublicKey
    if not isinstance(key, expected):
        raise BenchError(f"{path}: not an Ed25519 key")
    return key


def sign(root: Path, private_key: Path) -> Path:
    """Sign the sealed manifest; the seal covers every other file, so this signs the whole set."""
    outcome = verify(root)
    if not outcome.ok:
        raise ResultSetError(f"{root}: refusing to sign a result set that does not verify: "
                             f"{describe(outcome)}")
    key = _load_key(private_key, private=True)
    signature = key.sign((root / MANIFEST).read_bytes())
    write_text(root / SIGNATURE, base64.b64encode(signature).decode() + "\n")
    return root / SIGNATURE


def _signature_holds(manifest_bytes: bytes, signature_path: Path, public_key: Path) -> bool:
    from cryptography.exceptions import InvalidSignature

    key = _load_key(public_key, private=False)
    try:
        key.verify(base64.b64decode(signature_path.read_text().strip(), validate=True), manifest_bytes)
    except (InvalidSignature, ValueError):
        return False
    return True


def describe(outcome: Verification) -> str:
    parts = []
    for label, items in (("changed", outcome.changed), ("missing", outcome.missing), ("added", outcome.added)):
        if items:
            parts.append(f"{label}: {', '.join(items)}")
    parts += outcome.problems
    if outcome.signature == "invalid":
        parts.append("signature: INVALID (the manifest was not signed by this key, or was changed after signing)")
    return "; ".join(parts) or "ok"
