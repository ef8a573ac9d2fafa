"""roost.client: the `roost` CLI and a small library for programs that drive a roostd.

    from roost.client import Client
    with Client() as roost:
        module = roost.upload_module("hello.wasm")
        execution = roost.start(module.sha256, args=["world"])
        print(roost.wait(execution.id).exit_code)
"""
from roost.client.api import Client, default_addr
from roost.client.errors import RoostClientError

__all__ = ["Client", "RoostClientError", "default_addr"]
