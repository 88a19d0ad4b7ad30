"""Relations driven by matrix-nio, a real third-party client, against a running server: a user
starts a thread and edits its root; nio pages through the thread's relations, lists the room's
threads, and reads the root's bundled edit and thread summary.

Usage: python3 nio_relations.py BASE_URL. Exits non-zero with a message on the first failure.
"""

import asyncio
import sys

from nio import (
    AsyncClient,
    RegisterResponse,
    RoomCreateResponse,
    RoomGetEventResponse,
    RoomSendResponse,
)

from nio_common import check
from nio.api import RelationshipType


async def send(client: AsyncClient, room_id: str, content: dict) -> str:
    sent = await client.room_send(room_id, "m.room.message", content)
    check(isinstance(sent, RoomSendResponse), f"room_send: {sent}")
    return sent.event_id


async def main(base_url: str) -> None:
    alice = AsyncClient(base_url, "nio_relations_alice")
    registered = await alice.register("nio_relations_alice", "nio-password")
    check(isinstance(registered, RegisterResponse), f"register: {registered}")
    created = await alice.room_create(name="nio relations room")
    check(isinstance(created, RoomCreateResponse), f"room_create: {created}")
    room_id = created.room_id

    root = await send(alice, room_id, {"msgtype": "m.text", "body": "root"})
    replies = []
    for i in range(7):
        replies.append(
            await send(
                alice,
                room_id,
                {
                    "msgtype": "m.text",
                    "body": f"reply {i}",
                    "m.relates_to": {"rel_type": "m.thread", "event_id": root},
                },
            )
        )
    edit = await send(
        alice,
        room_id,
        {
            "msgtype": "m.text",
            "body": "* root, edited",
            "m.new_content": {"msgtype": "m.text", "body": "root, edited"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": root},
        },
    )

    # nio follows next_batch: three pages of at most 3, newest first.
    thread = [
        event.event_id
        async for event in alice.room_get_event_relations(room_id, root, RelationshipType.thread, limit=3)
    ]
    check(thread == list(reversed(replies)), f"thread relations: {thread}")
    edits = [
        event.event_id
        async for event in alice.room_get_event_relations(room_id, root, RelationshipType.replacement)
    ]
    check(edits == [edit], f"edits: {edits}")

    roots = [event async for event in alice.room_get_threads(room_id)]
    check([event.event_id for event in roots] == [root], f"threads: {roots}")
    summary = roots[0].source.get("unsigned", {}).get("m.relations", {}).get("m.thread", {})
    check(summary.get("count") == 7, f"thread summary: {summary}")
    check(summary.get("latest_event", {}).get("event_id") == replies[-1], f"latest: {summary}")
    check(summary.get("current_user_participated") is True, f"participated: {summary}")

    fetched = await alice.room_get_event(room_id, root)
    check(isinstance(fetched, RoomGetEventResponse), f"room_get_event: {fetched}")
    bundled = fetched.event.source.get("unsigned", {}).get("m.relations", {})
    check(bundled.get("m.replace", {}).get("event_id") == edit, f"bundled edit: {bundled}")
    new_content = bundled["m.replace"]["content"]["m.new_content"]
    check(new_content["body"] == "root, edited", f"new content: {new_content}")

    await alice.close()
    print("OK")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
