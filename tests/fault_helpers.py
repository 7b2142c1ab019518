"""Shared by the fault tests (test_faults_*.py): the epochs a run's metrics.csv holds, and the
temp files (.tmp-*) left in a run folder."""
import csv
import os


def _epochs_in_csv(path):
    with open(path, newline="") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def _tmp_files(folder):
    return [n for n in os.listdir(folder) if n.startswith(".tmp-")]
