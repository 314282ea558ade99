"""Regenerate the checked-in ``*_pb2.py`` modules from the ``.proto`` files beside this script.

The generated modules are committed so that the service needs only the protobuf
runtime, not a protoc toolchain.  ``tests/test_proto_generated.py`` runs
:func:`generate` into a temporary folder and fails when the output differs from
the committed files, so a ``.proto`` edit cannot silently drift from its module.

Usage: ``python proto/generate.py`` (writes into ``proto/``), or
``python proto/generate.py OUT_DIR``.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent


def proto_files() -> list[Path]:
    """Every schema in the folder, sorted so the protoc invocation is reproducible."""
    return sorted(PROTO_DIR.glob("*.proto"))


def generate(out_dir: Path = PROTO_DIR) -> list[Path]:
    """Run grpcio-tools' bundled protoc; returns the written ``*_pb2.py`` paths.

    Files are named relative to ``-I PROTO_DIR`` so the ``# source:`` line and the
    descriptor's file name are the bare file name, as protoc's Python output expects.
    """
    from grpc_tools import protoc  # dev-only dependency: imported here, not at module load

    out_dir.mkdir(parents=True, exist_ok=True)
    names = [p.name for p in proto_files()]
    args = ["grpc_tools.protoc", f"-I{PROTO_DIR}", f"--python_out={out_dir}", *names]
    status = protoc.main(args)
    if status != 0:
        raise RuntimeError(f"protoc failed with status {status}: {' '.join(args)}")
    return [out_dir / (Path(name).stem + "_pb2.py") for name in names]


def main(argv: list[str]) -> int:
    out_dir = Path(argv[1]) if len(argv) > 1 else PROTO_DIR
    for path in generate(out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
