#!/usr/bin/env python3
"""Fuzz iscsikit.proto outside CI: millions of inputs through the PDU reader,
the text/negotiation decoders, SendTargets and the login state machine.

    python bench/fuzz_proto.py --runs 1000000             # atheris if installed
    python bench/fuzz_proto.py --runs 1000000 --engine mutate --jobs 2

The targets are tests/unit/fuzz_targets.py (CI runs a few hundred inputs of
each through hypothesis). An input may only end normally or with
iscsikit.proto.errors.ProtocolError; any other exception, or an input running
longer than --timeout seconds, is a failure and is written to --artifacts.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "unit"))


def _load_targets():
    import fuzz_targets
    return fuzz_targets


def _seed_corpus(ft) -> list[bytes]:
    """Valid inputs per target (first byte picks the target)."""
    from iscsikit.proto import pdu as P
    from iscsikit.proto.keys import encode_text
    names = sorted(ft.TARGETS)
    seeds = []
    pdus = [P.PDU_CLASSES[op](data=b"A=B\0") for op in P.Opcode]
    reader_seed = b"\x00" + b"".join(p.encode() for p in pdus)
    digests_seed = b"\x03" + b"".join(p.encode(header_digest=True, data_digest=True) for p in pdus)
    text = encode_text([("TargetName", "iqn.2024-01.t:a"), ("TargetAddress", "[::1]:3260,1"),
                        ("MaxBurstLength", "65536"), ("HeaderDigest", "CRC32C,None")])
    for index, name in enumerate(names):
        tag = bytes([index])
        if name == "reader":
            seeds += [tag + reader_seed, tag + digests_seed]
        elif name in ("sendtargets", "negotiation"):
            seeds += [tag + b"\x05" + text, tag + b"\x00\x00" + text]
        else:
            seeds += [tag + bytes(range(i, i + 9)) for i in range(0, 60, 9)]
    return seeds


def _dispatch(ft):
    names = sorted(ft.TARGETS)
    funcs = [ft.TARGETS[n] for n in names]

    def one(data: bytes) -> None:
        if not data:
            return
        funcs[data[0] % len(funcs)](data[1:])
    return one


# -- atheris (coverage-guided) -------------------------------------------------

def run_atheris(args) -> int:
    import atheris
    with atheris.instrument_imports(include=["iscsikit", "fuzz_targets", "proto_fake_target"]):
        ft = _load_targets()
    one = _dispatch(ft)
    corpus = Path(tempfile.mkdtemp(prefix="iscsikit-fuzz-corpus-"))
    for i, seed in enumerate(_seed_corpus(ft)):
        (corpus / f"seed{i}").write_bytes(seed)
    Path(args.artifacts).mkdir(parents=True, exist_ok=True)
    argv = [sys.argv[0], f"-runs={args.runs}", f"-timeout={args.timeout}", f"-seed={args.seed}",
            f"-artifact_prefix={args.artifacts}/", "-max_len=4096", "-print_final_stats=1", str(corpus)]
    start = time.monotonic()
    atheris.Setup(argv, one)
    try:
        atheris.Fuzz()
    finally:
        print(f"fuzz: atheris, {args.runs} runs requested, {time.monotonic() - start:.1f} s", flush=True)
    return 0


# -- a seeded mutator (no dependency) ------------------------------------------

class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def _worker(job: tuple[int, int, int, float, str]) -> tuple[int, float, str | None]:
    worker_id, runs, seed, timeout, artifacts = job
    ft = _load_targets()
    one = _dispatch(ft)
    seeds = _seed_corpus(ft)
    rng = random.Random(seed * 1000003 + worker_id)
    signal.signal(signal.SIGALRM, _alarm)
    start = time.monotonic()
    for n in range(runs):
        base = rng.choice(seeds)
        if rng.random() < 0.15:
            data = bytes([base[0]]) + rng.randbytes(rng.randrange(0, 600))
        else:
            noise = rng.randbytes(3 * rng.randrange(1, 12))
            data = bytes([base[0]]) + ft.mutate(base[1:], noise)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            one(data)
        except _Timeout:
            return n + 1, time.monotonic() - start, _save(artifacts, "timeout", data)
        except Exception as exc:  # the point of fuzzing: anything but ProtocolError is a bug
            return n + 1, time.monotonic() - start, _save(artifacts, type(exc).__name__, data, exc)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    return runs, time.monotonic() - start, None


def _save(artifacts: str, kind: str, data: bytes, exc: BaseException | None = None) -> str:
    import traceback
    Path(artifacts).mkdir(parents=True, exist_ok=True)
    path = Path(artifacts) / f"{kind}-{os.getpid()}-{time.time_ns()}.bin"
    path.write_bytes(data)
    detail = "".join(traceback.format_exception(exc)) if exc else kind
    return f"{path}: {detail}"


def run_mutate(args) -> int:
    jobs = max(1, args.jobs)
    per = [args.runs // jobs + (1 if i < args.runs % jobs else 0) for i in range(jobs)]
    start = time.monotonic()
    work = [(i, per[i], args.seed, args.timeout, args.artifacts) for i in range(jobs)]
    if jobs == 1:
        results = [_worker(work[0])]
    else:
        with multiprocessing.Pool(jobs) as pool:
            results = pool.map(_worker, work)
    elapsed = time.monotonic() - start
    done = sum(r[0] for r in results)
    failures = [r[2] for r in results if r[2]]
    print(f"fuzz: mutate engine, {done} inputs in {elapsed:.1f} s ({done / elapsed:,.0f}/s), "
          f"{jobs} job(s), seed {args.seed}, failures: {len(failures)}")
    for failure in failures:
        print(failure)
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--engine", choices=("auto", "atheris", "mutate"), default="auto")
    parser.add_argument("--jobs", type=int, default=1, help="processes (mutate engine)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per input")
    parser.add_argument("--artifacts", default=str(Path(tempfile.gettempdir()) / "iscsikit-fuzz"))
    args = parser.parse_args()
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "mutate"
    if engine == "atheris":
        args.timeout = max(1, int(args.timeout))
        return run_atheris(args)
    return run_mutate(args)


if __name__ == "__main__":
    sys.exit(main())
