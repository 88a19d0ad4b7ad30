"""Sync driven by matrix-nio, a real third-party client, against a running server: two users,
one creates a room and invites the other, who sees the invite, joins, and reads a message the
first sends while it is long-polling.

Usage: python3 nio_sync.py BASE_URL. Exits non-zero with a message on the first failure.
"""

import asyncio
import sys

from nio import (
    JoinResponse,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)

from nio_common import check, registered


async def main(base_url: str) -> None:
    alice = await registered(base_url, "nio_sync_alice")
    bob = await registered(base_url, "nio_sync_bob")

    first = await bob.sync(timeout=0, full_state=True)
    check(isinstance(first, SyncResponse), f"bob's first sync: {first}")

    created = await alice.room_create(name="nio sync room", invite=[bob.user_id])
    check(isinstance(created, RoomCreateResponse), f"room_create: {created}")
    room_id = created.room_id

    invited = await bob.sync(timeout=5000)
    check(isinstance(invited, SyncResponse), f"sync after the invite: {invited}")
    check(room_id in invited.rooms.invite, f"the invite is missing: {invited.rooms.invite}")
    check(room_id in bob.invited_rooms, f"nio does not list the invite: {bob.invited_rooms}")

    joined = await bob.join(room_id)
    check(isinstance(joined, JoinResponse), f"join: {joined}")
    after_join = await bob.sync(timeout=5000)
    check(isinstance(after_join, SyncResponse), f"sync after the join: {after_join}")
    check(room_id in after_join.rooms.join, f"the joined room is missing: {after_join.rooms.join}")
    room = bob.rooms.get(room_id)
    check(room is not None, "nio does not know the room")
    check(room.name == "nio sync room", f"room name: {room.name}")
    check(alice.user_id in room.users and bob.user_id in room.users, f"members: {list(room.users)}")

    # Bob long-polls; Alice's message wakes the sync.
    waiting = asyncio.create_task(bob.sync(timeout=60000))
    await asyncio.sleep(0.3)
    check(not waiting.done(), f"the sync returned with nothing new: {waiting.result() if waiting.done() else ''}")
    sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hello from nio"})
    check(isinstance(sent, RoomSendResponse), f"room_send: {sent}")
    woken = await asyncio.wait_for(waiting, timeout=30)
    check(isinstance(woken, SyncResponse), f"long-poll sync: {woken}")
    timeline = woken.rooms.join.get(room_id)
    check(timeline is not None, f"no room in the woken sync: {woken.rooms.join}")
    texts = [e for e in timeline.timeline.events if isinstance(e, RoomMessageText)]
    check([e.body for e in texts] == ["hello from nio"], f"timeline: {timeline.timeline.events}")
    check(texts[0].sender == alice.user_id, f"sender: {texts[0].sender}")
    check(texts[0].event_id == sent.event_id, f"event id: {texts[0].event_id} != {sent.event_id}")

    await alice.close()
    await bob.close()
    print("OK")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
