"""The node's side of the Sync challenge, shared by meshd and test clients.

The answer is a NaCl ``Box`` (node private key, coordinator public key)
around ``CONTEXT + nonce``; the coordinator opens it with the node's public
key (see ``coordinator.nodeauth``).
"""

from __future__ import annotations

from nacl.public import Box, PrivateKey, PublicKey

from runmesh.wgkey import decode_key

CONTEXT = b"runmesh-sync-v1:"
# A different context for proving a new key, so a hello answer can never
# be replayed as a key-rotation proof or the other way round.
ROTATE_CONTEXT = b"runmesh-rotate-v1:"


def answer_challenge(
    node_private_key: PrivateKey, coordinator_public_key: str, nonce: bytes
) -> bytes:
    box = Box(node_private_key, PublicKey(decode_key(coordinator_public_key)))
    return bytes(box.encrypt(CONTEXT + nonce))


def prove_new_key(
    new_private_key: PrivateKey, coordinator_public_key: str, nonce: bytes
) -> bytes:
    box = Box(new_private_key, PublicKey(decode_key(coordinator_public_key)))
    return bytes(box.encrypt(ROTATE_CONTEXT + nonce))
