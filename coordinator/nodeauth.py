"""How a node proves on each Sync stream that it holds its private key.

The coordinator opens every stream with 32 fresh random bytes. The node
answers with a NaCl ``Box`` (its private key, the coordinator's public key)
around ``CONTEXT + nonce``. Only the holder of the node's private key can
produce a box the coordinator opens with that node's public key, and the
answer is bound to this stream's challenge, so a recorded answer is
worthless on any other stream. No bearer secret for nodes exists.
"""

from __future__ import annotations

import secrets

from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.errors import PermissionDenied
from coordinator.ids import utcnow
from coordinator.models import CoordinatorKey
from runmesh.challenge import CONTEXT
from runmesh.wgkey import InvalidKey, decode_key, encode_key

CHALLENGE_BYTES = 32


class CoordinatorIdentity:
    def __init__(self, private_key: PrivateKey) -> None:
        self.private_key = private_key
        self.public_key = encode_key(bytes(private_key.public_key))

    def verify(
        self,
        node_public_key: str,
        challenge: bytes,
        answer: bytes,
        context: bytes = CONTEXT,
    ) -> None:
        """Raise PermissionDenied unless ``answer`` proves the node's key."""
        try:
            node_key = PublicKey(decode_key(node_public_key))
            opened = Box(self.private_key, node_key).decrypt(answer)
        except (InvalidKey, CryptoError, ValueError, TypeError):
            raise PermissionDenied("the challenge answer does not verify") from None
        if not secrets.compare_digest(opened, context + challenge):
            raise PermissionDenied("the challenge answer is for another challenge")


def new_challenge() -> bytes:
    return secrets.token_bytes(CHALLENGE_BYTES)


def load_or_create_identity(session: Session) -> CoordinatorIdentity:
    row = session.scalar(select(CoordinatorKey).order_by(CoordinatorKey.id))
    if row is None:
        key = PrivateKey.generate()
        row = CoordinatorKey(
            id=1,
            private_key=bytes(key),
            public_key=encode_key(bytes(key.public_key)),
            created_at=utcnow(),
        )
        session.add(row)
        session.flush()
    return CoordinatorIdentity(PrivateKey(row.private_key))
