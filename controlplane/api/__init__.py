"""HTTP API for ground-control software (aiohttp): missions, UAVs, telemetry, groups,
cluster status and a change stream, described by an OpenAPI 3 document it serves."""
