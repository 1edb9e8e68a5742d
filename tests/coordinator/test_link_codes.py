"""Link codes: their alphabet, how they are typed, expiry, approval and pacing."""

from __future__ import annotations

import datetime as dt

import anyio
import pytest
from domain_db import (
    Sessions,
    approve,
    link_node,
    load,
    new_caller,
    new_public_key,
    poll,
    revoke,
    start,
)
from sqlalchemy import update

from coordinator import linking
from coordinator.errors import Conflict, Expired, InvalidArgument, RateLimited
from coordinator.ids import utcnow
from coordinator.models import LinkRequest, LinkState
from coordinator.settings import Settings

pytestmark = pytest.mark.anyio

SETTINGS = Settings(link_interval=5)
LOOK_ALIKES_AND_VOWELS = set("0O1IL" + "AEIOU" + "aeiou")


async def move_into_past(
    sessions: Sessions,
    request: LinkRequest,
    *,
    expires: bool = False,
    polled: bool = False,
) -> None:
    """Age a request instead of sleeping: the clock the code reads is the DB's."""
    long_ago = utcnow() - dt.timedelta(hours=1)
    values: dict[str, dt.datetime] = {}
    if expires:
        values["expires_at"] = long_ago
    if polled:
        values["last_polled_at"] = long_ago
    with sessions.sessions() as session, session.begin():
        session.execute(
            update(LinkRequest).where(LinkRequest.id == request.id).values(**values)
        )


# ---- the alphabet ----


def test_the_alphabet_has_no_look_alikes_and_no_vowels() -> None:
    assert not set(linking.ALPHABET) & LOOK_ALIKES_AND_VOWELS
    assert len(set(linking.ALPHABET)) == len(linking.ALPHABET)
    assert linking.ALPHABET == linking.ALPHABET.upper()


def test_generated_codes_are_six_characters_of_the_alphabet() -> None:
    codes = [linking.new_code() for _ in range(3000)]

    assert all(len(code) == 6 for code in codes)
    used = set("".join(codes))
    assert used <= set(linking.ALPHABET)
    # 18 000 draws: every symbol shows up, so the whole alphabet is in use.
    assert used == set(linking.ALPHABET)
    assert len(set(codes)) > 2990


async def test_started_links_get_codes_of_the_alphabet(sessions: Sessions) -> None:
    requests = [await start(sessions, SETTINGS) for _ in range(20)]

    for request in requests:
        assert len(request.code) == linking.CODE_LENGTH
        assert set(request.code) <= set(linking.ALPHABET)
    assert len({r.code for r in requests}) == 20


# ---- typing a code ----


@pytest.mark.parametrize(
    "typed",
    ["BCDFGH", "bcdfgh", "BcD-fGh", "bcd fgh", " bc df gh ", "BCD-FGH\n", "bcd\tfgh"],
)
def test_codes_are_read_case_insensitively_with_hyphens_and_spaces(typed: str) -> None:
    assert linking.normalise_code(typed) == "BCDFGH"


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "BCDFG",  # too short
        "BCDFGHJ",  # too long
        "BCDFG0",  # zero
        "BCDFGO",  # letter O
        "BCDFG1",  # one
        "BCDFGI",  # letter I
        "BCDFGL",  # letter L
        "BCDFGA",  # vowel
        "bcdfge",  # vowel, lower case
        "BCD_FG",
        "BCDFG!",
        "BCDFGＨ",  # full-width H
        "------",
    ],
)
def test_codes_with_bad_characters_or_lengths_are_invalid(typed: str) -> None:
    with pytest.raises(InvalidArgument, match="6 characters"):
        linking.normalise_code(typed)


def test_a_character_that_upper_cases_to_two_letters_is_invalid() -> None:
    with pytest.raises(InvalidArgument):
        linking.normalise_code("bcdfß")


async def test_a_poll_with_a_lower_case_hyphenated_code_finds_the_request(
    sessions: Sessions,
) -> None:
    request = await start(sessions, SETTINGS)
    typed = f"{request.code[:3].lower()}-{request.code[3:].lower()}"

    with sessions.sessions() as session, session.begin():
        found = linking.poll_link(
            session, SETTINGS, code=typed, public_key=request.public_key
        )

    assert found.id == request.id


# ---- expiry ----


async def test_a_link_gets_the_configured_ttl(sessions: Sessions) -> None:
    settings = Settings(link_ttl=dt.timedelta(seconds=42))

    request = await start(sessions, settings)

    assert request.expires_at - request.created_at == dt.timedelta(seconds=42)


async def test_a_link_past_its_ttl_polls_as_expired(sessions: Sessions) -> None:
    request = await start(sessions, SETTINGS)
    await move_into_past(sessions, request, expires=True)

    polled = await poll(sessions, SETTINGS, request)

    assert polled.state == LinkState.EXPIRED
    stored = await load(sessions, LinkRequest, request.id)
    assert stored.state == LinkState.EXPIRED


