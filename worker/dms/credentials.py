"""How a ``DmsClient`` gets its destination and bearer token: a configured destination and the token cache, or
a destination looked up by name in the BTP Destination service (which may hand over a token itself)."""

from __future__ import annotations

from typing import Protocol

from worker.dms.destination_service import DestinationService
from worker.dms.destinations import Destination, DestinationName
from worker.dms.protocol import DestinationRef
from worker.dms.tokens import TokenCache


class Credentials(Protocol):
    @property
    def identity(self) -> DestinationRef: ...

    async def resolve(self) -> tuple[Destination, str]:
        """The destination to call and a bearer token for it."""
        ...

    def reject(self, destination: Destination, token: str) -> None:
        """DMS answered 401 with this token: never hand it out again."""
        ...


class ConfiguredCredentials:
    """A destination known from the environment or a service binding; tokens from the cache."""

    def __init__(self, destination: Destination, tokens: TokenCache) -> None:
        self._destination = destination
        self._tokens = tokens

    @property
    def identity(self) -> DestinationRef:
        return self._destination

    async def resolve(self) -> tuple[Destination, str]:
        return self._destination, await self._tokens.get(self._destination)

    def reject(self, destination: Destination, token: str) -> None:
        self._tokens.invalidate(destination, token)


class LookedUpCredentials:
    """A destination found by name in the Destination service, with its ``authTokens`` when there are any."""

    def __init__(self, name: DestinationName, service: DestinationService, tokens: TokenCache) -> None:
        self._name = name
        self._service = service
        self._tokens = tokens

    @property
    def identity(self) -> DestinationRef:
        return self._name

    async def resolve(self) -> tuple[Destination, str]:
        found = await self._service.find(self._name.name)
        if found.token is not None:
            return found.destination, found.token
        return found.destination, await self._tokens.get(found.destination)

    def reject(self, destination: Destination, token: str) -> None:
        self._tokens.invalidate(destination, token)
        self._service.forget(self._name.name, token)  # the destination itself may have changed: look it up again
