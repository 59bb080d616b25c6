"""Every error class of slmrec, at ground level: any module raises or catches them without importing another
package's module (the job wrapper and the Snakefile's helpers without the training stack)."""


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite: a learning rate too high or bad inputs; another attempt would
    fail the same way."""


class DiskFullError(OSError):
    """A write ran out of space, said plainly and where (torch's own message is `enforce fail at
    inline_container.cc ... unexpected pos`)."""


class ConfigError(ValueError):
    """A config file or override breaks the schema or a rule of the DAG; the message names the key."""


class ArtifactError(ValueError):
    """An intermediate artifact exists but cannot be read, so the rule that made it must run again."""


class DataError(ValueError):
    """Bad input data; the message names the file, the line and the field."""


class BackboneError(RuntimeError):
    """The backbone cannot be loaded as configured; the message names the setting to change."""


class DistillConfigError(ValueError):
    """The layer counts and `distill.blocks` do not make whole blocks; the message says which divide."""


class MetricsRowError(ValueError):
    """A metrics file is not a row of the one shape every stage writes."""


class DownloadError(RuntimeError):
    """No mirror delivered the file, or the file did not match its checksum."""


class FetchError(RuntimeError):
    """The wheel could not be fetched, lacks the member, or the member is not the expected file."""


class CompareError(ValueError):
    """A dataset to compare has no results yet; the message says how to make them."""


class HistoryError(ValueError):
    """A history to recommend for names an item the model does not know, or none at all; the message names it."""


class NotRetried(RuntimeError):
    """A job failed on bad input; running it again would fail the same way."""


class ClusterSetupError(RuntimeError):
    """The profile cannot work on this cluster as it is; nothing was submitted."""


# Failures on bad input: bad data, an unreadable upstream artifact, a setting that cannot work. Another attempt
# would fail the same way, so these are recorded and never retried (slmrec/cluster.py, slmrec/workflow.py).
# A non-finite loss comes from the settings (a learning rate too high) or the data, and recurs on every attempt.
BAD_INPUT_ERRORS = (
    DataError,
    ArtifactError,
    ConfigError,
    BackboneError,
    DistillConfigError,
    MetricsRowError,
    NonFiniteLossError,
)
