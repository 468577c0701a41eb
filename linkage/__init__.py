"""pprl's linkage side, and what both sides share.

Sub-packages by who runs them: :mod:`linkage.agency` on the agency's machine (encoding,
the secret, the risk check; the only code that imports clkhash), :mod:`linkage.matching`
the engine (blocking, comparison, the model, solving), :mod:`linkage.service` the linkage
service (store, HTTP routes, run worker, client), :mod:`linkage.evaluation` quality
against known truth and synthetic data. Shared by all: :mod:`linkage.errors`,
:mod:`linkage.protocol`, :mod:`linkage.encodings`, :mod:`linkage.token_files`,
:mod:`linkage.database`, :mod:`linkage.web` and :mod:`linkage.dask_cluster`.

Names are imported on first use, so ``import linkage.errors`` loads nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from linkage._lazy import lazy_exports

if TYPE_CHECKING:
    from linkage.agency.encode import EncodeSummary, encode_csv
    from linkage.agency.secret import generate_secret, parse_secret, write_secret
    from linkage.encodings import Encodings, EncodingsHeader, read_encodings, read_header
    from linkage.errors import (
        BudgetExceeded,
        InputError,
        MismatchError,
        OutputExistsError,
        PprlError,
        ProtocolError,
        SecretError,
    )
    from linkage.matching.engine import LinkResult, link, load_inputs, score_candidates
    from linkage.protocol import Protocol, load_protocol, parse_protocol
    from linkage.token_files import read_entities, read_keymap, write_entities

__all__ = [
    "BudgetExceeded",
    "EncodeSummary",
    "Encodings",
    "EncodingsHeader",
    "InputError",
    "LinkResult",
    "MismatchError",
    "OutputExistsError",
    "PprlError",
    "Protocol",
    "ProtocolError",
    "SecretError",
    "encode_csv",
    "generate_secret",
    "link",
    "load_inputs",
    "load_protocol",
    "parse_protocol",
    "parse_secret",
    "read_encodings",
    "read_entities",
    "read_header",
    "read_keymap",
    "score_candidates",
    "write_entities",
    "write_secret",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "BudgetExceeded": "linkage.errors",
        "EncodeSummary": "linkage.agency.encode",
        "Encodings": "linkage.encodings",
        "EncodingsHeader": "linkage.encodings",
        "InputError": "linkage.errors",
        "LinkResult": "linkage.matching.engine",
        "MismatchError": "linkage.errors",
        "OutputExistsError": "linkage.errors",
        "PprlError": "linkage.errors",
        "Protocol": "linkage.protocol",
        "ProtocolError": "linkage.errors",
        "SecretError": "linkage.errors",
        "encode_csv": "linkage.agency.encode",
        "generate_secret": "linkage.agency.secret",
        "link": "linkage.matching.engine",
        "load_inputs": "linkage.matching.engine",
        "load_protocol": "linkage.protocol",
        "parse_protocol": "linkage.protocol",
        "parse_secret": "linkage.agency.secret",
        "read_encodings": "linkage.encodings",
        "read_entities": "linkage.token_files",
        "read_header": "linkage.encodings",
        "read_keymap": "linkage.token_files",
        "score_candidates": "linkage.matching.engine",
        "write_entities": "linkage.token_files",
        "write_secret": "linkage.agency.secret",
    },
)
