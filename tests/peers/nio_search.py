"""Search driven by matrix-nio, a real third-party client, against a running server: two users
share a room; nio sends messages, reads them back with `room_messages`, then searches them
(`/search`, through nio's raw request API since nio has no search method), pages through the
results and parses each one with nio's own event parser, and finds the other user in the user
directory.

Usage: python3 nio_search.py BASE_URL. Exits non-zero with a message on the first failure.
"""

import asyncio
import json
import sys

from nio import (
    AsyncClient,
    Event,
    JoinResponse,
    RoomCreateResponse,
    RoomMessagesResponse,
    RoomMessageText,
    RoomSendResponse,
)

from nio_common import check, registered


async def post(client: AsyncClient, path: str, body: dict) -> dict:
    """A raw authenticated POST through nio's transport; returns the JSON answer."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {client.access_token}"}
    response = await client.send("POST", path, json.dumps(body), headers)
    answer = await response.json()
    check(response.status == 200, f"POST {path}: {response.status} {answer}")
    return answer


async def search(client: AsyncClient, criteria: dict, next_batch: str | None = None) -> dict:
    path = "/_matrix/client/v3/search"
    if next_batch is not None:
        path += f"?next_batch={next_batch}"
    answer = await post(client, path, {"search_categories": {"room_events": criteria}})
    return answer["search_categories"]["room_events"]


async def main(base_url: str) -> None:
    alice = await registered(base_url, "nio_search_alice")
    bob = await registered(base_url, "nio_search_bob")

    created = await alice.room_create(name="nio search room", invite=[bob.user_id])
    check(isinstance(created, RoomCreateResponse), f"room_create: {created}")
    room_id = created.room_id
    joined = await bob.join(room_id)
    check(isinstance(joined, JoinResponse), f"join: {joined}")

    sent = {}
    for client, body in [
        (alice, "The quick brown fox"),
        (bob, "a lazy dog sleeps"),
        (alice, "Fox again, quicker"),
    ]:
        response = await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body})
        check(isinstance(response, RoomSendResponse), f"room_send: {response}")
        sent[body] = response.event_id

    messages = await bob.room_messages(room_id, start="", limit=10)
    check(isinstance(messages, RoomMessagesResponse), f"room_messages: {messages}")
    bodies = [e.body for e in messages.chunk if isinstance(e, RoomMessageText)]
    check(bodies[:3] == ["Fox again, quicker", "a lazy dog sleeps", "The quick brown fox"], f"messages: {bodies}")

    # Both fox messages, newest first, parsed by nio like any timeline event.
    found = await search(bob, {"search_term": "FOX", "order_by": "recent", "filter": {"rooms": [room_id]}})
    check(found["count"] == 2, f"count: {found}")
    events = [Event.parse_event(r["result"]) for r in found["results"]]
    check(all(isinstance(e, RoomMessageText) for e in events), f"parsed: {events}")
    check([e.body for e in events] == ["Fox again, quicker", "The quick brown fox"], f"bodies: {events}")
    check([e.event_id for e in events] == [sent["Fox again, quicker"], sent["The quick brown fox"]], "ids")
    check(events[0].sender == alice.user_id, f"sender: {events[0].sender}")
    check("fox" in found["highlights"], f"highlights: {found['highlights']}")

    # Paging one at a time, with context.
    criteria = {"search_term": "fox", "order_by": "recent", "filter": {"limit": 1},
                "event_context": {"before_limit": 1, "after_limit": 1}}
    first = await search(bob, criteria)
    check(len(first["results"]) == 1 and first.get("next_batch"), f"first page: {first}")
    context = first["results"][0]["context"]
    before = [Event.parse_event(e) for e in context["events_before"]]
    check([e.body for e in before] == ["a lazy dog sleeps"], f"context before: {before}")
    second = await search(bob, criteria, first["next_batch"])
    check([r["result"]["event_id"] for r in second["results"]] == [sent["The quick brown fox"]], f"second: {second}")

    # Every word must match.
    check((await search(bob, {"search_term": "lazy fox"}))["count"] == 0, "lazy fox matched")

    # The user directory finds the room's other member.
    directory = await post(bob, "/_matrix/client/v3/user_directory/search", {"search_term": "nio_search_al"})
    check([u["user_id"] for u in directory["results"]] == [alice.user_id], f"directory: {directory}")

    await alice.close()
    await bob.close()
    print("OK")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
