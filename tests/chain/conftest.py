"""Chain fixtures: the same tests run on the embedded chain (py-evm) and on anvil.

One chain per backend per session (anvil on a free loopback port, killed at teardown); every test
deploys fresh contracts on it, so tests do not share state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from taonode.chain.anvil import AnvilChain
from taonode.chain.embedded import EmbeddedChain
from taonode.chain.localchain import LocalChain
from tests.chain.helpers import TEST_PARAMS, Env, make_env


@pytest_asyncio.fixture(
    scope="session",
    loop_scope="session",
    params=["embedded", pytest.param("anvil", marks=pytest.mark.anvil)],
)
async def chain(request: pytest.FixtureRequest) -> AsyncIterator[LocalChain]:
    backend: LocalChain
    if request.param == "embedded":
        backend = EmbeddedChain(num_keys=20)
    else:
        backend = await AnvilChain.start(num_keys=20)
    try:
        yield backend
    finally:
        await backend.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def deployed(chain: LocalChain) -> Env:
    return await make_env(chain, TEST_PARAMS)


@pytest_asyncio.fixture(loop_scope="session")
async def env(chain: LocalChain, deployed: Env) -> AsyncIterator[Env]:
    """The session's deployment, rolled back to a snapshot after each test."""
    snapshot = await chain.snapshot()
    deployed.voters = []
    try:
        yield deployed
    finally:
        await chain.revert(snapshot)
