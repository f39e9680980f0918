"""Scale of state: memory per user and per item, snapshot and restart cost vs number of users.

    .venv/bin/python -m bench.state [--users 1000 10000 100000] [--items 100000] [--runs 3] [--json]
    (the 1M point needs about 30 GB of RAM: N profiles plus their N snapshots are held at once)

Per-user state is the `UserFeatures` profile kept in Bytewax state plus the user's latent vector and
bias in the shared MF (River BiasedMF). A realistic profile is built by the real engine: the simulated
user with the median number of events (about 50) among 50 users over 4,000 events, which holds the
maximum of 32 decisions awaiting outcomes. It is cloned for N users by unpickling its snapshot (every
clone owns all its objects, as after a restart) and the user's MF latents are copied for each, so the
figures do not depend on how long the simulator runs. For each N:

- memory per user: tracemalloc bytes of the N profiles + the MF's per-user entries, / N;
- epoch snapshot, all users changed: what Bytewax does per touched key (`UserLogic.snapshot()` = the
  pickled profile, which Bytewax pickles again) for all N;
- epoch snapshot, 1% changed: the same for N/100 users (Bytewax snapshots only keys touched in the epoch);
- model checkpoint, full: the first `ModelCheckpoint.save()` (every user's MF factors into the user-factor
  store + pickle and fsync of the shared models), as after a start or a rollback;
- model checkpoint, 1% changed: a later save after 1% of the users learned -- what every epoch with
  learning costs: only the changed users' factors are written, so it should not grow with all users;
- restart: unpickle the N profiles + `ModelCheckpoint.restore()` (shared models + every user's factors),
  timed in a new process (`--time-restart`) as a restarted engine does it: the measuring process still
  holds the N original profiles, and a restore inside it took 1.27x as long at 100k users (15.0 s, 11.8 s);
- full garbage-collector pass: one over the N profiles, then the next one; with PULSE_GC_FREEZE=1 the
  first one's survivors are frozen out of the next (pulse.runtime.SurvivorFreezer).

The process runs with the engine's garbage-collector settings (PULSE_GC_GEN0, PULSE_GC_FREEZE).
Linearity is shown as time per user relative to the smallest N (1.0 = linear). Memory per item:
the recommender's numpy mirrors + the MF's per-item entries for `--items` items, / items.
"""

from __future__ import annotations

import argparse
import gc
import json
import pickle
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import orjson

from bench.common import ROOT, add_json_option, fmt, median, print_table, simulated_events, write_json


