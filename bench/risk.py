"""Privacy risk of each hardening option against its linkage quality, on synthetic data.

    .venv/bin/python bench/risk.py [--people 20000] [--seed 7] [--sample 3000] [--overlaps 1.0,0.5,0.2]
                                   [--secrets 1] [--only LABEL,...] [--workers 2] [--skip-f1]

For every hardening option of `linkage.agency.risk.hardening_options` (and the example
protocol's own), encodes the first --sample records of the `msd` party of a realistic
`pprl synth` population and attacks them with a plaintext reference that covers each
--overlaps share of them (the records' own normalised identifiers, filled up with other
synthetic people), then links the whole population under that option. Prints, per option
and overlap, the share of records re-identified by each attack (the median over --secrets
encoding secrets, each with its own attacker key) and, in brackets, the share with at
least one identifier value recovered, with the pairwise F1 over all records and among the
records with a date of birth ("F1 dob"). Goals (issue 17): every attack under 1% at full
overlap (median of 3 secrets), F1 within 0.005 of no hardening over all records.
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
    parser.add_argument("--overlaps", default="1.0,0.5,0.2")
    parser.add_argument("--secrets", type=int, default=1, help="encoding secrets per option; attacks report the median")
    parser.add_argument("--only", default="", help="comma-separated option labels (default: all)")
    parser.add_argument("--profile", default="realistic")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-f1", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    protocol = load_protocol(EXAMPLE)
    overlaps = [float(x) for x in args.overlaps.split(",")]
    options = hardening_options(protocol)
    if args.only:
        options = {label: options[label] for label in args.only.split(",")}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        synthesise_population(protocol, args.people, args.seed, tmp / "synth", profile=args.profile)
        _, values = read_identifiers(protocol, "msd", tmp / "synth" / "msd.csv", limit=args.sample)
        references = [
            build_reference(protocol, values, None, None, share, args.seed, tmp / f"reference-{n}")
            for n, share in enumerate(overlaps)
        ]
        print(
            f"synth ({args.profile}) {args.people:,} people, seed {args.seed}: attacking {len(values):,} msd records "
            f"at overlaps {', '.join(f'{o:.0%}' for o in overlaps)}; median of {args.secrets} secret(s)"
        )
        print("share re-identified (share with a value recovered)")
        print(
            f"  {'hardening':<40}{'overlap':>8}"
            + "".join(f"{name:>20}" for name in ATTACKS)
            + f"{'F1':>8}{'dF1':>8}{'recall':>8}{'F1 dob':>8}{'dF1':>8}{'s':>5}"
        )
        results = []
        baseline = None
        for number, (label, hardening) in enumerate(options.items()):
            started = time.perf_counter()
            variant = with_hardening(protocol, hardening)
            runs = []  # per secret: per overlap, the attacks
            for trial in range(args.secrets):
                secret = SECRET if trial == 0 else np.random.default_rng([args.seed, trial]).bytes(32)
                attacker = np.random.default_rng([args.seed, trial, 1]).bytes(32)
                records = encode_values(variant, secret, values)
                runs.append(
                    [
                        attack_encodings(variant, records, values, reference, truth, attacker_secret=attacker)
                        for reference, truth in references
                    ]
                )
            f1 = f1_dob = recall = None
            if not args.skip_f1:
                work = tmp / f"work-{number}"
                work.mkdir()
                measured = linkage_quality(variant, SECRET, tmp / "synth", work, workers=args.workers)
                f1, f1_dob, recall = measured.overall.f1, measured.with_salt.f1, measured.overall.recall
                if label == "none":
                    baseline = (f1, f1_dob)
            by_overlap = {}
            for position, overlap in enumerate(overlaps):
                trials = [run[position] for run in runs]
                # The median trial of each attack (by share re-identified).
                median = {
                    name: sorted((t[name] for t in trials), key=lambda r: r.reidentified)[len(trials) // 2]
                    for name in ATTACKS
                }
                by_overlap[overlap] = median
                cells = "".join(
                    f"{median[name].reidentified:>10.2%} ({median[name].values_recovered:>5.1%})" for name in ATTACKS
                )
                quality = f"{'':>40}"
                if position == 0 and f1 is not None and f1_dob is not None:
                    base = baseline or (f1, f1_dob)
                    quality = f"{f1:8.4f}{f1 - base[0]:+8.4f}{recall:8.4f}{f1_dob:8.4f}{f1_dob - base[1]:+8.4f}"
                name = label if position == 0 else ""
                print(f"  {name:<40}{overlap:>8.0%}{cells}{quality}{time.perf_counter() - started:5.0f}", flush=True)
            results.append(OptionRisk(label, hardening, by_overlap[overlaps[0]], f1, f1_dob, by_overlap))
        for option in results:
            details = {
                name: {k: round(v, 4) for k, v in option.attacks[name].detail.items() if k in ("clk", "fields")}
                for name in ("pattern_mining", "graph_matching")
            }
            print(f"  {option.label:<40} clk / per-field variants at {overlaps[0]:.0%}: {details}")
        print(f"recommended (goals met, best F1): {recommend(results)}")
        print(f"recommended on F1 among records with a date of birth: {recommend(results, records_with_salt=True)}")


if __name__ == "__main__":
    main()
