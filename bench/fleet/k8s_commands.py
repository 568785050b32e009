"""`lokaal-bench submit k8s`: the campaign's manifests written into its directory, applied with kubectl
when asked (bench/fleet/k8s.py renders them; docs/fleet.md)."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import yaml

from bench.errors import EXIT_OK, BenchError
from bench.fleet.campaign import new_campaign_id
from bench.fleet.k8s import K8sCampaign, dns_name, parse_selector
from bench.fleet.submit import open_campaign, plan_campaign, record_submission, require_tool, this_command
from bench.readers.printing import Output


def submit_k8s_command(args: argparse.Namespace, out: Output) -> int:
    from bench.profile.loading import load_profile

    if args.apply:  # before anything is written: a missing kubectl is bad input, exit 2
        require_tool("kubectl", "submit k8s --apply applies the manifests with it (or drop --apply and apply "
                     "the files yourself)")
    if args.cpus < 1:
        raise BenchError(f"--cpus {args.cpus}: whole cores, at least 1 (Guaranteed QoS)")
    profile_name = load_profile(Path(args.profile)).name
    name = dns_name(args.campaign or (f"{profile_name}-nightly" if args.schedule else new_campaign_id(profile_name)))
    plan = plan_campaign(args.profile, args.shards, args.results, name)
    campaign = K8sCampaign(name, plan.shards, args.image, plan.profile_name, plan.text, namespace=args.namespace,
                           node_selector=parse_selector(args.node_selector), gpus=args.gpus, cpus=args.cpus,
                           memory=args.memory, pvc=args.pvc, storage=args.storage, schedule=args.schedule)
    open_campaign(plan, "kubernetes")
    files = []
    for file_name, manifest in campaign.manifests().items():
        path = plan.directory / file_name
        path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
        files.append(path)
    kubectl = ["kubectl", "apply", *[w for f in files for w in ("-f", f.name)]]
    submission = {"scheduler": "kubernetes", "group": "k8s", "kind": "CronJob" if args.schedule else "Job",
                  "name": name, "namespace": args.namespace, "schedule": args.schedule,
                  "files": [f.name for f in files], "command": this_command(), "apply": kubectl, "applied": False,
                  "job_ids": []}
    for path in files:
        out.message(f"wrote {path}")
    if args.apply:
        done = subprocess.run([require_tool("kubectl", "submit k8s --apply"), *kubectl[1:]], cwd=plan.directory,
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            record_submission(plan.directory, {**submission, "error": (done.stderr or done.stdout).strip()})
            raise BenchError(f"kubectl apply failed: {(done.stderr or done.stdout).strip()}")
        submission.update(applied=True, kubectl_output=done.stdout.strip(), job_ids=[f"{args.namespace}/{name}"])
        out.message(done.stdout.strip())
    else:
        out.message(f"apply with: cd {plan.directory} && {' '.join(kubectl)}")
    record_submission(plan.directory, submission)
    what = f"CronJob {name} ({args.schedule}): a new campaign each run" if args.schedule else \
        f"Indexed Job {name}: {plan.shards} pod(s), one per node"
    out.message(f"{what}; results on PersistentVolumeClaim {args.pvc} under {name}/ "
                f"(lokaal-bench status / table on that directory)")
    return EXIT_OK
