"""Where a run's numbers go: a CSV row per epoch (always), and Comet (when asked for).

Comet is optional in every sense: not installed, no key, server unreachable, key refused —
each gives one warning and training goes on with the CSV log.
"""
import csv
import io
import os
import sys
import warnings

from utils import atomic_write_text


class CSVLogger:
    """metrics.csv: one row per epoch, appended and fsynced so a kill loses at most the row
    being written. `rewrite(history)` restores the file from a checkpoint's history on resume."""

    def __init__(self, path):
        self.path = path
        self.fields = None

    def rewrite(self, history):
        self.fields = None
        buf = io.StringIO()
        if history:
            self.fields = list(history[0])
            writer = csv.DictWriter(buf, fieldnames=self.fields)
            writer.writeheader()
            writer.writerows(history)
        atomic_write_text(buf.getvalue(), self.path)

    def log(self, row):
        new = self.fields is None or not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        if self.fields is None:
            self.fields = list(row)
        size = os.path.getsize(self.path) if os.path.exists(self.path) else 0
        try:
            with open(self.path, "a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
                if new:
                    writer.writeheader()
                writer.writerow(row)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:  # disk full mid-row: cut the torn row off, keep the whole ones
            try:
                os.truncate(self.path, size)
            except OSError:
                pass
            raise


def _warn(message):
    print(f"warning: {message}", file=sys.stderr)


class CometLogger:
    """A thin, failure-proof wrapper over comet_ml.Experiment / OfflineExperiment.

    Any exception from Comet disables it after one warning; the run never stops for it.
    """

    def __init__(self, api_key, project_name, experiment_name, offline_dir=None):
        self.experiment = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import comet_ml
            if offline_dir is not None:
                os.makedirs(offline_dir, exist_ok=True)
                self.experiment = comet_ml.OfflineExperiment(
                    project_name=project_name, offline_directory=offline_dir, api_key=api_key or None,
                    display_summary_level=0, auto_output_logging=False)
            else:
                self.experiment = comet_ml.Experiment(
                    api_key=api_key, project_name=project_name, display_summary_level=0,
                    auto_output_logging=False)
            self.experiment.set_name(experiment_name)
        except ImportError:
            _warn("comet-ml is not installed; logging to the CSV only (pip install comet-ml)")
        except Exception as e:
            self._disable(e)

    @property
    def enabled(self):
        return self.experiment is not None

    def _disable(self, error):
        _warn(f"Comet is off for the rest of this run ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
              "the CSV log goes on")
        self.experiment = None

    def _call(self, method, *args, **kwargs):
        if self.experiment is None:
            return
        try:
            getattr(self.experiment, method)(*args, **kwargs)
        except Exception as e:
            self._disable(e)

    def log_parameters(self, params):
        self._call("log_parameters", params)

    def log_metrics(self, metrics, epoch):
        self._call("log_metrics", metrics, epoch=epoch, step=epoch)

    def log_image(self, path, name):
        self._call("log_image", path, name=name)

    def log_asset(self, path, name):
        self._call("log_asset", path, file_name=name)

    def end(self):
        self._call("end")


class NullLogger:
    enabled = False

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def build_comet(*, api_key=None, enabled=True, offline_dir=None, project="VisionTransformer", experiment=None):
    """A CometLogger when there is a key or an offline folder, else a NullLogger."""
    if not enabled or not (api_key or offline_dir):
        return NullLogger()
    return CometLogger(api_key, project, experiment, offline_dir)
