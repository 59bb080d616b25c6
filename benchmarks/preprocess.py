"""Benchmark the `preprocess` stage against a straightforward pandas implementation of the same steps.

    .venv/bin/python benchmarks/preprocess.py                    # N = 10 million (the paper's Cloth size)
    .venv/bin/python benchmarks/preprocess.py --reviews 200000   # a quick run

It writes a synthetic Amazon 2018 review file (gzipped JSON lines, cached in --workdir, keyed by its
parameters), then runs, each in its own subprocess so that its peak RSS is its own:

* slmrec: `slmrec.stages.preprocess.run`, the code of the Snakemake rule (read, rating filter,
  de-duplication, iterative k-core, ids, leave-one-out splits, four parquet files, stats, manifest);
* pandas: the same steps written the obvious way with pandas (chunked `read_json`, `drop_duplicates`,
  `groupby().transform("size")` k-core, `factorize`, `groupby().agg(list)`, `to_parquet`).

It checks that both produce the same interactions, id maps and splits, and prints wall time,
reviews/s, peak RSS and the speed ratio against the targets (>= 5x faster, < 4 GB peak RSS at 10M).
Figures go to stdout; progress goes to stderr. The parent process stays small (standard library
only until both measurements are done), so it cannot inflate its children's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SPEEDUP = 5.0
TARGET_PEAK_GB = 4.0
GIB = 1 << 30
CHUNK_ROWS = 1_000_000
PANDAS_CHUNK_ROWS = 500_000
MIN_RATING = 3
KCORE = 5
OUTPUT_FILES = {
    "interactions": "interactions.parquet",
    "user_ids": "users.parquet",
    "item_ids": "items.parquet",
    "splits": "splits.parquet",
    "stats": "stats.json",
    "manifest": "manifest.json",
}


def log(message: str) -> None:
    print(f"[bench preprocess {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def peak_rss() -> dict[str, int]:
    """This process's peak resident set size, in bytes (ru_maxrss is KiB on Linux)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    scale = 1 if sys.platform == "darwin" else 1024
    peak = {"ru_maxrss": usage.ru_maxrss * scale, "cpu_s": usage.ru_utime + usage.ru_stime}
    try:  # VmHWM is per address space, so it cannot include anything from before exec; a cross-check.
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak["vm_hwm"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return peak


# --------------------------------------------------------------------------------------------------
# Synthetic data (runs in a subprocess: numpy would otherwise grow the parent)
# --------------------------------------------------------------------------------------------------

WORDS = (
    "great fit comfortable quality size small large true to color perfect love these shoes dress shirt "
    "fabric soft material cheap runs wear daughter husband gift nice looks exactly as pictured returned "
    "would recommend price fast shipping wash after the first time bit tight waist length sleeves"
).split()


def _base36(values, width: int):  # noqa: ANN001, ANN202 - numpy arrays, imported lazily
    """Fixed-width base-36 strings (0-9A-Z) of unsigned integers, vectorised."""
    import numpy as np

    alphabet = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", dtype=np.uint8)
    digits = np.empty((len(values), width), dtype=np.uint8)
    rest = values.astype(np.uint64)
    for pos in range(width - 1, -1, -1):
        digits[:, pos] = alphabet[(rest % np.uint64(36)).astype(np.intp)]
        rest = rest // np.uint64(36)
    return digits.view(f"S{width}").ravel().astype(str).tolist()


def make_ids(count: int, kind: str) -> list[str]:
    """Unique, realistic-looking ids whose sort order is unrelated to their index."""
    import numpy as np

    index = np.arange(count, dtype=np.uint64)
    if kind == "user":  # reviewerID, e.g. A2SUAM1J3GNN3B: an odd multiplier is a bijection modulo 2**64
        mixed = index * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x632BE59BD9B4E019)
        return ["A" + s for s in _base36(mixed, 13)]
    space = 36**8  # asin, e.g. B00ZW3SCF0: a multiplier coprime to 36 is a bijection modulo 36**8
    if count > space:
        raise ValueError(f"at most {space} items")
    mixed = (index * np.uint64(1_000_000_007) + np.uint64(123_456_789)) % np.uint64(space)
    return ["B0" + s for s in _base36(mixed, 8)]