async def test_a_link_past_its_ttl_cannot_be_approved(sessions: Sessions) -> None:
    caller = await new_caller(sessions)
    request = await start(sessions, SETTINGS)
    await move_into_past(sessions, request, expires=True)

    with pytest.raises(Expired):
        await approve(sessions, SETTINGS, caller, request.code)

    stored = await load(sessions, LinkRequest, request.id)
    assert stored.node_id is None


async def test_a_link_with_a_one_second_ttl_expires_in_real_time(
    sessions: Sessions,
) -> None:
    settings = Settings(link_ttl=dt.timedelta(seconds=1), link_interval=1)
    caller = await new_caller(sessions)
    request = await start(sessions, settings)
    assert (await poll(sessions, settings, request)).state == LinkState.PENDING

    await _sleep_until(request.expires_at)

    assert (await poll(sessions, settings, request)).state == LinkState.EXPIRED
    with pytest.raises(Expired):
        await approve(sessions, settings, caller, request.code)


async def _sleep_until(moment: dt.datetime) -> None:
    await anyio.sleep(max(0.0, (moment - utcnow()).total_seconds()) + 0.05)


# ---- approval ----


async def test_a_code_is_approved_only_once(sessions: Sessions) -> None:
    caller = await new_caller(sessions)
    request = await start(sessions, SETTINGS)
    node = await approve(sessions, SETTINGS, caller, request.code)

    with pytest.raises(Conflict, match="already approved"):
        await approve(sessions, SETTINGS, caller, request.code)

    polled = await poll(sessions, SETTINGS, request)
    assert polled.state == LinkState.APPROVED
    assert polled.node_id == node.id


async def test_a_new_start_for_the_same_key_expires_the_older_request(
    sessions: Sessions,
) -> None:
    caller = await new_caller(sessions)
    key = new_public_key()
    older = await start(sessions, SETTINGS, key)

    newer = await start(sessions, SETTINGS, key)

    assert (await poll(sessions, SETTINGS, older)).state == LinkState.EXPIRED
    with pytest.raises(Expired):
        await approve(sessions, SETTINGS, caller, older.code)
    node = await approve(sessions, SETTINGS, caller, newer.code)
    assert node.public_key == key


async def test_a_key_of_an_active_node_cannot_start_a_link(sessions: Sessions) -> None:
    caller = await new_caller(sessions)
    node = await link_node(sessions, SETTINGS, caller)

    with pytest.raises(Conflict, match="active node"):
        await start(sessions, SETTINGS, node.public_key)


async def test_the_key_of_a_revoked_node_may_link_again(sessions: Sessions) -> None:
    caller = await new_caller(sessions)
    node = await link_node(sessions, SETTINGS, caller)
    await revoke(sessions, caller, node.id)

    request = await start(sessions, SETTINGS, node.public_key)
    again = await approve(sessions, SETTINGS, caller, request.code)

    assert again.public_key == node.public_key
    assert again.id != node.id


async def test_a_pending_code_of_a_key_that_became_active_cannot_be_approved(
    sessions: Sessions,
) -> None:
    caller = await new_caller(sessions)
    other_org = await new_caller(sessions, org="other", email="x@other.test")
    key = new_public_key()
    first = await start(sessions, SETTINGS, key)
    await approve(sessions, SETTINGS, caller, first.code)
    # Only possible by writing a second pending row for the key directly.
    second = await start(sessions, SETTINGS)
    with sessions.sessions() as session, session.begin():
        session.execute(
            update(LinkRequest)
            .where(LinkRequest.id == second.id)
            .values(public_key=key)
        )

    with pytest.raises(Conflict, match="active node"):
        await approve(sessions, SETTINGS, other_org, second.code)


# ---- pacing ----


async def test_the_first_poll_may_come_at_once(sessions: Sessions) -> None:
    request = await start(sessions, SETTINGS)

    assert (await poll(sessions, SETTINGS, request)).state == LinkState.PENDING


async def test_a_poll_sooner_than_the_interval_is_rate_limited(
    sessions: Sessions,
) -> None:
    request = await start(sessions, SETTINGS)
    await poll(sessions, SETTINGS, request)

    with pytest.raises(RateLimited) as refused:
        await poll(sessions, SETTINGS, request)

    assert 1 <= refused.value.retry_after <= SETTINGS.link_interval
    assert refused.value.retry_after >= SETTINGS.link_interval - 1


async def test_a_poll_after_the_interval_is_answered(sessions: Sessions) -> None:
    request = await start(sessions, SETTINGS)
    await poll(sessions, SETTINGS, request)
    await move_into_past(sessions, request, polled=True)

    assert (await poll(sessions, SETTINGS, request)).state == LinkState.PENDING


async def test_a_refused_poll_does_not_restart_the_wait(sessions: Sessions) -> None:
    request = await start(sessions, SETTINGS)
    await poll(sessions, SETTINGS, request)
    before = (await load(sessions, LinkRequest, request.id)).last_polled_at

    with pytest.raises(RateLimited):
        await poll(sessions, SETTINGS, request)

    assert (await load(sessions, LinkRequest, request.id)).last_polled_at == before
