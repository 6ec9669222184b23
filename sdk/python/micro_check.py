"""A second-language client of Micro v3's APIs on a Strata node.

Generates Python code from Strata's Micro-package protos (proto/proto/micro) with
grpcio-tools, then drives store.Store, registry.Registry, events.Stream and config.Config
against a running node and checks Micro's semantics, including its JSON errors. Exits 0 when
every check holds, 1 with the failed check named otherwise.

    python micro_check.py --address 127.0.0.1:7420
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "proto" / "proto"
PACKAGES = ["store", "registry", "events", "config"]


class CheckFailed(Exception):
    """A check that did not hold."""


def check(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)


def generate(out: Path) -> dict[str, tuple[ModuleType, ModuleType]]:
    """Compiles the protos into `out`; returns (messages, stubs) modules per package."""
    files = [str(PROTOS / "micro" / name / f"{name}.proto") for name in PACKAGES]
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *files,
        ]
    )
    if code != 0:
        raise CheckFailed(f"protoc failed with {code}")
    sys.path.insert(0, str(out))
    return {
        name: (
            importlib.import_module(f"micro.{name}.{name}_pb2"),
            importlib.import_module(f"micro.{name}.{name}_pb2_grpc"),
        )
        for name in PACKAGES
    }


def micro_error(error: grpc.RpcError) -> dict[str, Any]:
    """Micro's error, as its clients read it: the JSON in grpc-message."""
    details = error.details() if isinstance(error, grpc.Call) else None
    parsed: dict[str, Any] = json.loads(details or "{}")
    return parsed


def expect_error(call: Callable[[], object], code: int, what: str) -> dict[str, Any]:
    try:
        call()
    except grpc.RpcError as error:
        parsed = micro_error(error)
        check(parsed.get("code") == code, f"{what}: Micro code {code}, got {parsed}")
        return parsed
    raise CheckFailed(f"{what}: expected Micro error {code}, the call succeeded")


def check_store(channel: grpc.Channel, store_pb: ModuleType, store_grpc: ModuleType) -> None:
    store = store_grpc.StoreStub(channel)
    options = store_pb.WriteOptions(database="py", table="t")
    for key in ["a/1", "a/2", "b/1"]:
        store.Write(
            store_pb.WriteRequest(
                record=store_pb.Record(key=key, value=key.encode(), expiry=3600),
                options=options,
            )
        )
    read = store.Read(
        store_pb.ReadRequest(key="a/1", options=store_pb.ReadOptions(database="py", table="t"))
    )
    check(read.records[0].value == b"a/1", "store: read back the value")
    check(0 < read.records[0].expiry <= 3600, "store: remaining seconds on read")
    prefixed = store.Read(
        store_pb.ReadRequest(
            key="a/",
            options=store_pb.ReadOptions(database="py", table="t", prefix=True, order="desc"),
        )
    )
    check(
        [r.key for r in prefixed.records] == ["a/2", "a/1"],
        "store: prefix read in descending order",
    )
    listed = list(
        store.List(
            store_pb.ListRequest(options=store_pb.ListOptions(database="py", table="t", limit=2))
        )
    )
    check(
        len(listed) == 1 and list(listed[0].keys) == ["a/1", "a/2"],
        "store: List answers one message, limited",
    )
    error = expect_error(
        lambda: store.Read(
            store_pb.ReadRequest(
                key="missing", options=store_pb.ReadOptions(database="py", table="t")
            )
        ),
        404,
        "store: a missing key",
    )
    check(error.get("id") == "store.Store.Read", "store: the error names the method")


def check_registry(channel: grpc.Channel, pb: ModuleType, stubs: ModuleType) -> None:
    registry = stubs.RegistryStub(channel)
    service = pb.Service(
        name="py-greeter",
        version="1.0",
        nodes=[pb.Node(id="py-1", address="10.0.0.1:8080", metadata={"a": "b"})],
        options=pb.Options(ttl=60, domain="py"),
    )
    registry.Register(service)
    found = registry.GetService(
        pb.GetRequest(service="py-greeter", options=pb.Options(domain="py"))
    )
    check(
        [n.id for n in found.services[0].nodes] == ["py-1"],
        "registry: the registered node",
    )
    check(
        found.services[0].metadata.get("domain") == "py",
        "registry: metadata.domain is set",
    )
    listed = registry.ListServices(pb.ListRequest(options=pb.Options(domain="py")))
    check([s.name for s in listed.services] == ["py-greeter"], "registry: ListServices")
    registry.Deregister(service)
    expect_error(
        lambda: registry.GetService(
            pb.GetRequest(service="py-greeter", options=pb.Options(domain="py"))
        ),
        404,
        "registry: a deregistered service",
    )


def check_events(channel: grpc.Channel, pb: ModuleType, stubs: ModuleType) -> None:
    stream = stubs.StreamStub(channel)
    started = int(time.time()) - 1
    stream.Publish(pb.PublishRequest(topic="py-events", payload=b"hello", metadata={"k": "v"}))
    # Python's generated client half-closes after its request: the server must go on.
    events = stream.Consume(
        pb.ConsumeRequest(
            topic="py-events",
            group="py",
            offset=started,
            auto_ack=True,
            retry_limit=-1,
        ),
        timeout=10,
    )
    first = next(iter(events))
    events.cancel()
    check(first.payload == b"hello", "events: the published event, replayed by time")
    check(first.metadata.get("k") == "v", "events: metadata kept")
    expect_error(lambda: stream.Publish(pb.PublishRequest(topic="")), 400, "events: no topic")


def check_config(channel: grpc.Channel, pb: ModuleType, stubs: ModuleType) -> None:
    config = stubs.ConfigStub(channel)
    config.Set(pb.SetRequest(namespace="py", path="", value=pb.Value(data='{"a":{"b":1}}')))
    config.Set(pb.SetRequest(namespace="py", path="a", value=pb.Value(data='{"c":2}')))
    whole = config.Get(pb.GetRequest(namespace="py", path="a"))
    check(json.loads(whole.value.data) == {"b": 1, "c": 2}, "config: objects deep-merge")
    missing = config.Get(pb.GetRequest(namespace="py", path="x.y"))
    check(missing.value.data == "null", "config: a missing path is null")
    expect_error(
        lambda: config.Get(pb.GetRequest(namespace="py-none", path="a")),
        404,
        "config: a namespace without a document",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True, help="host:port of a Strata node")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        modules = generate(Path(out))
        with grpc.insecure_channel(args.address) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            try:
                check_store(channel, *modules["store"])
                check_registry(channel, *modules["registry"])
                check_events(channel, *modules["events"])
                check_config(channel, *modules["config"])
            except CheckFailed as failed:
                print(f"micro_check: FAILED: {failed}", file=sys.stderr)
                return 1
    print("micro_check: store, registry, events and config behave as Micro's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
