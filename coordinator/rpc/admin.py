"""AdminService: what API-key holders do to their org's mesh."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from coordinator import accounts, linking, nodes
from coordinator.accounts import Caller
from coordinator.models import Node
from coordinator.rpc.boundary import Context, translate_errors
from coordinator.rpc.convert import node_message
from coordinator.rpc.credentials import api_key_of
from coordinator.runtime import Runtime
from coordinator.store import in_transaction
from runmesh.v1 import admin_pb2, node_pb2


class AdminServicer:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def _caller(
        self, session: AsyncSession, context: Context
    ) -> Caller:
        return await accounts.authenticate(session, api_key_of(context))

    @translate_errors
    async def ApproveLink(
        self,
        request: admin_pb2.ApproveLinkRequest,
        context: Context,
    ) -> node_pb2.Node:
        async def work(session: AsyncSession) -> node_pb2.Node:
            caller = await self._caller(session, context)
            node = await linking.approve_link(
                session,
                self._rt.settings,
                caller,
                code=request.code,
                name=request.name,
            )
            return node_message(node)

        answer = await in_transaction(self._rt.sessions, work)
        self._rt.hub.notify(answer.org_id)
        return answer

    @translate_errors
    async def ListNodes(
        self, request: admin_pb2.ListNodesRequest, context: Context
    ) -> admin_pb2.ListNodesResponse:
        async with self._rt.sessions() as session:
            caller = await self._caller(session, context)
            page = await nodes.list_nodes(
                session,
                caller,
                self._rt.cursors,
                limit=request.limit,
                cursor=request.cursor,
                include_revoked=request.include_revoked,
            )
            return admin_pb2.ListNodesResponse(
                nodes=[node_message(n) for n in page.nodes],
                next_cursor=page.next_cursor,
                has_more=page.has_more,
            )

    @translate_errors
    async def GetNode(
        self, request: admin_pb2.GetNodeRequest, context: Context
    ) -> node_pb2.Node:
        async with self._rt.sessions() as session:
            caller = await self._caller(session, context)
            return node_message(await nodes.get_node(session, caller, request.id))

    @translate_errors
    async def RevokeNode(
        self, request: admin_pb2.RevokeNodeRequest, context: Context
    ) -> node_pb2.Node:
        async def work(session: AsyncSession) -> Node:
            caller = await self._caller(session, context)
            return await nodes.revoke_node(session, caller, request.id)

        node = await in_transaction(self._rt.sessions, work)
        self._rt.hub.notify(node.org_id)
        return node_message(node)
