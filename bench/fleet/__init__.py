"""Beyond one machine (docs/fleet.md): a profile's cells split into shards (shards.py) that a scheduler
runs as one campaign (campaign.py) over Slurm job arrays (slurm.py) or Kubernetes Indexed Jobs
(k8s.py), and one results store (store.py) that the readers query as a source like a directory.

Nothing here schedules work itself: Slurm and Kubernetes do; lokaal-bench renders what they run,
keeps it in the campaign directory, and reads what comes back. Importing this package is cheap.
"""
