"""Tamper-evident result sets: a SHA-256 of every file, sealed into the manifest, and optional
Ed25519 signatures so a buyer can check a result set a vendor produced.

The seal lives in `manifest.json` under `integrity`: the hash of every other file of the result
set, the hashes of the model weight files the cells loaded, and two hashes of the manifest itself:
`manifest_bytes_sha256`, of the file's bytes as written with the two seal values written as 64
zeros (so any changed byte fails, a whitespace-only edit included), and `manifest_sha256`, of its
canonical JSON with that one field blank (what result sets sealed before byte seals carry, and
what older lokaal-bench versions check). `verify` recomputes all of it: any changed, missing or
added file, and any directory holding no sealed file, is reported. Without a signature this
catches accidents and careless edits; with one (the organisation's Ed25519 key,
`manifest.json.sig`, over the manifest's bytes) it also catches deliberate changes.

Result sets sealed before byte seals still verify, by their canonical hash, and say so;
`lokaal-bench verify --upgrade-seal` adds the byte seal to one that verifies (unsigned ones only:
a signature already covers the manifest's bytes, and re-sealing would void it).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.atomic import write_bytes, write_text
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
    """SHA-256 of a model's weight files. A synthetic model's marker already holds them; other files are
    hashed once and the hash reused while size and mtime hold (bench/results/weight_hashes.py)."""
    from bench.models import read_marker
    from bench.results.weight_hashes import cached_sha256

    if model_dir.is_file():  # a GGUF file (llama.cpp): hashed once, the digest kept beside it
        from bench.models.gguf import file_sha256

        return {model_dir.name: file_sha256(model_dir)}
    marker = read_marker(model_dir)
    if marker and marker.get("weight_files"):
        return {name: entry["sha256"] for name, entry in sorted(marker["weight_files"].items())}
    weights = sorted(p for p in model_dir.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".gguf"))
    return cached_sha256(weights, sha256_file)


BYTES_FIELD = "manifest_bytes_sha256"
_ZEROS = "0" * 64
_SEAL_VALUES = re.compile(rb'(?<!\\)"(manifest_sha256|manifest_bytes_sha256)": "([0-9a-f]{64})"')


def _serialise(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode("utf-8")


def _zeroed(raw: bytes) -> bytes | None:
    """The manifest's bytes with its two seal values as zeros; None unless each occurs exactly once."""
    found = [m.group(1) for m in _SEAL_VALUES.finditer(raw)]
    if sorted(found) != [b"manifest_bytes_sha256", b"manifest_sha256"]:
        return None
    return _SEAL_VALUES.sub(lambda m: b'"' + m.group(1) + b'": "' + _ZEROS.encode() + b'"', raw)


def seal(root: Path, manifest: dict[str, Any], models: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Record the hash of every file (and of the models' weights) in the manifest and write it."""
    from bench import scrub

    manifest = scrub.data(manifest)  # scrubbed before it is hashed: these are the bytes that are written
    manifest["integrity"] = {
        "algorithm": "sha256",
        "files": {relative: sha256_file(path) for relative, path in _files(root).items()},
        "model_weights": models,
        "manifest_sha256": _ZEROS,
        BYTES_FIELD: _ZEROS,
    }
    placeholder = _serialise(manifest)
    manifest["integrity"][BYTES_FIELD] = hashlib.sha256(placeholder).hexdigest()
    manifest["integrity"]["manifest_sha256"] = manifest_digest(manifest)
    data = _serialise(manifest)
    if _zeroed(data) != placeholder:  # a string in the manifest imitating a seal field: never seal wrongly
        raise ResultSetError(f"{root / MANIFEST}: cannot seal (a value imitates the seal's own fields)")
    write_bytes(root / MANIFEST, data)
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
    canonical_seal_only: bool = False  # sealed before byte seals: the manifest is checked as canonical JSON

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
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON
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
    if not isinstance(integrity.get("files"), dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in integrity["files"].items()):
        result.problems.append(f"{MANIFEST}: integrity.files is not a map of file names to hashes")
        return result
    if manifest_digest(manifest) != integrity.get("manifest_sha256"):
        result.changed.append(MANIFEST)
    elif BYTES_FIELD in integrity:
        zeroed = _zeroed(raw)
        if zeroed is None or hashlib.sha256(zeroed).hexdigest() != integrity[BYTES_FIELD]:
            result.changed.append(MANIFEST)
    else:
        result.canonical_seal_only = True
    recorded: dict[str, str] = integrity["files"]
    present = _files(root)
    for relative, expected in sorted(recorded.items()):
        if relative not in present:
            result.missing.append(relative)
        elif sha256_file(present[relative]) != expected:
            result.changed.append(relative)
    result.added = sorted(set(present) - set(recorded)) + _unsealed_directories(root, recorded)
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


def _unsealed_directories(root: Path, recorded: dict[str, str]) -> list[str]:
    """Directories that hold no file at all and are no sealed file's parent: added after the seal."""
    expected = {parent.as_posix() for name in recorded for parent in Path(name).parents}
    added = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_dir() and not path.is_symlink() and relative not in expected and \
                not any(p.is_file() for p in path.rglob("*")):
            added.append(f"{relative}/ (an empty directory)")
    return added


def upgrade_seal(root: Path) -> str:
    """Give a result set sealed before byte seals a byte seal, once it verifies by its old seal."""
    outcome = verify(root)
    if not outcome.ok:
        raise ResultSetError(f"{root}: refusing to re-seal a result set that does not verify: {describe(outcome)}")
    if not outcome.canonical_seal_only:
        return "already sealed over the manifest's bytes: nothing to do"
    if (root / SIGNATURE).exists():
        raise ResultSetError(f"{root}: signed; the signature already covers the manifest's bytes (verify it with "
                             "--public-key), and re-sealing would void it")
    manifest = json.loads((root / MANIFEST).read_bytes())
    seal(root, manifest, (manifest.get("integrity") or {}).get("model_weights") or {})
    return "re-sealed: manifest.json's bytes are now sealed too (its content is unchanged)"


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