def _popularity(rng, count: int, sigma: float):  # noqa: ANN001, ANN202
    """Cumulative sampling weights: log-normal activity gives a heavy tail and many rare ids."""
    import numpy as np

    weights = rng.lognormal(0.0, sigma, count)
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


def generate(path: Path, reviews: int, users: int, items: int, seed: int) -> None:
    """Write `reviews` Amazon-2018-style JSON lines, gzipped, in chunks (bounded memory).

    Ratings are mostly 4-5 (about 15% are 3 or below), user and item popularity is heavy-tailed so
    iterative k-core has something to remove, about 1% of rows repeat an earlier (user, item) pair,
    and timestamps are whole days, so ties (broken by file order) are common.
    """
    import gzip
    import queue
    import threading

    import numpy as np

    rng = np.random.default_rng(seed)
    user_ids, item_ids = make_ids(users, "user"), make_ids(items, "item")
    user_cdf, item_cdf = _popularity(rng, users, 1.0), _popularity(rng, items, 1.3)
    texts = [" ".join(rng.choice(WORDS, size=n)).capitalize() + "." for n in rng.integers(3, 30, size=512).tolist()]
    summaries = [" ".join(rng.choice(WORDS, size=n)).title() for n in rng.integers(1, 5, size=128).tolist()]
    rating_p = [0.04, 0.04, 0.07, 0.20, 0.65]
    first_day, last_day = 12_000, 17_900  # 2002-11 to 2019-01, in days since the epoch

    # Compression runs in a thread (zlib releases the GIL) while the next chunk is being formatted.
    pending: queue.Queue[bytes | None] = queue.Queue(maxsize=2)
    tmp = path.with_name(path.name + ".partial")
    failure: list[BaseException] = []

    def writer() -> None:
        try:
            with gzip.open(tmp, "wb", compresslevel=6) as handle:
                while (data := pending.get()) is not None:
                    handle.write(data)
        except BaseException as err:  # reported by the main thread
            failure.append(err)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    for start in range(0, reviews, CHUNK_ROWS):
        n = min(CHUNK_ROWS, reviews - start)
        user = np.searchsorted(user_cdf, rng.random(n))
        item = np.searchsorted(item_cdf, rng.random(n))
        repeat = np.flatnonzero(rng.random(n) < 0.01)
        repeat = repeat[repeat > 0]
        source = (rng.random(len(repeat)) * repeat).astype(np.int64)  # an earlier row of the chunk
        user[repeat], item[repeat] = user[source], item[source]
        rating = rng.choice(np.arange(1, 6), size=n, p=rating_p)
        day = rng.integers(first_day, last_day, size=n)
        verified = np.where(rng.random(n) < 0.9, "true", "false")
        text = rng.integers(0, len(texts), size=n)
        summary = rng.integers(0, len(summaries), size=n)
        body = "".join(
            [
                f'{{"overall": {r}.0, "verified": {v}, "reviewerID": "{user_ids[u]}", "asin": "{item_ids[i]}", '
                f'"reviewText": "{texts[t]}", "summary": "{summaries[s]}", "unixReviewTime": {d * 86400}}}\n'
                for r, v, u, i, t, s, d in zip(
                    rating.tolist(),
                    verified.tolist(),
                    user.tolist(),
                    item.tolist(),
                    text.tolist(),
                    summary.tolist(),
                    day.tolist(),
                    strict=True,
                )
            ]
        )
        pending.put(body.encode())
        if failure:
            break
        log(f"generated {start + n:,} / {reviews:,} reviews")
    pending.put(None)
    thread.join()
    if failure:
        tmp.unlink(missing_ok=True)
        raise failure[0]
    tmp.replace(path)


