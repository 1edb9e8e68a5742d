"""`meshd rotate-key`: replace the node's key without linking it again.

Steps, each safe to crash after:

1. write a new key to DIR/private.key.next (0600);
2. open a Sync stream with the current key and, once its first map came,
   send RotateKey with a proof of the new key bound to this stream's nonce;
3. on KeyRotated, rename private.key.next over private.key and rewrite
   node.json's public key.

A crash between 2 and 3 leaves a coordinator that knows only the new key
and a node that still uses the old one. So whoever finds private.key.next
and has the current key refused with PERMISSION_DENIED (`meshd up` or the
next `meshd rotate-key`) tries the next key, and promotes it if the
coordinator accepts it (`finish_interrupted_rotation`).

A running `meshd up` is asked by the coordinator to reconnect ("node key
rotated") and reads the new key from the state directory before it does.
"""

from __future__ import annotations

import logging

import grpc
from nacl.public import PrivateKey

from meshd.channel import open_channel
from meshd.endpoints import current_endpoints
from meshd.errors import MeshdError
from meshd.session import Call, Hello, handshake, read_message
from meshd.state import Identity, StateDir
from runmesh.challenge import prove_new_key
from runmesh.v1 import mesh_pb2, mesh_pb2_grpc
from runmesh.wgkey import encode_key

log = logging.getLogger(__name__)

ROTATE_TIMEOUT = 10.0
DEFAULT_LISTEN_PORT = 51820


class RotationFailed(MeshdError):
    """The coordinator did not confirm the new key."""


async def rotate_key(
    state: StateDir, target: str | None, timeout: float = ROTATE_TIMEOUT
) -> str:
    """Rotate the node's key; returns the new public key."""
    identity, key = state.load_node()
    target = target or identity.coordinator_target
    hello = await reported_hello(state)
    try:
        return await _rotate(state, identity, key, target, hello, timeout)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
            finished = await finish_interrupted_rotation(state, target, hello)
            if finished is not None:
                log.warning("finished an interrupted key rotation instead")
                return finished
        raise RotationFailed(
            f"the coordinator at {target} did not rotate the key: "
            f"{exc.code().name} {exc.details()}"
        ) from None


async def reported_hello(state: StateDir) -> Hello:
    """A hello saying what the running `meshd up` says (endpoints, port,
    version), so a second stream does not change the node's endpoints."""
    status = state.load_status() or {}
    saved = state.load_map()
    port = status.get("listen_port")
    if not isinstance(port, int) or not 0 < port < 65536:
        port = DEFAULT_LISTEN_PORT
    endpoints = status.get("endpoints")
    if not isinstance(endpoints, list) or not all(
        isinstance(e, str) for e in endpoints
    ):
        interface = status.get("interface")
        exclude = [interface] if isinstance(interface, str) else []
        endpoints = await current_endpoints(exclude, port)
    return Hello(saved.version if saved else 0, list(endpoints), port)


async def _rotate(
    state: StateDir,
    identity: Identity,
    key: PrivateKey,
    target: str,
    hello: Hello,
    timeout: float,
) -> str:
    async with open_channel(target) as channel:
        call: Call = mesh_pb2_grpc.MeshServiceStub(channel).Sync(timeout=timeout)
        try:
            nonce = await handshake(call, identity, key, hello)
            await _first_map(call)
            new_key = state.create_next_key()
            new_public = encode_key(bytes(new_key.public_key))
            proof = prove_new_key(new_key, identity.coordinator_public_key, nonce)
            request = mesh_pb2.RotateKey(
                new_public_key=new_public, new_key_answer=proof
            )
            await call.write(mesh_pb2.NodeMessage(rotate_key=request))
            await _key_rotated(call, new_public, timeout)
        finally:
            call.cancel()
    state.promote_next_key(new_key)
    log.info("node key rotated node_id=%s", identity.node_id)
    return new_public


async def finish_interrupted_rotation(
    state: StateDir, target: str, hello: Hello
) -> str | None:
    """Promote private.key.next if the coordinator accepts it; its public
    key, or None when there is no next key or it is refused too."""
    next_key = state.load_next_key()
    if next_key is None:
        return None
    identity = state.load_identity()
    async with open_channel(target) as channel:
        call: Call = mesh_pb2_grpc.MeshServiceStub(channel).Sync(timeout=ROTATE_TIMEOUT)
        try:
            await handshake(call, identity, next_key, hello)
            await _first_map(call)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
                log.warning("%s is refused too", state.path / "private.key.next")
                return None
            raise
        finally:
            call.cancel()
    state.promote_next_key(next_key)
    log.warning(
        "the coordinator knows this node by the key in private.key.next: "
        "an earlier rotation was interrupted; it is now the node's key"
    )
    return encode_key(bytes(next_key.public_key))


async def _first_map(call: Call) -> None:
    """Return once the coordinator accepted the hello (its first map came)."""
    message = await read_message(call)
    if message is None:
        raise RotationFailed("the coordinator closed the stream after the hello")
    if message.WhichOneof("kind") == "revoked":
        raise RotationFailed(f"the node is revoked: {message.revoked.reason}")


async def _key_rotated(call: Call, new_public: str, timeout: float) -> None:
    try:
        while True:
            message = await read_message(call)
            if message is None:
                raise RotationFailed(
                    "the coordinator closed the stream without confirming the "
                    "new key; private.key.next is kept, and `meshd up` or "
                    "`meshd rotate-key` finishes the rotation if it was taken"
                )
            kind = message.WhichOneof("kind")
            if kind == "key_rotated":
                if message.key_rotated.new_public_key != new_public:
                    raise RotationFailed("the coordinator confirmed another key")
                return
            if kind == "revoked":
                raise RotationFailed(f"the node is revoked: {message.revoked.reason}")
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise RotationFailed(
                f"no KeyRotated within {timeout:g}s; private.key.next is kept, "
                "and the next `meshd up` or `meshd rotate-key` promotes it if "
                "the coordinator took it"
            ) from None
        raise
