"""pprl's linkage side: agency-side encoding, the matching engine, and (later) the linkage service."""

from linkage.agency import EncodeSummary, encode_csv, generate_secret, parse_secret, write_secret
from linkage.encodings import Encodings, EncodingsHeader, read_encodings, read_header
from linkage.engine import LinkResult, link, load_inputs, score_candidates, write_entities
from linkage.errors import (
    BudgetExceeded,
    InputError,
    MismatchError,
    OutputExistsError,
    PprlError,
    ProtocolError,
    SecretError,
)
from linkage.protocol import Protocol, load_protocol, parse_protocol

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
    "read_header",
    "score_candidates",
    "write_entities",
    "write_secret",
]
