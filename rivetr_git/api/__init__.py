"""The HTTP edge (aiohttp): git-host webhooks, the JSON API under /api/v1/ and /metrics."""
