"""The reverse proxy: the route table and the aiohttp server that reads it."""
