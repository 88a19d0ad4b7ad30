"""What the matrix-nio peer scripts share: failing with a message, and registering a client."""

import sys

from nio import AsyncClient, RegisterResponse


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr, flush=True)
        sys.exit(1)


async def registered(base_url: str, name: str) -> AsyncClient:
    client = AsyncClient(base_url, name)
    response = await client.register(name, "nio-password", device_name=f"{name} device")
    check(isinstance(response, RegisterResponse), f"register {name}: {response}")
    return client
