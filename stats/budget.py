"""Privacy losses, the project's budget, and the ledger of releases.

A protocol fixes one total privacy loss per project: ``rho`` (zero-concentrated DP, the
default) or ``epsilon`` with an optional ``delta``. Every release spends part of it, and the
losses of releases add up (sequential composition). Amounts are kept as exact fractions of
their decimal form, so that a hundred queries of 0.01 spend exactly 1 and the ledger can
never exceed its total through rounding.

Two ledgers keep the record: :class:`FileLedger` for a study on one machine (a JSON-lines
file, locked while a release is computed), and the statistics store for the service. Both
follow the same rule: check, compute, record, and only then hand the answer out; a refused
or failed query leaves the ledger as it was.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, NoReturn

from linkage.chain import GENESIS, chain_digest
from linkage.errors import BudgetExceeded, InputError, TamperedError
from linkage.file_modes import private_opener
from linkage.protocol import Protocol

__all__ = [
    "Budget",
    "Receipt",
    "FileLedger",
    "LedgerEntry",
    "Loss",
    "budget_of",
    "check_affordable",
]


def _exact(value: float | str) -> Fraction:
    return Fraction(str(value))


@dataclass(frozen=True)
class Loss:
    """A privacy loss: ``rho`` under zCDP, or ``epsilon`` (with ``delta``) under (ε, δ)-DP.

    >>> Loss.of(rho=0.05) + Loss.of(rho=0.1)
    Loss(measure='rho', amount=Fraction(3, 20), delta=Fraction(0, 1))
    >>> str(Loss.of(epsilon=0.5, delta=1e-6))
    'ε=0.5, δ=1e-06'
    """

    measure: str
    amount: Fraction
    delta: Fraction = Fraction(0)

    @classmethod
    def of(cls, *, rho: float | str | None = None, epsilon: float | str | None = None, delta: float | str = 0) -> Loss:
        """Build a loss from exactly one of ``rho`` and ``epsilon``.

        Raises:
            InputError: neither or both given, or a value that is not a positive number.
        """
        if (rho is None) == (epsilon is None):
            raise InputError("give the privacy loss as exactly one of rho (zCDP) or epsilon")
        measure, value = ("rho", rho) if rho is not None else ("epsilon", epsilon)
        try:
            amount, extra = _exact(value), _exact(delta)  # type: ignore[arg-type]
        except (ValueError, ZeroDivisionError) as exc:
            raise InputError(f"{measure} must be a number, not {value!r}") from exc
        if amount <= 0:
            raise InputError(f"{measure} must be above 0, not {value}")
        if measure == "rho" and extra:
            raise InputError("delta goes with epsilon; a zCDP loss is rho alone")
        if not 0 <= extra < 1:
            raise InputError(f"delta must be at least 0 and below 1, not {delta}")
        return cls(measure, amount, extra)

    def __add__(self, other: Loss) -> Loss:
        if other.measure != self.measure:
            raise InputError(f"cannot add a {other.measure} loss to a {self.measure} loss")
        return Loss(self.measure, self.amount + other.amount, self.delta + other.delta)

    def fits_within(self, total: Loss) -> bool:
        """Whether this loss is no more than ``total`` in every part."""
        return self.measure == total.measure and self.amount <= total.amount and self.delta <= total.delta

    def to_json(self) -> dict[str, float]:
        """``{"rho": x}`` or ``{"epsilon": x[, "delta": y]}``, as a protocol writes it."""
        values = {self.measure: float(self.amount)}
        if self.delta:
            values["delta"] = float(self.delta)
        return values

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Loss:
        """The inverse of :meth:`to_json`.

        Raises:
            InputError: not one of the two forms.
        """
        unknown = set(values) - {"rho", "epsilon", "delta"}
        if unknown:
            raise InputError(f"unknown privacy loss key(s) {', '.join(sorted(unknown))}; use rho, or epsilon and delta")
        return cls.of(rho=values.get("rho"), epsilon=values.get("epsilon"), delta=values.get("delta", 0))

    def __str__(self) -> str:
        symbol = {"rho": "ρ", "epsilon": "ε"}[self.measure]
        text = f"{symbol}={float(self.amount):g}"
        return f"{text}, δ={float(self.delta):g}" if self.delta else text


def budget_of(protocol: Protocol) -> Loss:
    """The total privacy loss the protocol allows for the project."""
    return Loss.from_json(protocol.budget)


@dataclass(frozen=True)
class LedgerEntry:
    """One release: when, by whom, which query, and what it cost."""

    number: int
    at: datetime
    who: str
    query: str
    loss: Loss
    mechanism: str

    def to_json(self) -> dict[str, Any]:
        """The entry as plain JSON values."""
        return {
            "number": self.number,
            "at": self.at.isoformat(),
            "who": self.who,
            "query": self.query,
            "loss": self.loss.to_json(),
            "mechanism": self.mechanism,
        }

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> LedgerEntry:
        """The inverse of :meth:`to_json` (raises ``KeyError``/``ValueError`` on a damaged entry)."""
        return cls(
            number=int(values["number"]),
            at=datetime.fromisoformat(values["at"]),
            who=str(values["who"]),
            query=str(values["query"]),
            loss=Loss.from_json(values["loss"]),
            mechanism=str(values["mechanism"]),
        )


@dataclass
class Receipt:
    """What a release fills in while the ledger is held: the mechanism it used."""

    mechanism: str = ""


@dataclass(frozen=True)
class Budget:
    """The total, what the ledger says was spent, and what is left."""

    total: Loss
    spent: Loss
    entries: tuple[LedgerEntry, ...]

    @property
    def remaining(self) -> Loss:
        """What is left to spend (never negative)."""
        return Loss(
            self.total.measure,
            max(Fraction(0), self.total.amount - self.spent.amount),
            max(Fraction(0), self.total.delta - self.spent.delta),
        )

    @classmethod
    def from_entries(cls, total: Loss, entries: Sequence[LedgerEntry]) -> Budget:
        """Add up the entries against the total."""
        spent = sum((entry.loss for entry in entries), Loss(total.measure, Fraction(0)))
        return cls(total, spent, tuple(entries))

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Budget:
        """The inverse of :meth:`to_json` (spent and remaining are added up again)."""
        return cls.from_entries(
            Loss.from_json(document["total"]), [LedgerEntry.from_json(entry) for entry in document["releases"]]
        )

    def to_json(self) -> dict[str, Any]:
        """Total, spent, remaining and every release, as plain JSON values."""
        return {
            "total": self.total.to_json(),
            "spent": self.spent.to_json(),
            "remaining": self.remaining.to_json(),
            "releases": [entry.to_json() for entry in self.entries],
        }


def check_affordable(budget: Budget, cost: Loss) -> None:
    """Refuse a release the budget cannot pay for.

    Raises:
        InputError: the cost is in a different measure from the protocol's budget.
        BudgetExceeded: spending it would take the ledger over the total; the message
            says what is left.
    """
    if cost.measure != budget.total.measure:
        raise InputError(
            f"this protocol's budget is in {budget.total.measure}, so give the query's cost as "
            f"--{budget.total.measure}, not --{cost.measure}"
        )
    if budget.total.measure == "epsilon" and cost.delta and not budget.total.delta:
        raise InputError("this protocol's budget is pure ε-DP (no delta); leave delta out")
    if not (budget.spent + cost).fits_within(budget.total):
        raise BudgetExceeded(
            f"this query costs {cost} but only {budget.remaining} of the project's {budget.total} is left "
            f"({len(budget.entries)} release(s) so far); ask for a smaller cost (a wider interval) or none at all. "
            "Nothing was spent."
        )


class FileLedger:
    """A ledger in a JSON-lines file, for ``pprl query`` on one machine.

    The first line names the protocol and its total; each further line is one release.
    A release holds an exclusive lock on the file from the check to the record, so two
    ``pprl query`` processes sharing the file can never overspend together.

    The releases form a hash chain (:mod:`linkage.chain`): each line carries the hash of
    the line before and its own, and ``<ledger>.head`` keeps the number of releases and the
    last hash, so that an edited, deleted or reordered line is found before the next
    release. Lines written before the chain existed are hashed as they are read.

    Args:
        path: the ledger file (created on first use, mode 0600).
        protocol: the study's protocol; a ledger made for another protocol is refused.
    """

    def __init__(self, path: Path, protocol: Protocol) -> None:
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.name + ".head")
        self.total = budget_of(protocol)
        self._header = {"pprl_ledger": 1, "protocol": protocol.name, "total": self.total.to_json()}

    def _read(self, handle: Any) -> tuple[list[LedgerEntry], str]:
        """The releases and the chain's last hash, after checking the header and the chain.

        Raises:
            InputError: not a ledger, another protocol's, or a damaged line.
            TamperedError: a line was edited, deleted or reordered.
        """
        handle.seek(0)
        lines = handle.read().splitlines()
        if not lines:
            return [], GENESIS
        try:
            header = json.loads(lines[0])
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("pprl_ledger") != 1:
            raise InputError(f"{self.path} is not a pprl ledger; pass a new file name to --ledger to start one")
        if header.get("protocol") != self._header["protocol"] or header.get("total") != self._header["total"]:
            raise InputError(
                f"{self.path} is the ledger of protocol {header.get('protocol')!r} with total "
                f"{header.get('total')}, not of {self._header['protocol']!r} with {self._header['total']}; "
                "use that protocol's ledger"
            )
        entries, records = [], []
        for number, line in enumerate(lines[1:], start=2):
            try:
                record = json.loads(line)
                entries.append(LedgerEntry.from_json(record))
                records.append(record)
            except (json.JSONDecodeError, KeyError, ValueError, TypeError, InputError) as exc:
                raise InputError(
                    f"{self.path} line {number} is damaged ({exc}); the ledger cannot be trusted, so nothing more "
                    "can be released from it until it is repaired from a backup"
                ) from exc
        return entries, self._check_chain(records)

    def _check_chain(self, records: Sequence[Mapping[str, Any]]) -> str:
        previous, chained, hashes = GENESIS, False, [GENESIS]
        for number, record in enumerate(records, start=1):
            digest = chain_digest(previous, [_canonical_release(record)])
            if "sha256" in record or "prev_sha256" in record:
                chained = True
                if record.get("prev_sha256") != previous or record.get("sha256") != digest:
                    self._tampered(f"release {number} was edited, or a release before it deleted or reordered")
            previous = digest
            hashes.append(digest)
        head = self._read_head()
        if head is None:
            if chained:
                self._tampered(f"{self.head_path.name} is missing")
            return previous
        rows, digest = head
        # One release more than the head is a release whose head was not yet written (a crash).
        if rows < 0 or not rows <= len(records) <= rows + 1 or hashes[rows] != digest:
            self._tampered(f"{self.head_path.name} says {rows} releases; the ledger's {len(records)} do not match it")
        return previous

    def _read_head(self) -> tuple[int, str] | None:
        try:
            head = json.loads(self.head_path.read_text("utf-8"))
            return int(head["rows"]), str(head["sha256"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            self._tampered(f"{self.head_path.name} is damaged")

    def _tampered(self, problem: str) -> NoReturn:
        raise TamperedError(
            f"{self.path}: {problem}; the ledger cannot be trusted, so nothing more can be released from it until it "
            "is restored from a backup"
        )

    def _write_head(self, rows: int, digest: str) -> None:
        tmp = self.head_path.with_name(self.head_path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8", opener=private_opener) as handle:
            handle.write(json.dumps({"rows": rows, "sha256": digest}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.head_path)

    @contextmanager
    def _locked(self) -> Iterator[Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8", opener=private_opener) as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield handle
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def budget(self) -> Budget:
        """Total, spent and remaining, with every release so far.

        Raises:
            TamperedError: the ledger's hash chain is broken.
        """
        if not self.path.exists():
            return Budget.from_entries(self.total, [])
        with self._locked() as handle:
            return Budget.from_entries(self.total, self._read(handle)[0])

    @contextmanager
    def spend(self, who: str, query: str, cost: Loss) -> Iterator[Receipt]:
        """Hold the ledger while a release is computed; record it only if the body succeeds.

        The body fills in the :class:`Receipt` it is given.

        Raises:
            BudgetExceeded: the cost does not fit; nothing is recorded.
            TamperedError: the ledger's hash chain is broken; nothing is released.
        """
        with self._locked() as handle:
            entries, previous = self._read(handle)
            check_affordable(Budget.from_entries(self.total, entries), cost)
            receipt = Receipt()
            yield receipt
            entry = LedgerEntry(len(entries) + 1, datetime.now(UTC), who, query, cost, receipt.mechanism).to_json()
            digest = chain_digest(previous, [_canonical_release(entry)])
            empty = handle.seek(0, os.SEEK_END) == 0
            text = json.dumps(self._header) + "\n" if empty else ""
            chained = {**entry, "prev_sha256": previous, "sha256": digest}
            handle.write(text + json.dumps(chained, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            self._write_head(len(entries) + 1, digest)


def _canonical_release(record: Mapping[str, Any]) -> str:
    """A release line's content without its chain fields, as canonical JSON (what its hash covers)."""
    content = {key: value for key, value in record.items() if key not in ("prev_sha256", "sha256")}
    return json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