# --------------------------------------------------------------------------------------------------
# The two measured implementations (each runs in its own subprocess)
# --------------------------------------------------------------------------------------------------


def outputs_in(outdir: Path) -> dict[str, Path]:
    return {name: outdir / file for name, file in OUTPUT_FILES.items()}


def child_slmrec(raw: Path, outdir: Path) -> dict:
    """The rule's own code path, with each phase timed by wrapping the module's functions."""
    import slmrec.stages.preprocess as stage
    from slmrec.call import StageCall

    phases: dict[str, float] = {}

    def timed(name, func):  # noqa: ANN001, ANN202
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            began = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                phases[name] = time.perf_counter() - began

        return wrapper

    stage.read_reviews = timed("read", stage.read_reviews)
    stage.preprocess = timed("transform", stage.preprocess)
    outdir.mkdir(parents=True, exist_ok=True)
    output = {name: str(path) for name, path in outputs_in(outdir).items()}
    params = {
        "source": {"kind": "amazon2018"},
        "preprocess": {"min_rating": MIN_RATING, "kcore": KCORE, "on_bad_line": "error"},
    }
    began = time.perf_counter()
    result = stage.run(StageCall("preprocess", {"raw": str(raw)}, output, params))
    seconds = time.perf_counter() - began
    phases["write+manifest"] = seconds - phases["read"] - phases["transform"]
    return {"seconds": seconds, "phases": phases, "stats": result.stats, **peak_rss()}


def child_pandas(raw: Path, outdir: Path) -> dict:
    """The same steps, written the straightforward pandas way."""
    import pandas as pd

    phases: dict[str, float] = {}
    began = mark = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = now - mark
        mark = now

    # Read: chunked JSON lines, keeping the four needed fields; `line` is the file order.
    columns = {"reviewerID": "user_id", "asin": "item_id", "overall": "rating", "unixReviewTime": "timestamp"}
    dtypes = {"reviewerID": "str", "asin": "str", "overall": "float64", "unixReviewTime": "int64"}
    chunks, rows_read = [], 0
    with pd.read_json(raw, lines=True, compression="gzip", chunksize=PANDAS_CHUNK_ROWS, dtype=dtypes) as reader:
        for chunk in reader:
            chunk = chunk[list(columns)].rename(columns=columns)
            chunk["line"] = range(rows_read + 1, rows_read + 1 + len(chunk))
            rows_read += len(chunk)
            chunks.append(chunk)
    df = pd.concat(chunks, ignore_index=True)
    del chunks
    phase("read")

    stats = {"rows_read": rows_read, "bad_lines": 0}
    df = df[df["rating"] > MIN_RATING]
    stats["after_rating_filter"] = len(df)
    df = df.sort_values(["timestamp", "line"], kind="stable").drop_duplicates(["user_id", "item_id"], keep="first")
    stats["after_dedup"] = len(df)
    iterations = 0
    while True:
        iterations += 1
        user_count = df.groupby("user_id")["user_id"].transform("size")
        item_count = df.groupby("item_id")["item_id"].transform("size")
        keep = (user_count >= KCORE) & (item_count >= KCORE)
        if keep.all():
            break
        df = df[keep]
    stats["after_kcore"] = len(df)
    stats["kcore_iterations"] = iterations
    user_codes, user_names = pd.factorize(df["user_id"], sort=True)
    item_codes, item_names = pd.factorize(df["item_id"], sort=True)
    df = df.assign(user=(user_codes + 1).astype("int32"), item=(item_codes + 1).astype("int32"))
    df = df.sort_values(["user", "timestamp", "line"], kind="stable")
    interactions = df[["user", "item", "timestamp", "rating"]].reset_index(drop=True)
    users = pd.DataFrame({"user": range(1, len(user_names) + 1), "user_id": user_names})
    items = pd.DataFrame({"item": range(1, len(item_names) + 1), "item_id": item_names})
    sequences = interactions.groupby("user", sort=True)["item"].agg(list)
    splits = pd.DataFrame(
        {
            "user": sequences.index,
            "train": [seq[:-2] for seq in sequences],
            "valid": [seq[-2] for seq in sequences],
            "test": [seq[-1] for seq in sequences],
        }
    )
    stats.update(
        users=len(users),
        items=len(items),
        interactions=len(interactions),
        density=len(interactions) / (len(users) * len(items)),
    )
    phase("transform")

    outdir.mkdir(parents=True, exist_ok=True)
    paths = outputs_in(outdir)
    interactions.to_parquet(paths["interactions"], engine="pyarrow", index=False)
    users.to_parquet(paths["user_ids"], engine="pyarrow", index=False)
    items.to_parquet(paths["item_ids"], engine="pyarrow", index=False)
    splits.to_parquet(paths["splits"], engine="pyarrow", index=False)
    paths["stats"].write_text(json.dumps(stats, indent=2))
    phase("write")
    return {"seconds": time.perf_counter() - began, "phases": phases, "stats": stats, **peak_rss()}


