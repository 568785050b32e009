"""The GPU acceptance run (issue 17): one prepared script that proves the GPU path on a lent machine.

`scripts/gpu_acceptance.sh` (= `python -m bench.acceptance`) installs lokaal-bench from the working
tree and carried wheels, then runs `lokaal-bench env`, `lokaal-bench probe`, the cards'
materialisation, `profiles/gpu-acceptance.yaml` and `pytest -m gpu`, each under its own time limit
inside one budget, and after every step rewrites a one-page summary (with checks against physics)
and one archive of everything it saw. `--dry-run` does on a CPU machine what can be done there.

- `wheels`: which wheels travel, whether a folder of them will install, and the import check
- `steps`: a command under a time limit, in its own process group
- `checks`: the figures against physics (pure)
- `summary`: the Markdown page and the archive (pure but for the writing)
- `materialise`: the profile's cards, built in parallel before the run
- `main`: the orchestration

Nothing here imports torch at module level: the install step must run before anything heavy.
"""
