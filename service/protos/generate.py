"""Regenerate `service/_generated` from `grpc_predict_v2.proto`.

Run `python -m service.protos.generate` after editing the proto and check the
result in; `tests/unit/service/test_generated_code.py` fails while it is stale.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
PROTO = PROTO_DIR / "grpc_predict_v2.proto"
DEFAULT_OUT = PROTO_DIR.parent / "_generated"
# Mapping the proto onto this virtual path makes protoc write
# `from service._generated import grpc_predict_v2_pb2` in the _grpc module.
PACKAGE_PATH = "service/_generated"

INIT = '"""Code generated from service/protos/grpc_predict_v2.proto by service/protos/generate.py; do not edit."""\n'

# tritonclient.grpc registers its own `inference.*` messages (a larger file of the same
# package) in protobuf's default pool, and a pool refuses a second definition of a
# symbol. Our messages live in a private pool so both can be imported in one process;
# the wire format is unaffected.
DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
PRIVATE_POOL = "_POOL = _descriptor_pool.DescriptorPool()\nDESCRIPTOR = _POOL.AddSerializedFile("

FILES = ("__init__.py", "grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi", "grpc_predict_v2_pb2_grpc.py")


def _use_private_pool(pb2: Path) -> None:
    text = pb2.read_text()
    if text.count(DEFAULT_POOL) != 1:
        raise RuntimeError(f"{pb2.name}: protoc's output changed; update the private-pool patch")
    pb2.write_text(text.replace(DEFAULT_POOL, PRIVATE_POOL))


def generate(out_dir: Path) -> list[Path]:
    """Write the generated modules into `out_dir` (created if needed); return their paths."""
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{PACKAGE_PATH}={PROTO_DIR}",
                f"--python_out={scratch}",
                f"--pyi_out={scratch}",
                f"--grpc_python_out={scratch}",
                str(PROTO),
            ],
            check=True,
        )
        produced = Path(scratch) / PACKAGE_PATH
        _use_private_pool(produced / "grpc_predict_v2_pb2.py")
        (produced / "__init__.py").write_text(INIT)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            shutil.copyfile(produced / name, out_dir / name)
    return [out_dir / name for name in FILES]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", nargs="?", type=Path, default=DEFAULT_OUT)
    for path in generate(parser.parse_args(argv).out_dir):
        print(path)


if __name__ == "__main__":
    main()
