"""The encoder page (``pprl encoder``): encoding for people who never use a terminal, on 127.0.0.1 only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from linkage._lazy import lazy_exports

if TYPE_CHECKING:
    from linkage.agency.page.app import EncoderSettings, create_encoder_app

__all__ = ["EncoderSettings", "create_encoder_app"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {"EncoderSettings": "linkage.agency.page.app", "create_encoder_app": "linkage.agency.page.app"},
)
