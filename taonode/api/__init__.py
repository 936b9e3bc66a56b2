"""HTTP surface: aiohttp application, routes and OpenAPI document."""
