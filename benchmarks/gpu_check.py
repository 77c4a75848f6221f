"""The GPU checks of issue #13 in one command (about 9 minutes on an H200, warm-up and compilation included):

    PYTHONUNBUFFERED=1 PYTHONPATH=src python3 benchmarks/gpu_check.py --out "$OUT"

1. the suite's GPU tests (``tests/test_gpu_executor.py``: Triton kernels and the clip executor on the GPU in float32
   and float16, the CUDA-graph replay; ``tests/test_train_speed.py``: a training step under
   ``torch.cuda.set_sync_debug_mode("error")``, and the rest of both files on the GPU machine);
2. ``benchmarks/gpu_train.py``, eager and channels_last, with the per-part profile (``train_eager/``);
3. ``benchmarks/gpu_train.py``, compiled (channels_last), TSM and AdaFuse-TSM+Last first (``train_compile/``);
4. ``benchmarks/gpu_infer.py`` at batch 16 and 1, paper shares and everything kept (``infer/``).

Each phase runs in its own process under its own time limit, so one that fails or overruns costs only its own
results; ``gpu_check.md`` collects the tables (for docs/speed.md and docs/results.md) and every phase's status,
``gpu_check.json`` the same as data. At most 8 files come back from ``--out``, two folders deep.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def phases(out: Path) -> list[tuple[str, list[str], float, Path | None]]:
    """(name, command, time limit in s, the markdown file it writes)."""
    py = sys.executable
    bench = ROOT / "benchmarks"
    return [
        ("tests", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", "-k", "not test_fit",
                   "tests/test_gpu_executor.py", "tests/test_train_speed.py"], 100, None),
        ("train_eager", [py, str(bench / "gpu_train.py"), "--modes", "eager", "channels_last", "--profile",
                         "--out", str(out / "train_eager")], 100, out / "train_eager" / "gpu_train.md"),
        ("train_compile", [py, str(bench / "gpu_train.py"), "--modes", "compile_cl", "--models", "tsm",
                           "adafuse_tsm_last", "tsn", "adafuse_tsn", "--budget-s", "170", "--rounds", "4",
                           "--out", str(out / "train_compile")], 200, out / "train_compile" / "gpu_train.md"),
        ("infer", [py, str(bench / "gpu_infer.py"), "--budget-s", "70", "--out", str(out / "infer")], 150,
         out / "infer" / "gpu_infer.md"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run every phase, write ``gpu_check.md`` and ``gpu_check.json`` to ``--out``; print the summary last."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "runs/gpu_check")))
    parser.add_argument("--only", nargs="+", help="run these phases only")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1"}  # fmt: skip
    import torch

    lines = [f"# GPU check ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
             f"GPU {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}"]  # fmt: skip
    try:
        import triton

        lines[-1] += f", Triton {triton.__version__}"
    except ImportError:
        lines[-1] += ", no Triton"
    results = []
    for name, command, limit, table in phases(args.out):
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit)
            status, log = ("ok" if done.returncode == 0 else f"exit {done.returncode}"), done.stdout + done.stderr
        except subprocess.TimeoutExpired as e:
            status = f"stopped at its {limit:.0f} s limit"
            log = "".join(x.decode() if isinstance(x, bytes) else (x or "") for x in (e.stdout, e.stderr))
        seconds = time.perf_counter() - start
        results.append({"phase": name, "status": status, "seconds": seconds, "command": " ".join(command)})
        lines += ["", f"## {name}: {status} ({seconds:.0f} s)", "", f"`{' '.join(command)}`", ""]
        if table is not None and table.is_file():
            lines.append(table.read_text())
        else:  # the tests, or a phase that wrote nothing: the end of its output
            tail = [line for line in log.splitlines() if line.strip()][-40:]
            lines += ["```", *tail, "```"]
        print(f"[gpu_check] {name}: {status} ({seconds:.0f} s)", flush=True)
    text = "\n".join(lines) + "\n"
    (args.out / "gpu_check.md").write_text(text)
    (args.out / "gpu_check.json").write_text(json.dumps({"phases": results}, indent=1))
    print(text)
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
