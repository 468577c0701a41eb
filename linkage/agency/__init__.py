"""What runs on the agency's machine: the secret, encoding client files, the risk check.

The shared secret, reading client files (CSV or spreadsheet) and finding their columns,
checking and encoding them (also from a local page, :mod:`linkage.agency.page`), and the
privacy risk check of the encodings. The only code that imports clkhash
(:mod:`linkage.agency.hashing`); the service and the statistics side never import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from linkage._lazy import lazy_exports

if TYPE_CHECKING:
    from linkage.agency.check import CheckSummary, check_file
    from linkage.agency.columns import choose_columns
    from linkage.agency.encode import EncodeSummary, encode_csv
    from linkage.agency.prepare import prepare_rows
    from linkage.agency.records import RecordEncoder
    from linkage.agency.risk import RiskReport, assess_risk
    from linkage.agency.secret import generate_secret, parse_secret, write_secret

__all__ = [
    "CheckSummary",
    "EncodeSummary",
    "RecordEncoder",
    "RiskReport",
    "assess_risk",
    "check_file",
    "choose_columns",
    "encode_csv",
    "generate_secret",
    "parse_secret",
    "prepare_rows",
    "write_secret",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CheckSummary": "linkage.agency.check",
        "EncodeSummary": "linkage.agency.encode",
        "RecordEncoder": "linkage.agency.records",
        "RiskReport": "linkage.agency.risk",
        "assess_risk": "linkage.agency.risk",
        "check_file": "linkage.agency.check",
        "choose_columns": "linkage.agency.columns",
        "encode_csv": "linkage.agency.encode",
        "generate_secret": "linkage.agency.secret",
        "parse_secret": "linkage.agency.secret",
        "prepare_rows": "linkage.agency.prepare",
        "write_secret": "linkage.agency.secret",
    },
)