def template():
    """(engine, profile, user_id): the profile of the user with the median number of events, through the real engine."""
    from operators.engine import PersonalizationEngine

    engine = PersonalizationEngine()
    events = [orjson.loads(e.value) for e in simulated_events(4000, users=50, items=1000)]
    counts = Counter(e["user_id"] for e in events)
    user = sorted(counts, key=counts.__getitem__)[len(counts) // 2]
    profiles: dict = {}
    for event in events:
        uid = event["user_id"]
        profiles[uid], _ = engine.handle(profiles.get(uid), event, event["ts"])
    return engine, profiles[user], user


def clone_users(engine, profile, user: str, n: int) -> dict:
    """N independent copies of `profile` (distinct users, unpickled from its snapshot) with `user`'s MF latents."""
    from operators.user_state import profile_snapshot

    snapshot = profile_snapshot(profile)
    mf = engine.recommender._mf
    latent, bias = mf.u_latents[user], mf.u_biases[user]
    profiles = {}
    for i in range(n):
        uid = f"u{i:07d}"
        p = pickle.loads(snapshot)
        p.user_id = uid
        profiles[uid] = p
        mf.u_latents[uid] = latent.copy() if hasattr(latent, "copy") else latent
        mf.u_biases[uid] = float(bias)
    return profiles


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_users(n: int, runs: int) -> dict:
    from connectors.checkpoint import ModelCheckpoint
    from operators.user_state import profile_snapshot

    engine, profile, user = template()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    profiles = clone_users(engine, profile, user, n)
    bytes_per_user = (tracemalloc.get_traced_memory()[0] - before) / n
    tracemalloc.stop()
    gc_pass_s = timed(gc.collect)
    gc_next_pass_s = timed(gc.collect)

    def snapshot(keys) -> list[bytes]:  # what Bytewax stores per touched key: UserLogic.snapshot(), pickled
        return [pickle.dumps(profile_snapshot(profiles[k]), protocol=pickle.HIGHEST_PROTOCOL) for k in keys]

    keys = list(profiles)
    changed = keys[: max(1, n // 100)]
    blobs = snapshot(keys)
    snap_bytes = sum(len(b) for b in blobs) / n
    full, partial, save_full, save_changed, restart = [], [], [], [], []
    with tempfile.TemporaryDirectory() as snapshot_dir:
        snapshots = Path(snapshot_dir) / "snapshots.pkl"  # what a restart reads, written once for every run
        with open(snapshots, "wb") as file:
            pickle.dump(blobs, file, protocol=pickle.HIGHEST_PROTOCOL)
        for run in range(runs):
            full.append(timed(lambda: snapshot(keys)))
            partial.append(timed(lambda: snapshot(changed)))
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint = ModelCheckpoint(engine, Path(tmp) / "models.pkl")
                save_full.append(timed(checkpoint.save))
                for uid in changed:  # 1% of the users learn one interaction each
                    engine.recommender.learn_one(uid, f"item-{run}", "cat", 1.0, 0)
                save_changed.append(timed(checkpoint.save))
                checkpoint_bytes = checkpoint.path.stat().st_size + checkpoint.user_store_path.stat().st_size
                restart.append(restart_in_new_process(snapshots, checkpoint.path))
    return {"users": n, "bytes_per_user": bytes_per_user, "snapshot_bytes_per_user": snap_bytes,
            "snapshot_all_s": median(full), "snapshot_1pct_s": median(partial),
            "model_checkpoint_full_s": median(save_full), "model_checkpoint_1pct_s": median(save_changed),
            "model_checkpoint_bytes": checkpoint_bytes, "restart_s": median(restart),
            "gc_full_pass_s": gc_pass_s, "gc_next_full_pass_s": gc_next_pass_s}


def restart_in_new_process(snapshots: Path, checkpoint_path: Path) -> float:
    """Seconds a new process (the engine's garbage-collector settings) takes to restore the pickled list of
    profile snapshots in `snapshots` and the models (see `time_restart`)."""
    command = [sys.executable, "-m", "bench.state", "--time-restart", str(snapshots), str(checkpoint_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])["restart_s"]


def time_restart(snapshots: Path, checkpoint_path: Path) -> float:
    """Seconds to unpickle every profile snapshot in `snapshots` and restore the model checkpoint (file read first)."""
    from connectors.checkpoint import ModelCheckpoint
    from operators.engine import PersonalizationEngine

    with open(snapshots, "rb") as file:
        blobs = pickle.load(file)
    engine = PersonalizationEngine()
    gc.collect()
    return timed(lambda: ([pickle.loads(pickle.loads(b)) for b in blobs],
                          ModelCheckpoint(engine, checkpoint_path).restore()))


def measure_items(n_items: int) -> float:
    """Bytes per catalog item (numpy mirrors + MF item entries), items learned once each."""
    from online_models.recommender import HybridRecommender

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    rec = HybridRecommender(seed=1)
    for i in range(n_items):
        rec.learn_one(f"user-{i % 1000}", f"item-{i:07d}", f"cat-{i % 50}", 1.0, i)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    users_part = 1000 * (16 * 8 + 112 + 100)  # rough: the 1,000 users' latents are not item state
    return max(used - users_part, 0) / n_items


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--time-restart", nargs=2, type=Path, metavar=("SNAPSHOTS", "CHECKPOINT"),
                        help=argparse.SUPPRESS)  # the new process of restart_in_new_process
    add_json_option(parser, "state")
    args = parser.parse_args(argv)
    from pulse.config import Settings
    from pulse.runtime import tune_garbage_collector

    settings = Settings.from_env()
    tune_garbage_collector(settings.gc_gen0, bool(settings.gc_freeze))  # as in the engine process
    if args.time_restart:
        print(json.dumps({"restart_s": time_restart(*args.time_restart)}))
        return {}

    results = []
    for n in args.users:
        r = measure_users(n, args.runs)
        results.append(r)
        print(f"{n:,} users: {r['bytes_per_user']:,.0f} B/user, snapshot all {r['snapshot_all_s'] * 1e3:,.1f} ms, "
              f"1% {r['snapshot_1pct_s'] * 1e3:,.1f} ms, model checkpoint full "
              f"{r['model_checkpoint_full_s'] * 1e3:,.1f} ms, "
              f"1% changed {r['model_checkpoint_1pct_s'] * 1e3:,.1f} ms, "
              f"restart {r['restart_s'] * 1e3:,.1f} ms, full GC pass {r['gc_full_pass_s'] * 1e3:,.1f} ms then "
              f"{r['gc_next_full_pass_s'] * 1e3:,.1f} ms", flush=True)
    base = results[0]

    def lin(r: dict, key: str) -> str:
        """Per-user cost of `key` relative to the smallest run's (1.00: linear in users)."""
        return f"{(r[key] / r['users']) / (base[key] / base['users']):.2f}"

    rows = []
    for r in results:
        n = r["users"]
        rows.append([fmt(n), fmt(r["bytes_per_user"]), fmt(r["snapshot_bytes_per_user"]),
                     f"{r['snapshot_all_s'] * 1e3:,.1f} ({lin(r, 'snapshot_all_s')})",
                     f"{r['snapshot_1pct_s'] * 1e3:,.2f}",
                     f"{r['model_checkpoint_full_s'] * 1e3:,.1f} ({lin(r, 'model_checkpoint_full_s')})",
                     f"{r['model_checkpoint_1pct_s'] * 1e3:,.1f}",
                     f"{r['restart_s'] * 1e3:,.1f} ({lin(r, 'restart_s')})",
                     f"{r['gc_full_pass_s'] * 1e3:,.1f} / {r['gc_next_full_pass_s'] * 1e3:,.1f}"])
    print_table(f"State vs users (median of {args.runs} runs; in parentheses: time per user relative to "
                f"{fmt(base['users'])} users, 1.00 = linear)",
                ["users", "B/user (RAM)", "B/user (snapshot)", "epoch snapshot, all changed ms",
                 "epoch snapshot, 1% changed ms", "model checkpoint, full ms", "model checkpoint, 1% changed ms",
                 "restart ms", "full GC pass, first / next ms"], rows)
    per_item = measure_items(args.items)
    print(f"\nmemory per item ({fmt(args.items)} items): {per_item:,.0f} B")
    data = {"runs": args.runs, "results": results, "bytes_per_item": per_item, "items": args.items}
    if args.json is not None:
        write_json("state", data, args.json or None)
    return data


if __name__ == "__main__":
    main()
