"""``make bench``: every CPU benchmark in one go, then one summary table with the ratios.

    python experiments/benchmarks/run_all.py            # ~15 min on an idle 2-core machine
    python experiments/benchmarks/run_all.py --quick    # fewer rounds/steps, a smoke run (~6 min)

Sections: bench_loop (phf vs the original's engine, tokens/s ratios and peak RSS), bench_scaling
(block size and width/depth), bench_levers (each lever alone), bench_pipeline (labels on the fly vs
warm cache vs pre-scored), and bench_scorers.py when present and
``--with-scorers`` is given. Everything printed is also written to ``outputs/bench/<time>.md``.
Benchmarks measure and print; none asserts a time. The worker processes' stderr goes to
``outputs/bench/<time>.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common as C  # noqa: E402


class Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for st in self.streams:
            st.write(s)
            st.flush()
        return len(s)

    def flush(self):
        for st in self.streams:
            st.flush()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1-2 rounds, fewer steps, no scaling width grid")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", default="", help="comma list of sections to skip: loop,scaling,levers,pipeline")
    ap.add_argument("--with-scorers", action="store_true", help="also run bench_scorers.py (scorers issue)")
    ap.add_argument("--out-dir", default=str(C.ROOT / "outputs" / "bench"))
    a = ap.parse_args(argv)
    skip = set(filter(None, a.skip.split(",")))
    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    md, log = out_dir / f"{stamp}.md", str(out_dir / f"{stamp}.log")
    t0 = time.perf_counter()
    threads = ["--threads", str(a.threads)]
    with open(md, "w") as f, contextlib.redirect_stdout(Tee(sys.stdout, f)):
        print(f"# phf benchmarks, {time.strftime('%Y-%m-%d %H:%M')}\n\n{C.machine()}\n")
        loop_rows = None
        if "loop" not in skip:
            import bench_loop

            args = ["--log", log, *threads]
            if a.quick:
                args += ["--rounds", "tiny=2,small=1", "--steps", "tiny=4,small=3"]
            loop_rows = bench_loop.main(args)
        if "scaling" not in skip:
            print()
            import bench_scaling

            bench_scaling.main(["--log", log, *threads, *(["--grid", "blocks", "--steps", "3"] if a.quick else [])])
        if "levers" not in skip:
            print()
            import bench_levers

            args = ["--log", log, *threads]
            if a.quick:
                args += ["--shapes", "tiny", "--iters", "2", "--loop-rounds", "1", "--loop-steps", "4"]
            bench_levers.main(args)
        if "pipeline" not in skip:
            print()
            import bench_pipeline

            bench_pipeline.main([*threads, *(["--steps", "4", "--export-docs", "400"] if a.quick else [])])
        scorers = HERE / "bench_scorers.py"
        if a.with_scorers and scorers.is_file():
            print("\n# Scorers (bench_scorers.py)\n", flush=True)
            p = subprocess.run([sys.executable, str(scorers)], capture_output=True, text=True)
            print(p.stdout + (f"\n(bench_scorers.py exited {p.returncode}: {p.stderr[-2000:]})" if p.returncode else ""))
        if loop_rows:
            head, rows = loop_rows
            print("\n# Summary: phf vs the original's engine (HF Trainer + compute_loss), CPU fp32\n")
            C.table(head, rows)
        print(f"\n(all sections: {time.perf_counter() - t0:.0f} s; written to {md})")


if __name__ == "__main__":
    main()
