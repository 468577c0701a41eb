"""Shared fixtures: the example protocol, a secret, small client files."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from linkage.protocol import Hardening, Protocol, load_protocol, with_hardening

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_PROTOCOL = ROOT / "schemas" / "examples" / "social_services.json"
SECRET = bytes(range(32))


@pytest.fixture(scope="session")
def protocol() -> Protocol:
    return load_protocol(EXAMPLE_PROTOCOL)


@pytest.fixture(scope="session")
def plain_protocol(protocol: Protocol) -> Protocol:
    """The example protocol without its hardening: CLKs are clkhash's."""
    return with_hardening(protocol, Hardening())


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.key"
    path.write_text(SECRET.hex() + "\n")
    path.chmod(0o600)
    return path


MSD_HEADER = [
    "client_id",
    "given_name",
    "surname",
    "date_of_birth",
    "sex",
    "address",
    "city",
    "postcode",
    "consent",
    "region",
    "benefit_type",
    "weeks_supported",
]


def msd_row(
    client_id: str, given: str = "Aroha", surname: str = "Te Awa", dob: str = "1984-03-07", **extra: str
) -> list[str]:
    values = {
        "client_id": client_id,
        "given_name": given,
        "surname": surname,
        "date_of_birth": dob,
        "sex": "f",
        "address": "12 Kauri Street",
        "city": "Whangarei",
        "postcode": "0110",
        "consent": "true",
        "region": "Northland",
        "benefit_type": "jobseeker",
        "weeks_supported": "12",
    }
    values.update(extra)
    return [values[c] for c in MSD_HEADER]


@pytest.fixture
def write_csv(tmp_path: Path) -> Callable[..., Path]:
    def write(rows: Sequence[Sequence[str]], header: Sequence[str] = MSD_HEADER, name: str = "clients.csv") -> Path:
        path = tmp_path / name
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        return path

    return write
