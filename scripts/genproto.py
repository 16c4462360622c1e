"""Owns Python code generation from proto/: the only way files under hubspoke/api/ are written.

Runs grpc_tools.protoc (with mypy-protobuf's plugins for .pyi stubs) over every .proto under
proto/ with `-I proto`, writing to the repository root, so `proto/hubspoke/api/etcd/rpc.proto`
becomes `hubspoke/api/etcd/rpc_pb2.py`. `--check` generates into a temporary directory instead
and exits 1, listing the files that differ from (or are missing in, or are stale in) the
committed tree.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def proto_files() -> list[Path]:
    """Every .proto source under proto/, sorted for a stable protoc invocation."""
    return sorted(PROTO_DIR.rglob("*.proto"))


def _plugin(name: str) -> str:
    """Path of a protoc plugin installed next to this interpreter (the venv's bin/)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def generate(out_dir: Path) -> None:
    """Run protoc over every proto source, writing generated modules under out_dir."""
    sources = proto_files()
    if not sources:
        raise SystemExit("no .proto files under proto/")
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(str(path) for path in sources),
    ]
    status = protoc.main(args)
    if status != 0:
        raise SystemExit(f"protoc failed with status {status}")


def generated_files(base: Path) -> set[Path]:
    """Generated files under base, relative to base, for the packages proto/ describes."""
    found: set[Path] = set()
    for source in proto_files():
        package_dir = base / source.parent.relative_to(PROTO_DIR)
        if not package_dir.is_dir():
            continue
        for path in package_dir.iterdir():
            if path.name.endswith(GENERATED_SUFFIXES):
                found.add(path.relative_to(base))
    return found


def check() -> int:
    """Regenerate into a temporary directory; return 1 and list drifted files on a difference."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh_root = Path(tmp)
        generate(fresh_root)
        fresh = generated_files(fresh_root)
        committed = generated_files(ROOT)
        drifted = sorted(
            str(rel)
            for rel in fresh | committed
            if rel not in fresh
            or rel not in committed
            or not filecmp.cmp(fresh_root / rel, ROOT / rel, shallow=False)
        )
    if drifted:
        print("generated code drifted from proto/ (run `make proto`):")
        for rel_name in drifted:
            print(f"  {rel_name}")
        return 1
    print("generated code is up to date")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if generated code drifted")
    options = parser.parse_args()
    if options.check:
        return check()
    generate(ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
