"""One module per rule: each `run(call)` is the rule's entry point, a short sequence of library calls.

The library below (data, models, training, metrics, report) imports no stage.
"""
