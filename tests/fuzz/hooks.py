"""Schemathesis hooks for scripts/fuzz (loaded through SCHEMATHESIS_HOOKS).

- ``no_traceback``: a check that fails on any response whose body or headers
  carry Python traceback text (the contract: "No route ever answers a stack
  trace").
- ``after_call`` counts every request sent and scans every response, also
  those no check looks at, appending one line per request to
  ``$RUNMESH_FUZZ_LOG`` ("OK" or "TRACEBACK <method> <url> <status>"), so that
  scripts/fuzz can count the requests and fail on any trace.
- ``flatmap_case`` mixes, into cases meant to be valid, the real ids and link
  codes scripts/fuzz seeded (``$RUNMESH_FUZZ_NODE_IDS``,
  ``$RUNMESH_FUZZ_LINKS``) into the generated values, so the ``{id}`` routes
  and link/poll reach their success paths instead of answering 404 only.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

import schemathesis
from hypothesis import strategies as st

# "Traceback (most recent call last):" and a frame line ('File "x.py", line 3').
_TRACE = re.compile(r'Traceback|File "')

_lock = threading.Lock()

_NODE_IDS = [i for i in os.environ.get("RUNMESH_FUZZ_NODE_IDS", "").split(",") if i]
# "CODE:PUBLICKEY,CODE:PUBLICKEY"
_LINKS = [
    tuple(pair.split(":", 1))
    for pair in os.environ.get("RUNMESH_FUZZ_LINKS", "").split(",")
    if ":" in pair
]


def _traceback_in(response: Any) -> str | None:
    text = response.content.decode("utf-8", errors="replace")
    headers = " ".join(f"{k}: {v}" for k, v in response.headers.items())
    match = _TRACE.search(text) or _TRACE.search(headers)
    if match is None:
        return None
    # A value the request sent and the API echoes back (a device label, a
    # name in a validation message) is not a trace the server leaked.
    request = response.request
    sent = f"{request.url} {_text(request.body)}"
    if match.group(0) in sent or match.group(0) in _unquote(sent):
        return None
    return match.group(0)


def _text(body: Any) -> str:
    if body is None:
        return ""
    if isinstance(body, bytes):
        return body.decode("utf-8", errors="replace")
    return str(body)


def _unquote(text: str) -> str:
    from urllib.parse import unquote_plus

    # JSON escapes the quote in 'File "'; undo that and URL escaping.
    return unquote_plus(text).replace('\\"', '"')


@schemathesis.check
def no_traceback(ctx: Any, response: Any, case: Any) -> bool | None:
    """No response may carry traceback text."""
    found = _traceback_in(response)
    if found is not None:
        raise AssertionError(f"response carries traceback text: {found!r}")
    return None


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    path = os.environ.get("RUNMESH_FUZZ_LOG")
    if not path:
        return
    found = _traceback_in(response)
    if found is None:
        line = "OK\n"
    else:
        request = response.request
        line = f"TRACEBACK {request.method} {request.url} {response.status_code}\n"
    with _lock, open(path, "a", encoding="utf-8") as log:
        log.write(line)


def _positive(case: Any) -> bool:
    # Only cases meant to be valid throughout: a negative case (an id or code
    # too long, an unknown query parameter) must keep its generated values, or
    # the 404 it earns would become a 200 that negative_data_rejection flags.
    meta = case.meta
    if meta is None:
        return False
    mode = meta.generation.mode
    return str(getattr(mode, "value", mode)) == "positive"


def _with(case: Any, **changes: Any) -> Any:
    derived = case.derive(keep_auth=True)
    for name, value in changes.items():
        setattr(derived, name, value)
    return derived


@schemathesis.hook
def flatmap_case(context: Any, case: Any) -> Any:
    path = case.operation.path
    options = [st.just(case)]
    params = case.path_parameters or {}
    if _NODE_IDS and "id" in params and _positive(case):
        options.append(
            st.sampled_from(_NODE_IDS).map(
                lambda i: _with(case, path_parameters={**params, "id": i})
            )
        )
    body = case.body
    if _LINKS and isinstance(body, dict) and _positive(case):
        if path.endswith("/devices/link/poll"):
            options.append(
                st.sampled_from(_LINKS).map(
                    lambda link: _with(
                        case, body={**body, "code": link[0], "publicKey": link[1]}
                    )
                )
            )
        elif path.endswith("/devices/link/approve"):
            options.append(
                st.sampled_from(_LINKS).map(
                    lambda link: _with(case, body={**body, "code": link[0]})
                )
            )
    return st.one_of(options)
