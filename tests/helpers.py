"""What tests share that is not a fixture: constants, data builders and service calls.

Fixtures live in ``tests/conftest.py`` only; a test module imports helpers from here,
never from a conftest or from another test module.
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
import json
import os
import re
import secrets
import time
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import quoteattr as xml_quote

import numpy as np

from cli.main import main
from linkage.agency.encode import encode_csv
from linkage.encodings import EncodingsWriter, read_encodings
from linkage.evaluation.synth import synthesise_population
from linkage.matching.link_state import LinkState
from linkage.matching.refresh import start_state
from linkage.protocol import Protocol, parse_protocol
from linkage.service.store import LinkageStore
from server.app import ServiceConfig, hash_admin_secret
from stats.entities import entity_table
from stats.report import ReportSpec, read_report_spec
from stats.store import StatsStore

with warnings.catch_warnings():
    # Starlette would rather have httpx2; httpx works, and pprl's client is built on httpx.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

__all__ = ["TestClient"]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_PROTOCOL = ROOT / "schemas" / "examples" / "social_services.json"
EXAMPLE_REPORT = ROOT / "schemas" / "examples" / "quarterly_report.yaml"
SECRET = bytes(range(32))
ADMIN_SECRET = "test-admin-secret-" + "0" * 40
POSTGRES_URL = os.environ.get("PPRL_TEST_DATABASE_URL")
PARTIES = ("msd", "police", "haven")
PEOPLE = 300
SERVER = "http://pprl.test"

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
    """One msd client row of the example protocol, with defaults for every column."""
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


def example_document() -> dict[str, Any]:
    """A fresh copy of the example protocol's JSON."""
    return json.loads(EXAMPLE_PROTOCOL.read_text())


def protocol_with_parties(count: int) -> Protocol:
    """The example protocol with ``count`` parties (extra ones copy the first three)."""
    document = example_document()
    parties = copy.deepcopy(document["parties"])
    while len(parties) < count:
        extra = copy.deepcopy(parties[len(parties) % 3])
        extra["id"] = f"agency{len(parties)}"
        extra["name"] = f"Agency {len(parties)}"
        extra["mandate"] = "public_service"
        parties.append(extra)
    document["parties"] = parties[:count]
    document["releases"]["record_level"] = {
        p["id"]: {"allowed": True, "serious_threat": p["mandate"] == "public_safety"} for p in document["parties"]
    }
    return parse_protocol(document)


def encoded_population(
    protocol: Protocol, people: int, seed: int, root: Path, *, profile: str = "basic"
) -> tuple[Path, list[Path]]:
    """Synthesise ``people`` and encode every party's file: (data folder, one output folder per party).

    The basic profile by default: most suites check the engine's plumbing against fixed
    quality bounds; the realistic profile is measured by tests/linkage/agency/test_hardening.py.
    """
    data = root / "data"
    synthesise_population(protocol, people, seed, data, profile=profile)
    outs = []
    for party in protocol.parties:
        out = root / party.id
        encode_csv(protocol, party.id, SECRET, data / f"{party.id}.csv", out, workers=1)
        outs.append(out)
    return data, outs


def build_agencies(root: Path) -> dict[str, Path]:
    """Three agencies' `pprl encode` folders for one synthetic population (~300 people), and the truth."""
    protocol = parse_protocol(example_document())
    data, outs = encoded_population(protocol, PEOPLE, 3, root)
    return {**{party.id: out for party, out in zip(protocol.parties, outs, strict=True)}, "truth": data / "truth.csv"}


def build_foreign(root: Path, agencies: dict[str, Path]) -> dict[str, Path]:
    """msd's clients encoded under another fingerprint, under another secret, and again (new tokens)."""
    document = example_document()
    document["identifiers"]["fields"][0]["clk_bits_per_token"] = 21
    other = parse_protocol(document)
    data = agencies["msd"].parent / "data"
    encode_csv(other, "msd", SECRET, data / "msd.csv", root / "fingerprint", workers=1)
    protocol = parse_protocol(example_document())
    encode_csv(protocol, "msd", bytes(reversed(SECRET)), data / "msd.csv", root / "secret", workers=1)
    encode_csv(protocol, "msd", SECRET, data / "msd.csv", root / "again", workers=1)
    return {"fingerprint": root / "fingerprint", "secret": root / "secret", "again": root / "again"}


