"""Privacy risk of each hardening option against its linkage quality, on synthetic data.

    .venv/bin/python bench/risk.py [--people 20000] [--seed 7] [--sample 3000] [--overlap 1.0] [--workers 2]

For every hardening option of `linkage.agency.risk.hardening_options` (and the example
protocol's own), encodes the first --sample records of the `msd` party of a `pprl synth`
population and attacks them with a plaintext reference that covers --overlap of them
(the records' own normalised identifiers: the worst case), then links the whole
population under that option. Prints, per option and attack, the share of records
re-identified (the person named is the right one) and, in brackets, the share with at
least one identifier value recovered (what much of the literature reports), with the
pairwise F1 of the linkage, overall and among the records with a date of birth ("F1 dob":
a salted field cannot compare a record without the salt to one with it). Goals (issue 8):
every attack under 1% re-identified, F1 within 0.005 of no hardening.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from linkage.agency.risk import (
    ATTACKS,
    OptionRisk,
    attack_encodings,
    build_reference,
    encode_values,
    hardening_options,
    linkage_quality,
    read_identifiers,
    recommend,
)
from linkage.evaluation.synth import synthesise_population
from linkage.protocol import load_protocol, with_hardening

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "schemas" / "examples" / "social_services.json"
SECRET = bytes(range(32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sample", type=int, default=3000)
    parser.add_argument("--overlap", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-f1", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    protocol = load_protocol(EXAMPLE)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        synthesise_population(protocol, args.people, args.seed, tmp / "synth")
        _, values = read_identifiers(protocol, "msd", tmp / "synth" / "msd.csv", limit=args.sample)
        reference, truth = build_reference(protocol, values, None, None, args.overlap, args.seed, tmp)
        attacker = np.random.default_rng(args.seed).bytes(32)
        print(
            f"synth {args.people:,} people, seed {args.seed}: attacking {len(values):,} msd records, "
            f"reference {len(reference):,} records covering {float((truth >= 0).mean()):.0%} of them"
        )
        print("share re-identified (share with a value recovered)")
        header = (
            f"  {'hardening':<26}"
            + "".join(f"{name:>20}" for name in ATTACKS)
            + f"{'F1':>8}{'dF1':>8}{'F1 dob':>8}{'dF1':>8}{'s':>5}"
        )
        print(header)
        results = []
        baseline = None
        for number, (label, hardening) in enumerate(hardening_options(protocol).items()):
            started = time.perf_counter()
            variant = with_hardening(protocol, hardening)
            records = encode_values(variant, SECRET, values)
            attacks = attack_encodings(variant, records, values, reference, truth, attacker_secret=attacker)
            f1 = f1_dob = None
            if not args.skip_f1:
                work = tmp / f"work-{number}"
                work.mkdir()
                measured = linkage_quality(variant, SECRET, tmp / "synth", work, workers=args.workers)
                f1, f1_dob = measured.overall.f1, measured.with_salt.f1
                baseline = baseline or (f1, f1_dob)
            results.append(OptionRisk(label, hardening, attacks, f1, f1_dob))
            cells = "".join(
                f"{attacks[name].reidentified:>10.2%} ({attacks[name].values_recovered:>5.1%})" for name in ATTACKS
            )
            quality = f"{'-':>32}"
            if f1 is not None and f1_dob is not None and baseline is not None:
                quality = f"{f1:8.4f}{f1 - baseline[0]:+8.4f}{f1_dob:8.4f}{f1_dob - baseline[1]:+8.4f}"
            print(f"  {label:<26}{cells}{quality}{time.perf_counter() - started:5.0f}", flush=True)
        for option in results:
            details = {
                name: {k: round(v, 3) for k, v in option.attacks[name].detail.items() if k in ("clk", "fields")}
                for name in ("pattern_mining", "graph_matching")
            }
            print(f"  {option.label:<26} clk / per-field variants: {details}")
        print(f"recommended (goals met, best F1): {recommend(results)}")
        print(f"recommended on F1 among records with a date of birth: {recommend(results, records_with_salt=True)}")


if __name__ == "__main__":
    main()
