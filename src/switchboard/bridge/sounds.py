"""The thinking sound played while a tool runs: a shipped μ-law asset, cut into 20 ms base64 payloads."""

from __future__ import annotations

import base64
from functools import cache
from importlib import resources

FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law


@cache
def thinking_sound_payloads() -> tuple[str, ...]:
    data = resources.files("switchboard.bridge").joinpath("assets/thinking_pop.ulaw").read_bytes()
    return tuple(
        base64.b64encode(data[i : i + FRAME_BYTES]).decode("ascii") for i in range(0, len(data), FRAME_BYTES)
    )