def read_keymap_tokens(out_dir: Path) -> set[str]:
    """The tokens of an encode folder's key map."""
    with (out_dir / "keymap.csv").open() as handle:
        return {row["token"] for row in csv.DictReader(handle)}


def read_consent(out_dir: Path) -> dict[str, bool]:
    """Each token's consent flag in an encode folder's attributes file."""
    with (out_dir / "attributes.csv").open() as handle:
        return {row["token"]: row["consent"] == "true" for row in csv.DictReader(handle)}


def schema_suffix() -> str:
    """A fresh suffix for PostgreSQL schemas, so that tests never share one."""
    return secrets.token_hex(4)


def make_factory(root: Path, url: str | None) -> tuple[Callable[..., ServiceConfig], Callable[[], None]]:
    """A service config factory on ``url`` (``None``: SQLite under ``root``), and its cleanup."""
    suffix = schema_suffix()
    base = {
        "database_url": url,
        "admin_secret_sha256": hash_admin_secret(ADMIN_SECRET, "test"),
        # Tests send requests as fast as the machine allows; the rate limit has tests of its own.
        "rate_limit": None,
        "linkage_schema": f"pprl_linkage_t{suffix}",
        "stats_schema": f"pprl_stats_t{suffix}",
    }

    def make(**overrides: Any) -> ServiceConfig:
        return ServiceConfig(**{"data_dir": root / "service", **base, **overrides})

    def cleanup() -> None:
        if url:
            LinkageStore(root / "service", url, schema=base["linkage_schema"]).destroy()
            StatsStore(root / "service", url, schema=base["stats_schema"]).destroy()

    return make, cleanup


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for a token."""
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(ADMIN_SECRET)
OCTET = {"Content-Type": "application/octet-stream"}
CSV = {"Content-Type": "text/csv"}


def create_project(client: TestClient, document: dict[str, Any] | None = None) -> tuple[str, dict[str, str]]:
    """Create a project (the example protocol by default): its id and credentials."""
    response = client.post("/projects", json={"protocol": document or example_document()}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return response.json()["project_id"], response.json()["credentials"]


def put_encodings(client: TestClient, project_id: str, token: str, body: bytes, **params: Any) -> Any:
    """PUT a party's encodings."""
    return client.put(
        f"/projects/{project_id}/encodings", content=body, headers={**bearer(token), **OCTET}, params=params
    )


def put_attributes(client: TestClient, project_id: str, token: str, body: bytes, **params: Any) -> Any:
    """PUT a party's attributes."""
    return client.put(
        f"/projects/{project_id}/attributes", content=body, headers={**bearer(token), **CSV}, params=params
    )


def upload_all(client: TestClient, project_id: str, credentials: dict[str, str], agencies: dict[str, Path]) -> None:
    """Upload every party's encodings and attributes."""
    for party in PARTIES:
        response = put_encodings(
            client, project_id, credentials[party], (agencies[party] / "encodings.pprl").read_bytes()
        )
        assert response.status_code == 201, response.text
        response = put_attributes(
            client, project_id, credentials[party], (agencies[party] / "attributes.csv").read_bytes()
        )
        assert response.status_code == 201, response.text


def without_records(protocol: Protocol, out_dir: Path, tokens: set[str], dest: Path) -> Path:
    """A copy of an encode folder without the records of ``tokens``, as if the agency had removed those clients."""
    encodings = read_encodings(out_dir)
    keep = np.array([token.tobytes().hex() not in tokens for token in encodings.records["token"]])
    dest.mkdir(parents=True)
    header = encodings.header
    with EncodingsWriter(
        dest / "encodings.pprl", protocol=protocol, party=header.party, secret_check=header.secret_check
    ) as writer:
        writer.write(np.ascontiguousarray(encodings.records[keep]))
    for name in ("attributes.csv", "keymap.csv"):
        lines = (out_dir / name).read_text().splitlines()
        kept = [lines[0], *(line for line in lines[1:] if line.split(",", 1)[0] not in tokens)]
        (dest / name).write_text("\n".join(kept) + "\n")
    return dest


def write_encodings(protocol: Protocol, party: str, secret_check: str, records: np.ndarray, folder: Path) -> Path:
    """An encodings folder holding exactly ``records`` (a party's subset, a batch, records with reused tokens)."""
    folder.mkdir(parents=True)
    with EncodingsWriter(
        folder / "encodings.pprl", protocol=protocol, party=party, secret_check=secret_check
    ) as writer:
        writer.write(np.ascontiguousarray(records))
    return folder


