"""P2P adapter: libp2p host in a trio thread, asyncio bridge, signed envelopes, blobs."""
