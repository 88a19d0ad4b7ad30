"""Account flows driven by matrix-nio, a real third-party client, against a running server.

Usage: python3 nio_accounts.py BASE_URL. Exits non-zero with a message on the first failure.
"""

import asyncio
import sys

from nio import (
    AsyncClient,
    LoginResponse,
    ProfileGetDisplayNameResponse,
    RegisterResponse,
    WhoamiResponse,
)

from nio_common import check


async def main(base_url: str) -> None:
    # Registration through nio's own user-interactive auth (the dummy stage).
    alice = AsyncClient(base_url, "nio_alice")
    registered = await alice.register("nio_alice", "nio-password", device_name="nio test")
    check(isinstance(registered, RegisterResponse), f"register: {registered}")
    check(registered.user_id.startswith("@nio_alice:"), f"user id: {registered.user_id}")

    whoami = await alice.whoami()
    check(isinstance(whoami, WhoamiResponse), f"whoami: {whoami}")
    check(whoami.user_id == registered.user_id, f"whoami user: {whoami.user_id}")

    await alice.set_displayname("Alice via nio")
    name = await alice.get_displayname()
    check(isinstance(name, ProfileGetDisplayNameResponse), f"get_displayname: {name}")
    check(name.displayname == "Alice via nio", f"displayname: {name.displayname}")
    await alice.close()

    # A second client logs in with the password and sees both devices.
    second = AsyncClient(base_url, "nio_alice")
    login = await second.login("nio-password", device_name="second device")
    check(isinstance(login, LoginResponse), f"login: {login}")
    devices = await second.devices()
    check(len(devices.devices) == 2, f"devices: {devices}")
    check(any(d.display_name == "second device" for d in devices.devices), f"device names: {devices}")

    bad = AsyncClient(base_url, "nio_alice")
    wrong = await bad.login("wrong-password")
    check(not isinstance(wrong, LoginResponse), "login with a wrong password must fail")
    check(getattr(wrong, "status_code", None) == "M_FORBIDDEN", f"wrong password error: {wrong}")
    await bad.close()

    logout = await second.logout()
    check(not hasattr(logout, "status_code"), f"logout: {logout}")
    after = await second.whoami()
    check(not isinstance(after, WhoamiResponse), "the token must be revoked after logout")
    await second.close()
    print("OK")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