# --------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------


def run_child(mode: str, *args: str, env: dict[str, str] | None = None) -> dict:
    """Run this script in `mode` in a fresh interpreter; its last stdout line is a JSON result."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", mode, *args]
    proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"{mode} subprocess failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare_outputs(ours: Path, theirs: Path) -> list[str]:
    """Differences between the two implementations' artifacts (empty when they agree)."""
    import numpy as np
    import pyarrow.parquet as pq

    problems = []
    checks = {
        "interactions": ["user", "item", "timestamp", "rating"],
        "user_ids": ["user", "user_id"],
        "item_ids": ["item", "item_id"],
        "splits": ["user", "valid", "test"],
    }
    for name, columns in checks.items():
        a = pq.read_table(ours / OUTPUT_FILES[name], columns=columns)
        b = pq.read_table(theirs / OUTPUT_FILES[name], columns=columns)
        if a.num_rows != b.num_rows:
            problems.append(f"{name}: {a.num_rows} rows vs {b.num_rows}")
            continue
        for column in columns:
            left, right = a.column(column).to_numpy(), b.column(column).to_numpy()
            if left.dtype.kind in "iuf":
                same = np.array_equal(left.astype(np.float64), right.astype(np.float64))
            else:
                same = np.array_equal(left.astype(str), right.astype(str))
            if not same:
                problems.append(f"{name}.{column} differs")
    a = pq.read_table(ours / OUTPUT_FILES["splits"], columns=["train"]).column("train").combine_chunks()
    b = pq.read_table(theirs / OUTPUT_FILES["splits"], columns=["train"]).column("train").combine_chunks()
    if not (
        np.array_equal(a.offsets.to_numpy(), b.offsets.to_numpy())
        and np.array_equal(a.flatten().to_numpy().astype(np.int64), b.flatten().to_numpy().astype(np.int64))
    ):
        problems.append("splits.train differs")
    return problems


