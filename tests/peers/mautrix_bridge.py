"""A small bridge on mautrix-python's application service framework, against Trellis.

Usage: mautrix_bridge.py <homeserver URL> <bridge port>. The registration (id `mbridge`, the
tokens below, users `@mbridge_.*`) is the one the Rust test wrote into Trellis's config.

The bridge pings itself through Trellis, creates its puppet when Trellis asks about it (the
user query, on alice's invite), lets the puppet join the room it is invited to, and relays
every message of a local user back into the room as the puppet ("relayed: ..."), the way a
bridge relays between networks. A local user (plain HTTP) sees the relayed message, and her
typing reaches the bridge as an ephemeral event. Prints OK.
"""

import asyncio
import logging
import sys

import aiohttp
from mautrix.appservice import AppService
from mautrix.appservice.state_store.memory import ASStateStore
from mautrix.client.state_store import MemoryStateStore
from mautrix.types import EventType, Membership, UserID

AS_TOKEN = "mautrix-as-token"
HS_TOKEN = "mautrix-hs-token"
DOMAIN = "localhost"
PUPPET = UserID(f"@mbridge_puppet:{DOMAIN}")


class StateStore(ASStateStore, MemoryStateStore):
    """mautrix's in-memory room state with the appservice store's registration bookkeeping."""

    def __init__(self) -> None:
        ASStateStore.__init__(self)
        MemoryStateStore.__init__(self)


async def main(hs_url: str, port: int) -> None:
    relayed = asyncio.get_running_loop().create_future()
    saw_typing = asyncio.get_running_loop().create_future()
    queried = []

    async def query_user(user_id):
        queried.append(user_id)
        if user_id != PUPPET:
            return None
        await appservice.intent.user(user_id).ensure_registered()
        return {}

    appservice = AppService(
        server=hs_url,
        domain=DOMAIN,
        as_token=AS_TOKEN,
        hs_token=HS_TOKEN,
        bot_localpart="mbridgebot",
        id="mbridge",
        log=logging.getLogger("bridge"),
        query_user=query_user,
        ephemeral_events=True,
        state_store=StateStore(),
    )

    @appservice.matrix_event_handler
    async def on_event(evt):
        if evt.type == EventType.ROOM_MEMBER and evt.state_key == PUPPET:
            if evt.content.membership == Membership.INVITE:
                await appservice.intent.user(PUPPET).join_room(evt.room_id)
        elif evt.type == EventType.TYPING and "@alice:localhost" in evt.content.user_ids:
            if not saw_typing.done():
                saw_typing.set_result(evt.room_id)
        elif evt.type == EventType.ROOM_MESSAGE and evt.sender != PUPPET:
            await appservice.intent.user(PUPPET).send_text(evt.room_id, f"relayed: {evt.content.body}")
            if not relayed.done():
                relayed.set_result(evt.content.body)

    await appservice.start(host="127.0.0.1", port=port)
    appservice.ready = True
    try:
        ping_ms = await appservice.ping_self("bridge-ping")
        assert ping_ms >= 0, ping_ms
        await appservice.intent.ensure_registered()
        async with aiohttp.ClientSession() as http:

            async def call(method, path, token=None, body=None):
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                async with http.request(method, hs_url + path, json=body, headers=headers) as resp:
                    data = await resp.json()
                    assert resp.status == 200, (method, path, resp.status, data)
                    return data

            alice = await call(
                "POST",
                "/_matrix/client/v3/register",
                body={"username": "alice", "password": "pw", "auth": {"type": "m.login.dummy"}},
            )
            token = alice["access_token"]
            room = (await call("POST", "/_matrix/client/v3/createRoom", token, {"preset": "private_chat"}))["room_id"]
            # The puppet does not exist yet: Trellis asks the bridge, which registers it.
            await call("POST", f"/_matrix/client/v3/rooms/{room}/invite", token, {"user_id": PUPPET})
            assert PUPPET in queried, queried
            # The bridge sees the invite in a transaction and joins as the puppet.
            for _ in range(300):
                members = await call("GET", f"/_matrix/client/v3/rooms/{room}/joined_members", token)
                if PUPPET in members["joined"]:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"the puppet did not join: {members}")
            await call(
                "PUT",
                f"/_matrix/client/v3/rooms/{room}/send/m.room.message/t1",
                token,
                {"msgtype": "m.text", "body": "hello from matrix"},
            )
            assert await asyncio.wait_for(relayed, 30) == "hello from matrix"
            # Typing reaches the bridge as an ephemeral event (receive_ephemeral).
            await call(
                "PUT",
                f"/_matrix/client/v3/rooms/{room}/typing/@alice:localhost",
                token,
                {"typing": True, "timeout": 30000},
            )
            assert await asyncio.wait_for(saw_typing, 30) == room
            # Alice reads the relayed message.
            for _ in range(300):
                messages = await call("GET", f"/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=10", token)
                bodies = [e["content"].get("body") for e in messages["chunk"] if e["sender"] == PUPPET]
                if "relayed: hello from matrix" in bodies:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"no relayed message: {messages}")
    finally:
        await appservice.stop()
    print("OK")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(asyncio.wait_for(main(sys.argv[1], int(sys.argv[2])), 120))
