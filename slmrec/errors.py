"""Errors that the light modules (the job wrapper, the Snakefile's helpers) name without importing the training
stack."""


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite: a learning rate too high or bad inputs; another attempt would
    fail the same way."""


class DiskFullError(OSError):
    """A write ran out of space, said plainly and where (torch's own message is `enforce fail at
    inline_container.cc ... unexpected pos`)."""
