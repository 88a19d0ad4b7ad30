"""End-to-end encryption between matrix-nio (with its e2e extra: Olm and Megolm by vodozemac)
and a matrix-sdk client, through a running server. The Rust test drives the other side and talks
to this script line by line:

    script -> test:  READY <nio user id>
    test -> script:  ROOM <room id>          (an encrypted room the nio user is invited to)
    script -> test:  SENT <event id>         (an encrypted message from nio)
    test -> script:  SENT <event id>         (an encrypted message from the Rust client)
    script -> test:  OK

Usage: python3 nio_e2ee.py BASE_URL STORE_DIR. Exits non-zero with a message on the first failure.
The Rust client may be on another server than nio's (the room key and the events then cross
federation), so the script syncs until the Rust client's event arrives.
"""

import asyncio
import sys

from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    KeysUploadResponse,
    MegolmEvent,
    RegisterResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)

NIO_MESSAGE = "hello from nio, encrypted"
RUST_MESSAGE = "hello from matrix-sdk, encrypted"


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr, flush=True)
        sys.exit(1)


def say(line: str) -> None:
    print(line, flush=True)


async def hear(prefix: str) -> str:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    check(line.startswith(prefix + " "), f"expected {prefix}, got {line!r}")
    return line.split(" ", 1)[1].strip()


async def crypto_chores(client: AsyncClient) -> None:
    """What nio's sync_forever does between syncs: keys up, keys queried, to-device out."""
    if client.should_upload_keys:
        uploaded = await client.keys_upload()
        check(isinstance(uploaded, KeysUploadResponse), f"keys_upload: {uploaded}")
    if client.should_query_keys:
        await client.keys_query()
    if client.should_claim_keys:
        await client.keys_claim(client.get_users_for_key_claiming())
    await client.send_to_device_messages()


async def sync(client: AsyncClient) -> SyncResponse:
    response = await client.sync(timeout=0)
    check(isinstance(response, SyncResponse), f"sync: {response}")
    await crypto_chores(client)
    return response


async def main(base_url: str, store_dir: str) -> None:
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    client = AsyncClient(base_url, "nio_crypto", store_path=store_dir, config=config)
    registered = await client.register("nio_crypto", "nio-password", device_name="nio e2ee device")
    check(isinstance(registered, RegisterResponse), f"register: {registered}")
    check(client.olm is not None, "nio's Olm machine is not loaded (is the e2e extra installed?)")
    await sync(client)
    say(f"READY {client.user_id}")

    room_id = await hear("ROOM")
    await sync(client)
    check(room_id in client.invited_rooms, f"the invite is missing: {list(client.invited_rooms)}")
    joined = await client.join(room_id)
    check(isinstance(joined, JoinResponse), f"join: {joined}")
    await sync(client)
    room = client.rooms.get(room_id)
    check(room is not None and room.encrypted, f"nio does not see the room as encrypted: {room}")

    # nio -> Rust: the room key goes to the Rust device as an Olm to-device message.
    sent = await client.room_send(
        room_id,
        "m.room.message",
        {"msgtype": "m.text", "body": NIO_MESSAGE},
        ignore_unverified_devices=True,
    )
    check(isinstance(sent, RoomSendResponse), f"room_send: {sent}")
    say(f"SENT {sent.event_id}")

    # Rust -> nio: wait for the event and decrypt it.
    event_id = await hear("SENT")
    for _ in range(120):
        response = await sync(client)
        joined_room = response.rooms.join.get(room_id)
        for event in joined_room.timeline.events if joined_room else []:
            if event.event_id != event_id:
                continue
            if isinstance(event, MegolmEvent):
                event = client.decrypt_event(event)
            check(isinstance(event, RoomMessageText), f"not decrypted: {event}")
            check(event.body == RUST_MESSAGE, f"decrypted body: {event.body!r}")
            check(event.decrypted, "nio did not mark the event as decrypted")
            await client.close()
            say("OK")
            return
        await asyncio.sleep(0.25)
    check(False, f"event {event_id} never arrived")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