def record_tokens(records: np.ndarray) -> list[bytes]:
    """Each record's token as bytes."""
    return [row.tobytes() for row in np.asarray(records["token"])]


def entity_members(state: LinkState) -> dict[int, frozenset[bytes]]:
    """A linkage state's entities as {entity id: its tokens}."""
    return {
        number: frozenset(state.records[p]["token"][r].tobytes() for p, r in records)
        for number, records in state.entities().items()
    }


def accepted_token_pairs(state: LinkState) -> set[tuple[bytes, bytes]]:
    """A linkage state's accepted pairs, as pairs of tokens."""
    pairs = state.pairs
    return {
        (state.records[a]["token"][ra].tobytes(), state.records[b]["token"][rb].tobytes())
        for a, b, ra, rb in zip(pairs.party_a, pairs.party_b, pairs.record_a, pairs.record_b, strict=True)
    }


def write_party_lists(protocol: Protocol, lists: dict[str, np.ndarray], check: str, folder: Path) -> list[Path]:
    """One encodings folder per party holding the given records (parties without records left out)."""
    return [
        write_encodings(protocol, party, check, records, folder / party)
        for party, records in lists.items()
        if len(records)
    ]


def start_subset(
    protocol: Protocol, agencies: dict[str, Path], root: Path, share: float, seed: int, dedupe: bool = False
) -> tuple[LinkState, dict[str, np.ndarray], str, np.random.Generator]:
    """A state of a random ``share`` of every agency's records; the rest are the pool later batches add from."""
    rng = np.random.default_rng(seed)
    full = {party: np.asarray(read_encodings(agencies[party]).records) for party in PARTIES}
    check = read_encodings(agencies["msd"]).header.secret_check
    taken = {party: rng.random(len(records)) < share for party, records in full.items()}
    first = {party: full[party][taken[party]] for party in PARTIES}
    pool = {party: full[party][~taken[party]] for party in PARTIES}
    files = write_party_lists(protocol, first, check, root / "first")
    state = start_state(protocol, [read_encodings(p) for p in files], dedupe=dedupe)
    return state, pool, check, rng


def entity_groups(store: LinkageStore, project_id: str, run_number: int) -> dict[int, list[tuple[str, str]]]:
    """A run's entities as {entity id: [(party, token), ...]}, read from the linkage store."""
    groups: dict[int, list[tuple[str, str]]] = {}
    for chunk in store.entity_rows(store.run(project_id, run_number).id):
        for entity_id, party, token in chunk:
            groups.setdefault(entity_id, []).append((party, token))
    return groups