def gb(value: float) -> str:
    return f"{value / GIB:.2f} GB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reviews", type=int, default=10_000_000, help="reviews in the synthetic file (N)")
    parser.add_argument("--users", type=int, help="distinct reviewers (default N/8)")
    parser.add_argument("--items", type=int, help="distinct items (default N/20)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "slmrec-bench-preprocess",
        help="where the cached input and both outputs go (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-pandas", action="store_true", help="measure slmrec only")
    parser.add_argument("--child", choices=["generate", "slmrec", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--raw", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    users = args.users or max(1, args.reviews // 8)
    items = args.items or max(1, args.reviews // 20)

    if args.child == "generate":
        generate(args.raw, args.reviews, users, items, args.seed)
        print(json.dumps(peak_rss()))
        return 0
    if args.child in ("slmrec", "pandas"):
        result = (child_slmrec if args.child == "slmrec" else child_pandas)(args.raw, args.out)
        print(json.dumps(result))
        return 0

    args.workdir.mkdir(parents=True, exist_ok=True)
    raw = args.workdir / f"reviews_n{args.reviews}_u{users}_i{items}_s{args.seed}.json.gz"
    if raw.exists():
        log(f"using cached {raw}")
        generation = None
    else:
        log(f"generating {raw} ({args.reviews:,} reviews, {users:,} users, {items:,} items)")
        began = time.perf_counter()
        run_child("generate", "--reviews", str(args.reviews), "--users", str(users), "--items", str(items),
                  "--seed", str(args.seed), "--raw", str(raw))  # fmt: skip
        generation = time.perf_counter() - began

    log("running slmrec preprocess")
    ours = run_child("slmrec", "--raw", str(raw), "--out", str(args.workdir / "slmrec"), env={"TQDM_DISABLE": "1"})
    theirs = None
    if not args.skip_pandas:
        log("running the pandas reference")
        theirs = run_child("pandas", "--raw", str(raw), "--out", str(args.workdir / "pandas"))

    n = args.reviews
    rate = n / ours["seconds"]
    peak = ours["ru_maxrss"]
    lines = [
        "",
        "preprocess benchmark",
        f"  input               {raw} ({raw.stat().st_size / 1e6:,.0f} MB gzipped)",
        f"  generation          {'cached' if generation is None else f'{generation:.1f} s'} (not compared)",
        f"  reviews (N)         {n:,}  ({users:,} users, {items:,} items, seed {args.seed})",
        f"  result              {ours['stats']['interactions']:,} interactions, {ours['stats']['users']:,} users, "
        f"{ours['stats']['items']:,} items, {ours['stats']['kcore_iterations']} k-core iterations",
        f"  slmrec              {ours['seconds']:.1f} s  ({rate:,.0f} reviews/s), peak RSS {gb(peak)}, "
        f"CPU {ours['cpu_s']:.1f} s",
        "                      " + ", ".join(f"{k} {v:.1f} s" for k, v in ours["phases"].items()),
    ]
    if "vm_hwm" in ours:
        lines.append(f"                      (VmHWM {gb(ours['vm_hwm'])})")
    passed = peak < TARGET_PEAK_GB * GIB
    if theirs is not None:
        ratio = theirs["seconds"] / ours["seconds"]
        problems = compare_outputs(args.workdir / "slmrec", args.workdir / "pandas")
        keys = ("users", "items", "interactions")
        stats_match = all(ours["stats"][k] == theirs["stats"][k] for k in keys)
        lines += [
            f"  pandas              {theirs['seconds']:.1f} s  ({n / theirs['seconds']:,.0f} reviews/s), "
            f"peak RSS {gb(theirs['ru_maxrss'])}, CPU {theirs['cpu_s']:.1f} s",
            "                      " + ", ".join(f"{k} {v:.1f} s" for k, v in theirs["phases"].items()),
            f"  stats match         {'yes' if stats_match else 'NO'} "
            f"(slmrec {[ours['stats'][k] for k in keys]}, pandas {[theirs['stats'][k] for k in keys]})",
            f"  outputs match       {'yes' if not problems else 'NO: ' + '; '.join(problems)}",
            f"  speed ratio         {ratio:.2f}x (pandas time / slmrec time)",
            f"  target speed        >= {TARGET_SPEEDUP:.0f}x: {'PASS' if ratio >= TARGET_SPEEDUP else 'FAIL'}",
        ]
        passed = passed and ratio >= TARGET_SPEEDUP and stats_match and not problems
    lines.append(
        f"  target peak RSS     < {TARGET_PEAK_GB:.0f} GB: {'PASS' if peak < TARGET_PEAK_GB * GIB else 'FAIL'}"
    )
    if n != 10_000_000:
        lines.append("  (the targets are defined at N = 10,000,000; this run is indicative only)")
    lines.append(f"  overall             {'PASS' if passed else 'FAIL'}")
    print("\n".join(lines), flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
