"""The verbs that seal result sets: `verify`, `sign` and `keygen`. One function per verb, taking
the parsed options and an Output, returning the exit code (1: verification failed)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.errors import EXIT_FAILED_CELLS, EXIT_OK
from bench.readers.printing import Output


def verify_command(args: argparse.Namespace, out: Output) -> int:
    from bench.results.integrity import describe, upgrade_seal, verify

    if args.upgrade_seal:
        out.message(f"{args.result_dir}: {upgrade_seal(Path(args.result_dir))}")
    outcome = verify(Path(args.result_dir), Path(args.public_key) if args.public_key else None)
    if outcome.ok:
        if outcome.canonical_seal_only:
            out.message(f"{args.result_dir}: sealed before byte seals: manifest.json is checked as canonical JSON "
                        "(an edit of its whitespace alone goes unseen); `lokaal-bench verify --upgrade-seal` adds "
                        "a byte seal")
        out.message(f"{args.result_dir}: OK, {outcome.files_checked} file(s) match their recorded SHA-256; "
                    f"signature {outcome.signature}")
        if outcome.upgraded_from is not None:
            from bench.results.upgrade import SCHEMA_VERSION

            out.message(f"written with result-set schema v{outcome.upgraded_from}: readers upgrade it to "
                        f"v{SCHEMA_VERSION} on read, the files stay as sealed")
        return EXIT_OK
    out.message(f"{args.result_dir}: FAILED verification: {describe(outcome)}")
    return EXIT_FAILED_CELLS


def sign_command(args: argparse.Namespace, out: Output) -> int:
    from bench.results.integrity import sign

    out.message(f"signed: {sign(Path(args.result_dir), Path(args.key))}")
    return EXIT_OK


def keygen_command(args: argparse.Namespace, out: Output) -> int:
    from bench.results.integrity import generate_keypair

    generate_keypair(Path(args.private), Path(args.public))
    out.message(f"Ed25519 key pair: private {args.private} (keep it secret), public {args.public} (share it)")
    return EXIT_OK
