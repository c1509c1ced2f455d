"""Registry throughput: licences issued per second (fake instant generate/embed steps, so this
measures the registry's transactions and encryption, not ML) and verification records written per
second, on SQLite and on a throwaway PostgreSQL cluster when one can be started.

    .venv/bin/python benchmarks/registry.py [--licenses 50] [--verifications 300]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

from modelprint.fingerprints import Fingerprint, FingerprintSet
from modelprint.licensing import issue_license
from modelprint.registry import Registry, init_registry
from modelprint.registry.pgcluster import PostgresUnavailable, create_database, throwaway_postgres


def fake_set(n: int, tag: str) -> FingerprintSet:
    fps = [Fingerprint(index=i, key=f"benchmark key {tag} {i}", response=f"r{i}", response_ids=[i + 1], null_prob=0.1)
           for i in range(n)]
    return FingerprintSet(strategy="perinucleus", params={}, seed=0, model_source="bench", model_hash="sha256:bench",
                          tokenizer_hash="sha256:tok", fingerprints=fps)


def fake_generate(ctx) -> FingerprintSet:
    return fake_set(64, f"{ctx.licensee}-{ctx.seed}")


def fake_embed(ctx, fs: FingerprintSet, out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    return "sha256:copy-" + ctx.licensee


def bench(url: str, workdir: Path, n_licenses: int, n_verifications: int) -> tuple[float, float]:
    init_registry(url)
    with Registry(url) as reg:
        reg.add_model("bench", "bench", "sha256:bench")
        for i in range(n_licenses):
            reg.add_licensee(f"licensee-{i}")
        start = time.perf_counter()
        for i in range(n_licenses):
            issue_license(reg, f"licensee-{i}", "bench", out_dir=workdir / "copies", seed=i,
                          generate_step=fake_generate, embed_step=fake_embed)
        lic_rate = n_licenses / (time.perf_counter() - start)
        reg.add_set(fake_set(64, "verify"), "verify-set")
        start = time.perf_counter()
        for i in range(n_verifications):
            keys = reg.choose_keys("verify-set", 8, seed=i)
            reg.record_verification("verify-set", target=f"suspect-{i}", backend="hf", keys=keys, matches=8,
                                    p_value=1e-12, verdict="match")
        ver_rate = n_verifications / (time.perf_counter() - start)
    return lic_rate, ver_rate


@contextlib.contextmanager
def postgres() -> Iterator[Optional[str]]:
    try:
        with throwaway_postgres() as admin:
            yield create_database(admin, prefix="bench")
    except PostgresUnavailable as exc:
        print(f"postgresql: skipped ({exc})")
        yield None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--licenses", type=int, default=50)
    parser.add_argument("--verifications", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelprint-bench-") as tmp:
        os.environ["MODELPRINT_HOME"] = tmp
        os.environ.pop("MODELPRINT_SECRET_KEY", None)
        work = Path(tmp)
        print(f"{'backend':<12}{'licences/s':>12}{'verifications/s':>18}   (licences: {args.licenses}, "
              f"verification records: {args.verifications}, choose_keys + record each)")
        lic, ver = bench(f"sqlite:///{work / 'bench.db'}", work / "sqlite", args.licenses, args.verifications)
        print(f"{'sqlite':<12}{lic:>12.1f}{ver:>18.1f}")
        with postgres() as url:
            if url is not None:
                lic, ver = bench(url, work / "pg", args.licenses, args.verifications)
                print(f"{'postgresql':<12}{lic:>12.1f}{ver:>18.1f}")


if __name__ == "__main__":
    main()