def wait_for_run(client: TestClient, project_id: str, run_id: int, token: str, deadline: float = 120.0) -> dict:
    """Poll until the run is done or failed (the deadline only stops a hung test)."""
    stop = time.monotonic() + deadline
    body: dict = {}
    while time.monotonic() < stop:
        body = client.get(f"/projects/{project_id}/runs/{run_id}", headers=bearer(token)).json()
        if body["status"] in ("done", "failed"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish: {body}")


def invoke(runner: Any, *args: Any, env: dict[str, str] | None = None) -> Any:
    """Run a `pprl` command with click's runner (arguments as strings)."""
    return runner.invoke(main, [str(arg) for arg in args], env=env)


def people(protocol: Protocol, n: int, seed: int = 0) -> tuple[list[tuple[int, str, str]], dict[str, dict[str, Any]]]:
    """A mapping and per-party attributes for ``n`` people, each known to one to three parties."""
    rng = np.random.default_rng(seed)
    regions = protocol.attribute("region").categories
    attributes: dict[str, dict[str, Any]] = {party: {} for party in PARTIES}
    mapping = []
    for person in range(n):
        parties = [party for party, share in zip(PARTIES, (0.7, 0.4, 0.15), strict=True) if rng.random() < share]
        parties = parties or ["msd"]
        for party in parties:
            token = f"{person:028x}{PARTIES.index(party):04x}"
            values: dict[str, Any] = {
                "region": None if rng.random() < 0.02 else regions[int(rng.integers(len(regions)))]
            }
            if party == "msd":
                values |= {"benefit_type": "jobseeker", "weeks_supported": int(rng.integers(0, 53))}
            elif party == "police":
                values |= {"offence_category": "property", "police_contacts": int(rng.integers(0, 31))}
            else:
                values |= {"housed_within_90_days": bool(rng.random() < 0.6), "months_in_nz": int(rng.integers(0, 121))}
            attributes[party][token] = values
            if len(parties) > 1:
                mapping.append((person, party, token))
    return mapping, attributes


def people_table(protocol: Protocol, n: int, seed: int = 0) -> Any:
    """The entity table of :func:`people`, built as the service builds it."""
    return entity_table(protocol, *people(protocol, n, seed))


def write_rows(path: Path, rows: Sequence[Sequence[str]], header: Sequence[str] = MSD_HEADER) -> Path:
    """Write a CSV file with a header."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def example_report(protocol: Protocol) -> ReportSpec:
    """The example report spec (schemas/examples/quarterly_report.yaml)."""
    return read_report_spec(protocol, EXAMPLE_REPORT)


TOKEN = re.compile(r"\b[0-9a-f]{32}\b")


def canonical(out: Path) -> dict[str, Any]:
    """Every output file as bytes, with each random token replaced by its keymap row number.

    Tokens are fresh random numbers on every run (pool or Dask, CLI or page), and
    attributes.csv is in token order: its rows and the encodings' are put in keymap order;
    everything else must be byte-for-byte the same. The encodings file is keyed by its
    folder's name.
    """
    with (out / "keymap.csv").open(newline="") as handle:
        order = {row[0]: f"{number:032d}" for number, row in enumerate(csv.reader(handle))}
    files: dict[str, Any] = {}
    for path in sorted(out.iterdir()):
        if path.suffix == ".csv":
            text = TOKEN.sub(lambda match: order[match.group()], path.read_text())
            if path.name == "attributes.csv":
                header, *lines = text.splitlines(keepends=True)
                text = header + "".join(sorted(lines))
            files[path.name] = text
    encodings = read_encodings(out)
    records = np.array(encodings.records)
    tokens = [order[token.tobytes().hex()] for token in records["token"]]
    records["token"] = np.frombuffer(b"".join(bytes.fromhex(t) for t in tokens), dtype=np.uint8).reshape(-1, 16)
    records = records[np.argsort(tokens, kind="stable")]
    header = encodings.header.to_json().replace(encodings.header.records_sha256, "")
    files[out.name + "/encodings.pprl"] = (header, records.tobytes())
    return files


def write_xlsx(path: Path, sheets: dict[str, Sequence[Sequence[Any]]]) -> Path:
    """A workbook with these sheets (the first is the first), each a list of rows of cells.

    Cells keep their Python type: a ``datetime.date`` is stored as a spreadsheet date, a number as a number.
    """
    import openpyxl

    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    for name, rows in sheets.items():
        sheet = workbook.create_sheet(name)
        for row in rows:
            sheet.append(list(row))
    workbook.save(path)
    return path


def _ods_cell(value: Any) -> str:
    if value is None or value == "":
        return "<table:table-cell/>"
    if isinstance(value, dt.date):
        return (
            f'<table:table-cell office:value-type="date" office:date-value="{value.isoformat()}">'
            f"<text:p>{value.isoformat()}</text:p></table:table-cell>"
        )
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = f'office:value-type="float" office:value="{value}"'
        return f"<table:table-cell {number}><text:p>{value}</text:p></table:table-cell>"
    paragraphs = "".join(f"<text:p>{xml_escape(line)}</text:p>" for line in str(value).split("\n"))
    return f'<table:table-cell office:value-type="string">{paragraphs}</table:table-cell>'


def write_ods(path: Path, sheets: dict[str, Sequence[Sequence[Any]]]) -> Path:
    """An OpenDocument spreadsheet, written by hand (the format is a zip of XML): as :func:`write_xlsx`.

    A line break in a text cell becomes a second paragraph, as LibreOffice stores it.
    """
    tables = "".join(
        f"<table:table table:name={xml_quote(name)}>"
        + "".join("<table:table-row>" + "".join(_ods_cell(v) for v in row) + "</table:table-row>" for row in rows)
        + "</table:table>"
        for name, rows in sheets.items()
    )
    content = (
        '<?xml version="1.0" encoding="UTF-8"?><office:document-content '
        'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2">'
        f"<office:body><office:spreadsheet>{tables}</office:spreadsheet></office:body></office:document-content>"
    )
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?><manifest:manifest '
        'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
        '<manifest:file-entry manifest:full-path="/" '
        'manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
        "</manifest:manifest>"
    )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), "application/vnd.oasis.opendocument.spreadsheet")
        archive.writestr("content.xml", content, compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr("META-INF/manifest.xml", manifest, compress_type=zipfile.ZIP_DEFLATED)
    return path


# An export's own names for the example protocol's msd columns, as an agency's system might
# write them: some are usual names the encoder finds itself, the rest need --columns.
EXPORT_HEADER = {
    "client_id": "Client Number",
    "given_name": "First Name",
    "surname": "Family Name",
    "date_of_birth": "DOB",
    "sex": "Gender",
    "address": "Street Address",
    "city": "Town",
    "postcode": "Post Code",
    "consent": "Consent Given",
    "region": "Region Name",
    "benefit_type": "Benefit",
    "weeks_supported": "Weeks On Benefit",
}
EXPORT_COLUMNS = {"region": "Region Name", "benefit_type": "Benefit", "weeks_supported": "Weeks On Benefit"}


def agency_export(source: Path, rows: int | None = None) -> tuple[list[str], list[list[Any]]]:
    """An msd client CSV as a real export looks: other column names, dates as dates, multi-line addresses, bad rows.

    Every fifth address is a rural-delivery one over two lines; dates written
    ``YYYY-MM-DD`` become date cells (others stay as typed text); and a few rows are bad:
    an impossible date, a second row with an existing client id, an unknown sex, a
    placeholder name and date. Also a column the protocol does not have.
    """
    with source.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        data = [dict(zip(header, row, strict=True)) for row in reader][:rows]
    out: list[list[Any]] = []
    for number, row in enumerate(data):
        cells: list[Any] = []
        for column in MSD_HEADER:
            value: Any = row[column]
            if column == "date_of_birth" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                value = dt.date.fromisoformat(value)
            if column == "address" and value and number % 5 == 0:
                value = f"{value}\nRD {1 + number % 9}"
            if column == "weeks_supported" and value:
                value = int(value)
            cells.append(value)
        cells.append("note")
        out.append(cells)
    position = {column: MSD_HEADER.index(column) for column in MSD_HEADER}
    out[3][position["date_of_birth"]] = "31/02/1990"
    out[7][position["client_id"]] = out[6][position["client_id"]]
    out[11][position["sex"]] = "unknown"
    out[13][position["given_name"]] = "UNKNOWN"
    out[17][position["date_of_birth"]] = dt.date(1900, 1, 1)
    return [EXPORT_HEADER[c] for c in MSD_HEADER] + ["Case Notes"], out


def dump_tables(url: str, schema: str | None) -> str:
    """Every row of every table of one side's database, as text (to look for what must be gone)."""
    from sqlalchemy import MetaData, create_engine

    engine = create_engine(url)
    try:
        metadata = MetaData(schema=schema if engine.dialect.name == "postgresql" else None)
        metadata.reflect(engine)
        with engine.connect() as conn:
            return "\n".join(
                f"{name}: {tuple(row)}"
                for name, table in metadata.tables.items()
                for row in conn.execute(table.select())
            )
    finally:
        engine.dispose()


def store_urls(config: ServiceConfig) -> list[tuple[str, str | None]]:
    """The (URL, schema) of the linkage and the statistics database of a service config."""
    if config.database_url is None:
        return [(f"sqlite:///{config.data_dir / name}", None) for name in ("linkage.db", "stats.db")]
    return [(config.database_url, config.linkage_schema), (config.database_url, config.stats_schema)]


def record_bytes(out_dir: Path, others: Sequence[Path] = ()) -> tuple[list[str], list[bytes]]:
    """An encode folder's tokens (hex) and, per record, byte strings that must not outlive an erasure.

    The byte strings are each record's raw token and its CLK, leaving out CLKs that the
    encode folders ``others`` hold too (one person with the same identifiers at two agencies).
    """
    records = read_encodings(out_dir).records
    tokens = [token.tobytes().hex() for token in records["token"]]
    theirs = b"".join((other / "encodings.pprl").read_bytes() for other in others)
    clks = [bytes(clk.tobytes()) for clk in records["clk"]]
    pieces = [bytes(token.tobytes()) for token in records["token"]] + [clk for clk in clks if clk not in theirs]
    return tokens, pieces


def found_in_postgres_pages(url: str, schemas: Sequence[str], tokens: Sequence[str]) -> list[str]:
    """Which relations of the schemas hold one of the tokens (as text) in their pages, as stored bytes.

    A query sees only live rows; this reads every page of every table, index, TOAST table
    and TOAST index of the schemas (and the planner's statistics, ``pg_statistic``) with the
    ``pageinspect`` extension's ``get_raw_page``, through the buffer cache: deleted rows
    that PostgreSQL keeps as dead tuples or unzeroed free space are found too. Needs a
    superuser (the tests' PostgreSQL is the developer's own or the one ``.ci/run`` starts).
    """
    import psycopg
    from sqlalchemy.engine import make_url

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    needles = [token.encode("ascii") for token in tokens]
    found = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
        except psycopg.errors.UniqueViolation:
            pass  # another test session created it at the same moment
        relations = conn.execute(
            """
            WITH own AS (
                SELECT c.oid, c.reltoastrelid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'i', 'm')
            ), toast AS (
                SELECT reltoastrelid AS oid FROM own WHERE reltoastrelid <> 0
            ), toast_index AS (
                SELECT i.indexrelid AS oid FROM pg_index i JOIN toast t ON i.indrelid = t.oid
            )
            SELECT oid::regclass::text FROM own UNION SELECT oid::regclass::text FROM toast
            UNION SELECT oid::regclass::text FROM toast_index UNION SELECT 'pg_catalog.pg_statistic'
            """,
            [list(schemas)],
        ).fetchall()
        for (relation,) in sorted(relations):
            pages = conn.execute(
                "SELECT get_raw_page(%s, 'main', block) FROM generate_series(0, "
                "(pg_relation_size(%s::regclass) / current_setting('block_size')::int) - 1) AS block",
                [relation, relation],
            ).fetchall()
            content = b"".join(bytes(page) for (page,) in pages)
            hits = sum(1 for needle in needles if needle in content)
            if hits:
                found.append(f"{relation}: {hits}")
    return found


def found_in_folder(folder: Path, tokens: Sequence[str], pieces: Sequence[bytes]) -> list[str]:
    """Which files under ``folder`` hold one of the tokens (as text) or byte strings, with what."""
    found = []
    needles = [token.encode("ascii") for token in tokens] + list(pieces)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            content = path.read_bytes()
            hits = sum(1 for needle in needles if needle in content)
            if hits:
                found.append(f"{path.relative_to(folder)}: {hits}")
    return found


BATCH_HEADERS = {"Content-Type": "application/vnd.pprl.batch"}


def batch_body(encodings: Path | None, withdraw: Sequence[str] = ()) -> bytes:
    """A ``pprl upload --batch`` request body: the magic line, the withdrawals, the batch's encodings."""
    head = b"PPRLBATCH1\n" + json.dumps({"withdraw": list(withdraw)}).encode() + b"\n"
    return head + (encodings.read_bytes() if encodings is not None else b"")


def put_batch(client: TestClient, project_id: str, token: str, body: bytes) -> Any:
    """PUT a party's batch."""
    return client.put(f"/projects/{project_id}/batches", content=body, headers={**bearer(token), **BATCH_HEADERS})


def write_attributes(source: Path, tokens: Sequence[str], renamed: dict[str, str], dest: Path) -> Path:
    """An attributes.csv for exactly ``tokens``; ``renamed`` maps a new token to the token whose row it copies."""
    lines = (source / "attributes.csv").read_text().splitlines()
    by_token = {line.split(",", 1)[0]: line.split(",", 1)[1] for line in lines[1:]}
    rows = [f"{token},{by_token[renamed.get(token, token)]}" for token in sorted(tokens)]
    dest.write_text("\n".join([lines[0], *rows]) + "\n")
    return dest


def noise_pmf(distribution: str, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """OpenDP's integer noise on -reach..reach, written out from its definition (not from the code under test)."""
    reach = int(60 * scale) + 20
    support = np.arange(-reach, reach + 1)
    if "Gaussian" in distribution:
        weights = np.exp(-(support.astype(float) ** 2) / (2 * scale * scale))
    else:
        weights = np.exp(-np.abs(support) / scale)
    return support, weights / weights.sum()
