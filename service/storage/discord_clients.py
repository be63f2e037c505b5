"""The process's Discord clients: one per bot token, shared by every slot using the token."""

from __future__ import annotations

from ..metrics import Metrics
from .discord_client import DiscordClient


class DiscordClients:
    """The process's Discord clients, one per bot token, created on first use.

    A client lives until the registry closes (at shutdown): its bucket knowledge outlives a
    slot's reconfiguration. A client whose token Discord refused is forgotten at once."""

    def __init__(self, *, global_rate: int, request_timeout: float, metrics: Metrics) -> None:
        self._global_rate = global_rate
        self._request_timeout = request_timeout
        self._metrics = metrics
        self._clients: dict[str, DiscordClient] = {}

    def client(self, token: str) -> DiscordClient:
        if (client := self._clients.get(token)) is None:
            client = self._clients[token] = DiscordClient(
                token,
                global_rate=self._global_rate,
                request_timeout=self._request_timeout,
                metrics=self._metrics,
                forget=lambda: self._forget(token, client),
            )
        return client

    def __len__(self) -> int:
        return len(self._clients)

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    def _forget(self, token: str, client: DiscordClient) -> None:
        if self._clients.get(token) is client:
            del self._clients[token]
