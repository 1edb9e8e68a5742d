"""The checked-in stubs in runmesh/v1/ are exactly what proto/ generates.

The stubs are regenerated into a temporary directory with the same command
as scripts/gen-proto and compared file by file. Lines that only carry the
generator's own version are ignored, so a newer grpcio-tools on a fresh
machine does not fail the check; every other difference does.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PACKAGE = Path("runmesh") / "v1"
STUB_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")

_PROTOBUF_VERSION_COMMENT = re.compile(r"^# Protobuf Python Version: \S+$")
_GRPC_VERSION = re.compile(r"^GRPC_GENERATED_VERSION = '[^']*'$")
_VALIDATE_CALL = re.compile(r"^_runtime_version\.ValidateProtobufRuntimeVersion\($")
# Inside that call: major, minor and patch as bare integers, then the
# version suffix ('' or e.g. '-rc1'). The domain and the source path stay.
_VERSION_ARGUMENT = re.compile(r"^\s+(\d+|'[-\w.]*'),$")


def generate_stubs(proto_dir: Path, out: Path) -> None:
    """What scripts/gen-proto runs, with ``out`` in place of the repository."""
    include = proto_dir.name
    sources = sorted(
        f"{include}/{p.relative_to(proto_dir)}"
        for p in proto_dir.glob("runmesh/v1/*.proto")
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{include}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *sources,
        ],
        cwd=proto_dir.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"protoc failed:\n{done.stderr}"


def without_generator_versions(text: str) -> list[str]:
    """The stub's lines, with the generator's version numbers blanked out."""
    lines: list[str] = []
    in_validate_call = False
    for line in text.splitlines():
        if _VALIDATE_CALL.match(line):
            in_validate_call = True
        elif in_validate_call and line.strip() == ")":
            in_validate_call = False
        elif in_validate_call and _VERSION_ARGUMENT.match(line):
            line = "<protobuf version argument>"
        elif _PROTOBUF_VERSION_COMMENT.match(line):
            line = "# Protobuf Python Version: <version>"
        elif _GRPC_VERSION.match(line):
            line = "GRPC_GENERATED_VERSION = <version>"
        lines.append(line)
    return lines


def stub_names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.name.endswith(STUB_SUFFIXES)}


def stale_stubs(generated: Path, checked_in: Path) -> list[str]:
    """Names of stubs in ``checked_in`` that differ from ``generated``."""
    differing = []
    for name in sorted(stub_names(generated) | stub_names(checked_in)):
        fresh, kept = generated / name, checked_in / name
        if not fresh.exists() or not kept.exists():
            differing.append(name)
        elif without_generator_versions(
            fresh.read_text()
        ) != without_generator_versions(kept.read_text()):
            differing.append(name)
    return differing


def source_of(stub: str) -> str:
    for suffix in sorted(STUB_SUFFIXES, key=len, reverse=True):
        if stub.endswith(suffix):
            return stub.removesuffix(suffix) + ".proto"
    raise ValueError(f"not a stub: {stub}")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stubs")
    generate_stubs(PROTO_DIR, out)
    return out / PACKAGE


def test_checked_in_stubs_match_the_proto_sources(generated: Path) -> None:
    differing = stale_stubs(generated, ROOT / PACKAGE)

    assert not differing, (
        f"runmesh/v1 stubs differ from proto/: {', '.join(differing)}; "
        "run scripts/gen-proto and commit the result"
    )


def test_every_stub_has_a_proto_source() -> None:
    stubs = stub_names(ROOT / PACKAGE)
    orphans = sorted(
        s for s in stubs if not (PROTO_DIR / PACKAGE / source_of(s)).exists()
    )

    assert stubs, "no stubs found in runmesh/v1"
    assert not orphans, (
        f"stubs without a .proto in proto/runmesh/v1: {', '.join(orphans)}; "
        "delete them or restore their source, then run scripts/gen-proto"
    )


def test_a_newer_generator_version_alone_is_not_a_difference(
    generated: Path, tmp_path: Path
) -> None:
    bumped = tmp_path / "bumped"
    shutil.copytree(generated, bumped)
    for stub in bumped.iterdir():
        text = stub.read_text()
        text = re.sub(
            r"Protobuf Python Version: \S+", "Protobuf Python Version: 9.1.2", text
        )
        text = re.sub(
            r"GRPC_GENERATED_VERSION = '[^']*'",
            "GRPC_GENERATED_VERSION = '2.0.0'",
            text,
        )
        text = re.sub(
            r"(Domain\.PUBLIC,\n)\s+\d+,\n\s+\d+,\n\s+\d+,\n\s+'',",
            r"\1    9,\n    1,\n    2,\n    '-rc1',",
            text,
        )
        stub.write_text(text)

    assert stale_stubs(generated, bumped) == []
    mesh = (bumped / "mesh_pb2.py").read_text()
    assert "9.1.2" in mesh and "'-rc1'" in mesh


def test_a_changed_message_is_a_difference(generated: Path, tmp_path: Path) -> None:
    changed = tmp_path / "proto"
    shutil.copytree(PROTO_DIR, changed)
    mesh = changed / PACKAGE / "mesh.proto"
    mesh.write_text(
        mesh.read_text().replace(
            "message Revoked {\n  string reason = 1;\n}",
            "message Revoked {\n  string reason = 1;\n  uint32 code = 2;\n}",
        )
    )
    assert "uint32 code = 2;" in mesh.read_text()
    out = tmp_path / "out"
    out.mkdir()
    generate_stubs(changed, out)

    assert stale_stubs(generated, out / PACKAGE) == ["mesh_pb2.py", "mesh_pb2.pyi"]


def test_a_stub_missing_from_the_repository_is_a_difference(
    generated: Path, tmp_path: Path
) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(generated, partial)
    (partial / "node_pb2_grpc.py").unlink()

    assert stale_stubs(generated, partial) == ["node_pb2_grpc.py"]
