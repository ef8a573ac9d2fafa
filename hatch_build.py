"""Generate the gRPC/protobuf modules (roost.v1.*_pb2) from proto/ at build time.

The generated files are gitignored and never hand-edited: every install (wheel or editable)
runs grpc_tools.protoc over proto/roost/v1/*.proto, writing next to the .proto files so that
`proto/` acts as a source root for the `roost` namespace package.
"""
from __future__ import annotations

import glob
import os

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def generate(root: str) -> list[str]:
    """Run protoc for every .proto under proto/roost; return the generated paths (relative)."""
    import grpc_tools
    from grpc_tools import protoc

    proto_dir = os.path.join(root, "proto")
    protos = sorted(glob.glob(os.path.join(proto_dir, "roost", "v1", "*.proto")))
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = ["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={proto_dir}",
            f"--pyi_out={proto_dir}", f"--grpc_python_out={proto_dir}", *protos]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {protos}")
    out = []
    for path in glob.glob(os.path.join(proto_dir, "roost", "v1", "*_pb2*.py*")):
        out.append(os.path.relpath(path, root))
    return out


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict) -> None:
        generated = generate(self.root)
        # Generated files are gitignored; artifacts makes the wheel include them anyway.
        build_data.setdefault("artifacts", []).extend(generated)
